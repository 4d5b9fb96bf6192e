/* CSV reader: one sample per line, columns separated by one delimiter
 * (',' ';' or tab detected from the first data line, or given), an optional
 * header line, one optional integer label column, optionally one id column
 * kept as text (kd_dataset_load_csv_ids); every other column a float. One
 * pass into growing buffers, shrunk to size at the end. */
#include "kindling.h"

#include "dataset.h"
#include "error.h"
#include "reader_util.h"
#include "spool_writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_blank_line(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return 0;
    return 1;
}

static int count_columns(const char *s, const char *end, char delim)
{
    int n = 1;
    while ((s = memchr(s, delim, (size_t)(end - s))) != NULL) {
        n++;
        s++;
    }
    return n;
}

/* The delimiter of a line: the most frequent of ',', ';' and tab. Ties go
 * to ';' (a ';' file with decimal commas has at most as many commas), then
 * tab; ',' when there is none (a single column). */
static char detect_delimiter(const char *s, size_t len)
{
    static const char cand[3] = {';', '\t', ','};
    int count[3] = {0, 0, 0};
    for (size_t i = 0; i < len; i++)
        for (int k = 0; k < 3; k++)
            count[k] += s[i] == cand[k];
    int best = 2;
    for (int k = 0; k < 3; k++)
        if (count[k] > count[best] || (count[k] == count[best] && count[k] > 0 && k < best))
            best = k;
    return cand[best];
}

/* "','", "';'", "tab" or "'x'" for messages. */
static const char *delim_name(char d, char *buf, size_t len)
{
    if (d == '\t')
        snprintf(buf, len, "tab");
    else if ((unsigned char)d < 0x20 || (unsigned char)d >= 0x7f)
        snprintf(buf, len, "byte 0x%02x", (unsigned char)d);
    else
        snprintf(buf, len, "'%c'", d);
    return buf;
}

/* A data line's id cell (kd_dataset_load_csv_ids): where it is in the line. */
typedef struct id_cell {
    int col;              /* -1: no id column */
    const char *at;
    size_t len;
} id_cell;

/* Parses one data line into x (nfeat floats), *label and the id cell. */
static kd_status parse_line(const kd_reader *r, char *line, size_t len, int ncols, char delim, int label_col,
                            id_cell *id, float *x, int32_t *label)
{
    const char *p = line, *end = line + len;
    long long ln = (long long)r->line_no;
    char snip[48];
    for (int c = 0; c < ncols; c++) {
        const char *comma = memchr(p, delim, (size_t)(end - p));
        if (c < ncols - 1 && !comma)
            return kd_fail(KD_ERR_FORMAT, "%s:line %lld: too few columns: %d, expected %d",
                           r->path, ln, c + 1, ncols);
        if (c == ncols - 1 && comma)
            return kd_fail(KD_ERR_FORMAT, "%s:line %lld: too many columns: %d, expected %d",
                           r->path, ln, count_columns(line, end, delim), ncols);
        const char *cell_end = comma ? comma : end;
        const char *why;
        if (id && c == id->col) {
            id->at = p;
            id->len = (size_t)(cell_end - p);
        } else if (c == label_col) {
            why = kd_parse_label(p, cell_end, label);
            if (why)
                return kd_fail(KD_ERR_FORMAT, "%s:line %lld, column %d (label): %s: '%s'", r->path,
                               ln, c + 1, why, kd_snippet(p, cell_end, snip, sizeof snip));
        } else {
            why = kd_parse_float(p, cell_end, x++);
            /* "0,5" in a ';' file: a decimal comma, which C's number syntax does not read. */
            int decimal_comma = why && delim != ',' && memchr(p, ',', (size_t)(cell_end - p));
            if (why)
                return kd_fail(KD_ERR_FORMAT, "%s:line %lld, column %d: %s: '%s'%s", r->path, ln, c + 1, why,
                               kd_snippet(p, cell_end, snip, sizeof snip),
                               decimal_comma ? " (a decimal comma? numbers must use '.')" : "");
        }
        p = cell_end + 1;
    }
    return KD_OK;
}

/* Column layout, fixed by the first data line. */
typedef struct csv_state {
    int ncols, nfeat;
    int id_col;         /* -1: none */
    char delim;         /* given, or detected on the first data line */
    int64_t blank_line; /* first blank line seen; fine only at the end */
} csv_state;

static kd_status check_args(const kd_csv_options *o, const kd_shape *shape, const char *what)
{
    if (!o)
        return kd_fail(KD_ERR_INVALID, "%s: no CSV options", what);
    if (o->label_col < -1)
        return kd_fail(KD_ERR_INVALID, "%s: label column %d (use -1 for none)", what, o->label_col);
    if (o->delimiter == '\n' || o->delimiter == '\r' || o->delimiter == '"' || o->delimiter == '.' ||
        o->delimiter == '-' || o->delimiter == '+' || o->delimiter == 'e' || o->delimiter == 'E' ||
        (o->delimiter >= '0' && o->delimiter <= '9'))
        return kd_fail(KD_ERR_INVALID, "%s: a delimiter cannot be a line break, a quote or part of a number", what);
    if (shape && kd_shape_size(shape) == 0) {
        char sb[64];
        return kd_fail(KD_ERR_SHAPE, "%s: invalid sample shape %s", what, kd_shape_str(shape, sb, sizeof sb));
    }
    return KD_OK;
}

/* The next data line (*line NULL at the end), after blank lines; the first
 * one fixes the delimiter and the column count and is checked against
 * label_col and shape. */
static kd_status next_data_line(kd_reader *r, csv_state *st, const kd_csv_options *o, const kd_shape *shape,
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
    if (st->ncols == 0) { /* the first data line fixes the layout */
        char dn[16];
        st->delim = o->delimiter ? o->delimiter : detect_delimiter(*line, *len);
        st->ncols = count_columns(*line, *line + *len, st->delim);
        if (o->label_col >= st->ncols)
            return kd_fail(KD_ERR_FORMAT, "%s:line %lld: label column %d (0-based) but the line "
                           "has only %d column%s (delimiter %s)", path, (long long)r->line_no, o->label_col,
                           st->ncols, st->ncols == 1 ? "" : "s", delim_name(st->delim, dn, sizeof dn));
        if (st->id_col >= st->ncols)
            return kd_fail(KD_ERR_FORMAT, "%s:line %lld: id column %d (0-based) but the line "
                           "has only %d column%s (delimiter %s)", path, (long long)r->line_no, st->id_col,
                           st->ncols, st->ncols == 1 ? "" : "s", delim_name(st->delim, dn, sizeof dn));
        st->nfeat = st->ncols - (o->label_col >= 0) - (st->id_col >= 0);
        if (st->nfeat == 0)
            return kd_fail(KD_ERR_FORMAT, "%s:line %lld: no feature columns, only the label (no %s on the line)",
                           path, (long long)r->line_no,
                           o->delimiter ? delim_name(st->delim, dn, sizeof dn) : "',', ';' or tab");
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

kd_csv_options kd_csv_options_default(void)
{
    kd_csv_options o = {0, 0, 0};
    return o;
}

kd_status kd_dataset_load_csv(const char *path, int label_col, int has_header,
                              const kd_shape *shape, kd_dataset **out)
{
    kd_csv_options o = {label_col, has_header, 0};
    return kd_dataset_load_csv_opts(path, &o, shape, out);
}

/* The ids gathered so far: their text one after another, NUL-terminated. */
typedef struct id_text {
    char *text;
    size_t used, cap;
} id_text;

/* Every sample's id as one block: n pointers, then the text they point into. */
static kd_status ids_block(const id_text *t, int64_t n, char ***ids)
{
    size_t ptrs = (size_t)n * sizeof(char *);
    char **block = kd_malloc(ptrs + t->used + 1, "the CSV ids");
    if (!block)
        return KD_ERR_NOMEM;
    char *text = (char *)block + ptrs;
    if (t->used)
        memcpy(text, t->text, t->used);
    for (int64_t i = 0, at = 0; i < n; i++) {
        block[i] = text + at;
        at += (int64_t)strlen(text + at) + 1;
    }
    *ids = block;
    return KD_OK;
}

static kd_status load_csv(const char *path, const kd_csv_options *o, int id_col, const kd_shape *shape,
                          kd_dataset **out, char ***ids)
{
    if (!out)
        return kd_fail(KD_ERR_INVALID, "load_csv: no output pointer");
    *out = NULL;
    KD_TRY(check_args(o, shape, "load_csv"));
    int label_col = o->label_col;
    if (ids && (id_col < 0 || id_col == label_col))
        return kd_fail(KD_ERR_INVALID, "load_csv: id column %d must be >= 0 and not the label column", id_col);
    id_text idt = {NULL, 0, 0};
    id_cell cell = {id_col, NULL, 0};

    kd_reader r;
    kd_status s = kd_reader_open(&r, path);
    if (s != KD_OK)
        return s;
    float *x = NULL;
    int32_t *y = NULL;
    size_t x_cap = 0, y_cap = 0;
    int64_t n = 0;
    csv_state st = {0, 0, ids ? id_col : -1, 0, 0};
    char *line;
    size_t len;

    if (o->has_header)
        s = kd_reader_next_line(&r, &line, &len);
    while (s == KD_OK) {
        s = next_data_line(&r, &st, o, shape, &line, &len);
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
        s = parse_line(&r, line, len, st.ncols, st.delim, label_col, ids ? &cell : NULL,
                       x + (size_t)n * (size_t)st.nfeat, &y[n]);
        if (s == KD_OK && ids) { /* the id's text, without surrounding blanks */
            while (cell.len && (cell.at[0] == ' ' || cell.at[0] == '\t'))
                cell.at++, cell.len--;
            while (cell.len && (cell.at[cell.len - 1] == ' ' || cell.at[cell.len - 1] == '\t' ||
                                cell.at[cell.len - 1] == '\r'))
                cell.len--;
            s = kd_grow_checked((void **)&idt.text, &idt.cap, idt.used + cell.len + 1, 1, "loading the ids", path,
                                (uint64_t)x_cap * sizeof *x);
            if (s == KD_OK) {
                memcpy(idt.text + idt.used, cell.at, cell.len);
                idt.used += cell.len;
                idt.text[idt.used++] = '\0';
            }
        }
        if (s == KD_OK)
            n++;
    }
    if (s == KD_OK && n == 0)
        s = no_samples(&r);
    kd_reader_close(&r);
    if (s == KD_OK && ids)
        s = ids_block(&idt, n, ids);
    free(idt.text);
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
    s = kd_dataset_adopt(n, shape ? shape : &flat, x, y, out);
    if (s != KD_OK && ids) {
        free(*ids);
        *ids = NULL;
    }
    return s;
}

kd_status kd_dataset_load_csv_opts(const char *path, const kd_csv_options *o, const kd_shape *shape,
                                   kd_dataset **out)
{
    return load_csv(path, o, -1, shape, out, NULL);
}

kd_status kd_dataset_load_csv_ids(const char *path, const kd_csv_options *o, int id_col, const kd_shape *shape,
                                  kd_dataset **out, char ***ids)
{
    if (!ids)
        return kd_fail(KD_ERR_INVALID, "load_csv_ids: no ids output pointer");
    *ids = NULL;
    return load_csv(path, o, id_col, shape, out, ids);
}

#define CSV_BLOCK_BYTES ((size_t)4 << 20)

kd_status kd_convert_csv_to_spool(const char *path, int label_col, int has_header, const kd_shape *shape,
                                  const char *spool_path, int64_t *count)
{
    kd_csv_options o = {label_col, has_header, 0};
    return kd_convert_csv_to_spool_opts(path, &o, shape, spool_path, count);
}

kd_status kd_convert_csv_to_spool_opts(const char *path, const kd_csv_options *o, const kd_shape *shape,
                                       const char *spool_path, int64_t *count)
{
    if (count)
        *count = 0;
    if (!spool_path)
        return kd_fail(KD_ERR_INVALID, "convert_csv: no spool path given");
    KD_TRY(check_args(o, shape, "convert_csv"));
    int label_col = o->label_col;
    kd_reader r;
    KD_TRY(kd_reader_open(&r, path));
    kd_spool_writer *w = NULL;
    float *x = NULL;
    int32_t *y = NULL;
    size_t block = 0, k = 0;
    csv_state st = {0, 0, -1, 0, 0};
    char *line;
    size_t len;
    kd_status s = o->has_header ? kd_reader_next_line(&r, &line, &len) : KD_OK;
    while (s == KD_OK) {
        s = next_data_line(&r, &st, o, shape, &line, &len);
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
        s = parse_line(&r, line, len, st.ncols, st.delim, label_col, NULL, x + k * (size_t)st.nfeat, &y[k]);
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

/* ------------------------------------------------------------- sniffing */
/* 1 when every cell of the line parses as a number. */
static int all_numbers(const char *s, size_t len, char delim)
{
    const char *p = s, *end = s + len;
    for (;;) {
        const char *cut = memchr(p, delim, (size_t)(end - p));
        const char *cell_end = cut ? cut : end;
        float v;
        if (kd_parse_float(p, cell_end, &v))
            return 0;
        if (!cut)
            return 1;
        p = cut + 1;
    }
}

kd_status kd_csv_sniff(const char *path, const kd_csv_options *o, kd_csv_layout *out)
{
    if (!out)
        return kd_fail(KD_ERR_INVALID, "csv_sniff: no output pointer");
    memset(out, 0, sizeof *out);
    KD_TRY(check_args(o, NULL, "csv_sniff"));
    kd_reader r;
    KD_TRY(kd_reader_open(&r, path));
    char *line = NULL;
    size_t len = 0;
    kd_status s = o->has_header ? kd_reader_next_line(&r, &line, &len) : KD_OK;
    int first_numeric = 0, found = 0;
    while (s == KD_OK && found < 2) {
        s = kd_reader_next_line(&r, &line, &len);
        if (s != KD_OK || !line)
            break;
        if (is_blank_line(line, len))
            continue;
        if (found == 0) {
            out->delimiter = o->delimiter ? o->delimiter : detect_delimiter(line, len);
            out->columns = count_columns(line, line + len, out->delimiter);
            first_numeric = all_numbers(line, len, out->delimiter);
        } else {
            out->header_likely = !o->has_header && !first_numeric && all_numbers(line, len, out->delimiter);
        }
        found++;
    }
    if (s == KD_OK && found == 0)
        s = no_samples(&r);
    kd_reader_close(&r);
    return s;
}
