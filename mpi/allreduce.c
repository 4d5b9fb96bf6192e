/* Weighted gradient sum over the workers, overlapped with backward.
 *
 * Backward computes the gradients from the last layer to the first, so the
 * end of the flat vector is final first. As in PyTorch DDP, the vector is
 * cut into buckets in that order and each bucket's MPI_Iallreduce starts as
 * soon as every gradient in it is final, while backward goes on below it;
 * the optimizer step waits for them all. The plan, made once from the
 * points where backward finishes a layer with parameters: a bucket starts
 * at such a point when at least KD_BUCKET_MIN_BYTES wait unsent above it
 * (one message per small layer would be latency-bound), none is larger than
 * bucket_bytes (4 MiB by default: big enough to run near the link's speed,
 * small enough to pipeline), and what is left goes after backward. Every
 * rank follows the same plan in the same order (collectives are matched by
 * order), a step without samples too. Scaling by the weight happens per
 * bucket, in place, before it is sent. */
#include <limits.h>
#include <stdlib.h>

#include "allreduce.h"
#include "error.h"
#include "world.h"

#define KD_BUCKET_BYTES_DEFAULT (4u << 20)
#define KD_BUCKET_MIN_BYTES (256u << 10)

typedef struct bucket {
    size_t lo, hi; /* [lo, hi) of the flat vector */
} bucket;

struct kd_allreduce {
    MPI_Comm comm;
    size_t n;            /* floats per vector */
    bucket *plan;        /* in start order: descending lo */
    int buckets;
    MPI_Request *reqs;   /* one per bucket */
    /* the step in flight */
    float *grads;
    float weight;
    int next;            /* the first bucket not started */
    int early;           /* started before finish() */
    int rc;              /* the first failed MPI call's code */
};

/* Split [lo, hi) into buckets of at most `cap` floats, from the top. */
static void add_range(kd_allreduce *ar, size_t lo, size_t hi, size_t cap)
{
    while (hi > lo) {
        size_t len = hi - lo < cap ? hi - lo : cap;
        ar->plan[ar->buckets++] = (bucket){hi - len, hi};
        hi -= len;
    }
}

kd_status kd_allreduce_create(MPI_Comm comm, size_t n, size_t bucket_bytes, const size_t *ready_at, int points,
                              kd_allreduce **out)
{
    *out = NULL;
    if (comm == MPI_COMM_NULL)
        return kd_fail(KD_ERR_INVALID, "allreduce: no communicator");
    size_t cap = (bucket_bytes ? bucket_bytes : KD_BUCKET_BYTES_DEFAULT) / sizeof(float);
    if (cap < 1)
        cap = 1;
    if (cap > INT_MAX)
        cap = INT_MAX;
    size_t min = KD_BUCKET_MIN_BYTES / sizeof(float) < cap ? KD_BUCKET_MIN_BYTES / sizeof(float) : cap;
    /* At most one range per point plus the rest, each cut into cap-sized pieces. */
    size_t most = n / cap + (size_t)(points > 0 ? points : 0) + 2;
    if (most > INT_MAX)
        return kd_fail(KD_ERR_INVALID, "allreduce: %zu buckets are too many (bucket of %zu floats)", most, cap);
    kd_allreduce *ar = kd_calloc(1, sizeof *ar, "allreduce");
    if (!ar)
        return KD_ERR_NOMEM;
    ar->comm = comm;
    ar->n = n;
    ar->plan = kd_malloc(sizeof *ar->plan * most, "allreduce buckets");
    ar->reqs = ar->plan ? kd_malloc(sizeof(MPI_Request) * most, "allreduce requests") : NULL;
    if (!ar->reqs) {
        kd_allreduce_free(ar);
        return KD_ERR_NOMEM;
    }
    size_t unsent = n;
    for (int i = 0; i < points; i++) {
        size_t at = ready_at[i];
        if (at < unsent && unsent - at >= min) {
            add_range(ar, at, unsent, cap);
            unsent = at;
        }
    }
    add_range(ar, 0, unsent, cap);
    for (int b = 0; b < ar->buckets; b++)
        ar->reqs[b] = MPI_REQUEST_NULL;
    ar->next = ar->buckets; /* nothing in flight */
    *out = ar;
    return KD_OK;
}

void kd_allreduce_free(kd_allreduce *ar)
{
    if (!ar)
        return;
    free(ar->plan);
    free(ar->reqs);
    free(ar);
}

void kd_allreduce_begin(kd_allreduce *ar, float *grads, double weight)
{
    ar->grads = grads;
    ar->weight = (float)weight;
    ar->next = 0;
    ar->early = 0;
    ar->rc = MPI_SUCCESS;
}

static void start(kd_allreduce *ar, int b)
{
    float *g = ar->grads + ar->plan[b].lo;
    size_t len = ar->plan[b].hi - ar->plan[b].lo;
    if (ar->weight != 1.0f)
        for (size_t i = 0; i < len; i++)
            g[i] *= ar->weight;
    int rc = ar->rc == MPI_SUCCESS
                 ? MPI_Iallreduce(MPI_IN_PLACE, g, (int)len, MPI_FLOAT, MPI_SUM, ar->comm, &ar->reqs[b])
                 : ar->rc;
    if (rc != MPI_SUCCESS) {
        ar->reqs[b] = MPI_REQUEST_NULL;
        if (ar->rc == MPI_SUCCESS)
            ar->rc = rc;
    }
}

void kd_allreduce_ready(kd_allreduce *ar, size_t first)
{
    while (ar->next < ar->buckets && ar->plan[ar->next].lo >= first) {
        start(ar, ar->next++);
        ar->early++;
    }
}

kd_status kd_allreduce_finish(kd_allreduce *ar)
{
    while (ar->next < ar->buckets)
        start(ar, ar->next++);
    /* Wait for what was started even after a failure, so no request outlives its buffer. */
    int wrc = MPI_Waitall(ar->buckets, ar->reqs, MPI_STATUSES_IGNORE);
    KD_TRY(kd_mpi_check(ar->rc, "allreduce of the gradients"));
    return kd_mpi_check(wrc, "waiting for the gradient allreduce");
}

kd_status kd_allreduce_weighted_sum(kd_allreduce *ar, float *grads, double weight)
{
    kd_allreduce_begin(ar, grads, weight);
    return kd_allreduce_finish(ar);
}

int kd_allreduce_buckets(const kd_allreduce *ar) { return ar->buckets; }
int kd_allreduce_started_early(const kd_allreduce *ar) { return ar->early; }
