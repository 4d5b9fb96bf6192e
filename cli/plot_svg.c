/* Training curves as SVG; see plot_svg.h. A chart is a few panels, each
 * with its own axes; a series is one column of the history drawn as a line
 * with a marker per epoch (lines break where a figure is missing). */
#include "plot_svg.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#define W 960
#define H 660
/* Okabe-Ito colours: told apart with any colour vision. */
#define C_TRAIN "#0072B2"
#define C_VAL "#E69F00"
#define C_TEST "#009E73"
#define C_LR "#CC79A7"
#define FONT "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""

typedef struct series {
    const char *name;
    size_t offset; /* a double in kd_epoch_record */
    const char *colour;
} series;

#define SERIES(field, name, colour) {name, offsetof(kd_epoch_record, field), colour}

typedef struct panel {
    const char *title;
    double left, top, right, bottom; /* the plot area, in pixels */
    double x0, x1, y0, y1;           /* the data range shown */
    double ystep;                    /* between y ticks */
} panel;

static double value_of(const kd_epoch_record *r, size_t offset)
{
    return *(const double *)(const void *)((const char *)r + offset);
}

/* Text with XML's special characters escaped. */
static void put_text(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* A step of 1, 2 or 5 times a power of ten giving about `want` ticks over span. */
static double nice_step(double span, int want)
{
    double raw = span / want, mag = pow(10, floor(log10(raw))), r = raw / mag;
    return (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10) * mag;
}

/* The y range of a panel from its series' values: padded, on tick marks,
 * never outside [floor, ceil] (e.g. accuracy stays within [0, 1]). */
static void fit_y(panel *p, const kd_train_state *st, const series *s, int ns, double floor_, double ceil_)
{
    double lo = INFINITY, hi = -INFINITY;
    for (int k = 0; k < ns; k++)
        for (int i = 0; i < st->history_len; i++) {
            double v = value_of(&st->history[i], s[k].offset);
            if (isfinite(v)) {
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
        }
    if (!isfinite(lo)) { /* nothing to show */
        lo = floor_ > -INFINITY ? floor_ : 0;
        hi = lo + 1;
    }
    if (hi - lo < 1e-12 * (fabs(hi) + 1)) { /* a flat line: a small band around it */
        double pad = fabs(hi) > 0 ? fabs(hi) * 0.1 : 0.1;
        lo -= pad;
        hi += pad;
    }
    double pad = (hi - lo) * 0.06;
    lo = lo - pad < floor_ ? floor_ : lo - pad;
    hi = hi + pad > ceil_ ? ceil_ : hi + pad;
    p->ystep = nice_step(hi - lo, 5);
    p->y0 = floor(lo / p->ystep + 1e-9) * p->ystep;
    p->y1 = ceil(hi / p->ystep - 1e-9) * p->ystep;
    if (p->y0 < floor_)
        p->y0 = floor_;
    if (p->y1 > ceil_)
        p->y1 = ceil_;
}

static double px(const panel *p, double x) { return p->left + (x - p->x0) / (p->x1 - p->x0) * (p->right - p->left); }
static double py(const panel *p, double y) { return p->bottom - (y - p->y0) / (p->y1 - p->y0) * (p->bottom - p->top); }

/* A tick label: as few digits as the step needs. */
static void tick_label(char *buf, size_t len, double v, double step)
{
    int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (fabs(v) < step * 1e-6)
        v = 0;
    if (step < 1e-8 || fabs(v) >= 1e6)
        snprintf(buf, len, "%.2g", v);
    else
        snprintf(buf, len, "%.*f", decimals, v);
}

static void draw_axes(FILE *f, const panel *p, const char *xlabel)
{
    char label[32];
    /* Horizontal grid and y ticks. */
    for (double y = p->y0; y <= p->y1 + p->ystep * 1e-6; y += p->ystep) {
        double yy = py(p, y);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>\n", p->left, yy, p->right,
                yy);
        tick_label(label, sizeof label, y, p->ystep);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#555\" text-anchor=\"end\">%s</text>\n",
                p->left - 6, yy + 4, label);
    }
    /* Vertical grid at whole epochs, at most about 10 of them, on multiples of the step. */
    double xstep = p->x1 - p->x0 > 10 ? ceil(nice_step(p->x1 - p->x0, 8)) : 1;
    for (double x = ceil(p->x0 / xstep) * xstep; x <= p->x1 + 1e-9; x += xstep) {
        double xx = px(p, x);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#f0f0f0\"/>\n", xx, p->top, xx,
                p->bottom);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#555\" text-anchor=\"middle\">%.0f</text>\n", xx,
                p->bottom + 15, x);
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#bbb\"/>\n", p->left,
            p->top, p->right - p->left, p->bottom - p->top);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"14\" font-weight=\"bold\" fill=\"#222\">", p->left, p->top - 10);
    put_text(f, p->title);
    fputs("</text>\n", f);
    if (xlabel)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" fill=\"#555\" text-anchor=\"middle\">%s</text>\n",
                (p->left + p->right) / 2, p->bottom + 32, xlabel);
}

/* One series: a line through the epochs that have the figure (broken where
 * one is missing) and a marker at each; a lone point is drawn larger and
 * labelled with its value (the test set scored once, after the last epoch). */
static void draw_series(FILE *f, const panel *p, const kd_train_state *st, const series *s, int markers, int label)
{
    int points = 0, open = 0;
    for (int i = 0; i < st->history_len; i++)
        points += isfinite(value_of(&st->history[i], s->offset));
    fprintf(f, "<g stroke=\"%s\" fill=\"%s\">\n", s->colour, s->colour);
    for (int i = 0; i < st->history_len && points > 1; i++) {
        const kd_epoch_record *r = &st->history[i];
        double v = value_of(r, s->offset);
        if (!isfinite(v)) {
            if (open)
                fputs("\"/>\n", f);
            open = 0;
            continue;
        }
        if (!open)
            fputs("<polyline fill=\"none\" stroke-width=\"2.2\" stroke-linejoin=\"round\" points=\"", f);
        fprintf(f, "%s%.1f,%.1f", open ? " " : "", px(p, r->epoch), py(p, v));
        open = 1;
    }
    if (open)
        fputs("\"/>\n", f);
    for (int i = 0; i < st->history_len && (markers || points == 1); i++) {
        const kd_epoch_record *r = &st->history[i];
        double v = value_of(r, s->offset);
        if (!isfinite(v))
            continue;
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%s\" stroke=\"white\" stroke-width=\"1\"/>\n", px(p, r->epoch),
                py(p, v), points == 1 ? "5" : "3");
        if (points == 1 && label)
            /* A white halo keeps the number readable over grid and lines. */
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" font-weight=\"bold\" stroke=\"white\" "
                       "stroke-width=\"4\" paint-order=\"stroke\" text-anchor=\"end\">%.4f</text>\n",
                    px(p, r->epoch) - 8, py(p, v) - 8, v);
    }
    fputs("</g>\n", f);
}

static void draw_best(FILE *f, const panel *p, int epoch)
{
    if (epoch < 1)
        return;
    double x = px(p, epoch);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#777\" stroke-dasharray=\"5,4\"/>\n", x,
            p->top, x, p->bottom);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#555\" text-anchor=\"%s\">best</text>\n",
            x + (x > (p->left + p->right) / 2 ? -4 : 4), p->top + 14, x > (p->left + p->right) / 2 ? "end" : "start");
}

/* The legend: the series that have any figure. */
static void draw_legend(FILE *f, const kd_train_state *st, const series *s, int ns, double right, double y)
{
    const char *names[4];
    const char *colours[4];
    int n = 0;
    for (int k = 0; k < ns && n < 4; k++)
        for (int i = 0; i < st->history_len; i++)
            if (isfinite(value_of(&st->history[i], s[k].offset))) {
                names[n] = s[k].name;
                colours[n++] = s[k].colour;
                break;
            }
    double x = right - 110.0 * n;
    for (int k = 0; k < n; k++, x += 110) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"3\"/>\n", x, y,
                x + 22, y, colours[k]);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" fill=\"#222\">%s</text>\n", x + 28, y + 4, names[k]);
    }
}

int plot_svg_write(FILE *f, const kd_train_state *st, const plot_info *info)
{
    static const series LOSS[] = {SERIES(train_loss, "training", C_TRAIN), SERIES(val_loss, "validation", C_VAL),
                                  SERIES(test_loss, "test", C_TEST)};
    static const series ACC[] = {SERIES(train_accuracy, "training", C_TRAIN),
                                 SERIES(val_accuracy, "validation", C_VAL), SERIES(test_accuracy, "test", C_TEST)};
    static const series LR[] = {SERIES(learning_rate, "learning rate", C_LR)};
    int n = st->history_len;
    double first = n > 0 ? st->history[0].epoch : 1, last = n > 0 ? st->history[n - 1].epoch : 1;
    /* Half an epoch of room at each end; a single epoch still gets a width. */
    double x0 = first - (last > first ? 0.3 : 0.5), x1 = last + (last > first ? 0.3 : 0.5);
    int markers = n <= 60;

    panel loss = {"Loss", 72, 112, 456, 430, x0, x1, 0, 1, 1};
    panel acc = {"Accuracy", 556, 112, 940, 430, x0, x1, 0, 1, 1};
    panel lr = {"Learning rate (at each epoch's end)", 72, 512, 940, 610, x0, x1, 0, 1, 1};
    fit_y(&loss, st, LOSS, 3, 0, INFINITY);
    fit_y(&acc, st, ACC, 3, 0, 1);
    fit_y(&lr, st, LR, 1, 0, INFINITY);
    lr.y0 = 0; /* the schedule is read against zero */

    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" " FONT ">\n",
            W, H, W, H);
    fputs("<title>", f);
    put_text(f, info->title);
    fputs(" - training curves</title>\n", f);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    fputs("<text x=\"24\" y=\"34\" font-size=\"19\" font-weight=\"bold\" fill=\"#111\">", f);
    put_text(f, info->title);
    fputs("</text>\n", f);
    if (info->subtitle) {
        fputs("<text x=\"24\" y=\"58\" font-size=\"13\" fill=\"#555\">", f);
        put_text(f, info->subtitle);
        fputs("</text>\n", f);
    }
    draw_legend(f, st, LOSS, 3, 940, 30);

    const panel *panels[] = {&loss, &acc};
    const series *sets[] = {LOSS, ACC};
    for (int k = 0; k < 2; k++) {
        draw_axes(f, panels[k], "epoch");
        draw_best(f, panels[k], info->best_epoch);
        for (int s = 0; s < 3; s++)
            draw_series(f, panels[k], st, &sets[k][s], markers, 1);
    }
    draw_axes(f, &lr, NULL);
    draw_series(f, &lr, st, &LR[0], markers, 0);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" fill=\"#555\" text-anchor=\"middle\">epoch</text>\n",
            (72 + 940) / 2, 645);
    if (n == 0)
        fputs("<text x=\"480\" y=\"280\" font-size=\"16\" fill=\"#777\" text-anchor=\"middle\">no epochs recorded</text>\n",
              f);
    fputs("</svg>\n", f);
    return fflush(f) != 0 || ferror(f) ? (errno ? errno : EIO) : 0;
}
