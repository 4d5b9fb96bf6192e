/* Weighted gradient averaging over the workers with allreduce on fused
 * buckets, started while backward still runs. Internal to mpi/;
 * mpi/dist_train.c builds the sync exchange on it. */
#ifndef KD_MPI_ALLREDUCE_H
#define KD_MPI_ALLREDUCE_H

#include <mpi.h>
#include <stddef.h>

#include "kindling.h"

typedef struct kd_allreduce kd_allreduce;

/* For vectors of n floats over `comm`; bucket_bytes 0 = 4 MiB.
 * `ready_at` (may be NULL): the points where backward finishes a layer
 * with parameters, as flat-vector offsets in the order backward reaches
 * them (descending): from such a point to the end every gradient is final.
 * The buckets follow them (see allreduce.c), the same on every rank. */
kd_status kd_allreduce_create(MPI_Comm comm, size_t n, size_t bucket_bytes, const size_t *ready_at, int points,
                              kd_allreduce **out);
void kd_allreduce_free(kd_allreduce *ar);

/* One step, in three calls (every rank makes the same sequence):
 *   kd_allreduce_begin(ar, grads, weight)  before backward writes grads
 *   kd_allreduce_ready(ar, first)          grads[first, n) are final: start
 *                                          the buckets inside (from backward)
 *   kd_allreduce_finish(ar)                start the rest, wait for all
 * Afterwards grads <- sum over ranks of (weight_r * grads_r). With weight_r
 * = this rank's share of the global batch, a per-rank batch mean becomes
 * the exact mean over the merged batch. A failed MPI call inside ready()
 * is reported by finish(). */
void kd_allreduce_begin(kd_allreduce *ar, float *grads, double weight);
void kd_allreduce_ready(kd_allreduce *ar, size_t first);
kd_status kd_allreduce_finish(kd_allreduce *ar);
/* All three at once (no overlap with backward). */
kd_status kd_allreduce_weighted_sum(kd_allreduce *ar, float *grads, double weight);
/* Buckets in the plan, and how many a step started before finish() (stats). */
int kd_allreduce_buckets(const kd_allreduce *ar);
int kd_allreduce_started_early(const kd_allreduce *ar);

#endif
