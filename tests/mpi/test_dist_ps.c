/* Async mode through kd_dist_train (the parameter server of mpi/ps_*.c):
 * staleness 0 with one worker equals one process; with two workers on
 * equal parts equals one process with the doubled batch; a run stopped
 * mid-epoch with 2 servers x 2 workers resumes on 1 server x 3 workers (the
 * shards re-split, the gathered optimizer state carries over) and still
 * matches; unbounded async with 3 workers learns. Needs 4 ranks. */
#include <stdio.h>

#include "dist_test_util.h"

#define TOL 1e-5

typedef struct ps_case {
    int ranks, servers, staleness, batch, epochs;
    int64_t n, stop_step;
    const char *ckpt;
    int resume;
    int reference_batch;   /* 0: no exact comparison */
    double min_accuracy;   /* on the training set, by the writer */
} ps_case;

static void ps_run(const ps_case *c)
{
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm comm = dist_sub_comm(c->ranks);
    if (comm == MPI_COMM_NULL)
        return;
    kd_dataset *ds = dist_blobs(c->n, 5);
    kd_optim_config oc = dist_momentum();
    kd_net *net = NULL;
    kd_optim *opt = NULL;
    kd_train_state st;
    dist_start(c->resume ? c->ckpt : NULL, &oc, &net, &opt, &st);
    kd_dist_config dc = kd_dist_config_default();
    dc.mode = KD_DIST_ASYNC;
    dc.servers = c->servers;
    dc.max_staleness = c->staleness;
    kd_dist *d = NULL;
    CHECK_OK(kd_dist_create(comm, &dc, &d));
    kd_train_config tc = kd_train_config_default();
    tc.epochs = c->epochs;
    tc.batch_size = c->batch;
    tc.seed = 11;
    tc.checkpoint_path = c->ckpt;
    int64_t stop = c->stop_step;
    if (stop) {
        tc.progress = dist_stop_at_step;
        tc.progress_user = &stop;
        tc.progress_interval = 1e-12;
    }
    if (d && net && opt) {
        CHECK_OK(kd_dist_check_config(d, net, opt, &tc, &st, ds->n));
        kd_status s = kd_dist_train(d, net, opt, kd_dist_is_server(d) ? NULL : ds, &tc, &st);
        CHECK(s == KD_OK, "rank %d: %s", rank, kd_last_error());
        if (s != KD_OK)
            MPI_Abort(MPI_COMM_WORLD, 1); /* a half-finished parameter server would hang the others */
        if (!kd_dist_is_server(d)) {
            int64_t G = (int64_t)c->batch * kd_dist_num_workers(d), spe = (c->n + G - 1) / G;
            int64_t want = stop ? stop : (int64_t)c->epochs * spe;
            CHECK(st.step == want, "worker %d ended at step %lld, wanted %lld", kd_dist_worker_index(d),
                  (long long)st.step, (long long)want);
        }
        if (kd_dist_is_writer(d) && c->reference_batch && !stop) {
            kd_net *ref = NULL;
            CHECK_OK(dist_reference(ds, &oc, c->reference_batch, c->epochs, &ref));
            double diff = ref ? dist_max_diff(kd_net_params(net), kd_net_params(ref), kd_net_param_count(net))
                              : INFINITY;
            CHECK(diff <= TOL, "%d server(s) x %d worker(s), staleness %d%s: differs from one process with batch %d by %g",
                  c->servers, kd_dist_num_workers(d), c->staleness, c->resume ? " (resumed)" : "", c->reference_batch,
                  diff);
            kd_net_free(ref);
        }
        if (kd_dist_is_writer(d)) {
            kd_optim *bopt = NULL;
            dist_check_checkpoint(c->ckpt, net, st.step, c->batch * kd_dist_num_workers(d), &bopt);
            /* Momentum state really came from the servers: nonzero after training. */
            size_t cnt = 0;
            const float *vel = bopt ? kd_optim_state(bopt, &cnt) : NULL;
            double norm = 0;
            for (size_t i = 0; vel && i < cnt; i++)
                norm += fabs(vel[i]);
            CHECK(norm > 0, "the checkpoint's momentum is all zero");
            if (c->min_accuracy > 0) {
                kd_eval_result er;
                CHECK_OK(kd_evaluate(net, ds, 64, &er));
                CHECK(er.accuracy >= c->min_accuracy, "async accuracy %.3f < %.3f", er.accuracy, c->min_accuracy);
                kd_eval_result_clear(&er);
            }
            kd_optim_free(bopt);
        }
    }
    kd_dist_free(d);
    kd_train_state_clear(&st);
    kd_optim_free(opt);
    kd_net_free(net);
    kd_dataset_free(ds);
    MPI_Comm_free(&comm);
}

int main(int argc, char **argv)
{
    int rank, size = dist_test_begin(&argc, &argv, &rank);
    if (!size)
        return 1;
    CHECK(size >= 4, "run with at least 4 ranks, got %d", size);
    if (size >= 4) {
        const ps_case cases[] = {
            /* ranks servers staleness batch epochs n stop ckpt resume ref_batch min_acc */
            {2, 1, 0, 8, 2, 150, 0, "dist_ps_1w.h5", 0, 8, 0},
            {4, 2, 0, 8, 2, 192, 0, "dist_ps_2w.h5", 0, 16, 0},
            {4, 2, 0, 12, 2, 192, 5, "dist_ps_resume.h5", 0, 0, 0},
            {4, 1, 0, 8, 2, 192, 0, "dist_ps_resume.h5", 1, 24, 0},
            /* Unbounded staleness has no accuracy floor: on a crowded host
             * (2 cores, ASan) a descheduled server sums a backlog of pushes
             * into a few huge steps, 3-5% of runs end at 0.6-0.86. The
             * floor is asserted with a bound, which holds workers back. */
            {4, 1, -1, 8, 3, 300, 0, "dist_ps_async.h5", 0, 0, 0},
            {4, 1, 2, 8, 3, 300, 0, "dist_ps_bounded.h5", 0, 0, 0.9},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            ps_run(&cases[i]);
            MPI_Barrier(MPI_COMM_WORLD);
        }
        if (rank == 0)
            for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
                remove(cases[i].ckpt);
    }
    return dist_test_end();
}
