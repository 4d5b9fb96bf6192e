/* CSV reader: one sample per line, comma separated, an optional header
 * line, one optional integer label column; every other column a float.
 * One pass into growing buffers, shrunk to size at the end. */
#include "kindling.h"

#include "error.h"
#include "reader_util.h"

#include <stdlib.h>
#include <string.h>

static int is_blank_line(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return 0;
    return 1;
}

static int count_columns(const char *s, const char *end)
{
    int n = 1;
    while ((s = memchr(s, ',', (size_t)(end - s))) != NULL) {
        n++;
        s++;
    }
    return n;
}

/* Parses one data line into x (nfeat floats) and *label. */
static kd_status parse_line(const kd_reader *r, char *line, size_t len, int ncols, int label_col,
                            float *x, int32_t *label)
{
    const char *p = line, *end = line + len;
    long long ln = (long long)r->line_no;
    char snip[48];
    for (int c = 0; c < ncols; c++) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        if (c < ncols - 1 && !comma)
            return kd_fail(KD_ERR_FORMAT, "%s:line %lld: too few columns: %d, expected %d",
                           r->path, ln, c + 1, ncols);
        if (c == ncols - 1 && comma)
            return kd_fail(KD_ERR_FORMAT, "%s:line %lld: too many columns: %d, expected %d",
                           r->path, ln, count_columns(line, end), ncols);
        const char *cell_end = comma ? comma : end;
        const char *why;
        if (c == label_col) {
            why = kd_parse_label(p, cell_end, label);
            if (why)
                return kd_fail(KD_ERR_FORMAT, "%s:line %lld, column %d (label): %s: '%s'", r->path,
                               ln, c + 1, why, kd_snippet(p, cell_end, snip, sizeof snip));
        } else {
            why = kd_parse_float(p, cell_end, x++);
            if (why)
                return kd_fail(KD_ERR_FORMAT, "%s:line %lld, column %d: %s: '%s'", r->path, ln,
                               c + 1, why, kd_snippet(p, cell_end, snip, sizeof snip));
        }
        p = cell_end + 1;
    }
    return KD_OK;
}

/* Column layout, fixed by the first data line. */
typedef struct csv_state {
    int ncols, nfeat;
    int64_t blank_line; /* first blank line seen; fine only at the end */
} csv_state;

static kd_status check_args(int label_col, const kd_shape *shape, const char *what)
{
    if (label_col < -1)
        return kd_fail(KD_ERR_INVALID, "%s: label column %d (use -1 for none)", what, label_col);
    if (shape && kd_shape_size(shape) == 0) {
        char sb[64];
        return kd_fail(KD_ERR_SHAPE, "%s: invalid sample shape %s", what, kd_shape_str(shape, sb, sizeof sb));
    }
    return KD_OK;
}

/* The next data line (*line NULL at the end), after blank lines; the first
 * one fixes the column count and is checked against label_col and shape. */
static kd_status next_data_line(kd_reader *r, csv_state *st, int label_col, const kd_shape *shape,
                                char **line, size_t *len)
{
    const char *path = r->path;
    for (;;) {
        KD_TRY(kd_reader_next_line(r, line, len));
        if (!*line)
            return KD_OK;
        if (is_blank_line(*line, *len)) {
            if (!st->blank_line)
                st->blank_line = r->line_no;
            continue;
        }
        if (st->blank_line)
            return kd_fail(KD_ERR_FORMAT, "%s:line %lld: blank line before more data (line %lld)",
                           path, (long long)st->blank_line, (long long)r->line_no);
        break;
    }
    if (st->ncols == 0) { /* the first data line fixes the column count */
        st->ncols = count_columns(*line, *line + *len);
        if (label_col >= st->ncols)
            return kd_fail(KD_ERR_FORMAT, "%s:line %lld: label column %d (0-based) but the line "
                           "has only %d columns", path, (long long)r->line_no, label_col, st->ncols);
        st->nfeat = st->ncols - (label_col >= 0);
        if (st->nfeat == 0)
            return kd_fail(KD_ERR_FORMAT, "%s:line %lld: no feature columns, only the label",
                           path, (long long)r->line_no);
        if (shape && kd_shape_size(shape) != (size_t)st->nfeat) {
            char sb[64];
            return kd_fail(KD_ERR_SHAPE, "%s: shape %s has %zu values but the rows have %d "
                           "features", path, kd_shape_str(shape, sb, sizeof sb),
                           kd_shape_size(shape), st->nfeat);
        }
    }
    return KD_OK;
}

static kd_status no_samples(const kd_reader *r)
{
    return kd_fail(KD_ERR_FORMAT, "%s: no samples (%s)", r->path,
                   r->line_no == 0 ? "empty file" : "no data lines");
}

kd_status kd_dataset_load_csv(const char *path, int label_col, int has_header,
                              const kd_shape *shape, kd_dataset **out)
{
    if (!out)
        return kd_fail(KD_ERR_INVALID, "load_csv: no output pointer");
    *out = NULL;
    KD_TRY(check_args(label_col, shape, "load_csv"));

    kd_reader r;
    kd_status s = kd_reader_open(&r, path);
    if (s != KD_OK)
        return s;
    float *x = NULL;
    int32_t *y = NULL;
    size_t x_cap = 0, y_cap = 0;
    int64_t n = 0;
    csv_state st = {0, 0, 0};
    char *line;
    size_t len;

    if (has_header)
        s = kd_reader_next_line(&r, &line, &len);
    while (s == KD_OK) {
        s = next_data_line(&r, &st, label_col, shape, &line, &len);
        if (s != KD_OK || !line)
            break;
        /* Checked growth: a file larger than memory is refused with a
         * message, not by malloc or the OOM killer. */
        char what[128] = "";
        if ((size_t)(n + 1) * (size_t)st.nfeat > x_cap || (size_t)n + 1 > y_cap)
            snprintf(what, sizeof what, "loading the samples (line %lld: %lld samples of %d features so far)",
                     (long long)r.line_no, (long long)n, st.nfeat);
        s = kd_grow_checked((void **)&x, &x_cap, (size_t)(n + 1) * (size_t)st.nfeat, sizeof *x, what, path,
                            (uint64_t)y_cap * sizeof *y);
        if (s == KD_OK)
            s = kd_grow_checked((void **)&y, &y_cap, (size_t)n + 1, sizeof *y, what, path,
                                (uint64_t)x_cap * sizeof *x);
        if (s != KD_OK)
            break;
        y[n] = -1;
        s = parse_line(&r, line, len, st.ncols, label_col, x + (size_t)n * (size_t)st.nfeat, &y[n]);
        if (s == KD_OK)
            n++;
    }
    if (s == KD_OK && n == 0)
        s = no_samples(&r);
    kd_reader_close(&r);
    if (s != KD_OK) {
        free(x);
        free(y);
        return s;
    }
    /* Give back the doubling slack. */
    float *xs = realloc(x, (size_t)n * (size_t)st.nfeat * sizeof *x);
    int32_t *ys = realloc(y, (size_t)n * sizeof *y);
    if (xs)
        x = xs;
    if (ys)
        y = ys;
    kd_shape flat = {1, {st.nfeat, 0, 0, 0}};
    return kd_dataset_adopt(n, shape ? shape : &flat, x, y, out);
}

#define CSV_BLOCK_BYTES ((size_t)4 << 20)

kd_status kd_convert_csv_to_spool(const char *path, int label_col, int has_header, const kd_shape *shape,
                                  const char *spool_path, int64_t *count)
{
    if (count)
        *count = 0;
    if (!spool_path)
        return kd_fail(KD_ERR_INVALID, "convert_csv: no spool path given");
    KD_TRY(check_args(label_col, shape, "convert_csv"));
    kd_reader r;
    KD_TRY(kd_reader_open(&r, path));
    kd_spool_writer *w = NULL;
    float *x = NULL;
    int32_t *y = NULL;
    size_t block = 0, k = 0;
    csv_state st = {0, 0, 0};
    char *line;
    size_t len;
    kd_status s = has_header ? kd_reader_next_line(&r, &line, &len) : KD_OK;
    while (s == KD_OK) {
        s = next_data_line(&r, &st, label_col, shape, &line, &len);
        if (s != KD_OK || !line)
            break;
        if (!w) { /* first data line: the layout is known */
            kd_shape flat = {1, {st.nfeat, 0, 0, 0}};
            block = CSV_BLOCK_BYTES / ((size_t)st.nfeat * 4);
            block = block ? block : 1;
            x = kd_malloc(block * (size_t)st.nfeat * sizeof *x, "the CSV conversion buffer");
            y = x ? kd_malloc(block * sizeof *y, "the CSV label buffer") : NULL;
            s = y ? kd_spool_writer_open(spool_path, shape ? shape : &flat, label_col >= 0, &w) : KD_ERR_NOMEM;
            if (s != KD_OK)
                break;
        }
        y[k] = -1;
        s = parse_line(&r, line, len, st.ncols, label_col, x + k * (size_t)st.nfeat, &y[k]);
        if (s == KD_OK && ++k == block) {
            s = kd_spool_writer_add(w, x, label_col >= 0 ? y : NULL, k);
            k = 0;
        }
    }
    if (s == KD_OK && !w)
        s = no_samples(&r);
    if (s == KD_OK && k > 0)
        s = kd_spool_writer_add(w, x, label_col >= 0 ? y : NULL, k);
    kd_reader_close(&r);
    free(x);
    free(y);
    if (s != KD_OK) {
        kd_spool_writer_abort(w);
        return s;
    }
    int64_t n = kd_spool_writer_count(w);
    s = kd_spool_writer_finish(w);
    if (s == KD_OK && count)
        *count = n;
    return s;
}
