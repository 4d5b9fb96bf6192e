/* The in-memory data set's internals (src/dataset.c): what the readers in
 * io/ use to hand over the buffers they filled, and how a memory-mapped
 * spool is held. Internal; the public side is kd_dataset in kindling.h. */
#ifndef KD_DATASET_H
#define KD_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "kindling.h"

/* Wraps already allocated buffers (malloc'd, n * size(shape) floats and n
 * labels) in a dataset, which takes ownership of them even on failure.
 * Sets num_classes from the labels. */
kd_status kd_dataset_adopt(int64_t n, const kd_shape *shape, float *x, int32_t *y,
                           kd_dataset **out);

/* 1 + the largest label, 0 when every label is -1. Labels must be below
 * INT32_MAX (the readers reject larger ones). */
int kd_labels_num_classes(const int32_t *y, int64_t n);

/* A data set whose x (and y) point into a read-only mapping of a spool
 * file: kd_dataset_free unmaps it, and frees x or y when they lie outside. */
struct kd_dataset_mapping {
    void *addr;
    size_t len;
};

#endif
