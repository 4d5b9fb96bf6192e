/* The training loop, the same for every mode: next batch, forward,
 * backward, exchange (local optimizer, parameter server or allreduce),
 * metrics, checkpoints, progress. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "net.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static kd_status local_step(void *ctx, kd_net *net, kd_optim *opt)
{
    (void)ctx;
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
    return KD_OK;
}

/* This part's slice [*lo, *hi) of global step `step`'s samples: the epoch
 * order is cut into global batches of batch_size * parts samples and each
 * global batch into `parts` near-equal contiguous pieces, so W workers
 * together see exactly what one process with a W-times larger batch sees. */
static void part_slice(int64_t n, int64_t step, int batch, int part, int parts, int64_t *lo, int64_t *hi)
{
    int64_t g = (int64_t)batch * parts;
    int64_t start = step * g < n ? step * g : n, end = start + g < n ? start + g : n, len = end - start;
    *lo = start + len * part / parts;
    *hi = start + len * (part + 1) / parts;
}

static kd_status save_checkpoint(const kd_train_config *cfg, kd_net *net, kd_optim *opt,
                                 const kd_train_state *st)
{
    if (!cfg->checkpoint_path)
        return KD_OK;
    /* A GPU network's parameters and optimizer state come back to the host first. */
    kd_status s = kd_net_sync(net, opt);
    if (s == KD_OK)
        s = kd_checkpoint_save(cfg->checkpoint_path, net, opt, st);
    return s == KD_OK ? s : kd_fail_context(s, "saving checkpoint");
}

kd_status kd_train(kd_net *net, kd_optim *opt, const kd_dataset *train,
                   const kd_train_config *cfg, kd_train_state *st)
{
    if (!net || !train || !cfg || !st)
        return kd_fail(KD_ERR_INVALID, "kd_train: NULL argument");
    KD_TRY(check_config(net, opt, train, cfg, st));
    const kd_exchange *ex = cfg->exchange ? cfg->exchange : &local_exchange;
    int parts = cfg->part_count > 0 ? cfg->part_count : 1, part = cfg->part_index;
    int B = cfg->batch_size;
    int64_t n = train->n, G = (int64_t)B * parts;
    int64_t spe = (n + G - 1) / G; /* steps per epoch */
    if (cfg->steps_per_epoch > 0) {
        if (cfg->steps_per_epoch < spe)
            return kd_fail(KD_ERR_INVALID, "%lld steps per epoch cannot cover %lld samples in batches of %lld",
                           (long long)cfg->steps_per_epoch, (long long)n, (long long)G);
        spe = cfg->steps_per_epoch;
    }
    size_t in = kd_shape_size(&net->input);

    /* A resumed run continues mid-epoch only with the same batching. */
    int64_t skip = 0;
    if (st->batch_size == B && st->step > (int64_t)st->epoch * spe)
        skip = st->step - (int64_t)st->epoch * spe;
    if (skip >= spe)
        skip = 0;
    st->seed = st->seed ? st->seed : cfg->seed;
    st->batch_size = B;

    /* On a GPU the optimizer state is uploaded again at the first step: the
     * host copy is the current one whenever kd_train starts (it syncs on return). */
    if (net->backend)
        net->backend->host_written(net, KD_BUF_OPTIM);

    int64_t *order = kd_malloc(sizeof(int64_t) * (size_t)n, "sample order");
    float *xb = kd_malloc(sizeof(float) * in * (size_t)B, "batch features");
    int32_t *yb = kd_malloc(sizeof(int32_t) * (size_t)B, "batch labels");
    kd_status s = order && xb && yb ? KD_OK : KD_ERR_NOMEM;

    double t_run = now_seconds(), last_report = t_run;
    int64_t run_samples = 0, run_steps_total = ((int64_t)cfg->epochs - st->epoch) * spe - skip;
    int64_t run_steps_done = 0;
    int stop = 0;

    for (int32_t epoch = st->epoch; s == KD_OK && !stop && epoch < cfg->epochs; epoch++) {
        for (int64_t i = 0; i < n; i++)
            order[i] = i;
        if (cfg->shuffle) {
            kd_rng rng;
            kd_rng_seed(&rng, st->seed, 0xe90c0000ULL + (uint64_t)epoch);
            kd_rng_shuffle(&rng, order, n);
        }
        double t_epoch = now_seconds(), loss_sum = 0;
        int64_t seen = 0, correct = 0;
        for (int64_t k = skip; s == KD_OK && k < spe; k++) {
            int64_t lo, hi;
            part_slice(n, k, B, part, parts, &lo, &hi);
            int b = (int)(hi - lo);
            if (b > 0) {
                for (int j = 0; j < b; j++) {
                    int64_t idx = order[lo + j];
                    memcpy(xb + (size_t)j * in, train->x + (size_t)idx * in, sizeof(float) * in);
                    yb[j] = train->y[idx];
                }
                double loss = 0;
                int hits = 0;
                kd_net_set_noise_seed(net, st->seed, st->step);
                if ((s = kd_net_forward(net, xb, b, 1)) != KD_OK || (s = kd_net_loss(net, yb, &loss, &hits)) != KD_OK ||
                    (s = kd_net_backward(net, yb)) != KD_OK) {
                    kd_fail_context(s, "epoch %d, step %lld%s", epoch + 1, (long long)st->step + 1,
                                    s == KD_ERR_NUMERIC ? " (training diverged: try a lower learning rate)" : "");
                    break;
                }
                loss_sum += loss * b;
                correct += hits;
                seen += b;
            } else {
                /* An empty share still takes part in the exchange (collectives must match). */
                memset(kd_net_grads(net), 0, sizeof(float) * net->param_count);
            }
            if ((s = ex->step(ex->ctx, net, opt)) != KD_OK)
                break;
            st->step++;
            run_steps_done++;
            run_samples += b;
            if (cfg->checkpoint_every > 0 && st->step % cfg->checkpoint_every == 0 &&
                (s = save_checkpoint(cfg, net, opt, st)) != KD_OK)
                break;
            double t = now_seconds();
            if (cfg->progress && cfg->progress_interval > 0 && t - last_report >= cfg->progress_interval) {
                last_report = t;
                double rate = run_samples / (t - t_run > 1e-9 ? t - t_run : 1e-9);
                kd_progress p = {epoch + 1, cfg->epochs, st->step, spe, seen, n / parts,
                                 seen ? loss_sum / seen : 0, seen ? (double)correct / seen : 0, rate,
                                 (double)(run_steps_total - run_steps_done) * (t - t_run) / (double)run_steps_done, 0, NULL};
                if (cfg->progress(&p, cfg->progress_user))
                    stop = 1;
            }
            if (stop)
                break;
        }
        skip = 0;
        if (s != KD_OK)
            break;
        if (stop) {
            /* Stopped mid-epoch: keep the position so a resume continues here. */
            s = save_checkpoint(cfg, net, opt, st);
            break;
        }
        kd_epoch_record rec;
        memset(&rec, 0, sizeof rec);
        rec.epoch = epoch + 1;
        rec.train_loss = seen ? loss_sum / seen : NAN;
        rec.train_accuracy = seen ? (double)correct / seen : NAN;
        rec.test_loss = rec.test_accuracy = NAN;
        rec.learning_rate = opt ? kd_optim_current_lr(opt) : NAN;
        if (cfg->test) {
            kd_eval_result r;
            if ((s = kd_evaluate(net, cfg->test, B > 256 ? B : 256, &r)) != KD_OK)
                break;
            rec.test_loss = r.loss;
            rec.test_accuracy = r.accuracy;
            kd_eval_result_clear(&r);
        }
        double t = now_seconds();
        rec.seconds = t - t_epoch;
        if ((s = kd_train_state_append(st, &rec)) != KD_OK)
            break;
        st->epoch = epoch + 1;
        if ((s = save_checkpoint(cfg, net, opt, st)) != KD_OK)
            break;
        if (cfg->progress) {
            double rate = run_samples / (t - t_run > 1e-9 ? t - t_run : 1e-9);
            double left = run_steps_done ? (double)(run_steps_total - run_steps_done) * (t - t_run) / (double)run_steps_done : 0;
            kd_progress p = {epoch + 1, cfg->epochs, st->step, spe, seen, n / parts, rec.train_loss,
                             rec.train_accuracy, rate, left, 1, &rec};
            if (cfg->progress(&p, cfg->progress_user))
                stop = 1;
            last_report = t;
        }
    }
    free(order);
    free(xb);
    free(yb);
    /* Leave the host copies current (no-op on the CPU). */
    if (s == KD_OK)
        s = kd_net_sync(net, opt);
    return s;
}
