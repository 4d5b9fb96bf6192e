/* The training loop, the same for every mode. A step is five calls, as in
 * llm.c: next batch (src/batch.c), forward, loss, backward, and the
 * exchange (local optimizer, parameter server or allreduce); around them
 * the epoch's metrics (validation and test scores), early stopping, the
 * save hook and progress. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "error.h"
#include "net.h"
#include "train_hooks.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static kd_status local_step(void *ctx, kd_net *net, kd_optim *opt, const kd_step *step)
{
    (void)ctx;
    (void)step;
    if (!opt)
        return kd_fail(KD_ERR_INVALID, "local training needs an optimizer");
    /* Where the network lives: on a GPU the update runs in device kernels. */
    return kd_net_optim_step(net, opt);
}

static const kd_exchange local_exchange = {"local", NULL, local_step};

kd_train_config kd_train_config_default(void)
{
    kd_train_config c;
    memset(&c, 0, sizeof c);
    c.epochs = 5;
    c.batch_size = 64;
    c.seed = 42;
    c.shuffle = 1;
    c.part_index = 0;
    c.part_count = 1;
    return c;
}

static kd_status check_config(const kd_net *net, const kd_optim *opt, const kd_dataset *train,
                              const kd_train_config *cfg, const kd_train_state *st)
{
    if (cfg->epochs < 0)
        return kd_fail(KD_ERR_INVALID, "epochs must be >= 0, got %d", cfg->epochs);
    if (cfg->batch_size < 1)
        return kd_fail(KD_ERR_INVALID, "batch size must be >= 1, got %d", cfg->batch_size);
    if (cfg->checkpoint_every < 0)
        return kd_fail(KD_ERR_INVALID, "checkpoint interval must be >= 0 steps, got %lld",
                       (long long)cfg->checkpoint_every);
    if (cfg->part_count < 0 || cfg->part_index < 0 || (cfg->part_count > 0 && cfg->part_index >= cfg->part_count))
        return kd_fail(KD_ERR_INVALID, "data part %d of %d is out of range", cfg->part_index, cfg->part_count);
    if (cfg->steps_per_epoch < 0)
        return kd_fail(KD_ERR_INVALID, "steps per epoch must be >= 0, got %lld", (long long)cfg->steps_per_epoch);
    if (cfg->patience < 0)
        return kd_fail(KD_ERR_INVALID, "patience must be >= 0 epochs, got %d", cfg->patience);
    if (!(cfg->min_delta >= 0) || !isfinite(cfg->min_delta))
        return kd_fail(KD_ERR_INVALID, "min_delta must be a number >= 0, got %g", cfg->min_delta);
    if (cfg->progress_every < 0)
        return kd_fail(KD_ERR_INVALID, "progress_every must be >= 0 steps, got %lld", (long long)cfg->progress_every);
    /* An empty local share is fine when the steps are set from outside. */
    if (train->n < 1 && cfg->steps_per_epoch == 0)
        return kd_fail(KD_ERR_INVALID, "the training set is empty");
    char a[64], b[64];
    if (kd_shape_size(&train->shape) != kd_shape_size(&net->input))
        return kd_fail(KD_ERR_SHAPE, "training samples have shape %s (%zu values) but the network expects %s (%zu)",
                       kd_shape_str(&train->shape, a, sizeof a), kd_shape_size(&train->shape),
                       kd_shape_str(&net->input, b, sizeof b), kd_shape_size(&net->input));
    if (cfg->test && kd_shape_size(&cfg->test->shape) != kd_shape_size(&net->input))
        return kd_fail(KD_ERR_SHAPE, "test samples have shape %s but the network expects %s",
                       kd_shape_str(&cfg->test->shape, a, sizeof a), kd_shape_str(&net->input, b, sizeof b));
    if (cfg->val && kd_shape_size(&cfg->val->shape) != kd_shape_size(&net->input))
        return kd_fail(KD_ERR_SHAPE, "validation samples have shape %s but the network expects %s",
                       kd_shape_str(&cfg->val->shape, a, sizeof a), kd_shape_str(&net->input, b, sizeof b));
    if (opt && kd_optim_param_count(opt) != net->param_count)
        return kd_fail(KD_ERR_SHAPE, "the optimizer is for %zu parameters but the network has %zu",
                       kd_optim_param_count(opt), net->param_count);
    if (st->epoch < 0 || st->step < 0)
        return kd_fail(KD_ERR_INVALID, "training state has a negative epoch or step");
    KD_TRY(kd_dataset_validate(train, net->num_classes));
    if (cfg->test) {
        kd_status s = kd_dataset_validate(cfg->test, net->num_classes);
        if (s != KD_OK)
            return kd_fail_context(s, "test set");
    }
    if (cfg->val) {
        kd_status s = kd_dataset_validate(cfg->val, net->num_classes);
        if (s != KD_OK)
            return kd_fail_context(s, "validation set");
    }
    return KD_OK;
}

/* The default save hook (kd_checkpoint_save brings a device's values back itself). */
static kd_status save_to_path(void *user, kd_net *net, kd_optim *opt, const kd_train_state *st)
{
    return kd_checkpoint_save((const char *)user, net, opt, st);
}

/* What one kd_train call carries from step to step. */
typedef struct train_run {
    kd_net *net;
    kd_optim *opt;
    const kd_train_config *cfg;
    kd_train_state *st;
    const kd_exchange *ex;
    const kd_train_hooks *hooks;  /* NULL: none */
    kd_save_fn save;              /* NULL: no checkpoints */
    void *save_user;
    kd_batcher batches;
    double t_run, last_report;    /* seconds */
    int64_t run_samples, run_steps_done, run_steps_total;
    /* The current epoch. */
    int32_t epoch;
    double t_epoch, loss_sum;
    int64_t seen, correct;
    int32_t last_samples;         /* the last step's samples, still in the batch buffers */
} train_run;

/* A diverged model is never saved. The loss only shows it at the next
 * forward pass, after the update that broke the weights; so before a save
 * the step's own batch goes through the updated network again (inference
 * mode: no dropout, no batch-norm update) and its output must be finite. */
static kd_status check_before_save(train_run *r)
{
    if (r->last_samples < 1)
        return KD_OK;
    kd_net *net = r->net;
    kd_status s = kd_net_forward(net, r->batches.x, r->last_samples, 0);
    const float *p = s == KD_OK ? kd_net_output(net) : NULL;
    if (s == KD_OK && !p)
        s = KD_ERR_DEVICE; /* the backend set the message */
    if (s == KD_OK)
        s = kd_output_check(p, r->last_samples, net->num_classes, 0);
    if (s == KD_ERR_NUMERIC)
        return kd_fail(KD_ERR_NUMERIC, "epoch %d, step %lld: training diverged (after this step's update the network "
                       "outputs NaN or Inf): try a lower learning rate; nothing was saved, the last checkpoint stays",
                       r->epoch + 1, (long long)r->st->step);
    return s;
}

static kd_status save(train_run *r)
{
    if (!r->save)
        return KD_OK;
    kd_status s = check_before_save(r);
    if (s == KD_OK)
        s = r->save(r->save_user, r->net, r->opt, r->st);
    return s == KD_OK || s == KD_ERR_NUMERIC ? s : kd_fail_context(s, "saving checkpoint");
}

/* One step: forward, loss and backward on this worker's samples (an empty
 * step has zero gradients), then the exchange turns the gradients into new
 * parameters. */
static kd_status train_step(train_run *r, const kd_step *step)
{
    kd_net *net = r->net;
    int b = step->samples;
    if (b > 0) {
        double loss = 0;
        int hits = 0;
        kd_net_set_noise_seed(net, r->st->seed, r->st->step);
        kd_status s = kd_net_forward(net, r->batches.x, b, 1);
        if (s == KD_OK)
            s = kd_net_loss(net, r->batches.y, &loss, &hits);
        if (s == KD_OK)
            s = kd_net_backward(net, r->batches.y);
        if (s != KD_OK)
            return kd_fail_context(s, "epoch %d, step %lld%s", r->epoch + 1, (long long)r->st->step + 1,
                                   s == KD_ERR_NUMERIC ? " (training diverged: try a lower learning rate)" : "");
        r->loss_sum += loss * b;
        r->correct += hits;
        r->seen += b;
    } else {
        /* An empty share still takes part in the exchange (collectives must match). */
        KD_TRY(kd_net_to_host(net, KD_NET_GRADS));
        memset(kd_net_grads(net), 0, sizeof(float) * net->param_count);
    }
    KD_TRY(r->ex->step(r->ex->ctx, net, r->opt, step));
    r->last_samples = b;
    r->st->step++;
    r->run_steps_done++;
    r->run_samples += b;
    return KD_OK;
}

/* Call the progress callback (mid-epoch at most every progress_interval
 * seconds; always with an epoch's record). Returns 1 to stop. */
static int report(train_run *r, const kd_epoch_record *rec)
{
    const kd_train_config *cfg = r->cfg;
    double t = now_seconds();
    if (!cfg->progress)
        return 0;
    int due = rec || (cfg->progress_interval > 0 && t - r->last_report >= cfg->progress_interval) ||
              (cfg->progress_every > 0 && r->st->step % cfg->progress_every == 0);
    if (!due)
        return 0;
    r->last_report = t;
    double rate = r->run_samples / (t - r->t_run > 1e-9 ? t - r->t_run : 1e-9);
    double left = r->run_steps_done ? (double)(r->run_steps_total - r->run_steps_done) * (t - r->t_run) /
                                          (double)r->run_steps_done
                                    : 0;
    double loss = rec ? rec->train_loss : r->seen ? r->loss_sum / r->seen : 0;
    double acc = rec ? rec->train_accuracy : r->seen ? (double)r->correct / r->seen : 0;
    kd_progress p = {r->epoch + 1, cfg->epochs, r->st->step, r->batches.steps_per_epoch, r->seen,
                     kd_batcher_epoch_samples(&r->batches), loss, acc, rate, left, rec != NULL, rec,
                     r->opt ? kd_optim_current_lr(r->opt) : NAN, t - r->t_run};
    return cfg->progress(&p, cfg->progress_user) != 0;
}

/* Loss and hits of the evaluation of `ds` (summed, not averaged). */
static kd_status score(train_run *r, const kd_dataset *ds, double *loss, double *correct, double *count)
{
    kd_eval_result e;
    int B = r->cfg->batch_size;
    KD_TRY(kd_evaluate(r->net, ds, B > 256 ? B : 256, &e));
    *loss = e.loss * (double)e.count;
    *correct = (double)llround(e.accuracy * (double)e.count);
    *count = (double)e.count;
    kd_eval_result_clear(&e);
    return KD_OK;
}

/* Whether early stopping ends the run after the history's last epoch. */
static kd_status patience_spent(const kd_train_config *cfg, const kd_train_state *st, int *spent)
{
    *spent = 0;
    if (cfg->patience < 1 || st->history_len < 1)
        return KD_OK;
    kd_best_epoch best;
    KD_TRY(kd_train_state_best(st, cfg->min_delta, &best));
    *spent = best.epoch > 0 && best.since >= cfg->patience;
    return KD_OK;
}

/* After an epoch's last step: its record (the training figures, the
 * validation set's, combined over workers by the hook; the test set's
 * after every epoch, or only after the last one when there is validation
 * data), early stopping, the saved checkpoint, the progress call. */
static kd_status end_epoch(train_run *r, int *stop)
{
    const kd_train_config *cfg = r->cfg;
    kd_epoch_sums sums = {r->loss_sum, (double)r->correct, (double)r->seen, 0, 0, 0};
    if (cfg->val && cfg->val->n > 0)
        KD_TRY(score(r, cfg->val, &sums.val_loss, &sums.val_correct, &sums.val_count));
    if (r->hooks && r->hooks->combine)
        KD_TRY(r->hooks->combine(r->hooks->user, &sums));

    kd_epoch_record rec;
    memset(&rec, 0, sizeof rec);
    rec.epoch = r->epoch + 1;
    rec.train_loss = sums.train_count > 0 ? sums.train_loss / sums.train_count : NAN;
    rec.train_accuracy = sums.train_count > 0 ? sums.train_correct / sums.train_count : NAN;
    rec.val_loss = sums.val_count > 0 ? sums.val_loss / sums.val_count : NAN;
    rec.val_accuracy = sums.val_count > 0 ? sums.val_correct / sums.val_count : NAN;
    rec.test_loss = rec.test_accuracy = NAN;
    rec.learning_rate = r->opt ? kd_optim_current_lr(r->opt) : NAN;
    KD_TRY(kd_train_state_append(r->st, &rec));
    kd_epoch_record *last = &r->st->history[r->st->history_len - 1];
    int early = 0;
    KD_TRY(patience_spent(cfg, r->st, &early));
    /* With validation figures the test set waits for the run's last epoch. */
    if (cfg->test && cfg->test->n > 0 && (isnan(last->val_loss) || early || rec.epoch >= cfg->epochs)) {
        double loss, correct, count;
        KD_TRY(score(r, cfg->test, &loss, &correct, &count));
        last->test_loss = loss / count;
        last->test_accuracy = correct / count;
    }
    last->seconds = now_seconds() - r->t_epoch;
    r->st->epoch = r->epoch + 1;
    KD_TRY(save(r));
    *stop = report(r, last) || early;
    return KD_OK;
}

kd_status kd_train(kd_net *net, kd_optim *opt, const kd_dataset *train,
                   const kd_train_config *cfg, kd_train_state *st)
{
    return kd_train_hooked(net, opt, train, cfg, st, NULL);
}

kd_status kd_train_hooked(kd_net *net, kd_optim *opt, const kd_dataset *train, const kd_train_config *cfg,
                          kd_train_state *st, const kd_train_hooks *hooks)
{
    if (!net || !train || !cfg || !st)
        return kd_fail(KD_ERR_INVALID, "kd_train: NULL argument");
    KD_TRY(check_config(net, opt, train, cfg, st));
    /* The destination is checked before the first step, not at the first
     * save an epoch later (a custom hook checks its own). */
    if (!cfg->save && cfg->checkpoint_path)
        KD_TRY(kd_save_check_path(cfg->checkpoint_path));
    train_run r;
    memset(&r, 0, sizeof r);
    KD_TRY(kd_batcher_init(&r.batches, train, cfg));
    r.net = net;
    r.opt = opt;
    r.cfg = cfg;
    r.st = st;
    r.ex = cfg->exchange ? cfg->exchange : &local_exchange;
    r.hooks = hooks;
    r.save = cfg->save ? cfg->save : cfg->checkpoint_path ? save_to_path : NULL;
    r.save_user = cfg->save ? cfg->save_user : (void *)cfg->checkpoint_path;
    int64_t spe = r.batches.steps_per_epoch, first = kd_batcher_resume_step(&r.batches, st);
    st->seed = st->seed ? st->seed : cfg->seed;
    st->batch_size = (int32_t)kd_batcher_global_batch(&r.batches);

    /* On a GPU the optimizer state is uploaded again at the first step: the
     * host copy is the current one whenever kd_train starts (it syncs on return). */
    net->backend->host_written(net, KD_BUF_OPTIM);

    r.t_run = r.last_report = now_seconds();
    r.run_steps_total = ((int64_t)cfg->epochs - st->epoch) * spe - first;
    /* A resumed run that early stopping already ended trains no further
     * (a Spark retry after the stop, or a resume with the same patience). */
    int stop = 0;
    kd_status s = patience_spent(cfg, st, &stop);
    for (r.epoch = st->epoch; s == KD_OK && !stop && r.epoch < cfg->epochs; r.epoch++) {
        kd_batcher_start_epoch(&r.batches, st->seed, r.epoch, cfg->shuffle, first);
        first = 0;
        r.t_epoch = now_seconds();
        r.loss_sum = 0;
        r.seen = r.correct = 0;
        kd_step step;
        while (s == KD_OK && !stop && kd_batcher_next(&r.batches, &step)) {
            s = train_step(&r, &step);
            /* Not at the epoch's last step: end_epoch saves right after, with the record. */
            if (s == KD_OK && cfg->checkpoint_every > 0 && st->step % cfg->checkpoint_every == 0 &&
                step.index + 1 < spe)
                s = save(&r);
            if (s == KD_OK)
                stop = report(&r, NULL);
            if (s == KD_OK && !stop && cfg->stop)
                stop = cfg->stop(cfg->stop_user) != 0;
        }
        if (s == KD_OK && stop) /* mid-epoch: the checkpoint keeps the position so a resume continues here */
            s = save(&r);
        else if (s == KD_OK)
            s = end_epoch(&r, &stop);
    }
    kd_batcher_free(&r.batches);
    /* Leave the host copies current (no-op on the CPU). */
    if (s == KD_OK)
        s = kd_net_sync(net, opt);
    return s;
}
