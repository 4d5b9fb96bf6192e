/* Weighted gradient sum over the workers.
 *
 * The flat gradient vector is cut into fused buckets (4 MiB by default, as
 * one message per layer would be latency-bound for small layers and one
 * message for everything would leave nothing to pipeline). Every bucket's
 * MPI_Iallreduce is started before any is waited on, so the library can
 * pipeline them. Scaling by the weight happens first, in place. */
#include <limits.h>
#include <stdlib.h>

#include "allreduce.h"
#include "error.h"
#include "world.h"

#define KD_BUCKET_BYTES_DEFAULT (4u << 20)

struct kd_allreduce {
    MPI_Comm comm;
    size_t n;          /* floats per vector */
    size_t bucket;     /* floats per bucket */
    int buckets;
    MPI_Request *reqs;
};

kd_status kd_allreduce_create(MPI_Comm comm, size_t n, size_t bucket_bytes, kd_allreduce **out)
{
    *out = NULL;
    if (comm == MPI_COMM_NULL)
        return kd_fail(KD_ERR_INVALID, "allreduce: no communicator");
    size_t bucket = (bucket_bytes ? bucket_bytes : KD_BUCKET_BYTES_DEFAULT) / sizeof(float);
    if (bucket < 1)
        bucket = 1;
    if (bucket > INT_MAX)
        bucket = INT_MAX;
    size_t buckets = n ? (n + bucket - 1) / bucket : 0;
    if (buckets > INT_MAX)
        return kd_fail(KD_ERR_INVALID, "allreduce: %zu buckets are too many (bucket of %zu floats)", buckets, bucket);
    kd_allreduce *ar = kd_calloc(1, sizeof *ar, "allreduce");
    if (!ar)
        return KD_ERR_NOMEM;
    ar->comm = comm;
    ar->n = n;
    ar->bucket = bucket;
    ar->buckets = (int)buckets;
    ar->reqs = kd_malloc(sizeof(MPI_Request) * (buckets ? buckets : 1), "allreduce requests");
    if (!ar->reqs) {
        free(ar);
        return KD_ERR_NOMEM;
    }
    *out = ar;
    return KD_OK;
}

void kd_allreduce_free(kd_allreduce *ar)
{
    if (!ar)
        return;
    free(ar->reqs);
    free(ar);
}

kd_status kd_allreduce_weighted_sum(kd_allreduce *ar, float *grads, double weight)
{
    float w = (float)weight;
    if (w != 1.0f)
        for (size_t i = 0; i < ar->n; i++)
            grads[i] *= w;
    int started = 0, rc = MPI_SUCCESS;
    for (int b = 0; b < ar->buckets; b++) {
        size_t off = (size_t)b * ar->bucket;
        size_t count = ar->n - off < ar->bucket ? ar->n - off : ar->bucket;
        rc = MPI_Iallreduce(MPI_IN_PLACE, grads + off, (int)count, MPI_FLOAT, MPI_SUM, ar->comm, &ar->reqs[b]);
        if (rc != MPI_SUCCESS)
            break;
        started++;
    }
    /* Wait for what was started even after a failure, so no request outlives its buffer. */
    int wrc = started ? MPI_Waitall(started, ar->reqs, MPI_STATUSES_IGNORE) : MPI_SUCCESS;
    KD_TRY(kd_mpi_check(rc, "allreduce of the gradients"));
    return kd_mpi_check(wrc, "waiting for the gradient allreduce");
}
