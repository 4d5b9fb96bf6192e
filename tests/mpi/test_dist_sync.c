/* Sync mode (allreduce): W workers with batch b train exactly like one
 * process with batch W*b, including uneven and empty shares of the last
 * global batch; the writer's checkpoints record the global batch; a run
 * stopped mid-epoch resumes with a different number of workers and still
 * matches; a run stopped after any step (by the stop question every
 * worker is asked, as a SIGTERM asks it) and resumed ends with the
 * unbroken run's weights and optimizer state bit for bit; the allreduce
 * overlapped with backward (buckets sent as backward finishes them) gives
 * the same weights bit for bit as the one after backward. Needs at least 3
 * ranks (ctest runs 4). */
#include <stdio.h>

#include "dist_test_util.h"

#define N_SAMPLES 194 /* last global batch: 2 samples, so with 3 workers one share is empty */
#define TOL 1e-5

/* Train with `workers` ranks of world (the others only wait). */
static void sync_run(int workers, int batch, int epochs, const char *ckpt, int64_t stop_step, int resume)
{
    MPI_Comm comm = dist_sub_comm(workers);
    if (comm == MPI_COMM_NULL)
        return;
    kd_dataset *ds = dist_blobs(N_SAMPLES, 3);
    kd_optim_config oc = dist_momentum();
    kd_net *net = NULL;
    kd_optim *opt = NULL;
    kd_train_state st;
    dist_start(resume ? ckpt : NULL, &oc, &net, &opt, &st);
    if (resume)
        CHECK(st.batch_size == batch * workers, "checkpoint global batch %d, resuming with %d x %d", st.batch_size,
              workers, batch);
    kd_dist_config dc = kd_dist_config_default();
    dc.bucket_bytes = 256; /* several buckets even for this small model */
    kd_dist *d = NULL;
    CHECK_OK(kd_dist_create(comm, &dc, &d));
    kd_train_config tc = kd_train_config_default();
    tc.epochs = epochs;
    tc.batch_size = batch;
    tc.seed = 11;
    tc.checkpoint_path = ckpt;
    tc.checkpoint_every = stop_step ? 0 : 4;
    if (stop_step) {
        tc.progress = dist_stop_at_step;
        tc.progress_user = &stop_step;
        tc.progress_interval = 1e-12;
    }
    int64_t step0 = st.step;
    if (d && net && opt) {
        CHECK_OK(kd_dist_check_config(d, net, opt, &tc, &st, ds->n));
        CHECK_OK(kd_dist_train(d, net, opt, ds, &tc, &st));
        int64_t G = (int64_t)batch * workers, spe = (N_SAMPLES + G - 1) / G;
        int64_t want = stop_step ? stop_step : (int64_t)epochs * spe;
        CHECK(st.step == want, "worker %d ended at step %lld, wanted %lld", kd_dist_worker_index(d),
              (long long)st.step, (long long)want);
        CHECK(kd_dist_get_stats(d).steps == want - step0, "stats count %lld steps",
              (long long)kd_dist_get_stats(d).steps);
        if (!stop_step) {
            kd_net *ref = NULL;
            CHECK_OK(dist_reference(ds, &oc, batch * workers, epochs, &ref));
            size_t n = kd_net_param_count(net);
            double diff = ref ? dist_max_diff(kd_net_params(net), kd_net_params(ref), n) : INFINITY;
            CHECK(diff <= TOL, "W=%d b=%d%s: worker %d differs from one process with batch %d by %g", workers, batch,
                  resume ? " (resumed)" : "", kd_dist_worker_index(d), batch * workers, diff);
            kd_net_free(ref);
            /* Sensitivity: the per-worker batch alone gives different weights. */
            CHECK_OK(dist_reference(ds, &oc, batch, epochs, &ref));
            diff = ref ? dist_max_diff(kd_net_params(net), kd_net_params(ref), n) : 0;
            CHECK(diff > 1e-3, "W=%d: batch %d and %d runs should differ, max diff %g", workers, batch,
                  batch * workers, diff);
            kd_net_free(ref);
        }
        MPI_Barrier(comm);
        if (kd_dist_is_writer(d))
            dist_check_checkpoint(ckpt, net, st.step, batch * workers, NULL);
    }
    kd_dist_free(d);
    kd_train_state_clear(&st);
    kd_optim_free(opt);
    kd_net_free(net);
    kd_dataset_free(ds);
    MPI_Comm_free(&comm);
}

/* kd_stop_fn: this worker wishes to stop once `left` more steps have run. */
static int stop_after(void *user)
{
    int64_t *left = user;
    return --*left <= 0;
}

/* One run of `workers` x `batch` for `epochs`, from a fresh start or the
 * checkpoint; stop_wish > 0: worker 0 alone wishes to stop after that many
 * steps (the others stop with it). Leaves this rank's net and opt. */
static void sync_leg(MPI_Comm comm, const kd_dataset *ds, int batch, int epochs, const char *ckpt, int resume,
                     int64_t stop_wish, kd_net **net, kd_optim **opt, kd_train_state *st)
{
    kd_optim_config oc = dist_momentum();
    dist_start(resume ? ckpt : NULL, &oc, net, opt, st);
    kd_dist *d = NULL;
    kd_dist_config dc = kd_dist_config_default();
    dc.bucket_bytes = 256;
    CHECK_OK(kd_dist_create(comm, &dc, &d));
    kd_train_config tc = kd_train_config_default();
    tc.epochs = epochs;
    tc.batch_size = batch;
    tc.seed = 11;
    tc.checkpoint_path = ckpt;
    int64_t left = stop_wish > 0 && kd_dist_worker_index(d) == 0 ? stop_wish : INT64_MAX;
    tc.stop = stop_after;
    tc.stop_user = &left;
    if (d && *net && *opt)
        CHECK_OK(kd_dist_train(d, *net, *opt, ds, &tc, st));
    kd_dist_free(d);
}

/* The same run with the allreduce overlapped with backward and after it:
 * the same buckets, the same sums, bit for bit; the overlapped one really
 * started buckets during backward. */
static void sync_overlap_matches(int workers, int batch, int epochs)
{
    MPI_Comm comm = dist_sub_comm(workers);
    if (comm == MPI_COMM_NULL)
        return;
    kd_dataset *ds = dist_blobs(N_SAMPLES, 3);
    kd_net *nets[2] = {NULL, NULL};
    int64_t early[2] = {0, 0};
    const char *how[2] = {"", ""};
    for (int overlap = 0; overlap < 2; overlap++) {
        kd_optim_config oc = dist_momentum();
        kd_optim *opt = NULL;
        kd_train_state st;
        dist_start(NULL, &oc, &nets[overlap], &opt, &st);
        kd_dist_config dc = kd_dist_config_default();
        dc.bucket_bytes = 256; /* several buckets, some ready before backward ends */
        dc.overlap = overlap;
        kd_dist *d = NULL;
        CHECK_OK(kd_dist_create(comm, &dc, &d));
        kd_train_config tc = kd_train_config_default();
        tc.epochs = epochs;
        tc.batch_size = batch;
        tc.seed = 11;
        if (d && nets[overlap] && opt) {
            CHECK_OK(kd_dist_train(d, nets[overlap], opt, ds, &tc, &st));
            early[overlap] = kd_dist_get_stats(d).early_buckets;
            how[overlap] = kd_dist_get_stats(d).exchange;
        }
        kd_dist_free(d);
        kd_train_state_clear(&st);
        kd_optim_free(opt);
    }
    if (nets[0] && nets[1]) {
        double diff = dist_max_diff(kd_net_params(nets[0]), kd_net_params(nets[1]), kd_net_param_count(nets[0]));
        CHECK(diff == 0, "W=%d: overlapped allreduce differs from the plain one by %g", workers, diff);
        CHECK(early[1] > 0 && early[0] == 0, "buckets started during backward: %lld overlapped, %lld plain",
              (long long)early[1], (long long)early[0]);
        CHECK(strcmp(how[1], "allreduce overlapped with backward") == 0 && strcmp(how[0], "allreduce") == 0,
              "exchange named '%s' / '%s'", how[1], how[0]);
    }
    kd_net_free(nets[0]);
    kd_net_free(nets[1]);
    kd_dataset_free(ds);
    MPI_Comm_free(&comm);
}

/* Every stop point of 2 epochs with 3 workers (an empty share in each
 * epoch's last step), each resumed with the same workers. */
static void sync_resume_from_every_step(int workers, int batch, int epochs)
{
    MPI_Comm comm = dist_sub_comm(workers);
    if (comm == MPI_COMM_NULL)
        return;
    kd_dataset *ds = dist_blobs(N_SAMPLES, 3);
    const char *ckpt = "dist_sync_every.h5";
    kd_net *whole = NULL, *net = NULL;
    kd_optim *whole_opt = NULL, *opt = NULL;
    kd_train_state wst, st;
    sync_leg(comm, ds, batch, epochs, ckpt, 0, 0, &whole, &whole_opt, &wst);
    int64_t total = wst.step, spe = total / epochs, bad = 0;
    /* The wish after step s is agreed at step s + 1. */
    for (int64_t s = 1; s < total; s++) {
        sync_leg(comm, ds, batch, epochs, ckpt, 0, s, &net, &opt, &st);
        CHECK(st.step == s + 1, "a wish after step %lld stopped at step %lld", (long long)s, (long long)st.step);
        kd_train_state_clear(&st);
        kd_net_free(net);
        kd_optim_free(opt);
        MPI_Barrier(comm); /* the writer's checkpoint is complete */
        sync_leg(comm, ds, batch, epochs, ckpt, 1, 0, &net, &opt, &st);
        size_t n = 0, wn = 0;
        const float *os = opt ? kd_optim_state(opt, &n) : NULL, *ws = kd_optim_state(whole_opt, &wn);
        int same = net && os && n == wn && memcmp(os, ws, sizeof(float) * n) == 0 &&
                   dist_max_diff(kd_net_params(net), kd_net_params(whole), kd_net_param_count(whole)) == 0 &&
                   st.step == total && st.epoch == epochs && st.history_len == epochs;
        if (!same && bad++ < 3)
            CHECK(0, "resumed from step %lld (step %lld of epoch %lld): differs from the unbroken run, %d epochs "
                     "recorded", (long long)s + 1, (long long)(s % spe) + 1, (long long)(s / spe) + 1, st.history_len);
        else
            CHECK(same, "resumed from step %lld", (long long)s + 1);
        kd_train_state_clear(&st);
        kd_net_free(net);
        kd_optim_free(opt);
        net = NULL;
        opt = NULL;
        MPI_Barrier(comm);
    }
    kd_train_state_clear(&wst);
    kd_net_free(whole);
    kd_optim_free(whole_opt);
    kd_dataset_free(ds);
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (rank == 0)
        remove(ckpt);
    MPI_Comm_free(&comm);
}

int main(int argc, char **argv)
{
    int rank, size = dist_test_begin(&argc, &argv, &rank);
    if (!size)
        return 1;
    CHECK(size >= 3, "run with at least 3 ranks, got %d", size);
    char a[64], b[64];
    snprintf(a, sizeof a, "dist_sync_w2_%d.h5", 0);
    snprintf(b, sizeof b, "dist_sync_resume.h5");
    if (size >= 3) {
        sync_run(2, 8, 3, a, 0, 0);
        MPI_Barrier(MPI_COMM_WORLD);
        sync_run(3, 8, 3, "dist_sync_w3.h5", 0, 0);
        MPI_Barrier(MPI_COMM_WORLD);
        /* 2 x 12 stopped mid-epoch 1, resumed as 3 x 8: global batch 24 throughout. */
        sync_run(2, 12, 2, b, 5, 0);
        MPI_Barrier(MPI_COMM_WORLD);
        sync_run(3, 8, 2, b, 0, 1);
        MPI_Barrier(MPI_COMM_WORLD);
        sync_resume_from_every_step(3, 8, 2);
        MPI_Barrier(MPI_COMM_WORLD);
        sync_overlap_matches(3, 8, 2);
        MPI_Barrier(MPI_COMM_WORLD);
    }
    if (rank == 0) {
        remove(a);
        remove(b);
        remove("dist_sync_w3.h5");
    }
    return dist_test_end();
}
