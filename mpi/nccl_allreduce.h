/* Gradient averaging for --dist sync on GPUs: ncclAllReduce on the device
 * gradient vector in fused buckets, the NCCL counterpart of
 * mpi/allreduce.c with the same arithmetic (each rank scales its gradients
 * by its weight in float, then the ranks' vectors are summed). The NCCL
 * calls themselves are in the CUDA module (gpu/nccl_gpu.c); this half only
 * bootstraps them over MPI. Built into kindling_mpi only when both MPI and
 * NCCL are found (KD_HAVE_NCCL). */
#ifndef KD_MPI_NCCL_ALLREDUCE_H
#define KD_MPI_NCCL_ALLREDUCE_H

#include <mpi.h>
#include <stddef.h>

#include "kindling.h"

typedef struct kd_nccl kd_nccl;

/* Collective over comm. When every rank's network is on a GPU, creates an
 * NCCL communicator (rank 0's ncclUniqueId sent by MPI_Bcast) and sets
 * *out; when some rank's network is on the CPU, *out stays NULL on every
 * rank (the caller then uses MPI allreduce). bucket_bytes 0 = 25 MiB. */
kd_status kd_nccl_create(MPI_Comm comm, kd_net *net, size_t bucket_bytes, kd_nccl **out);
void kd_nccl_free(kd_nccl *nc);
/* grads <- sum over ranks of (weight_r * grads_r) on the device, queued on
 * the network's compute stream (the optimizer step that follows is ordered
 * after it). */
kd_status kd_nccl_weighted_sum(kd_nccl *nc, kd_net *net, double weight);

#endif
