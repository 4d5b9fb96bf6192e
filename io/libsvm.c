/* LibSVM reader: "label idx:val idx:val ... # comment", 1-based strictly
 * ascending indices, absent features are 0. The sparse entries are kept
 * until the end because the width may only be known from the largest index. */
#include "kindling.h"

#include "error.h"
#include "reader_util.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef struct sparse_rows {
    int32_t *idx;      /* 0-based feature index of each entry */
    float *val;
    size_t nnz, idx_cap, val_cap;
    int64_t *row_end;  /* entries of row i are [row_end[i-1], row_end[i]) */
    int32_t *label;
    size_t row_cap, label_cap;
    int64_t n;
    int32_t max_index; /* largest 1-based index seen */
} sparse_rows;

static int is_blank(char c) { return c == ' ' || c == '\t'; }

static kd_status add_entry(sparse_rows *rows, int32_t idx, float val)
{
    KD_TRY(kd_grow((void **)&rows->idx, &rows->idx_cap, rows->nnz + 1, sizeof *rows->idx,
                   "LibSVM indices"));
    KD_TRY(kd_grow((void **)&rows->val, &rows->val_cap, rows->nnz + 1, sizeof *rows->val,
                   "LibSVM values"));
    rows->idx[rows->nnz] = idx;
    rows->val[rows->nnz] = val;
    rows->nnz++;
    return KD_OK;
}

/* Parses one non-empty line (comment already cut off) as the next row. */
static kd_status parse_line(const kd_reader *r, const char *p, const char *end, int num_features,
                            sparse_rows *rows)
{
    long long ln = (long long)r->line_no;
    char snip[48];
    int token = 0;
    int32_t prev = 0;
    while (p < end) {
        while (p < end && is_blank(*p))
            p++;
        if (p == end)
            break;
        const char *t = p;
        while (p < end && !is_blank(*p))
            p++;
        token++;
        const char *why;
        if (token == 1) {
            int32_t label;
            why = kd_parse_label(t, p, &label);
            if (why)
                return kd_fail(KD_ERR_FORMAT, "%s:line %lld, token 1 '%s': label %s", r->path, ln,
                               kd_snippet(t, p, snip, sizeof snip), why);
            KD_TRY(kd_grow((void **)&rows->label, &rows->label_cap, (size_t)rows->n + 1,
                           sizeof *rows->label, "LibSVM labels"));
            rows->label[rows->n] = label;
            continue;
        }
        const char *colon = memchr(t, ':', (size_t)(p - t));
        if (!colon || colon == t)
            return kd_fail(KD_ERR_FORMAT, "%s:line %lld, token %d '%s': expected index:value",
                           r->path, ln, token, kd_snippet(t, p, snip, sizeof snip));
        int64_t idx = 0;
        const char *q = t;
        while (q < colon && *q >= '0' && *q <= '9' && idx <= INT32_MAX)
            idx = idx * 10 + (*q++ - '0');
        if (q != colon || idx > INT32_MAX)
            return kd_fail(KD_ERR_FORMAT, "%s:line %lld, token %d '%s': index is not a positive "
                           "integer", r->path, ln, token, kd_snippet(t, p, snip, sizeof snip));
        if (idx == 0)
            return kd_fail(KD_ERR_FORMAT, "%s:line %lld, token %d '%s': index 0 (indices are "
                           "1-based)", r->path, ln, token, kd_snippet(t, p, snip, sizeof snip));
        if (idx <= prev)
            return kd_fail(KD_ERR_FORMAT, "%s:line %lld, token %d '%s': index %lld after %d "
                           "(indices must be strictly ascending)", r->path, ln, token,
                           kd_snippet(t, p, snip, sizeof snip), (long long)idx, prev);
        if (num_features > 0 && idx > num_features)
            return kd_fail(KD_ERR_FORMAT, "%s:line %lld, token %d '%s': index %lld > num_features "
                           "%d", r->path, ln, token, kd_snippet(t, p, snip, sizeof snip),
                           (long long)idx, num_features);
        float val;
        why = colon + 1 == p ? "missing" : kd_parse_float(colon + 1, p, &val);
        if (why)
            return kd_fail(KD_ERR_FORMAT, "%s:line %lld, token %d '%s': value %s", r->path, ln,
                           token, kd_snippet(t, p, snip, sizeof snip), why);
        prev = (int32_t)idx;
        if (prev > rows->max_index)
            rows->max_index = prev;
        KD_TRY(add_entry(rows, prev - 1, val));
    }
    KD_TRY(kd_grow((void **)&rows->row_end, &rows->row_cap, (size_t)rows->n + 1,
                   sizeof *rows->row_end, "LibSVM rows"));
    rows->row_end[rows->n] = (int64_t)rows->nnz;
    rows->n++;
    return KD_OK;
}

static void sparse_rows_free(sparse_rows *rows)
{
    free(rows->idx);
    free(rows->val);
    free(rows->row_end);
    free(rows->label);
}

kd_status kd_dataset_load_libsvm(const char *path, int num_features, kd_dataset **out)
{
    if (!out)
        return kd_fail(KD_ERR_INVALID, "load_libsvm: no output pointer");
    *out = NULL;
    if (num_features < 0)
        return kd_fail(KD_ERR_INVALID, "load_libsvm: num_features %d is negative (0 = infer)",
                       num_features);
    kd_reader r;
    KD_TRY(kd_reader_open(&r, path));
    sparse_rows rows;
    memset(&rows, 0, sizeof rows);
    kd_status s;
    for (;;) {
        char *line;
        size_t len;
        s = kd_reader_next_line(&r, &line, &len);
        if (s != KD_OK || !line)
            break;
        const char *end = line + len;
        const char *hash = memchr(line, '#', len);
        if (hash)
            end = hash;
        const char *p = line;
        while (p < end && is_blank(*p))
            p++;
        if (p == end)
            continue; /* blank or comment-only line */
        s = parse_line(&r, p, end, num_features, &rows);
        if (s != KD_OK)
            break;
    }
    if (s == KD_OK && rows.n == 0)
        s = kd_fail(KD_ERR_FORMAT, "%s: no samples (%s)", path,
                    r.line_no == 0 ? "empty file" : "only blank or comment lines");
    int nf = num_features > 0 ? num_features : rows.max_index;
    if (s == KD_OK && nf == 0)
        s = kd_fail(KD_ERR_FORMAT, "%s: no features on any line (pass num_features to set the "
                    "width)", path);
    kd_reader_close(&r);

    kd_dataset *ds = NULL;
    kd_shape shape = {1, {nf, 0, 0, 0}};
    if (s == KD_OK)
        s = kd_dataset_alloc(rows.n, &shape, &ds);
    if (s == KD_OK) {
        int64_t k = 0;
        for (int64_t i = 0; i < rows.n; i++) {
            float *row = ds->x + (size_t)i * (size_t)nf;
            for (; k < rows.row_end[i]; k++)
                row[rows.idx[k]] = rows.val[k];
            ds->y[i] = rows.label[i];
        }
        ds->num_classes = kd_labels_num_classes(ds->y, ds->n);
        *out = ds;
    }
    sparse_rows_free(&rows);
    return s;
}
