/* Shared pieces of the MPI tests: a small learnable data set, a network
 * without random layers (so a worker's part of a batch computes exactly
 * what the merged batch computes), and single-process reference runs. */
#ifndef KD_DIST_TEST_UTIL_H
#define KD_DIST_TEST_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kindling_mpi.h"

#define DIST_SPEC "{\"input\": [10], \"layers\": [{\"type\": \"dense\", \"units\": 16}, {\"type\": \"tanh\"}," \
                  "{\"type\": \"dense\", \"units\": 3}, {\"type\": \"softmax\"}]}"

/* Three noisy blobs in 10-D, from a fixed seed (the same on every rank). */
static inline kd_dataset *dist_blobs(int64_t n, uint64_t seed)
{
    kd_shape sh = {1, {10, 0, 0, 0}};
    kd_dataset *ds = NULL;
    if (kd_dataset_alloc(n, &sh, &ds) != KD_OK)
        return NULL;
    uint64_t x = seed * 2654435761ULL + 1;
    for (int64_t i = 0; i < n; i++) {
        int c = (int)((i * 7) % 3);
        ds->y[i] = c;
        for (int j = 0; j < 10; j++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            float noise = (float)((x >> 40) & 0xffff) / 65536.0f - 0.5f;
            ds->x[i * 10 + j] = noise + (j % 3 == c ? 1.0f : 0.0f);
        }
    }
    ds->num_classes = 3;
    return ds;
}

static inline kd_optim_config dist_momentum(void)
{
    kd_optim_config oc = kd_optim_config_default();
    oc.kind = KD_OPT_MOMENTUM;
    oc.lr = 0.1;
    oc.momentum = 0.9;
    return oc;
}

/* One process training on the whole batch: the reference. */
static inline kd_status dist_reference(const kd_dataset *ds, const kd_optim_config *oc, int batch, int epochs,
                                kd_net **net_out)
{
    kd_net *net = NULL;
    kd_optim *opt = NULL;
    kd_train_state st;
    kd_train_state_init(&st);
    kd_status s = kd_net_create(DIST_SPEC, 7, &net);
    if (s == KD_OK)
        s = kd_optim_create(oc, kd_net_param_count(net), &opt);
    if (s == KD_OK) {
        kd_train_config tc = kd_train_config_default();
        tc.epochs = epochs;
        tc.batch_size = batch;
        tc.seed = 11;
        s = kd_train(net, opt, ds, &tc, &st);
    }
    kd_train_state_clear(&st);
    kd_optim_free(opt);
    if (s != KD_OK) {
        kd_net_free(net);
        return s;
    }
    *net_out = net;
    return KD_OK;
}

static inline double dist_max_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) /* NaN counts as infinitely far */
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

/* ------------------------------------------------- set-up and tear-down */

/* main()'s start: MPI up, one BLAS thread; returns the world size, or 0
 * (with the reason printed) when MPI could not start. */
static inline int dist_test_begin(int *argc, char ***argv, int *rank)
{
    if (kd_mpi_init(argc, argv) != KD_OK) {
        fprintf(stderr, "%s\n", kd_last_error());
        return 0;
    }
    kd_set_threads(1);
    int size;
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    return size;
}

/* main()'s end: the job fails when any rank saw a failed check. */
static inline int dist_test_end(void)
{
    int failed = check_summary(), any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    kd_mpi_finalize();
    return any;
}

/* A communicator of world ranks 0..ranks-1; MPI_COMM_NULL on the others. */
static inline MPI_Comm dist_sub_comm(int ranks)
{
    int rank;
    MPI_Comm comm;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_split(MPI_COMM_WORLD, rank < ranks ? 1 : MPI_UNDEFINED, rank, &comm);
    return comm;
}

/* A progress callback that stops training once `*(int64_t *)user` steps are done. */
static inline int dist_stop_at_step(const kd_progress *p, void *user)
{
    return p->step >= *(const int64_t *)user;
}

/* The run's starting point: the checkpoint when resuming, else DIST_SPEC
 * with seed 7 and a fresh optimizer (data seed 11). */
static inline void dist_start(const char *resume_from, const kd_optim_config *oc, kd_net **net, kd_optim **opt,
                              kd_train_state *st)
{
    kd_train_state_init(st);
    if (resume_from) {
        CHECK_OK(kd_checkpoint_load(resume_from, net, opt, st));
    } else {
        CHECK_OK(kd_net_create(DIST_SPEC, 7, net));
        if (*net)
            CHECK_OK(kd_optim_create(oc, kd_net_param_count(*net), opt));
        st->seed = 11;
    }
}

/* The writer's view of its checkpoint: it loads, records `step` and the
 * global batch, and holds exactly `net`'s weights. The loaded optimizer is
 * handed back through opt_out (may be NULL) for further checks. */
static inline void dist_check_checkpoint(const char *path, kd_net *net, int64_t step, int global_batch,
                                         kd_optim **opt_out)
{
    kd_net *back = NULL;
    kd_optim *bopt = NULL;
    kd_train_state bst;
    kd_train_state_init(&bst);
    CHECK_OK(kd_checkpoint_load(path, &back, &bopt, &bst));
    CHECK(bst.step == step, "%s: step %lld, want %lld", path, (long long)bst.step, (long long)step);
    CHECK(bst.batch_size == global_batch, "%s: batch %d, want the global %d", path, bst.batch_size, global_batch);
    if (back)
        CHECK(dist_max_diff(kd_net_params(back), kd_net_params(net), kd_net_param_count(net)) == 0,
              "%s holds other weights than the writer's", path);
    kd_net_free(back);
    kd_train_state_clear(&bst);
    if (opt_out)
        *opt_out = bopt;
    else
        kd_optim_free(bopt);
}

#endif
