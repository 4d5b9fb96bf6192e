/* Sync training with the allreduce overlapped with backward against the
 * allreduce after backward, in one run, alternating blocks (run by hand or
 * by bench/bench_spark.py under mpirun; every rank a worker).
 *
 * Each block trains NET (a preset, default lenet) for one epoch of SAMPLES
 * random 1x28x28 samples, batch 64 per worker, momentum SGD, the same
 * seeds every block, once with kd_dist_config.overlap = 1 and once = 0.
 * Rank 0 prints per block and then the medians:
 *   overlap_probe net=<n> workers=<W> overlap_step_ms=<m> plain_step_ms=<m>
 *     overlap_exchange_ms=<m> plain_exchange_ms=<m> early_buckets_per_step=<x> speedup=<plain/overlap>
 * (exchange: the time a step waited for the allreduce beyond what backward hid).
 * Usage: kindling_bench_overlap [NET=lenet] [SAMPLES=6400] [BLOCKS=5] [BUCKET_BYTES=0] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_stats.h"
#include "kindling_mpi.h"

static int fail(const char *what)
{
    fprintf(stderr, "bench_overlap: %s: %s\n", what, kd_last_error());
    kd_mpi_abort(1);
    return 1;
}

/* One epoch; (seconds per step, exchange seconds per step, early buckets). */
static int block(const char *net_name, kd_dataset *ds, int overlap, size_t bucket_bytes, double out[3])
{
    kd_net *net = NULL;
    kd_optim *opt = NULL;
    if (kd_net_create(net_name, 7, &net) != KD_OK)
        return fail("creating the network");
    kd_optim_config oc = kd_optim_config_default();
    oc.kind = KD_OPT_MOMENTUM;
    oc.lr = 0.01;
    if (kd_optim_create(&oc, kd_net_param_count(net), &opt) != KD_OK)
        return fail("creating the optimizer");
    kd_dist_config dc = kd_dist_config_default();
    dc.overlap = overlap;
    dc.bucket_bytes = bucket_bytes;
    kd_dist *d = NULL;
    if (kd_dist_create(MPI_COMM_WORLD, &dc, &d) != KD_OK)
        return fail("creating the run");
    kd_train_config tc = kd_train_config_default();
    tc.epochs = 1;
    tc.batch_size = 64;
    tc.seed = 3;
    kd_train_state st;
    kd_train_state_init(&st);
    if (kd_dist_train(d, net, opt, ds, &tc, &st) != KD_OK)
        return fail("training");
    kd_dist_stats s = kd_dist_get_stats(d);
    out[0] = s.train_seconds / (double)s.steps;
    out[1] = s.exchange_seconds / (double)s.steps;
    out[2] = (double)s.early_buckets / (double)s.steps;
    kd_train_state_clear(&st);
    kd_dist_free(d);
    kd_optim_free(opt);
    kd_net_free(net);
    return 0;
}

int main(int argc, char **argv)
{
    if (kd_mpi_init(&argc, &argv) != KD_OK)
        return fail("MPI start");
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const char *net_name = argc > 1 ? argv[1] : "lenet";
    int64_t samples = argc > 2 ? atol(argv[2]) : 6400;
    int blocks = argc > 3 ? atoi(argv[3]) : 5;
    size_t bucket_bytes = argc > 4 ? (size_t)atol(argv[4]) : 0;
    kd_set_threads(1);
    kd_shape sh = {3, {1, 28, 28, 0}};
    kd_dataset *ds = NULL;
    if (samples < 1 || blocks < 1 || kd_dataset_alloc(samples, &sh, &ds) != KD_OK)
        return fail("the data set");
    uint64_t x = 99;
    for (int64_t i = 0; i < samples * 784; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        ds->x[i] = (float)((x >> 40) & 0xffff) / 65536.0f;
    }
    for (int64_t i = 0; i < samples; i++)
        ds->y[i] = (int32_t)(i % 10);
    ds->num_classes = 10;
    double *v[2][3];
    for (int o = 0; o < 2; o++)
        for (int k = 0; k < 3; k++)
            v[o][k] = malloc(sizeof(double) * (size_t)blocks);
    for (int b = 0; b < blocks; b++) {
        for (int o = 1; o >= 0; o--) {
            double r[3];
            if (block(net_name, ds, o, bucket_bytes, r))
                return 1;
            for (int k = 0; k < 3; k++)
                v[o][k][b] = r[k];
            if (rank == 0)
                printf("overlap_probe block=%d overlap=%d step_ms=%.3f exchange_ms=%.3f early_buckets_per_step=%.2f\n",
                       b, o, r[0] * 1e3, r[1] * 1e3, r[2]);
        }
    }
    if (rank == 0) {
        double so = median(v[1][0], blocks), sp = median(v[0][0], blocks);
        printf("overlap_probe net=%s workers=%d overlap_step_ms=%.3f plain_step_ms=%.3f overlap_exchange_ms=%.3f "
               "plain_exchange_ms=%.3f early_buckets_per_step=%.2f speedup=%.3f\n",
               net_name, size, so * 1e3, sp * 1e3, median(v[1][1], blocks) * 1e3, median(v[0][1], blocks) * 1e3,
               median(v[1][2], blocks), sp / so);
    }
    for (int o = 0; o < 2; o++)
        for (int k = 0; k < 3; k++)
            free(v[o][k]);
    kd_dataset_free(ds);
    kd_mpi_finalize();
    return 0;
}
