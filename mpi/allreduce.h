/* Weighted gradient averaging over the workers with allreduce on fused
 * buckets. Internal to mpi/; mpi/dist_train.c builds the sync exchange on it. */
#ifndef KD_MPI_ALLREDUCE_H
#define KD_MPI_ALLREDUCE_H

#include <mpi.h>
#include <stddef.h>

#include "kindling.h"

typedef struct kd_allreduce kd_allreduce;

/* For vectors of n floats over `comm`; bucket_bytes 0 = 4 MiB. */
kd_status kd_allreduce_create(MPI_Comm comm, size_t n, size_t bucket_bytes, kd_allreduce **out);
void kd_allreduce_free(kd_allreduce *ar);
/* grads <- sum over ranks of (weight_r * grads_r), identical on every rank.
 * With weight_r = this rank's share of the global batch, a per-rank batch
 * mean becomes the exact mean over the merged batch. */
kd_status kd_allreduce_weighted_sum(kd_allreduce *ar, float *grads, double weight);

#endif
