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

kd_status kd_dataset_load_csv(const char *path, int label_col, int has_header,
                              const kd_shape *shape, kd_dataset **out)
{
    if (!out)
        return kd_fail(KD_ERR_INVALID, "load_csv: no output pointer");
    *out = NULL;
    if (label_col < -1)
        return kd_fail(KD_ERR_INVALID, "load_csv: label column %d (use -1 for none)", label_col);
    if (shape && kd_shape_size(shape) == 0) {
        char sb[64];
        return kd_fail(KD_ERR_SHAPE, "load_csv: invalid sample shape %s",
                       kd_shape_str(shape, sb, sizeof sb));
    }

    kd_reader r;
    kd_status s = kd_reader_open(&r, path);
    if (s != KD_OK)
        return s;
    float *x = NULL;
    int32_t *y = NULL;
    size_t x_cap = 0, y_cap = 0;
    int64_t n = 0;
    int ncols = 0, nfeat = 0;
    int64_t blank_line = 0; /* first blank line seen; fine only at the end */
    char *line;
    size_t len;

    if (has_header)
        s = kd_reader_next_line(&r, &line, &len);
    while (s == KD_OK) {
        s = kd_reader_next_line(&r, &line, &len);
        if (s != KD_OK || !line)
            break;
        if (is_blank_line(line, len)) {
            if (!blank_line)
                blank_line = r.line_no;
            continue;
        }
        if (blank_line) {
            s = kd_fail(KD_ERR_FORMAT, "%s:line %lld: blank line before more data (line %lld)",
                        path, (long long)blank_line, (long long)r.line_no);
            break;
        }
        if (ncols == 0) { /* the first data line fixes the column count */
            ncols = count_columns(line, line + len);
            if (label_col >= ncols) {
                s = kd_fail(KD_ERR_FORMAT, "%s:line %lld: label column %d (0-based) but the line "
                            "has only %d columns", path, (long long)r.line_no, label_col, ncols);
                break;
            }
            nfeat = ncols - (label_col >= 0);
            if (nfeat == 0) {
                s = kd_fail(KD_ERR_FORMAT, "%s:line %lld: no feature columns, only the label",
                            path, (long long)r.line_no);
                break;
            }
            if (shape && kd_shape_size(shape) != (size_t)nfeat) {
                char sb[64];
                s = kd_fail(KD_ERR_SHAPE, "%s: shape %s has %zu values but the rows have %d "
                            "features", path, kd_shape_str(shape, sb, sizeof sb),
                            kd_shape_size(shape), nfeat);
                break;
            }
        }
        s = kd_grow((void **)&x, &x_cap, (size_t)(n + 1) * (size_t)nfeat, sizeof *x, "CSV features");
        if (s == KD_OK)
            s = kd_grow((void **)&y, &y_cap, (size_t)n + 1, sizeof *y, "CSV labels");
        if (s != KD_OK)
            break;
        y[n] = -1;
        s = parse_line(&r, line, len, ncols, label_col, x + (size_t)n * (size_t)nfeat, &y[n]);
        if (s == KD_OK)
            n++;
    }
    if (s == KD_OK && n == 0)
        s = kd_fail(KD_ERR_FORMAT, "%s: no samples (%s)", path,
                    r.line_no == 0 ? "empty file" : "no data lines");
    kd_reader_close(&r);
    if (s != KD_OK) {
        free(x);
        free(y);
        return s;
    }
    /* Give back the doubling slack. */
    float *xs = realloc(x, (size_t)n * (size_t)nfeat * sizeof *x);
    int32_t *ys = realloc(y, (size_t)n * sizeof *y);
    if (xs)
        x = xs;
    if (ys)
        y = ys;
    kd_shape flat = {1, {nfeat, 0, 0, 0}};
    return kd_dataset_adopt(n, shape ? shape : &flat, x, y, out);
}
