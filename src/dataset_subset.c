/* Seeded subsets of a data set: a held-out validation split and a random
 * sample (kd_dataset_split, kd_dataset_sample in kindling.h). The chosen
 * samples are copied, in their original order, into new in-memory sets. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "rng.h"

/* Streams of the generator, so a split and a sample from the same seed
 * differ from each other and from the training order (batch.c). */
#define SPLIT_STREAM 0x5b117000ULL
#define SAMPLE_STREAM 0x5a3b1e00ULL

/* The samples whose `pick` entry equals `want`, copied in order. */
static kd_status copy_picked(const kd_dataset *ds, const unsigned char *pick, unsigned char want, int64_t count,
                             kd_dataset **out)
{
    KD_TRY(kd_dataset_alloc(count, &ds->shape, out));
    kd_dataset *o = *out;
    size_t floats = kd_shape_size(&ds->shape);
    int64_t k = 0;
    for (int64_t i = 0; i < ds->n; i++) {
        if (pick[i] != want)
            continue;
        memcpy(o->x + (size_t)k * floats, ds->x + (size_t)i * floats, floats * sizeof(float));
        o->y[k++] = ds->y ? ds->y[i] : -1;
    }
    o->num_classes = ds->num_classes;
    return KD_OK;
}

/* pick[i] = 1 for `count` samples drawn from (seed, stream), 0 for the rest. */
static kd_status choose(const kd_dataset *ds, int64_t count, uint64_t seed, uint64_t stream, unsigned char **pick)
{
    int64_t n = ds->n;
    int64_t *order = kd_malloc(sizeof *order * (size_t)n, "subset order");
    *pick = kd_calloc((size_t)n, 1, "subset marks");
    if (!order || !*pick) {
        free(order);
        free(*pick);
        *pick = NULL;
        return KD_ERR_NOMEM;
    }
    for (int64_t i = 0; i < n; i++)
        order[i] = i;
    kd_rng rng;
    kd_rng_seed(&rng, seed, stream);
    kd_rng_shuffle(&rng, order, n);
    for (int64_t i = 0; i < count; i++)
        (*pick)[order[i]] = 1;
    free(order);
    return KD_OK;
}

kd_status kd_dataset_split(const kd_dataset *ds, double fraction, uint64_t seed, kd_dataset **rest,
                           kd_dataset **held_out)
{
    if (!ds || !rest || !held_out)
        return kd_fail(KD_ERR_INVALID, "kd_dataset_split: NULL argument");
    *rest = *held_out = NULL;
    if (!(fraction > 0 && fraction < 1))
        return kd_fail(KD_ERR_INVALID, "the fraction to hold out must be between 0 and 1 (exclusive), got %g",
                       fraction);
    if (ds->n < 2)
        return kd_fail(KD_ERR_INVALID, "cannot split %lld sample%s into two non-empty parts", (long long)ds->n,
                       ds->n == 1 ? "" : "s");
    int64_t k = (int64_t)llround(fraction * (double)ds->n);
    k = k < 1 ? 1 : k > ds->n - 1 ? ds->n - 1 : k;
    unsigned char *pick = NULL;
    KD_TRY(choose(ds, k, seed, SPLIT_STREAM, &pick));
    kd_status s = copy_picked(ds, pick, 1, k, held_out);
    if (s == KD_OK)
        s = copy_picked(ds, pick, 0, ds->n - k, rest);
    free(pick);
    if (s != KD_OK) {
        kd_dataset_free(*held_out);
        kd_dataset_free(*rest);
        *rest = *held_out = NULL;
    }
    return s;
}

kd_status kd_dataset_sample(const kd_dataset *ds, int64_t n, uint64_t seed, kd_dataset **out)
{
    if (!ds || !out)
        return kd_fail(KD_ERR_INVALID, "kd_dataset_sample: NULL argument");
    *out = NULL;
    if (n < 1)
        return kd_fail(KD_ERR_INVALID, "a sample needs at least 1 sample, got %lld", (long long)n);
    if (ds->n < 1)
        return kd_fail(KD_ERR_INVALID, "cannot sample from an empty data set");
    if (n > ds->n)
        n = ds->n;
    unsigned char *pick = NULL;
    KD_TRY(choose(ds, n, seed, SAMPLE_STREAM, &pick));
    kd_status s = copy_picked(ds, pick, 1, n, out);
    free(pick);
    return s;
}
