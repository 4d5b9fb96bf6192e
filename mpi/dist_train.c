/* kd_dist_train: the distributed driver around kd_train.
 *
 * Workers run the ordinary training loop on their part of every global
 * batch (part_index = worker index, part_count = workers) with an exchange
 * that either averages gradients by allreduce (sync) or talks to the
 * parameter server (async). Servers run kd_ps_serve until the workers are
 * done.
 *
 * Checkpoints are written by worker 0 alone, from this file rather than by
 * kd_train, for two reasons: in async mode the parameters and optimizer
 * state live on the servers and must be gathered first, and the file must
 * record the GLOBAL batch (batch_size * workers) so that a resume with a
 * different number of workers keeps the same global batch, the same steps
 * per epoch and therefore the same position in the epoch. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "allreduce.h"
#include "error.h"
#include "net.h"
#include "ps.h"
#include "world.h"
#ifdef KD_HAVE_NCCL
#include "nccl_allreduce.h"
#endif

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct dist_run {
    kd_dist *d;
    kd_net *net;
    kd_optim *opt;
    kd_train_state *st;
    const kd_train_config *user; /* the caller's config: checkpoint path, progress */
    kd_ps *ps;                   /* async */
    kd_exchange ps_exchange;
    kd_allreduce *ar;            /* sync */
#ifdef KD_HAVE_NCCL
    kd_nccl *nccl;               /* sync with every worker's network on a GPU */
#endif
    /* Where kd_train is in the epoch: mirrors its batching so each worker
     * knows its share of the global batch (src/train.c part_slice). */
    int64_t n, spe, k, global_batch, batch;
    int workers, part;
    kd_status save_status;       /* a failed save inside the progress callback */
    int64_t saved_step;          /* step of the last checkpoint written; -1 none */
} dist_run;

/* This worker's sample count and the whole global batch at step k of an
 * epoch. With local data only `mine` is known here (the total is summed
 * across workers by the caller). */
static void share_of_step(const dist_run *r, int64_t *mine, int64_t *total)
{
    if (r->d->cfg.local_data) {
        int64_t left = r->n - r->k * r->batch;
        *mine = left < 0 ? 0 : left < r->batch ? left : r->batch;
        *total = -1;
        return;
    }
    int64_t start = r->k * r->global_batch;
    int64_t end = start + r->global_batch < r->n ? start + r->global_batch : r->n;
    int64_t len = end - start;
    *mine = len * (r->part + 1) / r->workers - len * r->part / r->workers;
    *total = len;
}

/* Worker 0 writes `step` (kd_train may not have counted the current step
 * yet) with the global batch size. Other ranks do nothing. */
static kd_status save_checkpoint(dist_run *r, int64_t step, int gather)
{
    const char *path = r->user->checkpoint_path;
    if (!path || !kd_dist_is_writer(r->d))
        return KD_OK;
    if (r->ps && gather) {
        kd_status s = kd_ps_gather(r->ps, kd_net_params(r->net), r->opt);
        if (s != KD_OK)
            return kd_fail_context(s, "gathering the model for a checkpoint");
    }
    /* A GPU network's parameters and optimizer state come back to the host. */
    kd_status ss = kd_net_sync(r->net, r->opt);
    if (ss != KD_OK)
        return kd_fail_context(ss, "saving checkpoint");
    kd_train_state snap = *r->st; /* shallow: the history is only read */
    snap.step = step;
    snap.batch_size = (int32_t)r->global_batch;
    kd_status s = kd_checkpoint_save(path, r->net, r->opt, &snap);
    if (s != KD_OK)
        return kd_fail_context(s, "saving checkpoint");
    r->saved_step = step;
    return KD_OK;
}

static kd_status dist_step(void *ctx, kd_net *net, kd_optim *opt)
{
    dist_run *r = ctx;
    double t0 = now_seconds();
    kd_status s;
    if (r->ar) {
        int64_t mine, total;
        share_of_step(r, &mine, &total);
        if (total < 0)
            s = kd_mpi_check(MPI_Allreduce(&mine, &total, 1, MPI_INT64_T, MPI_SUM, r->d->workers),
                             "summing the batch sizes of a step");
        else
            s = KD_OK;
        if (s != KD_OK)
            return s;
        /* A drift between this cursor and kd_train would silently skew the mean. */
        if (mine > 0 && net->last_batch != mine)
            return kd_fail(KD_ERR_STATE, "sync exchange: expected %lld samples in this step, the network saw %d",
                           (long long)mine, net->last_batch);
        double weight = total > 0 ? (double)mine / (double)total : 0.0;
#ifdef KD_HAVE_NCCL
        if (r->nccl) /* device to device; queued before the optimizer step */
            s = kd_nccl_weighted_sum(r->nccl, net, weight);
        else
#endif
            s = kd_allreduce_weighted_sum(r->ar, kd_net_grads(net), weight);
        r->d->stats.exchange_seconds += now_seconds() - t0;
        /* Where the network lives: device kernels on a GPU. */
        if (s == KD_OK)
            s = kd_net_optim_step(net, opt);
    } else {
        s = r->ps_exchange.step(r->ps_exchange.ctx, net, opt);
        r->d->stats.exchange_seconds += now_seconds() - t0;
    }
    if (s != KD_OK)
        return s;
    r->k = r->k + 1 < r->spe ? r->k + 1 : 0;
    r->d->stats.steps++;
    int64_t done = r->st->step + 1; /* kd_train counts this step after we return */
    if (r->user->checkpoint_every > 0 && done % r->user->checkpoint_every == 0)
        return save_checkpoint(r, done, 1);
    return KD_OK;
}

/* Epoch ends: kd_train calls this after the epoch's record is appended. */
static int dist_progress(const kd_progress *p, void *user)
{
    dist_run *r = user;
    if (p->epoch_done && r->save_status == KD_OK) {
        r->save_status = save_checkpoint(r, r->st->step, 1);
        if (r->save_status != KD_OK)
            return 1;
    }
    return r->user->progress ? r->user->progress(p, r->user->progress_user) : 0;
}

static kd_status serve(dist_run *r)
{
    kd_status s = kd_ps_serve(r->ps);
    return s == KD_OK ? s : kd_fail_context(s, "parameter server");
}

static kd_status work(dist_run *r, const kd_dataset *train, const kd_train_config *cfg)
{
    kd_dist *d = r->d;
    kd_train_state *st = r->st;
    r->n = train->n;
    r->workers = d->num_workers;
    r->part = d->worker_index;
    r->global_batch = (int64_t)cfg->batch_size * d->num_workers;
    r->batch = cfg->batch_size;
    if (d->cfg.local_data) {
        /* Every worker takes as many steps as the largest share needs. */
        int64_t local = (r->n + r->batch - 1) / r->batch;
        KD_TRY(kd_mpi_check(MPI_Allreduce(&local, &r->spe, 1, MPI_INT64_T, MPI_MAX, d->workers),
                            "agreeing on the steps per epoch"));
        if (r->spe < 1)
            return kd_fail(KD_ERR_INVALID, "every worker's training set is empty");
    } else {
        r->spe = (r->n + r->global_batch - 1) / r->global_batch;
    }

    /* The state's batch size is the global batch (see the top of the file);
     * kd_train compares it with the per-worker batch to continue mid-epoch. */
    st->batch_size = st->batch_size == r->global_batch ? cfg->batch_size : 0;
    int64_t skip = 0;
    if (st->batch_size == cfg->batch_size && st->step > (int64_t)st->epoch * r->spe)
        skip = st->step - (int64_t)st->epoch * r->spe;
    r->k = skip < r->spe ? skip : 0;

    kd_exchange ex = {d->cfg.mode == KD_DIST_SYNC ? "allreduce" : "parameter-server", r, dist_step};
    kd_train_config wc = *cfg;
    wc.exchange = &ex;
    wc.part_index = d->cfg.local_data ? 0 : d->worker_index;
    wc.part_count = d->cfg.local_data ? 1 : d->num_workers;
    wc.steps_per_epoch = d->cfg.local_data ? r->spe : 0;
    wc.checkpoint_path = NULL; /* saved here, by the writer */
    wc.progress = dist_progress;
    wc.progress_user = r;
    wc.progress_interval = cfg->progress ? cfg->progress_interval : 0;
    /* One evaluation suffices: sync workers hold identical weights and in
     * async mode only the writer's view is recorded. */
    if (!kd_dist_is_writer(d))
        wc.test = NULL;

    kd_status s = kd_train(r->net, r->opt, train, &wc, st);
    st->batch_size = (int32_t)r->global_batch; /* back to the caller's (checkpoint) meaning */
    if (s == KD_OK)
        s = r->save_status;
    if (s != KD_OK)
        return s;
    if (r->ps) {
        /* Every push must be counted before the writer gathers the final model. */
        s = kd_mpi_check(MPI_Barrier(d->workers), "waiting for the other workers to finish");
        if (s == KD_OK && kd_dist_is_writer(d))
            s = kd_ps_gather(r->ps, kd_net_params(r->net), r->opt);
        kd_status f = kd_ps_worker_finish(r->ps);
        if (s == KD_OK)
            s = f;
        if (s != KD_OK)
            return s;
    }
    /* Final save (also when no epoch was left to run), already gathered. In
     * sync mode the last epoch-end save is already final. */
    if (r->ar && r->saved_step == st->step)
        return KD_OK;
    return save_checkpoint(r, st->step, 0);
}

kd_status kd_dist_train(kd_dist *d, kd_net *net, kd_optim *opt, const kd_dataset *train,
                        const kd_train_config *cfg, kd_train_state *st)
{
    if (!d || !net || !opt || !cfg || !st)
        return kd_fail(KD_ERR_INVALID, "kd_dist_train: NULL argument");
    if (!kd_dist_is_server(d) && !train)
        return kd_fail(KD_ERR_INVALID, "kd_dist_train: worker %d has no training set", d->worker_index);
    if (cfg->batch_size < 1)
        return kd_fail(KD_ERR_INVALID, "batch size must be >= 1, got %d", cfg->batch_size);
    double t0 = now_seconds();
    dist_run r;
    memset(&r, 0, sizeof r);
    r.d = d;
    r.net = net;
    r.opt = opt;
    r.st = st;
    r.user = cfg;
    r.saved_step = -1;
    size_t n = kd_net_param_count(net);
    kd_status s;
    if (d->cfg.mode == KD_DIST_SYNC) {
        s = kd_allreduce_create(d->workers, n, d->cfg.bucket_bytes, &r.ar);
#ifdef KD_HAVE_NCCL
        /* Collective: NCCL only when every worker's network is on a GPU. */
        if (s == KD_OK)
            s = kd_nccl_create(d->workers, net, 0, &r.nccl);
#endif
        if (s == KD_OK)
            s = work(&r, train, cfg);
    } else {
        kd_ps_config pc;
        memset(&pc, 0, sizeof pc);
        pc.servers = d->servers;
        pc.max_staleness = d->cfg.max_staleness;
        /* Resuming: the servers' optimizer state and step count come from opt. */
        int resuming = st->step > 0 || kd_optim_steps(opt) > 0;
        s = kd_ps_create(d->comm, &pc, n, kd_optim_get_config(opt), kd_net_params(net), resuming ? opt : NULL, &r.ps);
        if (s == KD_OK) {
            r.ps_exchange = kd_ps_exchange(r.ps);
            s = kd_dist_is_server(d) ? serve(&r) : work(&r, train, cfg);
        }
    }
    d->stats.train_seconds += now_seconds() - t0;
    /* kd_ps_free is collective; after a failure the caller aborts instead. */
    if (s == KD_OK)
        kd_ps_free(r.ps);
    kd_allreduce_free(r.ar);
#ifdef KD_HAVE_NCCL
    kd_nccl_free(r.nccl);
#endif
    return s;
}
