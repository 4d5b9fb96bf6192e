/* LibSVM reader: "label idx:val idx:val ... # comment", 1-based strictly
 * ascending indices, absent features are 0. The sparse entries are kept
 * until the end because the width may only be known from the largest index. */
#include "kindling.h"

#include "dataset.h"
#include "error.h"
#include "memlimit.h"
#include "reader_util.h"
#include "spool_writer.h"

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
    int64_t max_index_line;
} sparse_rows;

/* Bytes the sparse buffers hold (for the memory checks). */
static uint64_t rows_bytes(const sparse_rows *r)
{
    return (uint64_t)r->idx_cap * sizeof *r->idx + (uint64_t)r->val_cap * sizeof *r->val +
           (uint64_t)r->row_cap * sizeof *r->row_end + (uint64_t)r->label_cap * sizeof *r->label;
}

static int is_blank(char c) { return c == ' ' || c == '\t'; }

static kd_status add_entry(const char *path, sparse_rows *rows, int32_t idx, float val)
{
    if (rows->nnz + 1 > rows->idx_cap || rows->nnz + 1 > rows->val_cap) {
        KD_TRY(kd_grow_checked((void **)&rows->idx, &rows->idx_cap, rows->nnz + 1, sizeof *rows->idx,
                               "loading the sparse entries", path, rows_bytes(rows)));
        KD_TRY(kd_grow_checked((void **)&rows->val, &rows->val_cap, rows->nnz + 1, sizeof *rows->val,
                               "loading the sparse entries", path, rows_bytes(rows)));
    }
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
            KD_TRY(kd_grow_checked((void **)&rows->label, &rows->label_cap, (size_t)rows->n + 1,
                                   sizeof *rows->label, "loading the labels", r->path, rows_bytes(rows)));
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
        if (prev > rows->max_index) {
            rows->max_index = prev;
            rows->max_index_line = ln;
        }
        KD_TRY(add_entry(r->path, rows, prev - 1, val));
    }
    KD_TRY(kd_grow_checked((void **)&rows->row_end, &rows->row_cap, (size_t)rows->n + 1,
                           sizeof *rows->row_end, "loading the rows", r->path, rows_bytes(rows)));
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

/* The next line holding data, as [*p, *end) without leading blanks or a
 * trailing '#' comment; blank and comment-only lines are skipped. *p is
 * NULL at the end of the file. */
static kd_status next_data_line(kd_reader *r, const char **p, const char **end)
{
    for (;;) {
        char *line;
        size_t len;
        kd_status s = kd_reader_next_line(r, &line, &len);
        *p = NULL;
        if (s != KD_OK || !line)
            return s;
        const char *e = line + len;
        const char *hash = memchr(line, '#', len);
        if (hash)
            e = hash;
        const char *q = line;
        while (q < e && is_blank(*q))
            q++;
        if (q < e) {
            *p = q;
            *end = e;
            return KD_OK;
        }
    }
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
        const char *p, *end;
        s = next_data_line(&r, &p, &end);
        if (s != KD_OK || !p)
            break;
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
    if (s == KD_OK) {
        /* The dense table is what a huge feature index blows up: check it
         * before allocating (1 sample with index 2147483647 is 8 GiB). */
        uint64_t per = (uint64_t)nf * 4 + 4;
        uint64_t dense = (uint64_t)rows.n > UINT64_MAX / per ? UINT64_MAX : (uint64_t)rows.n * per;
        uint64_t total = dense > UINT64_MAX - rows_bytes(&rows) ? UINT64_MAX : dense + rows_bytes(&rows);
        char what[256], hint[160] = "";
        if (num_features == 0)
            snprintf(hint, sizeof hint, "; the width is the largest feature index, %d on line %lld (pass the "
                     "feature count, --features, if that index is wrong)", rows.max_index,
                     (long long)rows.max_index_line);
        snprintf(what, sizeof what, "loading %lld samples x %d features as dense float32%s", (long long)rows.n, nf,
                 hint);
        s = kd_memory_check(total, dense, 0, path, what);
    }
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

#define SEG_FLOATS ((size_t)1 << 20)

/* One pass over the file, a row at a time (the sparse buffers hold one row).
 * Without a writer it only finds the width; with one it writes each row
 * densely in segments of SEG_FLOATS, so even a row of 2^31 features takes
 * bounded memory. */
static kd_status convert_pass(const char *path, int num_features, kd_spool_writer *w, float *seg,
                              int32_t *max_index, int64_t *max_line, int64_t *rows_seen)
{
    kd_reader r;
    KD_TRY(kd_reader_open(&r, path));
    sparse_rows rows;
    memset(&rows, 0, sizeof rows);
    kd_status s;
    for (;;) {
        const char *p, *end;
        s = next_data_line(&r, &p, &end);
        if (s != KD_OK || !p)
            break;
        rows.n = 0;
        rows.nnz = 0;
        if ((s = parse_line(&r, p, end, num_features, &rows)) != KD_OK)
            break;
        (*rows_seen)++;
        if (!w)
            continue;
        size_t k = 0;
        for (size_t off = 0; s == KD_OK && off < (size_t)num_features; off += SEG_FLOATS) {
            size_t m = (size_t)num_features - off < SEG_FLOATS ? (size_t)num_features - off : SEG_FLOATS;
            memset(seg, 0, m * sizeof *seg);
            for (; k < rows.nnz && (size_t)rows.idx[k] < off + m; k++)
                seg[(size_t)rows.idx[k] - off] = rows.val[k];
            s = kd_spool_writer_features(w, seg, m);
        }
        if (s == KD_OK)
            s = kd_spool_writer_labels(w, rows.label, 1);
        if (s != KD_OK)
            break;
    }
    if (s == KD_OK && *rows_seen == 0)
        s = kd_fail(KD_ERR_FORMAT, "%s: no samples (%s)", path,
                    r.line_no == 0 ? "empty file" : "only blank or comment lines");
    *max_index = rows.max_index;
    *max_line = rows.max_index_line;
    kd_reader_close(&r);
    sparse_rows_free(&rows);
    return s;
}

kd_status kd_convert_libsvm_to_spool(const char *path, int num_features, const char *spool_path, int64_t *count)
{
    if (count)
        *count = 0;
    if (num_features < 0)
        return kd_fail(KD_ERR_INVALID, "convert_libsvm: num_features %d is negative (0 = infer)", num_features);
    if (!spool_path)
        return kd_fail(KD_ERR_INVALID, "convert_libsvm: no spool path given");
    int32_t max_index = 0;
    int64_t max_line = 0, n = 0;
    if (num_features == 0) { /* first pass: the width */
        KD_TRY(convert_pass(path, 0, NULL, NULL, &max_index, &max_line, &n));
        if (max_index == 0)
            return kd_fail(KD_ERR_FORMAT, "%s: no features on any line (pass num_features to set the width)", path);
        num_features = max_index;
        n = 0;
    }
    float *seg = kd_malloc(SEG_FLOATS * sizeof *seg, "the LibSVM conversion buffer");
    if (!seg)
        return KD_ERR_NOMEM;
    kd_shape shape = {1, {num_features, 0, 0, 0}};
    kd_spool_writer *w = NULL;
    kd_status s = kd_spool_writer_open(spool_path, &shape, 1, &w);
    if (s == KD_OK)
        s = convert_pass(path, num_features, w, seg, &max_index, &max_line, &n);
    free(seg);
    if (s != KD_OK) {
        kd_spool_writer_abort(w);
        return s;
    }
    s = kd_spool_writer_finish(w);
    if (s == KD_OK && count)
        *count = n;
    return s;
}
