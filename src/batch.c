/* Batching: epoch order, shuffle, a worker's part of a global batch, and
 * the gather into the batch buffers (see batch.h). */
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "error.h"
#include "rng.h"

int64_t kd_steps_per_epoch(int64_t samples, int64_t global_batch)
{
    if (samples < 1 || global_batch < 1)
        return 0;
    return (samples - 1) / global_batch + 1;
}

kd_status kd_batcher_init(kd_batcher *b, const kd_dataset *data, const kd_train_config *cfg)
{
    memset(b, 0, sizeof *b);
    b->data = data;
    b->batch = cfg->batch_size;
    b->parts = cfg->part_count > 0 ? cfg->part_count : 1;
    b->part = cfg->part_index;
    b->local = cfg->local_data != 0;
    /* Local data: this worker's own samples in batches of `batch`; else the
     * whole set in global batches. More steps may be asked for (uneven shares). */
    int64_t cut = b->local ? b->batch : (int64_t)b->batch * b->parts;
    int64_t need = kd_steps_per_epoch(data->n, cut);
    if (cfg->steps_per_epoch > 0 && cfg->steps_per_epoch < need)
        return kd_fail(KD_ERR_INVALID, "%lld steps per epoch cannot cover %lld samples in batches of %lld",
                       (long long)cfg->steps_per_epoch, (long long)data->n, (long long)cut);
    b->steps_per_epoch = cfg->steps_per_epoch > 0 ? cfg->steps_per_epoch : need;
    b->sample_floats = kd_shape_size(&data->shape);
    b->order = kd_malloc(sizeof(int64_t) * (size_t)data->n, "sample order");
    b->x = kd_malloc(sizeof(float) * b->sample_floats * (size_t)b->batch, "batch features");
    b->y = kd_malloc(sizeof(int32_t) * (size_t)b->batch, "batch labels");
    if (!b->order || !b->x || !b->y) {
        kd_batcher_free(b);
        return KD_ERR_NOMEM;
    }
    return KD_OK;
}

void kd_batcher_free(kd_batcher *b)
{
    free(b->order);
    free(b->x);
    free(b->y);
    b->order = NULL;
    b->x = NULL;
    b->y = NULL;
}

void kd_batcher_start_epoch(kd_batcher *b, uint64_t seed, int32_t epoch, int shuffle, int64_t first)
{
    int64_t n = b->data->n;
    for (int64_t i = 0; i < n; i++)
        b->order[i] = i;
    if (shuffle) {
        kd_rng rng;
        kd_rng_seed(&rng, seed, 0xe90c0000ULL + (uint64_t)epoch);
        kd_rng_shuffle(&rng, b->order, n);
    }
    b->next = first;
}

/* This worker's slice [*lo, *hi) of the epoch order at step k, and the
 * step's global sample count (-1 with local data). */
static int64_t slice(const kd_batcher *b, int64_t k, int64_t *lo, int64_t *hi)
{
    int64_t n = b->data->n;
    if (b->local) {
        int64_t start = k * b->batch < n ? k * b->batch : n;
        *lo = start;
        *hi = start + b->batch < n ? start + b->batch : n;
        return -1;
    }
    int64_t g = (int64_t)b->batch * b->parts;
    int64_t start = k * g < n ? k * g : n, end = start + g < n ? start + g : n, len = end - start;
    *lo = start + len * b->part / b->parts;
    *hi = start + len * (b->part + 1) / b->parts;
    return len;
}

int kd_batcher_next(kd_batcher *b, kd_step *step)
{
    if (b->next >= b->steps_per_epoch)
        return 0;
    int64_t lo, hi;
    step->index = b->next++;
    step->global_samples = slice(b, step->index, &lo, &hi);
    step->samples = (int32_t)(hi - lo);
    const kd_dataset *d = b->data;
    size_t in = b->sample_floats;
    for (int64_t j = 0; j < hi - lo; j++) {
        int64_t idx = b->order[lo + j];
        memcpy(b->x + (size_t)j * in, d->x + (size_t)idx * in, sizeof(float) * in);
        b->y[j] = d->y[idx];
    }
    return 1;
}

int64_t kd_batcher_epoch_samples(const kd_batcher *b)
{
    return b->local ? b->data->n : b->data->n / b->parts;
}

int64_t kd_batcher_global_batch(const kd_batcher *b)
{
    return (int64_t)b->batch * b->parts;
}

int64_t kd_batcher_resume_step(const kd_batcher *b, const kd_train_state *st)
{
    int64_t done = st->step - (int64_t)st->epoch * b->steps_per_epoch;
    if (st->batch_size != kd_batcher_global_batch(b) || done <= 0 || done > b->steps_per_epoch)
        return 0;
    return done;
}
