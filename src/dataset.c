/* Shapes and the in-memory data set: allocation, ownership, validation. */
#include "kindling.h"

#include "dataset.h"
#include "error.h"
#include "memlimit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Per-sample shapes have rank 1..3; 0 for anything else so callers can
 * treat 0 as "not a valid shape". */
size_t kd_shape_size(const kd_shape *s)
{
    if (!s || s->rank < 1 || s->rank > KD_MAX_RANK)
        return 0;
    size_t size = 1;
    for (int i = 0; i < s->rank; i++) {
        if (s->dim[i] < 1 || size > SIZE_MAX / (size_t)s->dim[i])
            return 0;
        size *= (size_t)s->dim[i];
    }
    return size;
}

const char *kd_shape_str(const kd_shape *s, char *buf, size_t len)
{
    if (!buf || len == 0)
        return buf;
    buf[0] = '\0';
    if (!s || s->rank < 1 || s->rank > KD_MAX_RANK) {
        snprintf(buf, len, "(rank %d)", s ? s->rank : 0);
        return buf;
    }
    size_t used = 0;
    for (int i = 0; i < s->rank && used < len; i++) {
        int k = snprintf(buf + used, len - used, i ? "x%d" : "%d", s->dim[i]);
        if (k < 0)
            break;
        used += (size_t)k;
    }
    return buf;
}

/* Checks a per-sample shape and returns its size through *size. */
static kd_status check_sample_shape(const kd_shape *shape, size_t *size)
{
    if (!shape)
        return kd_fail(KD_ERR_INVALID, "dataset: no sample shape given");
    if (shape->rank < 1 || shape->rank > 3)
        return kd_fail(KD_ERR_SHAPE, "dataset: sample shape has rank %d; expected 1 (features) "
                                     "or up to 3 (channels, height, width)", shape->rank);
    for (int i = 0; i < shape->rank; i++)
        if (shape->dim[i] < 1)
            return kd_fail(KD_ERR_SHAPE, "dataset: sample shape dimension %d is %d; must be >= 1",
                           i, shape->dim[i]);
    *size = kd_shape_size(shape);
    if (*size == 0)
        return kd_fail(KD_ERR_SHAPE, "dataset: sample shape is too large");
    return KD_OK;
}

kd_status kd_dataset_alloc(int64_t n, const kd_shape *shape, kd_dataset **out)
{
    if (!out)
        return kd_fail(KD_ERR_INVALID, "dataset: no output pointer");
    *out = NULL;
    if (n < 0)
        return kd_fail(KD_ERR_INVALID, "dataset: sample count %lld is negative", (long long)n);
    size_t size;
    KD_TRY(check_sample_shape(shape, &size));
    if ((uint64_t)n > SIZE_MAX / sizeof(float) / size ||
        (uint64_t)n > SIZE_MAX / sizeof(int32_t)) {
        char sb[64];
        return kd_fail(KD_ERR_NOMEM, "dataset: %lld samples of shape %s do not fit in memory",
                       (long long)n, kd_shape_str(shape, sb, sizeof sb));
    }
    /* calloc of more than there is succeeds lazily and the OOM killer
     * strikes later, while the data are written: refuse it here instead. */
    uint64_t fbytes = (uint64_t)n * size * sizeof(float), lbytes = (uint64_t)n * sizeof(int32_t);
    uint64_t bytes = fbytes > UINT64_MAX - lbytes ? UINT64_MAX : fbytes + lbytes;
    const char *source;
    uint64_t avail = kd_memory_headroom(0, &source);
    if (bytes > avail) {
        char sb[64], need[32], have[32];
        return kd_fail(KD_ERR_NOMEM, "dataset: %lld samples of shape %s need %s, but only %s is available (%s)",
                       (long long)n, kd_shape_str(shape, sb, sizeof sb), kd_format_bytes(bytes, need, sizeof need),
                       kd_format_bytes(avail, have, sizeof have), source);
    }
    kd_dataset *ds = kd_calloc(1, sizeof *ds, "a dataset");
    if (!ds)
        return KD_ERR_NOMEM;
    ds->x = kd_calloc((size_t)n * size, sizeof(float), "dataset features");
    ds->y = ds->x ? kd_malloc((size_t)n * sizeof(int32_t), "dataset labels") : NULL;
    if (!ds->y) {
        kd_dataset_free(ds);
        return KD_ERR_NOMEM;
    }
    for (int64_t i = 0; i < n; i++)
        ds->y[i] = -1;
    ds->n = n;
    ds->shape = *shape;
    for (int i = shape->rank; i < KD_MAX_RANK; i++)
        ds->shape.dim[i] = 0;
    ds->num_classes = 0;
    *out = ds;
    return KD_OK;
}

void kd_dataset_free(kd_dataset *ds)
{
    if (!ds)
        return;
    struct kd_dataset_mapping *m = ds->mapping;
    if (m) {
        const char *lo = m->addr, *hi = lo + m->len;
        if (!((const char *)ds->x >= lo && (const char *)ds->x < hi))
            free(ds->x);
        if (!((const char *)ds->y >= lo && (const char *)ds->y < hi))
            free(ds->y);
        munmap(m->addr, m->len);
        free(m);
    } else {
        free(ds->x);
        free(ds->y);
    }
    free(ds);
}

kd_status kd_dataset_adopt(int64_t n, const kd_shape *shape, float *x, int32_t *y,
                           kd_dataset **out)
{
    *out = NULL;
    size_t size;
    kd_status s = check_sample_shape(shape, &size);
    kd_dataset *ds = s == KD_OK ? kd_calloc(1, sizeof *ds, "a dataset") : NULL;
    if (!ds) {
        free(x);
        free(y);
        return s != KD_OK ? s : KD_ERR_NOMEM;
    }
    ds->n = n;
    ds->shape = *shape;
    for (int i = shape->rank; i < KD_MAX_RANK; i++)
        ds->shape.dim[i] = 0;
    ds->x = x;
    ds->y = y;
    ds->num_classes = kd_labels_num_classes(y, n);
    *out = ds;
    return KD_OK;
}

/* num_classes > 0: training/evaluation, every label must be in
 * [0, num_classes) (so -1, "no label", is rejected).
 * num_classes == 0: prediction input, labels are not looked at. */
kd_status kd_dataset_validate(const kd_dataset *ds, int num_classes)
{
    if (!ds)
        return kd_fail(KD_ERR_INVALID, "validate: no dataset");
    if (num_classes < 0)
        return kd_fail(KD_ERR_INVALID, "validate: num_classes %d is negative", num_classes);
    size_t size = kd_shape_size(&ds->shape);
    if (size == 0 || ds->n < 0 || (ds->n > 0 && (!ds->x || !ds->y)))
        return kd_fail(KD_ERR_INVALID, "validate: dataset is not initialised (n %lld, rank %d)",
                       (long long)ds->n, ds->shape.rank);
    for (int64_t i = 0; i < ds->n; i++) {
        if (num_classes > 0) {
            int32_t label = ds->y[i];
            if (label == -1)
                return kd_fail(KD_ERR_INVALID, "sample %lld: no label (-1), but training and "
                               "evaluation need labels in [0, %d]",
                               (long long)i, num_classes - 1);
            if (label < 0 || label >= num_classes)
                return kd_fail(KD_ERR_INVALID, "sample %lld: label %d outside the %d classes [0, %d]",
                               (long long)i, label, num_classes, num_classes - 1);
        }
        const float *row = ds->x + (size_t)i * size;
        for (size_t j = 0; j < size; j++) {
            if (!isfinite(row[j]))
                return kd_fail(KD_ERR_NUMERIC, "sample %lld, feature %zu: %s", (long long)i, j,
                               isnan(row[j]) ? "NaN" : row[j] > 0 ? "+Inf" : "-Inf");
        }
    }
    return KD_OK;
}

int kd_labels_num_classes(const int32_t *y, int64_t n)
{
    int32_t max = -1;
    for (int64_t i = 0; i < n; i++)
        if (y[i] > max)
            max = y[i];
    return max + 1;
}
