/* Parameter-server bandwidth probe (run by bench/bench_mpi.sh under mpirun
 * with 1 server and 1 worker on one host): for vectors of 1, 10 and 100 MB,
 * the time of one push + pull through the server (the kd_ps exchange:
 * MPI_Accumulate of the gradients into the server's window, then a read of
 * the server's published parameters) against memcpy in the same process.
 *
 * Convention (like for like): a push + pull moves the vector twice, from
 * the worker's gradient buffer into the server's accumulator and from the
 * server's parameters into the worker's parameter buffer: four distinct
 * buffers of `size` bytes. The memcpy baseline does the same: two copies of
 * `size` bytes between four distinct buffers (src1 -> dst1, src2 -> dst2).
 * Both bandwidths count 2 x size bytes per timed unit, so
 *   ratio = pushpull_GBps / memcpy_GBps = memcpy-twice time / push+pull time.
 * Also printed, for comparison with older runs: memcpy1_GBps, one copy of
 * `size` bytes between two buffers (at 1 MB both fit one core's L2, which
 * no push + pull can: its four buffers are twice that and half of them sit
 * in the other core's cache), and ratio1 = pushpull_GBps / memcpy1_GBps.
 * Each memcpy is timed right after an identical untimed one (warm caches:
 * the baseline's best case).
 *
 * Timing: repetitions interleave the measurements, so load from other
 * processes hits them alike; each reports its best repetition (the median
 * push+pull is printed too). Before each repetition the worker waits until
 * the server has applied the last push, so memcpy runs while the server is
 * idle and each push + pull starts as in training, where the server applies
 * a push while the worker computes the next gradients (the server's step
 * for this push still overlaps the pull). b2b_step_ms: the best of steps run
 * back to back without that wait (each one then also competes with the
 * server's step for the previous push), as the first version of this
 * probe measured.
 *
 * Prints one line per size:
 *   ps_bandwidth MB=<size> pushpull_GBps=<x> memcpy_GBps=<y> ratio=<x/y>
 *     step_ms=<best> median_step_ms=<m> memcpy1_GBps=<z> ratio1=<x/z>
 *     b2b_step_ms=<best back to back>
 * Usage: kindling_bench_ps [CHUNK] (elements per RMA call; default: the
 * parameter server's). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_stats.h"
#include "kindling_mpi.h"
#include "ps.h"

/* A step descriptor for direct exchange calls (the parameter server ignores it). */
static const kd_step ONE_STEP = {0, 1, 1};

static int fail(const char *what)
{
    fprintf(stderr, "bench_ps: %s: %s\n", what, kd_last_error());
    kd_mpi_abort(1);
    return 1;
}

/* Until the server has stepped on every push of this (only) worker: each
 * push is waited for before the next, so the server never merges two. */
static kd_status wait_applied(kd_ps *ps, float *params)
{
    for (;;) {
        kd_status s = kd_ps_pull(ps, params);
        if (s != KD_OK || kd_ps_version(ps) >= kd_ps_clock(ps))
            return s;
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
}

/* Worker side for one size: returns nonzero on failure. */
static int measure(kd_ps *ps, kd_net *net, int mb, size_t bytes, int reps)
{
    char *buf = malloc(4 * bytes);
    double *t_ps = malloc(sizeof(double) * (size_t)reps);
    if (!buf || !t_ps) {
        free(buf);
        free(t_ps);
        fprintf(stderr, "bench_ps: out of memory\n");
        return 1;
    }
    char *src1 = buf, *dst1 = buf + bytes, *src2 = buf + 2 * bytes, *dst2 = buf + 3 * bytes;
    memset(buf, 1, 4 * bytes); /* touch every page before timing */
    memset(kd_net_grads(net), 0, bytes);
    kd_exchange ex = kd_ps_exchange(ps);
    if (ex.step(ex.ctx, net, NULL, &ONE_STEP) != KD_OK) /* warm-up: first touch of the window pages */
        return fail("push+pull");
    double best_mc2 = 1e30, best_mc1 = 1e30;
    for (int r = 0; r < reps; r++) {
        if (wait_applied(ps, kd_net_params(net)) != KD_OK)
            return fail("waiting for the server");
        /* Each copy is timed right after an identical untimed one: the
         * baseline gets warm caches (its best case). */
        memcpy(dst1, src1, bytes);
        memcpy(dst2, src2, bytes);
        double t = now_seconds();
        memcpy(dst1, src1, bytes);
        memcpy(dst2, src2, bytes);
        t = now_seconds() - t;
        best_mc2 = t < best_mc2 ? t : best_mc2;
        memcpy(dst1, src1, bytes);
        t = now_seconds();
        memcpy(dst1, src1, bytes);
        t = now_seconds() - t;
        best_mc1 = t < best_mc1 ? t : best_mc1;
        src1[r % bytes] = (char)(dst1[(r * 7) % bytes] + dst2[(r * 13) % bytes]); /* keep the copies observable */
        t = now_seconds();
        if (ex.step(ex.ctx, net, NULL, &ONE_STEP) != KD_OK)
            return fail("push+pull");
        t_ps[r] = now_seconds() - t;
    }
    double best_b2b = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = now_seconds();
        if (ex.step(ex.ctx, net, NULL, &ONE_STEP) != KD_OK)
            return fail("push+pull");
        t = now_seconds() - t;
        best_b2b = t < best_b2b ? t : best_b2b;
    }
    qsort(t_ps, (size_t)reps, sizeof(double), cmp_double);
    double best = t_ps[0], median = t_ps[reps / 2];
    double ps_gbps = 2.0 * (double)bytes / best / 1e9;
    double mc2 = 2.0 * (double)bytes / best_mc2 / 1e9, mc1 = (double)bytes / best_mc1 / 1e9;
    printf("ps_bandwidth MB=%d pushpull_GBps=%.2f memcpy_GBps=%.2f ratio=%.2f step_ms=%.3f median_step_ms=%.3f "
           "memcpy1_GBps=%.2f ratio1=%.2f b2b_step_ms=%.3f\n",
           mb, ps_gbps, mc2, ps_gbps / mc2, best * 1e3, median * 1e3, mc1, ps_gbps / mc1, best_b2b * 1e3);
    fflush(stdout);
    free(buf);
    free(t_ps);
    return 0;
}

int main(int argc, char **argv)
{
    if (kd_mpi_init(&argc, &argv) != KD_OK)
        return fail("MPI start");
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2) {
        if (rank == 0)
            fprintf(stderr, "bench_ps: run with exactly 2 ranks (1 server, 1 worker)\n");
        kd_mpi_finalize();
        return 2;
    }
    size_t chunk = argc > 1 ? strtoul(argv[1], NULL, 10) : 0;
    const int sizes_mb[] = {1, 10, 100};
    for (size_t i = 0; i < sizeof sizes_mb / sizeof sizes_mb[0]; i++) {
        size_t bytes = (size_t)sizes_mb[i] * 1000 * 1000;
        int units = (int)(bytes / sizeof(float) / 1000);
        char spec[256];
        /* A model with exactly `bytes` of parameters: dense 1000 -> units, no bias. */
        snprintf(spec, sizeof spec,
                 "{\"input\": [1000], \"layers\": [{\"type\": \"dense\", \"units\": %d, \"bias\": false},"
                 " {\"type\": \"softmax\"}]}", units);
        kd_net *net = NULL;
        if (kd_net_create(spec, 1, &net) != KD_OK)
            return fail("creating the model");
        kd_optim_config oc = kd_optim_config_default();
        oc.kind = KD_OPT_SGD;
        oc.lr = 1e-6;
        kd_ps_config pc = {1, -1, chunk, KD_PS_AUTO};
        kd_ps *ps = NULL;
        if (kd_ps_create(MPI_COMM_WORLD, &pc, kd_net_param_count(net), &oc, kd_net_params(net), NULL, &ps) != KD_OK)
            return fail("creating the parameter server");
        int reps = sizes_mb[i] >= 100 ? 9 : sizes_mb[i] >= 10 ? 41 : 201;
        if (kd_ps_is_server(ps)) {
            if (kd_ps_serve(ps) != KD_OK)
                return fail("serving");
        } else {
            if (measure(ps, net, sizes_mb[i], bytes, reps))
                return 1;
            if (kd_ps_worker_finish(ps) != KD_OK)
                return fail("finishing");
        }
        kd_ps_free(ps);
        kd_net_free(net);
    }
    kd_mpi_finalize();
    return 0;
}
