/* Batching: which samples each step of an epoch trains on, for one process
 * or for one worker of several, and the copy of them into the batch
 * buffers. The one owner of step sizing (kd_steps_per_epoch in kindling.h
 * is its public face). Internal; kd_train (src/train.c) drives it.
 *
 * An epoch's sample order (0..n-1, shuffled from (seed, epoch)) is cut into
 * global batches of batch * parts samples, and each global batch into
 * `parts` near-equal contiguous pieces, one per worker: W workers together
 * see what one process with a W-times larger batch sees. With local data
 * each worker holds only its own samples, so its part of a step is simply
 * the next `batch` of its own order, and the global count is the sum over
 * workers (which only the exchange can compute). */
#ifndef KD_BATCH_H
#define KD_BATCH_H

#include "kindling.h"

typedef struct kd_batcher {
    const kd_dataset *data;
    int batch;                /* samples per worker per step */
    int part, parts;          /* this worker of `parts` */
    int local;                /* data holds only this worker's samples */
    int64_t steps_per_epoch;
    int64_t *order;           /* this epoch's sample order (n entries) */
    int64_t next;             /* the epoch's next step */
    size_t sample_floats;
    float *x;                 /* the gathered batch: batch * sample_floats */
    int32_t *y;               /* its labels */
} kd_batcher;

/* Set up for `data` with the batching of cfg (batch_size, part_index,
 * part_count, local_data, steps_per_epoch; validated by the caller) and
 * allocate the order and batch buffers. kd_batcher_free releases them. */
kd_status kd_batcher_init(kd_batcher *b, const kd_dataset *data, const kd_train_config *cfg);
void kd_batcher_free(kd_batcher *b);

/* Start epoch `epoch`: its order (shuffled from (seed, epoch) if shuffle),
 * positioned at step `first` (a resumed run continues mid-epoch). */
void kd_batcher_start_epoch(kd_batcher *b, uint64_t seed, int32_t epoch, int shuffle, int64_t first);

/* The epoch's next step: fills *step and gathers this worker's samples of
 * it into b->x / b->y. Returns 0 when the epoch is over. */
int kd_batcher_next(kd_batcher *b, kd_step *step);

/* This worker's samples in one epoch. */
int64_t kd_batcher_epoch_samples(const kd_batcher *b);

/* Samples per step over all workers (batch * parts): what a checkpoint
 * records as the batch size. */
int64_t kd_batcher_global_batch(const kd_batcher *b);

/* Where a run from state `st` starts in its epoch: the step after the last
 * one done when st recorded the same global batch, else 0 (another
 * batching starts the interrupted epoch over). steps_per_epoch when every
 * step of the epoch ran but its record was not written (a stop after its
 * last step): the epoch then ends without steps, instead of training it
 * twice. Beyond that the position cannot be this data's: 0. */
int64_t kd_batcher_resume_step(const kd_batcher *b, const kd_train_state *st);

#endif
