/* The training loop: learning, reproducibility, resume (at an epoch end
 * and mid-epoch) giving bit-identical results, and bad settings. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h" /* kd_fail: the test save hook records its failure like library code */
#include "check.h"
#include "kindling.h"

#define SPEC "{\"input\": [10], \"layers\": [{\"type\": \"dense\", \"units\": 16}, {\"type\": \"relu\"}," \
             "{\"type\": \"dropout\", \"rate\": 0.1}, {\"type\": \"dense\", \"units\": 3}, {\"type\": \"softmax\"}]}"

/* Three Gaussian blobs in 10-D: learnable to ~100%. */
static kd_dataset *blobs(int64_t n, unsigned seed)
{
    kd_shape sh = {1, {10, 0, 0, 0}};
    kd_dataset *ds = NULL;
    if (kd_dataset_alloc(n, &sh, &ds) != KD_OK)
        return NULL;
    srand(seed);
    for (int64_t i = 0; i < n; i++) {
        int c = (int)(i % 3);
        ds->y[i] = c;
        for (int j = 0; j < 10; j++) {
            float noise = ((float)rand() / RAND_MAX - 0.5f);
            ds->x[i * 10 + j] = noise + (j % 3 == c ? 1.5f : 0.0f);
        }
    }
    ds->num_classes = 3;
    return ds;
}

typedef struct run {
    kd_net *net;
    kd_optim *opt;
    kd_train_state st;
} run;

static void run_init(run *r, kd_optim_kind kind)
{
    kd_optim_config oc = kd_optim_config_default();
    oc.kind = kind;
    oc.lr = kind == KD_OPT_ADAM ? 0.01 : 0.1;
    r->net = NULL;
    r->opt = NULL;
    kd_net_create(SPEC, 5, &r->net);
    kd_optim_create(&oc, kd_net_param_count(r->net), &r->opt);
    kd_train_state_init(&r->st);
}

static void run_free(run *r)
{
    kd_net_free(r->net);
    kd_optim_free(r->opt);
    kd_train_state_clear(&r->st);
}

static int same_params(kd_net *a, kd_net *b)
{
    return kd_net_param_count(a) == kd_net_param_count(b) &&
           memcmp(kd_net_params(a), kd_net_params(b), sizeof(float) * kd_net_param_count(a)) == 0;
}

static void test_learns_and_is_reproducible(const kd_dataset *train, const kd_dataset *test)
{
    run a, b;
    run_init(&a, KD_OPT_MOMENTUM);
    run_init(&b, KD_OPT_MOMENTUM);
    kd_train_config cfg = kd_train_config_default();
    cfg.epochs = 4;
    cfg.batch_size = 32;
    cfg.test = test;
    CHECK_OK(kd_train(a.net, a.opt, train, &cfg, &a.st));
    CHECK_OK(kd_train(b.net, b.opt, train, &cfg, &b.st));
    CHECK(a.st.history_len == 4 && a.st.epoch == 4, "history %d epoch %d", a.st.history_len, a.st.epoch);
    CHECK(a.st.step == 4 * ((train->n + 31) / 32), "step %lld", (long long)a.st.step);
    if (a.st.history_len == 4) {
        CHECK(a.st.history[3].test_accuracy > 0.95, "test accuracy %g", a.st.history[3].test_accuracy);
        CHECK(a.st.history[3].train_loss < a.st.history[0].train_loss, "loss falls");
    }
    CHECK(same_params(a.net, b.net), "two runs with the same seed give identical weights");
    kd_eval_result r;
    CHECK_OK(kd_evaluate(a.net, test, 50, &r));
    CHECK(r.count == test->n && r.num_classes == 3 && r.per_class_count[0] + r.per_class_count[1] + r.per_class_count[2] == test->n,
          "eval counts");
    CHECK_NEAR(r.accuracy, a.st.history[3].test_accuracy, 1e-12);
    kd_eval_result_clear(&r);
    run_free(&a);
    run_free(&b);
}

static int stop_at_step(const kd_progress *p, void *user)
{
    return p->step >= *(int64_t *)user;
}

static void test_resume(const kd_dataset *train, kd_optim_kind kind)
{
    char dir[] = "/tmp/kd_train_XXXXXX";
    if (!mkdtemp(dir))
        return;
    char path[256];
    snprintf(path, sizeof path, "%s/ckpt.h5", dir);
    kd_train_config cfg = kd_train_config_default();
    cfg.batch_size = 16;
    cfg.epochs = 3;

    run whole;
    run_init(&whole, kind);
    CHECK_OK(kd_train(whole.net, whole.opt, train, &cfg, &whole.st));

    /* Stop mid-epoch 2 through the progress callback; the checkpoint keeps the position. */
    run part;
    run_init(&part, kind);
    int64_t stop = (train->n / 16) + 5;
    kd_train_config c1 = cfg;
    c1.checkpoint_path = path;
    c1.progress = stop_at_step;
    c1.progress_user = &stop;
    c1.progress_interval = 1e-9;
    CHECK_OK(kd_train(part.net, part.opt, train, &c1, &part.st));
    CHECK(part.st.step == stop && part.st.epoch == 1, "stopped at step %lld epoch %d", (long long)part.st.step,
          part.st.epoch);
    run_free(&part);

    kd_net *net = NULL;
    kd_optim *opt = NULL;
    kd_train_state st;
    kd_train_state_init(&st);
    CHECK_OK(kd_checkpoint_load(path, &net, &opt, &st));
    if (net && opt) {
        CHECK(st.step == stop && st.epoch == 1 && st.history_len == 1, "restored step %lld", (long long)st.step);
        CHECK_OK(kd_train(net, opt, train, &cfg, &st));
        CHECK(same_params(net, whole.net), "%s: stop mid-epoch + resume gives the same weights as one run",
              kd_optim_kind_name(kind));
        CHECK(st.history_len == 3 && st.step == whole.st.step, "history %d", st.history_len);
    }
    kd_net_free(net);
    kd_optim_free(opt);
    kd_train_state_clear(&st);
    run_free(&whole);
    unlink(path);
    rmdir(dir);
}

static void test_bad_settings(kd_dataset *train)
{
    run r;
    run_init(&r, KD_OPT_SGD);
    kd_train_config cfg = kd_train_config_default();
    cfg.batch_size = 0;
    CHECK_FAILS(kd_train(r.net, r.opt, train, &cfg, &r.st), KD_ERR_INVALID, "batch size must be >= 1");
    cfg.batch_size = 8;
    kd_shape sh = {1, {7, 0, 0, 0}};
    kd_dataset *wrong = NULL;
    kd_dataset_alloc(4, &sh, &wrong);
    memset(wrong->x, 0, sizeof(float) * 28);
    memset(wrong->y, 0, sizeof(int32_t) * 4);
    CHECK_FAILS(kd_train(r.net, r.opt, wrong, &cfg, &r.st), KD_ERR_SHAPE, "network expects");
    kd_dataset_free(wrong);
    int32_t keep = train->y[5];
    train->y[5] = 3;
    CHECK_FAILS(kd_train(r.net, r.opt, train, &cfg, &r.st), KD_ERR_INVALID, "sample 5");
    train->y[5] = keep;
    float kx = train->x[20];
    train->x[20] = NAN;
    CHECK_FAILS(kd_train(r.net, r.opt, train, &cfg, &r.st), KD_ERR_NUMERIC, "NaN");
    train->x[20] = kx;
    kd_shape sh10 = {1, {10, 0, 0, 0}};
    kd_dataset *empty = NULL;
    kd_dataset_alloc(0, &sh10, &empty);
    CHECK_FAILS(kd_train(r.net, r.opt, empty, &cfg, &r.st), KD_ERR_INVALID, "empty");
    kd_dataset_free(empty);
    run_free(&r);

    /* Features of 1e35 overflow float32 after one step: the NaN loss is
     * reported, not trained on silently. */
    for (int64_t i = 0; i < train->n * 10; i++)
        train->x[i] *= 1e35f;
    kd_net *net = NULL;
    kd_optim *opt = NULL;
    kd_train_state st;
    kd_train_state_init(&st);
    kd_net_create(SPEC, 5, &net);
    kd_optim_config oc = kd_optim_config_default();
    oc.kind = KD_OPT_SGD;
    oc.lr = 1.0;
    kd_optim_create(&oc, kd_net_param_count(net), &opt);
    cfg.epochs = 2;
    CHECK_FAILS(kd_train(net, opt, train, &cfg, &st), KD_ERR_NUMERIC, "diverged");
    for (int64_t i = 0; i < train->n * 10; i++)
        train->x[i] /= 1e35f;
    kd_net_free(net);
    kd_optim_free(opt);
    kd_train_state_clear(&st);
}

/* Extra steps past the data are empty but still reach the exchange. */
static int64_t exchange_calls, exchange_samples;
static kd_status counting_step(void *ctx, kd_net *net, kd_optim *opt, const kd_step *step)
{
    (void)ctx;
    exchange_calls++;
    exchange_samples += step->samples;
    return kd_optim_step(opt, kd_net_params(net), kd_net_grads(net));
}

static void test_steps_per_epoch(const kd_dataset *train)
{
    run r;
    run_init(&r, KD_OPT_SGD);
    kd_exchange ex = {"counting", NULL, counting_step};
    kd_train_config cfg = kd_train_config_default();
    cfg.epochs = 2;
    cfg.batch_size = 100;
    cfg.exchange = &ex;
    cfg.steps_per_epoch = 3; /* 600 samples need 6 */
    CHECK_FAILS(kd_train(r.net, r.opt, train, &cfg, &r.st), KD_ERR_INVALID, "cannot cover 600 samples");
    cfg.steps_per_epoch = 9;
    exchange_calls = 0;
    CHECK_OK(kd_train(r.net, r.opt, train, &cfg, &r.st));
    CHECK(exchange_calls == 18 && r.st.step == 18, "%lld exchanges, step %lld", (long long)exchange_calls,
          (long long)r.st.step);
    CHECK(exchange_samples == 1200, "the step descriptors count %lld samples in 2 epochs of 600",
          (long long)exchange_samples);
    run_free(&r);

    /* An empty local share takes only empty steps. */
    kd_shape sh = {1, {10, 0, 0, 0}};
    kd_dataset *empty = NULL;
    kd_dataset_alloc(0, &sh, &empty);
    run_init(&r, KD_OPT_SGD);
    float before = kd_net_params(r.net)[0];
    exchange_calls = 0;
    CHECK_OK(kd_train(r.net, r.opt, empty, &cfg, &r.st));
    CHECK(exchange_calls == 18, "%lld exchanges on an empty share", (long long)exchange_calls);
    CHECK(kd_net_params(r.net)[0] == before, "zero gradients leave SGD parameters alone");
    kd_dataset_free(empty);
    run_free(&r);
}

/* The save hook is called every checkpoint_every steps and after each
 * epoch, with the state as it is then (the global batch recorded). */
typedef struct saves {
    int count;
    int64_t step[8];
    int32_t epoch[8], batch[8];
} saves;

static kd_status record_save(void *user, kd_net *net, kd_optim *opt, const kd_train_state *st)
{
    saves *v = user;
    (void)net;
    (void)opt;
    if (v->count < 8) {
        v->step[v->count] = st->step;
        v->epoch[v->count] = st->epoch;
        v->batch[v->count] = st->batch_size;
    }
    v->count++;
    return v->count == 99 ? kd_fail(KD_ERR_IO, "disk full (test)") : KD_OK;
}

static void test_save_hook(const kd_dataset *train)
{
    run r;
    run_init(&r, KD_OPT_SGD);
    saves v;
    memset(&v, 0, sizeof v);
    kd_train_config cfg = kd_train_config_default();
    cfg.epochs = 2;
    cfg.batch_size = 50;
    cfg.part_count = 2; /* part 0 of 2: global batch 100, 6 steps per epoch */
    cfg.checkpoint_every = 4;
    cfg.save = record_save;
    cfg.save_user = &v;
    CHECK_OK(kd_train(r.net, r.opt, train, &cfg, &r.st));
    /* Step 12 ends epoch 2: one save there, with the epoch's record. */
    static const int64_t want_step[4] = {4, 6, 8, 12};
    static const int32_t want_epoch[4] = {0, 1, 1, 2};
    CHECK(v.count == 4, "%d saves", v.count);
    for (int i = 0; i < 4 && i < v.count; i++)
        CHECK(v.step[i] == want_step[i] && v.epoch[i] == want_epoch[i] && v.batch[i] == 100,
              "save %d: step %lld epoch %d batch %d", i, (long long)v.step[i], v.epoch[i], v.batch[i]);
    run_free(&r);

    /* A failing hook stops training with its message. */
    run_init(&r, KD_OPT_SGD);
    v.count = 98;
    CHECK_FAILS(kd_train(r.net, r.opt, train, &cfg, &r.st), KD_ERR_IO, "saving checkpoint: disk full (test)");
    CHECK(r.st.step == 4, "stopped at the failed save, step %lld", (long long)r.st.step);
    run_free(&r);
}

/* kd_stop_fn for tests: stop once `left` steps have run. */
static int stop_after(void *user)
{
    int64_t *left = user;
    return --*left <= 0;
}

/* A stop question (what a signal handler's flag answers) stops at the
 * step boundary, saves that position and returns KD_OK. */
static void test_stop_question(const kd_dataset *train)
{
    run r;
    run_init(&r, KD_OPT_MOMENTUM);
    saves v;
    memset(&v, 0, sizeof v);
    kd_train_config cfg = kd_train_config_default();
    cfg.epochs = 3;
    cfg.batch_size = 50; /* 12 steps per epoch */
    cfg.save = record_save;
    cfg.save_user = &v;
    int64_t left = 17;
    cfg.stop = stop_after;
    cfg.stop_user = &left;
    CHECK_OK(kd_train(r.net, r.opt, train, &cfg, &r.st));
    CHECK(r.st.step == 17 && r.st.epoch == 1 && r.st.history_len == 1, "stopped at step %lld, epoch %d",
          (long long)r.st.step, r.st.epoch);
    CHECK(v.count == 2 && v.step[0] == 12 && v.step[1] == 17 && v.epoch[1] == 1,
          "%d saves: the epoch end, then the stop's at step %lld", v.count, (long long)v.step[1]);
    run_free(&r);
}

/* Exact resume from every step a checkpoint can hold: stopped after step s
 * (mid-epoch, after an epoch's last step but before its record, after the
 * final step), saved, loaded into fresh objects and trained on to the end,
 * the weights and the optimizer state equal the unbroken run's bit for bit,
 * with one record per epoch. Dropout draws per step, so the noise must
 * resume too. */
static void test_resume_from_every_step(const kd_dataset *train, kd_optim_kind kind)
{
    char dir[] = "/tmp/kd_train_every_XXXXXX";
    if (!mkdtemp(dir))
        return;
    char path[256];
    snprintf(path, sizeof path, "%s/ckpt.h5", dir);
    kd_train_config cfg = kd_train_config_default();
    cfg.epochs = 3;
    cfg.batch_size = 160; /* 4 steps per epoch, the last one short */
    run whole;
    run_init(&whole, kind);
    CHECK_OK(kd_train(whole.net, whole.opt, train, &cfg, &whole.st));
    int64_t total = whole.st.step, bad = 0;
    for (int64_t s = 1; s <= total; s++) {
        run part;
        run_init(&part, kind);
        kd_train_config c1 = cfg;
        c1.checkpoint_path = path;
        int64_t left = s;
        c1.stop = stop_after;
        c1.stop_user = &left;
        CHECK_OK(kd_train(part.net, part.opt, train, &c1, &part.st));
        run_free(&part);
        run back;
        memset(&back, 0, sizeof back);
        CHECK_OK(kd_checkpoint_load(path, &back.net, &back.opt, &back.st));
        if (!back.net || !back.opt || back.st.step != s) {
            CHECK(0, "checkpoint after a stop at step %lld holds step %lld", (long long)s, (long long)back.st.step);
            run_free(&back);
            continue;
        }
        CHECK_OK(kd_train(back.net, back.opt, train, &cfg, &back.st));
        size_t n = 0, wn = 0;
        const float *os = kd_optim_state(back.opt, &n), *ws = kd_optim_state(whole.opt, &wn);
        int same = same_params(back.net, whole.net) && n == wn && memcmp(os, ws, sizeof(float) * n) == 0 &&
                   back.st.step == total && back.st.epoch == 3 && back.st.history_len == 3;
        if (!same && bad++ < 3)
            CHECK(0, "%s: resumed from step %lld (epoch %lld, step %lld of it): differs from the unbroken run "
                     "(step %lld, %d epochs recorded)", kd_optim_kind_name(kind), (long long)s, (long long)(s - 1) / 4 + 1,
                  (long long)(s - 1) % 4 + 1, (long long)back.st.step, back.st.history_len);
        else
            CHECK(same, "resumed from step %lld", (long long)s);
        run_free(&back);
    }
    run_free(&whole);
    unlink(path);
    rmdir(dir);
}

/* kd_train checks checkpoint_path before its first step. */
static void test_destination_checked_first(const kd_dataset *train)
{
    run r;
    run_init(&r, KD_OPT_SGD);
    kd_train_config cfg = kd_train_config_default();
    cfg.epochs = 1;
    cfg.checkpoint_path = "/nonexistent_kd_dir/model.h5";
    CHECK_FAILS(kd_train(r.net, r.opt, train, &cfg, &r.st), KD_ERR_IO, "nonexistent_kd_dir: No such file or directory");
    CHECK(r.st.step == 0, "trained %lld steps before finding the destination unusable", (long long)r.st.step);
    run_free(&r);
}

int main(void)
{
    kd_dataset *train = blobs(600, 1), *test = blobs(300, 2);
    if (!train || !test) {
        fprintf(stderr, "cannot make data: %s\n", kd_last_error());
        return 1;
    }
    test_learns_and_is_reproducible(train, test);
    test_resume(train, KD_OPT_MOMENTUM);
    test_resume(train, KD_OPT_ADAM);
    test_bad_settings(train);
    test_steps_per_epoch(train);
    test_save_hook(train);
    test_stop_question(train);
    test_destination_checked_first(train);
    test_resume_from_every_step(train, KD_OPT_MOMENTUM);
    test_resume_from_every_step(train, KD_OPT_ADAM);
    kd_dataset_free(train);
    kd_dataset_free(test);
    return check_summary();
}
