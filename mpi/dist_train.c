/* kd_dist_train: the distributed driver around kd_train.
 *
 * Workers run the ordinary training loop on their part of every global
 * batch (part_index = worker index, part_count = workers) with an exchange
 * that either averages gradients by allreduce (sync) or talks to the
 * parameter server (async). Servers run kd_ps_serve until the workers are
 * done.
 *
 * Each step kd_train hands the exchange a step descriptor (this worker's
 * samples and the step's global count), which weights the allreduce.
 *
 * Checkpoints are written by worker 0 alone, through kd_train's save hook:
 * in async mode the parameters and optimizer state live on the servers and
 * must be gathered first. The state kd_train records holds the GLOBAL batch
 * (batch_size * workers), so a resume with a different number of workers
 * keeps the same global batch, the same steps per epoch and therefore the
 * same position in the epoch.
 *
 * Epoch records: with validation data or early stopping, each epoch's
 * training and validation sums are added up over the workers (one
 * allreduce of six numbers), so every worker records the whole run's
 * figures and early stopping ends every worker after the same epoch.
 * Without local data the validation set is the same file everywhere and
 * only the writer scores it; with local data each worker scores its own.
 *
 * Stopping early (kd_train_config.stop, e.g. a SIGTERM flag): sync workers
 * must stop at the same step, or the next allreduce waits forever. Every
 * step each worker contributes its wish to a non-blocking allreduce that
 * is read at the next step boundary, so the agreement costs no waiting and
 * all stop one step after the first wish. Async workers stop each on its
 * own (the servers serve until every worker is done). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "allreduce.h"
#include "backend.h"
#include "error.h"
#include "net.h"
#include "ps.h"
#include "train_hooks.h"
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
    const char *checkpoint_path; /* the caller's; written by worker 0 */
    kd_ps *ps;                   /* async */
    kd_exchange ps_exchange;
    kd_allreduce *ar;            /* sync */
#ifdef KD_HAVE_NCCL
    kd_nccl *nccl;               /* sync with every worker's network on a GPU */
#endif
    int64_t saved_step;          /* step of the last checkpoint written; -1 none */
    kd_stop_fn user_stop;        /* the caller's stop question */
    void *user_stop_user;
    MPI_Request stop_req;        /* sync: the agreement in flight, or MPI_REQUEST_NULL */
    int stop_wish, stop_any;     /* its buffers */
    /* Sync on the CPU: the allreduce overlaps backward (net->grads_ready).
     * A step "begins" at backward's first finished layer: the step's sample
     * count is summed (every rank, every step, so the collectives match),
     * then buckets start as backward finishes them; dist_step completes it. */
    int overlap, begun;
    int64_t step_mine, step_total;
    kd_status hook_status;       /* a failure inside the hook, reported by dist_step */
    kd_progress_fn user_progress; /* the caller's progress callback */
    void *user_progress_user;
    /* Global samples/s of the epoch so far: since epoch_t0, `global`
     * samples (sync: summed per step; async: server 0's count minus
     * ps_samples0). */
    double epoch_t0;
    int64_t global, ps_samples0;
} dist_run;

/* Worker 0 writes the state kd_train hands over (its batch size is the
 * global batch); other ranks do nothing. `gather`: in async mode first
 * fetch the parameters and optimizer state from the servers. */
static kd_status save_checkpoint(dist_run *r, const kd_train_state *st, int gather)
{
    if (!r->checkpoint_path || !kd_dist_is_writer(r->d))
        return KD_OK;
    if (r->ps && gather) {
        kd_status s = kd_net_to_host(r->net, KD_NET_PARAMS);
        if (s == KD_OK)
            s = kd_ps_gather(r->ps, kd_net_params(r->net), r->opt);
        if (s != KD_OK)
            return kd_fail_context(s, "gathering the model for a checkpoint");
    }
    KD_TRY(kd_checkpoint_save(r->checkpoint_path, r->net, r->opt, st));
    r->saved_step = st->step;
    return KD_OK;
}

/* kd_train's save hook (every checkpoint_every steps and at epoch ends). */
static kd_status dist_save(void *user, kd_net *net, kd_optim *opt, const kd_train_state *st)
{
    (void)net;
    (void)opt;
    return save_checkpoint(user, st, 1);
}

/* The overlapped step's start: this worker's samples (backward's batch)
 * and the step's total, summed over the workers, give the weight. */
static kd_status begin_step(dist_run *r, int64_t mine)
{
    double t0 = now_seconds();
    r->begun = 1;
    r->step_mine = mine;
    kd_status s = kd_mpi_check(MPI_Allreduce(&r->step_mine, &r->step_total, 1, MPI_INT64_T, MPI_SUM, r->d->workers),
                               "summing the batch sizes of a step");
    double weight = s == KD_OK && r->step_total > 0 ? (double)mine / (double)r->step_total : 0.0;
    kd_allreduce_begin(r->ar, kd_net_grads(r->net), weight);
    r->d->stats.exchange_seconds += now_seconds() - t0;
    return s;
}

/* net->grads_ready: gradients from `first` up are final; send their buckets. */
static void grads_ready(void *user, size_t first)
{
    dist_run *r = user;
    if (!r->begun) {
        kd_status s = begin_step(r, r->net->last_batch);
        if (s != KD_OK && r->hook_status == KD_OK)
            r->hook_status = s;
    }
    kd_allreduce_ready(r->ar, first);
}

/* Sync: average the gradients, each worker weighted by its share of the
 * step's global batch (summed here when only each worker knows its own,
 * with local data, or when the allreduce overlaps backward), then the same
 * optimizer step everywhere. Async: push and pull through the parameter
 * server. */
static kd_status dist_step(void *ctx, kd_net *net, kd_optim *opt, const kd_step *step)
{
    dist_run *r = ctx;
    double t0 = now_seconds();
    kd_status s = KD_OK;
    if (r->ar && r->overlap) {
        /* A step without samples ran no backward: it begins here. */
        if (!r->begun)
            s = begin_step(r, step->samples);
        r->begun = 0;
        kd_status f = kd_allreduce_finish(r->ar);
        s = s != KD_OK ? s : r->hook_status != KD_OK ? r->hook_status : f;
        r->hook_status = KD_OK;
        /* The sum must count what kd_train's batching says (a drift would skew the mean). */
        if (s == KD_OK && (r->step_mine != step->samples ||
                           (step->global_samples >= 0 && r->step_total != step->global_samples)))
            s = kd_fail(KD_ERR_STATE, "sync exchange: the step has %d of %lld samples here, the allreduce counted "
                        "%lld of %lld", step->samples, (long long)step->global_samples, (long long)r->step_mine,
                        (long long)r->step_total);
        r->global += r->step_total > 0 ? r->step_total : 0;
        r->d->stats.early_buckets += kd_allreduce_started_early(r->ar);
    } else if (r->ar) {
        int64_t mine = step->samples, total = step->global_samples;
        if (total < 0)
            s = kd_mpi_check(MPI_Allreduce(&mine, &total, 1, MPI_INT64_T, MPI_SUM, r->d->workers),
                             "summing the batch sizes of a step");
        r->global += total > 0 ? total : 0;
        double weight = total > 0 ? (double)mine / (double)total : 0.0;
#ifdef KD_HAVE_NCCL
        if (s == KD_OK && r->nccl) /* device to device; queued before the optimizer step */
            s = kd_nccl_weighted_sum(r->nccl, net, weight);
        else
#endif
        if (s == KD_OK && (s = kd_net_to_host(net, KD_NET_GRADS)) == KD_OK)
            s = kd_allreduce_weighted_sum(r->ar, kd_net_grads(net), weight);
    }
    if (r->ar) {
        r->d->stats.exchange_seconds += now_seconds() - t0;
        /* Where the network lives: device kernels on a GPU. */
        if (s == KD_OK)
            s = kd_net_optim_step(net, opt);
    } else {
        s = r->ps_exchange.step(r->ps_exchange.ctx, net, opt, step);
        r->d->stats.exchange_seconds += now_seconds() - t0;
    }
    if (s == KD_OK)
        r->d->stats.steps++;
    return s;
}

/* kd_train's stop question, asked after every step (see the top of the file). */
static int dist_stop(void *user)
{
    dist_run *r = user;
    int mine = r->user_stop(r->user_stop_user) != 0;
    if (!r->ar)
        return mine;
    if (r->stop_req != MPI_REQUEST_NULL) {
        /* A failed agreement stops too; the next collective reports the error. */
        if (MPI_Wait(&r->stop_req, MPI_STATUS_IGNORE) != MPI_SUCCESS || r->stop_any)
            return 1;
    }
    r->stop_wish = mine;
    if (MPI_Iallreduce(&r->stop_wish, &r->stop_any, 1, MPI_INT, MPI_MAX, r->d->workers, &r->stop_req) != MPI_SUCCESS)
        return 1;
    return 0;
}

/* Every progress report: the global rate first (the caller's callback may
 * read it from the stats, as the CLI's epoch line does), then the caller's. */
static int dist_progress(const kd_progress *p, void *user)
{
    dist_run *r = user;
    double t = now_seconds();
    int64_t global = r->ps ? kd_ps_samples(r->ps) - r->ps_samples0 : r->global;
    r->d->stats.global_samples_per_sec = t > r->epoch_t0 ? (double)global / (t - r->epoch_t0) : 0.0;
    if (p->epoch_done) {
        r->epoch_t0 = t;
        r->global = 0;
        r->ps_samples0 = r->ps ? kd_ps_samples(r->ps) : 0;
    }
    return r->user_progress(p, r->user_progress_user);
}

/* kd_train's epoch-end hook: the sums over every worker (see the top of the file). */
static kd_status dist_combine(void *user, kd_epoch_sums *sums)
{
    dist_run *r = user;
    double mine[6] = {sums->train_loss, sums->train_correct, sums->train_count,
                      sums->val_loss,   sums->val_correct,   sums->val_count};
    double all[6];
    KD_TRY(kd_mpi_check(MPI_Allreduce(mine, all, 6, MPI_DOUBLE, MPI_SUM, r->d->workers),
                        "adding up the epoch's figures over the workers"));
    *sums = (kd_epoch_sums){all[0], all[1], all[2], all[3], all[4], all[5]};
    return KD_OK;
}

static kd_status serve(dist_run *r)
{
    kd_status s = kd_ps_serve(r->ps);
    return s == KD_OK ? s : kd_fail_context(s, "parameter server");
}

static kd_status work(dist_run *r, const kd_dataset *train, const kd_train_config *cfg, kd_train_state *st,
                      int64_t steps_per_epoch)
{
    kd_dist *d = r->d;
    kd_exchange ex = {d->cfg.mode == KD_DIST_SYNC ? "allreduce" : "parameter-server", r, dist_step};
    kd_train_config wc = *cfg;
    wc.exchange = &ex;
    wc.part_index = d->worker_index;
    wc.part_count = d->num_workers;
    wc.local_data = d->cfg.local_data;
    wc.steps_per_epoch = steps_per_epoch;
    wc.checkpoint_path = NULL;
    wc.save = r->checkpoint_path ? dist_save : NULL; /* the writer saves, see the top of the file */
    wc.save_user = r;
    r->user_stop = cfg->stop;
    r->user_stop_user = cfg->stop_user;
    wc.stop = cfg->stop ? dist_stop : NULL;
    wc.stop_user = r;
    r->user_progress = cfg->progress;
    r->user_progress_user = cfg->progress_user;
    wc.progress = cfg->progress ? dist_progress : NULL;
    wc.progress_user = r;
    r->epoch_t0 = now_seconds();
    /* One evaluation suffices: sync workers hold identical weights and in
     * async mode only the writer's view is recorded. */
    if (!kd_dist_is_writer(d))
        wc.test = NULL;
    if (!kd_dist_is_writer(d) && !d->cfg.local_data)
        wc.val = NULL; /* the same set everywhere: scored once */
    kd_train_hooks hooks = {dist_combine, r};

    kd_status ts = kd_train_hooked(r->net, r->opt, train, &wc, st, cfg->val || cfg->patience > 0 ? &hooks : NULL);
    /* The last agreement, started after the last step (after a failure the
     * caller aborts every rank instead). */
    if (ts == KD_OK && r->stop_req != MPI_REQUEST_NULL)
        ts = kd_mpi_check(MPI_Wait(&r->stop_req, MPI_STATUS_IGNORE), "agreeing on a stop");
    KD_TRY(ts);
    if (r->ps) {
        /* Every push must be counted before the writer gathers the final model. */
        kd_status s = kd_mpi_check(MPI_Barrier(d->workers), "waiting for the other workers to finish");
        if (s == KD_OK && kd_dist_is_writer(d) && (s = kd_net_to_host(r->net, KD_NET_PARAMS)) == KD_OK)
            s = kd_ps_gather(r->ps, kd_net_params(r->net), r->opt);
        kd_status f = kd_ps_worker_finish(r->ps);
        KD_TRY(s == KD_OK ? f : s);
    }
    /* Final save (also when no epoch was left to run), already gathered. In
     * sync mode the last epoch-end save is already final. */
    if (r->ar && r->saved_step == st->step)
        return KD_OK;
    kd_status s = save_checkpoint(r, st, 0);
    return s == KD_OK ? s : kd_fail_context(s, "saving checkpoint");
}

kd_status kd_dist_steps_per_epoch(kd_dist *d, int64_t train_n, int batch_size, int64_t *out)
{
    if (!d || !out)
        return kd_fail(KD_ERR_INVALID, "kd_dist_steps_per_epoch: NULL argument");
    *out = 0;
    if (batch_size < 1)
        return kd_fail(KD_ERR_INVALID, "batch size must be >= 1, got %d", batch_size);
    int64_t steps = 0;
    if (d->cfg.local_data) {
        /* Every worker takes as many steps as the largest share needs. */
        int64_t mine = kd_dist_is_server(d) ? 0 : kd_steps_per_epoch(train_n, batch_size);
        KD_TRY(kd_mpi_check(MPI_Allreduce(&mine, &steps, 1, MPI_INT64_T, MPI_MAX, d->comm),
                            "agreeing on the steps per epoch"));
        if (steps < 1)
            return kd_fail(KD_ERR_INVALID, "every worker's training data is empty");
    } else {
        /* Servers hold no data: the first worker's size (all workers agree,
         * kd_dist_check_config) cut into global batches. */
        int64_t n = kd_dist_is_server(d) ? 0 : train_n;
        KD_TRY(kd_mpi_check(MPI_Bcast(&n, 1, MPI_INT64_T, d->servers, d->comm), "sharing the training-set size"));
        steps = kd_steps_per_epoch(n, (int64_t)batch_size * d->num_workers);
        if (steps < 1)
            return kd_fail(KD_ERR_INVALID, "the training data has no samples");
    }
    *out = steps;
    return KD_OK;
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
    /* The writer's destination, before the first step (kd_train checks only its own default save). */
    if (kd_dist_is_writer(d) && cfg->checkpoint_path)
        KD_TRY(kd_save_check_path(cfg->checkpoint_path));
    double t0 = now_seconds();
    dist_run r;
    memset(&r, 0, sizeof r);
    r.d = d;
    r.net = net;
    r.opt = opt;
    r.checkpoint_path = cfg->checkpoint_path;
    r.saved_step = -1;
    r.stop_req = MPI_REQUEST_NULL;
    size_t n = kd_net_param_count(net);
    /* Collective: with local data the steps per epoch are agreed by all ranks. */
    int64_t spe = 0;
    kd_status s = d->cfg.local_data ? kd_dist_steps_per_epoch(d, train ? train->n : 0, cfg->batch_size, &spe) : KD_OK;
    size_t *ready_at = NULL;
    int points = 0;
    if (s == KD_OK && d->cfg.mode == KD_DIST_SYNC) {
        /* Where backward finishes a layer with parameters, in its order. */
        ready_at = kd_malloc(sizeof *ready_at * (size_t)(net->num_layers > 0 ? net->num_layers : 1), "layer offsets");
        s = ready_at ? KD_OK : KD_ERR_NOMEM;
        for (int i = net->num_layers - 1; s == KD_OK && i >= 0; i--)
            if (net->layers[i].weight_count + net->layers[i].bias_count)
                ready_at[points++] = net->layers[i].weight_offset;
    }
    if (s == KD_OK && d->cfg.mode == KD_DIST_SYNC) {
        s = kd_allreduce_create(d->workers, n, d->cfg.bucket_bytes, ready_at, points, &r.ar);
        d->stats.exchange = "allreduce";
#ifdef KD_HAVE_NCCL
        /* Collective: NCCL only when every worker's network is on a GPU. */
        if (s == KD_OK)
            s = kd_nccl_create(d->workers, net, 0, &r.nccl);
        if (r.nccl)
            d->stats.exchange = "NCCL allreduce";
#endif
        /* The CPU's backward tells when gradients are final; a GPU's runs on
         * the device (NCCL, or a host copy after it). */
        r.overlap = d->cfg.overlap && net->backend == &kd_cpu_backend && !kd_dist_is_server(d);
#ifdef KD_HAVE_NCCL
        r.overlap = r.overlap && !r.nccl;
#endif
        if (r.overlap) {
            net->grads_ready = grads_ready;
            net->grads_ready_user = &r;
            d->stats.exchange = "allreduce overlapped with backward";
        }
        if (s == KD_OK)
            s = work(&r, train, cfg, st, spe);
        net->grads_ready = NULL; /* r ends here; the network lives on */
        net->grads_ready_user = NULL;
    } else if (s == KD_OK) {
        kd_ps_config pc;
        memset(&pc, 0, sizeof pc);
        pc.servers = d->servers;
        pc.max_staleness = d->cfg.max_staleness;
        pc.protocol = d->cfg.ps_protocol;
        /* Resuming: the servers' optimizer state and step count come from opt. */
        int resuming = st->step > 0 || kd_optim_steps(opt) > 0;
        if ((s = kd_net_to_host(net, KD_NET_PARAMS)) == KD_OK)
            s = kd_ps_create(d->comm, &pc, n, kd_optim_get_config(opt), kd_net_params(net), resuming ? opt : NULL, &r.ps);
        if (s == KD_OK) {
            d->stats.exchange = kd_ps_describe(r.ps);
            r.ps_exchange = kd_ps_exchange(r.ps);
            s = kd_dist_is_server(d) ? serve(&r) : work(&r, train, cfg, st, spe);
        }
    }
    d->stats.train_seconds += now_seconds() - t0;
    /* kd_ps_free is collective; after a failure the caller aborts instead. */
    if (s == KD_OK)
        kd_ps_free(r.ps);
    kd_allreduce_free(r.ar);
    free(ready_at);
#ifdef KD_HAVE_NCCL
    kd_nccl_free(r.nccl);
#endif
    return s;
}
