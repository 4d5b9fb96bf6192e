/* Parameter-server exchange against MPI_Sendrecv of the same bytes, in one
 * run, between the same ranks over the same transport (run by
 * bench/bench_spark.py and by hand under any mpirun wiring).
 *
 * Rank 0 is the server, ranks 1..W the workers. Every step a worker waits
 * `gap` microseconds (its compute, during which the server may apply the
 * previous push), then exchanges N floats (the MLP preset's parameter
 * count unless given):
 *   sendrecv: MPI_Sendrecv of N floats to and from the server, which
 *             answers every worker each step (Irecv + Isend, Waitall);
 *   ps:       one step of the parameter-server exchange (kd_ps_exchange:
 *             push the gradients, pull the parameters), asynchronous,
 *             unbounded staleness, SGD.
 * The two alternate in blocks (BLOCKS of STEPS steps each), so load from
 * other processes hits both alike; each worker reports the median step of
 * each kind, and worker 0 prints one line:
 *   exchange_probe workers=W floats=N gap_us=G sendrecv_ms=<m> ps_ms=<m> ratio=<ps/sendrecv>
 * plus a line per block (block=<b> ...) and the cost of one Adam step per
 * parameter on this machine (for the cost model in bench/ps_cost_model.py):
 *   exchange_probe adam_ns_per_param=<x>
 * Usage: kindling_bench_exchange [STEPS=200] [GAP_US=500] [FLOATS|0] [BLOCKS=5] [auto|rma|msg]
 * (the last: the parameter server's protocol, see mpi/ps.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_stats.h"
#include "kindling_mpi.h"
#include "ps.h"

static int fail(const char *what)
{
    fprintf(stderr, "bench_exchange: %s: %s\n", what, kd_last_error());
    kd_mpi_abort(1);
    return 1;
}

/* The worker's compute: a busy wait, as a core running backward would be. */
static void compute(double us)
{
    double end = now_seconds() + us * 1e-6;
    while (now_seconds() < end) {
    }
}

/* One block of Sendrecv steps; workers return the median step in seconds. */
static double sendrecv_block(int rank, int size, float *out, float *in, size_t n, int steps, double gap,
                             double *t)
{
    int count = (int)n;
    if (rank == 0) {
        MPI_Request *req = malloc(sizeof *req * 2 * (size_t)size);
        float *bufs = malloc(sizeof(float) * n * (size_t)size);
        for (int s = 0; s < steps; s++) {
            for (int w = 1; w < size; w++) {
                MPI_Irecv(bufs + n * (size_t)w, count, MPI_FLOAT, w, 1, MPI_COMM_WORLD, &req[2 * w - 2]);
                MPI_Isend(out, count, MPI_FLOAT, w, 2, MPI_COMM_WORLD, &req[2 * w - 1]);
            }
            MPI_Waitall(2 * (size - 1), req, MPI_STATUSES_IGNORE);
        }
        free(req);
        free(bufs);
        return 0;
    }
    for (int s = 0; s < steps; s++) {
        compute(gap);
        double t0 = now_seconds();
        MPI_Sendrecv(out, count, MPI_FLOAT, 0, 1, in, count, MPI_FLOAT, 0, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        t[s] = now_seconds() - t0;
    }
    return median(t, steps);
}

/* One block of parameter-server steps (a fresh server each block). */
static kd_ps_protocol g_protocol = KD_PS_AUTO;
static const char *g_described = "";

static int ps_block(kd_net *net, size_t n, int steps, double gap, double *t, double *out_median)
{
    kd_optim_config oc = kd_optim_config_default();
    oc.kind = KD_OPT_SGD;
    oc.lr = 1e-6;
    kd_ps_config pc = {1, -1, 0, g_protocol};
    kd_ps *ps = NULL;
    if (kd_ps_create(MPI_COMM_WORLD, &pc, n, &oc, kd_net_params(net), NULL, &ps) != KD_OK)
        return fail("creating the parameter server");
    g_described = kd_ps_describe(ps);
    if (kd_ps_is_server(ps)) {
        if (kd_ps_serve(ps) != KD_OK)
            return fail("serving");
        *out_median = 0;
    } else {
        kd_exchange ex = kd_ps_exchange(ps);
        for (int s = 0; s < steps; s++) {
            compute(gap);
            double t0 = now_seconds();
            const kd_step step = {s, 64, -1};
            if (ex.step(ex.ctx, net, NULL, &step) != KD_OK)
                return fail("push+pull");
            t[s] = now_seconds() - t0;
        }
        *out_median = median(t, steps);
        if (kd_ps_worker_finish(ps) != KD_OK)
            return fail("finishing");
    }
    kd_ps_free(ps);
    return 0;
}

int main(int argc, char **argv)
{
    if (kd_mpi_init(&argc, &argv) != KD_OK)
        return fail("MPI start");
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int steps = argc > 1 ? atoi(argv[1]) : 200;
    double gap = argc > 2 ? atof(argv[2]) : 500.0;
    int blocks = argc > 4 ? atoi(argv[4]) : 5;
    if (argc > 5)
        g_protocol = strcmp(argv[5], "rma") == 0 ? KD_PS_RMA : strcmp(argv[5], "msg") == 0 ? KD_PS_MSG : KD_PS_AUTO;
    if (size < 2 || steps < 1 || blocks < 1) {
        if (rank == 0)
            fprintf(stderr, "bench_exchange: run with >= 2 ranks (1 server + workers); STEPS and BLOCKS >= 1\n");
        kd_mpi_finalize();
        return 2;
    }
    kd_net *net = NULL;
    if (argc > 3 && atol(argv[3]) > 0) {
        char spec[256]; /* FLOATS parameters (rounded up to even): dense FLOATS/2 -> 2, no bias */
        snprintf(spec, sizeof spec,
                 "{\"input\": [%ld], \"layers\": [{\"type\": \"dense\", \"units\": 2, \"bias\": false},"
                 " {\"type\": \"softmax\"}]}",
                 (atol(argv[3]) + 1) / 2);
        if (kd_net_create(spec, 1, &net) != KD_OK)
            return fail("creating the model");
    } else if (kd_net_create("mlp", 1, &net) != KD_OK) {
        return fail("creating the model");
    }
    size_t n = kd_net_param_count(net);
    float *in = malloc(sizeof(float) * n);
    double *t = malloc(sizeof(double) * (size_t)steps);
    double *sr = malloc(sizeof(double) * (size_t)blocks), *ps = malloc(sizeof(double) * (size_t)blocks);
    if (!in || !t || !sr || !ps)
        return fail("out of memory");
    memset(kd_net_grads(net), 0, sizeof(float) * n);
    if (rank == 1) { /* what a server's optimizer step costs per parameter (Adam) */
        kd_optim_config ac = kd_optim_config_default();
        ac.kind = KD_OPT_ADAM;
        kd_optim *adam = NULL;
        if (kd_optim_create(&ac, n, &adam) != KD_OK)
            return fail("creating Adam");
        float *p = kd_net_params(net), *g = kd_net_grads(net);
        double times[21];
        for (int r = 0; r < 21; r++) {
            double t0 = now_seconds();
            if (kd_optim_step(adam, p, g) != KD_OK)
                return fail("an Adam step");
            times[r] = now_seconds() - t0;
        }
        printf("exchange_probe adam_ns_per_param=%.3f\n", median(times, 21) * 1e9 / (double)n);
        kd_optim_free(adam);
    }
    /* Warm-up of both paths (connections, window pages). */
    sendrecv_block(rank, size, kd_net_grads(net), in, n, 5, 0, t);
    if (ps_block(net, n, 5, 0, t, &ps[0]))
        return 1;
    for (int b = 0; b < blocks; b++) {
        sr[b] = sendrecv_block(rank, size, kd_net_grads(net), in, n, steps, gap, t);
        if (ps_block(net, n, steps, gap, t, &ps[b]))
            return 1;
        if (rank == 1) {
            printf("exchange_probe block=%d sendrecv_ms=%.3f ps_ms=%.3f\n", b, sr[b] * 1e3, ps[b] * 1e3);
            fflush(stdout);
        }
    }
    if (rank == 1) {
        double msr = median(sr, blocks) * 1e3, mps = median(ps, blocks) * 1e3;
        printf("exchange_probe workers=%d floats=%zu gap_us=%.0f sendrecv_ms=%.3f ps_ms=%.3f ratio=%.2f ps=\"%s\"\n",
               size - 1, n, gap, msr, mps, msr > 0 ? mps / msr : 0.0, g_described);
        fflush(stdout);
    }
    free(in);
    free(t);
    free(sr);
    free(ps);
    kd_net_free(net);
    kd_mpi_finalize();
    return 0;
}
