/* Parameter-server bandwidth probe (run by bench/bench_mpi.sh under mpirun
 * with 1 server and 1 worker): for vectors of 1, 10 and 100 MB, the time of
 * one push + pull through the server (kd_ps exchange: MPI_Accumulate of the
 * gradients, server SGD step, MPI get of the parameters) against memcpy of
 * the same bytes in the same process. Prints one line per size:
 *   ps_bandwidth MB=<size> pushpull_GBps=<x> memcpy_GBps=<y> ratio=<x/y>
 * where push+pull moves 2 x size bytes per step and memcpy size bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kindling_mpi.h"
#include "ps.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double memcpy_gbps(size_t bytes, int reps)
{
    char *a = malloc(bytes), *b = malloc(bytes);
    if (!a || !b) {
        free(a);
        free(b);
        return 0;
    }
    memset(a, 1, bytes);
    memset(b, 2, bytes); /* touch both before timing */
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = now_seconds();
        memcpy(b, a, bytes);
        t = now_seconds() - t;
        best = t < best ? t : best;
        a[r % bytes] = b[(r * 7) % bytes]; /* keep the copy observable */
    }
    free(a);
    free(b);
    return (double)bytes / best / 1e9;
}

static int fail(const char *what)
{
    fprintf(stderr, "bench_ps: %s: %s\n", what, kd_last_error());
    kd_mpi_abort(1);
    return 1;
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
        kd_ps_config pc = {1, -1, 0};
        kd_ps *ps = NULL;
        if (kd_ps_create(MPI_COMM_WORLD, &pc, kd_net_param_count(net), &oc, kd_net_params(net), NULL, &ps) != KD_OK)
            return fail("creating the parameter server");
        int reps = sizes_mb[i] >= 100 ? 5 : 20;
        if (kd_ps_is_server(ps)) {
            if (kd_ps_serve(ps) != KD_OK)
                return fail("serving");
        } else {
            kd_exchange ex = kd_ps_exchange(ps);
            memset(kd_net_grads(net), 0, bytes);
            if (ex.step(ex.ctx, net, NULL) != KD_OK) /* warm-up: first touch of every page */
                return fail("push+pull");
            double best = 1e30;
            for (int r = 0; r < reps; r++) {
                double t = now_seconds();
                if (ex.step(ex.ctx, net, NULL) != KD_OK)
                    return fail("push+pull");
                t = now_seconds() - t;
                best = t < best ? t : best;
            }
            if (kd_ps_worker_finish(ps) != KD_OK)
                return fail("finishing");
            double ps_gbps = 2.0 * (double)bytes / best / 1e9, mc = memcpy_gbps(bytes, reps);
            printf("ps_bandwidth MB=%d pushpull_GBps=%.2f memcpy_GBps=%.2f ratio=%.2f step_ms=%.2f\n", sizes_mb[i],
                   ps_gbps, mc, mc > 0 ? ps_gbps / mc : 0, best * 1e3);
            fflush(stdout);
        }
        kd_ps_free(ps);
        kd_net_free(net);
    }
    kd_mpi_finalize();
    return 0;
}
