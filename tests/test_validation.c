/* Around the training loop: held-out validation data (kd_dataset_split,
 * kd_dataset_sample, cfg.val), early stopping (kd_train_state_best,
 * cfg.patience), mid-epoch progress by steps, the confusion matrix of
 * kd_evaluate and kd_file_copy. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "kindling.h"

#define SPEC "{\"input\": [10], \"layers\": [{\"type\": \"dense\", \"units\": 16}, {\"type\": \"relu\"}," \
             "{\"type\": \"dense\", \"units\": 3}, {\"type\": \"softmax\"}]}"

/* Three noisy blobs in 10-D; feature 9 holds the sample's index, so a
 * subset can be traced back to the samples it took. */
static kd_dataset *blobs(int64_t n, unsigned seed, float noise)
{
    kd_shape sh = {1, {10, 0, 0, 0}};
    kd_dataset *ds = NULL;
    if (kd_dataset_alloc(n, &sh, &ds) != KD_OK)
        return NULL;
    srand(seed);
    for (int64_t i = 0; i < n; i++) {
        int c = (int)(i % 3);
        ds->y[i] = c;
        for (int j = 0; j < 9; j++)
            ds->x[i * 10 + j] = noise * ((float)rand() / RAND_MAX - 0.5f) + (j % 3 == c ? 1.0f : 0.0f);
        ds->x[i * 10 + 9] = (float)i / (float)n;
    }
    ds->num_classes = 3;
    return ds;
}

static int64_t index_of(const kd_dataset *sub, int64_t i, int64_t n) { return llround(sub->x[i * 10 + 9] * n); }

/* Every sample of `sub` is one of ds (features and label), in increasing order. */
static int faithful_subset(const kd_dataset *ds, const kd_dataset *sub)
{
    int64_t prev = -1;
    for (int64_t i = 0; i < sub->n; i++) {
        int64_t k = index_of(sub, i, ds->n);
        if (k <= prev || k >= ds->n || sub->y[i] != ds->y[k] ||
            memcmp(sub->x + i * 10, ds->x + k * 10, 10 * sizeof(float)) != 0)
            return 0;
        prev = k;
    }
    return 1;
}

static void test_split(void)
{
    kd_dataset *ds = blobs(100, 1, 0.5f), *rest = NULL, *held = NULL, *rest2 = NULL, *held2 = NULL;
    CHECK_OK(kd_dataset_split(ds, 0.2, 7, &rest, &held));
    if (!rest || !held)
        return;
    CHECK(held->n == 20 && rest->n == 80, "split 0.2 of 100: %lld held out, %lld rest", (long long)held->n,
          (long long)rest->n);
    CHECK(faithful_subset(ds, held) && faithful_subset(ds, rest), "a part holds samples not of the set, or reordered");
    /* Together the parts are the whole set, each sample once. */
    unsigned char seen[100] = {0};
    int twice = 0;
    for (int64_t i = 0; i < held->n; i++)
        twice += seen[index_of(held, i, 100)]++;
    for (int64_t i = 0; i < rest->n; i++)
        twice += seen[index_of(rest, i, 100)]++;
    int all = 1;
    for (int i = 0; i < 100; i++)
        all &= seen[i] == 1;
    CHECK(all && !twice, "the parts do not cover the set exactly once");
    CHECK(held->num_classes == 3 && rest->num_classes == 3, "class counts %d %d", held->num_classes, rest->num_classes);
    /* Seeded: the same seed, the same split; another seed, another one. */
    CHECK_OK(kd_dataset_split(ds, 0.2, 7, &rest2, &held2));
    CHECK(held2 && memcmp(held->x, held2->x, 20 * 10 * sizeof(float)) == 0, "the same seed gave another split");
    kd_dataset_free(rest2);
    kd_dataset_free(held2);
    CHECK_OK(kd_dataset_split(ds, 0.2, 8, &rest2, &held2));
    CHECK(held2 && memcmp(held->x, held2->x, 20 * 10 * sizeof(float)) != 0, "another seed gave the same split");
    kd_dataset_free(rest2);
    kd_dataset_free(held2);
    /* Rounding keeps both parts non-empty. */
    CHECK_OK(kd_dataset_split(ds, 0.001, 1, &rest2, &held2));
    CHECK(held2 && held2->n == 1 && rest2->n == 99, "a tiny fraction holds out one sample");
    kd_dataset_free(rest2);
    kd_dataset_free(held2);
    CHECK_OK(kd_dataset_split(ds, 0.999, 1, &rest2, &held2));
    CHECK(held2 && held2->n == 99 && rest2->n == 1, "a fraction near 1 leaves one sample");
    kd_dataset_free(rest2);
    kd_dataset_free(held2);
    CHECK_FAILS(kd_dataset_split(ds, 0.0, 1, &rest2, &held2), KD_ERR_INVALID, "between 0 and 1");
    CHECK_FAILS(kd_dataset_split(ds, 1.0, 1, &rest2, &held2), KD_ERR_INVALID, "between 0 and 1");
    CHECK_FAILS(kd_dataset_split(ds, NAN, 1, &rest2, &held2), KD_ERR_INVALID, "between 0 and 1");
    CHECK(rest2 == NULL && held2 == NULL, "outputs set after a failed split");
    kd_dataset *one = blobs(1, 1, 0.5f);
    CHECK_FAILS(kd_dataset_split(one, 0.5, 1, &rest2, &held2), KD_ERR_INVALID, "cannot split 1 sample");
    kd_dataset_free(one);
    kd_dataset_free(rest);
    kd_dataset_free(held);
    kd_dataset_free(ds);
}

static void test_sample(void)
{
    kd_dataset *ds = blobs(100, 2, 0.5f), *a = NULL, *b = NULL;
    CHECK_OK(kd_dataset_sample(ds, 30, 5, &a));
    CHECK_OK(kd_dataset_sample(ds, 30, 5, &b));
    CHECK(a && b && a->n == 30 && faithful_subset(ds, a), "sample of 30: %lld samples", a ? (long long)a->n : -1LL);
    CHECK(a && b && memcmp(a->x, b->x, 30 * 10 * sizeof(float)) == 0, "the same seed gave another sample");
    kd_dataset_free(b);
    b = NULL;
    CHECK_OK(kd_dataset_sample(ds, 30, 6, &b));
    CHECK(a && b && memcmp(a->x, b->x, 30 * 10 * sizeof(float)) != 0, "another seed gave the same sample");
    kd_dataset_free(b);
    b = NULL;
    /* A random sample, not the first rows: its indices spread over the set. */
    CHECK(a && index_of(a, 29, 100) > 40, "the sample ends at index %lld", (long long)index_of(a, 29, 100));
    CHECK_OK(kd_dataset_sample(ds, 500, 5, &b));
    CHECK(b && b->n == 100 && memcmp(b->x, ds->x, 100 * 10 * sizeof(float)) == 0, "n above the size gives the whole set");
    kd_dataset_free(b);
    b = NULL;
    CHECK_FAILS(kd_dataset_sample(ds, 0, 5, &b), KD_ERR_INVALID, "at least 1");
    kd_dataset_free(a);
    kd_dataset_free(ds);
}

static void history_of(kd_train_state *st, const double *train, const double *val, int n)
{
    kd_train_state_init(st);
    for (int i = 0; i < n; i++) {
        kd_epoch_record r = {i + 1, train[i], 0.5, NAN, NAN, 1.0, 0.01, val ? val[i] : NAN, val ? 0.5 : NAN};
        kd_train_state_append(st, &r);
    }
    st->epoch = n;
}

static void test_best_epoch(void)
{
    const double train[] = {2.0, 1.5, 1.2, 1.15, 1.12};
    const double val[] = {1.0, 0.8, 0.85, 0.79, 0.9};
    kd_train_state st;
    kd_best_epoch b;
    history_of(&st, train, val, 5);
    CHECK_OK(kd_train_state_best(&st, 0.0, &b));
    CHECK(b.on_val && b.epoch == 4 && b.value == 0.79 && b.since == 1, "val, min_delta 0: epoch %d since %d", b.epoch,
          b.since);
    /* 0.79 is not below 0.8 by more than 0.05: epoch 2 stays the best. */
    CHECK_OK(kd_train_state_best(&st, 0.05, &b));
    CHECK(b.on_val && b.epoch == 2 && b.since == 3, "val, min_delta 0.05: epoch %d since %d", b.epoch, b.since);
    kd_train_state_clear(&st);
    history_of(&st, train, NULL, 5);
    CHECK_OK(kd_train_state_best(&st, 0.0, &b));
    CHECK(!b.on_val && b.epoch == 5 && b.since == 0, "no validation: training loss, epoch %d", b.epoch);
    CHECK_OK(kd_train_state_best(&st, 0.1, &b));
    CHECK(!b.on_val && b.epoch == 3 && b.since == 2, "training loss, min_delta 0.1: epoch %d since %d", b.epoch,
          b.since);
    /* Validation added on resume: the epochs without it are not compared with it. */
    st.history[3].val_loss = 0.7;
    st.history[4].val_loss = 0.75;
    CHECK_OK(kd_train_state_best(&st, 0.0, &b));
    CHECK(b.on_val && b.epoch == 4 && b.since == 1, "mixed history: epoch %d since %d", b.epoch, b.since);
    kd_train_state_clear(&st);
    kd_train_state_init(&st);
    CHECK_OK(kd_train_state_best(&st, 0.0, &b));
    CHECK(b.epoch == 0 && isnan(b.value), "empty history");
    CHECK_FAILS(kd_train_state_best(&st, -1.0, &b), KD_ERR_INVALID, "min_delta");
}

typedef struct model {
    kd_net *net;
    kd_optim *opt;
    kd_train_state st;
} model;

static void model_init(model *m)
{
    kd_optim_config oc = kd_optim_config_default();
    oc.kind = KD_OPT_MOMENTUM;
    oc.lr = 0.05;
    m->net = NULL;
    m->opt = NULL;
    kd_net_create(SPEC, 3, &m->net);
    kd_optim_create(&oc, kd_net_param_count(m->net), &m->opt);
    kd_train_state_init(&m->st);
}

static void model_free(model *m)
{
    kd_net_free(m->net);
    kd_optim_free(m->opt);
    kd_train_state_clear(&m->st);
}

/* Validation figures every epoch; the test set only after the last one,
 * with the figures kd_evaluate gives for the final network. */
static void test_validation_in_history(const kd_dataset *train, const kd_dataset *val, const kd_dataset *test)
{
    model m;
    model_init(&m);
    kd_train_config cfg = kd_train_config_default();
    cfg.epochs = 3;
    cfg.batch_size = 16;
    cfg.val = val;
    cfg.test = test;
    CHECK_OK(kd_train(m.net, m.opt, train, &cfg, &m.st));
    CHECK(m.st.history_len == 3, "history %d", m.st.history_len);
    for (int i = 0; i < m.st.history_len; i++) {
        const kd_epoch_record *r = &m.st.history[i];
        CHECK(!isnan(r->val_loss) && r->val_accuracy >= 0 && r->val_accuracy <= 1, "epoch %d: no validation", i + 1);
        CHECK(i == 2 ? !isnan(r->test_loss) : isnan(r->test_loss) && isnan(r->test_accuracy),
              "epoch %d: test scored %s", i + 1, i == 2 ? "not at the end" : "before the last epoch");
    }
    kd_eval_result ev, et;
    CHECK_OK(kd_evaluate(m.net, val, 64, &ev));
    CHECK_OK(kd_evaluate(m.net, test, 64, &et));
    if (m.st.history_len == 3) {
        CHECK_NEAR(m.st.history[2].val_loss, ev.loss, 1e-9);
        CHECK_NEAR(m.st.history[2].val_accuracy, ev.accuracy, 1e-12);
        CHECK_NEAR(m.st.history[2].test_loss, et.loss, 1e-9);
        CHECK_NEAR(m.st.history[2].test_accuracy, et.accuracy, 1e-12);
        CHECK(m.st.history[2].val_loss < m.st.history[0].val_loss, "the validation loss fell");
    }
    kd_eval_result_clear(&ev);
    kd_eval_result_clear(&et);
    model_free(&m);

    /* Without validation the test set is scored after every epoch, as before. */
    model_init(&m);
    cfg.val = NULL;
    CHECK_OK(kd_train(m.net, m.opt, train, &cfg, &m.st));
    for (int i = 0; i < m.st.history_len; i++)
        CHECK(!isnan(m.st.history[i].test_loss) && isnan(m.st.history[i].val_loss), "epoch %d without validation",
              i + 1);
    model_free(&m);

    model_init(&m);
    kd_dataset *wrong = NULL;
    kd_shape sh = {1, {7, 0, 0, 0}};
    kd_dataset_alloc(4, &sh, &wrong);
    cfg.val = wrong;
    CHECK_FAILS(kd_train(m.net, m.opt, train, &cfg, &m.st), KD_ERR_SHAPE, "validation samples have shape 7");
    kd_dataset_free(wrong);
    model_free(&m);
}

typedef struct count_calls {
    int epoch_ends, mid, mid_off_grid;
    double last_lr;
} count_calls;

static int count_progress(const kd_progress *p, void *user)
{
    count_calls *c = user;
    if (p->epoch_done)
        c->epoch_ends++;
    else {
        c->mid++;
        c->mid_off_grid += p->step % 4 != 0;
    }
    c->last_lr = p->learning_rate;
    return 0;
}

/* Early stopping: with a min_delta no epoch can beat, the first epoch stays
 * the best and patience 2 ends the run after epoch 3 (the test set is then
 * scored there, as after a last epoch). A resume with the same patience
 * trains nothing more; without patience it goes on. */
static void test_early_stopping(const kd_dataset *train, const kd_dataset *val, const kd_dataset *test)
{
    char dir[] = "/tmp/kd_val_XXXXXX";
    if (!mkdtemp(dir))
        return;
    char path[256];
    snprintf(path, sizeof path, "%s/stop.h5", dir);
    model m;
    model_init(&m);
    kd_train_config cfg = kd_train_config_default();
    cfg.epochs = 10;
    cfg.batch_size = 16;
    cfg.val = val;
    cfg.test = test;
    cfg.patience = 2;
    cfg.min_delta = 100.0;
    cfg.checkpoint_path = path;
    count_calls calls = {0, 0, 0, 0};
    cfg.progress = count_progress;
    cfg.progress_user = &calls;
    cfg.progress_every = 4;
    CHECK_OK(kd_train(m.net, m.opt, train, &cfg, &m.st));
    int64_t spe = kd_steps_per_epoch(train->n, 16);
    CHECK(m.st.epoch == 3 && m.st.history_len == 3 && m.st.step == 3 * spe, "stopped after epoch %d (history %d)",
          m.st.epoch, m.st.history_len);
    CHECK(m.st.history_len == 3 && !isnan(m.st.history[2].test_accuracy) && isnan(m.st.history[1].test_accuracy),
          "the test set is scored after the stopping epoch only");
    /* Progress: three epoch ends, and a mid-epoch call at every 4th step. */
    CHECK(calls.epoch_ends == 3 && calls.mid == (int)(3 * spe / 4) && calls.mid_off_grid == 0,
          "progress calls: %d epoch ends, %d mid-epoch (%d off the 4-step grid), %lld steps", calls.epoch_ends,
          calls.mid, calls.mid_off_grid, (long long)(3 * spe));
    CHECK_NEAR(calls.last_lr, kd_optim_current_lr(m.opt), 0);
    model_free(&m);

    /* The checkpoint says where it stopped; resuming with the same patience trains nothing. */
    CHECK_OK(kd_checkpoint_load(path, &m.net, &m.opt, &m.st));
    cfg.progress = NULL;
    if (m.net) {
        CHECK_OK(kd_train(m.net, m.opt, train, &cfg, &m.st));
        CHECK(m.st.epoch == 3 && m.st.history_len == 3, "a resume after the stop trained on (epoch %d)", m.st.epoch);
        cfg.patience = 0;
        cfg.epochs = 4;
        CHECK_OK(kd_train(m.net, m.opt, train, &cfg, &m.st));
        CHECK(m.st.epoch == 4 && m.st.history_len == 4, "without patience the resume goes on (epoch %d)", m.st.epoch);
    }
    model_free(&m);

    /* Real improvement keeps it going: min_delta 0 on learnable data. */
    model_init(&m);
    cfg.patience = 2;
    cfg.min_delta = 0;
    cfg.epochs = 4;
    cfg.checkpoint_path = NULL;
    CHECK_OK(kd_train(m.net, m.opt, train, &cfg, &m.st));
    CHECK(m.st.epoch == 4, "learning data stopped early at epoch %d", m.st.epoch);
    model_free(&m);

    cfg.patience = -1;
    model_init(&m);
    CHECK_FAILS(kd_train(m.net, m.opt, train, &cfg, &m.st), KD_ERR_INVALID, "patience must be >= 0");
    cfg.patience = 1;
    cfg.min_delta = -0.5;
    CHECK_FAILS(kd_train(m.net, m.opt, train, &cfg, &m.st), KD_ERR_INVALID, "min_delta");
    model_free(&m);
    unlink(path);
    rmdir(dir);
}

/* The confusion matrix agrees with the predictions and the other figures. */
static void test_confusion(const kd_dataset *train, const kd_dataset *test)
{
    model m;
    model_init(&m);
    kd_train_config cfg = kd_train_config_default();
    cfg.epochs = 1;
    cfg.batch_size = 32;
    CHECK_OK(kd_train(m.net, m.opt, train, &cfg, &m.st));
    kd_eval_result r;
    CHECK_OK(kd_evaluate(m.net, test, 7, &r));
    float *probs = malloc(sizeof(float) * 3 * (size_t)test->n);
    CHECK_OK(kd_net_predict(m.net, test->x, test->n, probs));
    int64_t want[9] = {0}, total = 0, trace = 0;
    for (int64_t i = 0; i < test->n; i++) {
        int best = 0;
        for (int k = 1; k < 3; k++)
            if (probs[i * 3 + k] > probs[i * 3 + best])
                best = k;
        want[test->y[i] * 3 + best]++;
    }
    int same = r.confusion != NULL;
    for (int t = 0; same && t < 3; t++) {
        int64_t row = 0;
        for (int p = 0; p < 3; p++) {
            same &= r.confusion[t * 3 + p] == want[t * 3 + p];
            row += r.confusion[t * 3 + p];
            total += r.confusion[t * 3 + p];
        }
        trace += r.confusion[t * 3 + t];
        same &= row == r.per_class_count[t];
        CHECK_NEAR(r.per_class_accuracy[t], (double)r.confusion[t * 3 + t] / (double)row, 1e-12);
    }
    CHECK(same && total == test->n, "confusion matrix disagrees with the predictions or the class counts");
    CHECK_NEAR(r.accuracy, (double)trace / (double)test->n, 1e-12);
    free(probs);
    kd_eval_result_clear(&r);
    CHECK(r.confusion == NULL, "clear left the matrix");
    model_free(&m);
}

static void test_file_copy(void)
{
    char dir[] = "/tmp/kd_copy_XXXXXX";
    if (!mkdtemp(dir))
        return;
    char a[256], b[256], missing[256], nodir[256];
    snprintf(a, sizeof a, "%s/a.bin", dir);
    snprintf(b, sizeof b, "%s/b.bin", dir);
    snprintf(missing, sizeof missing, "%s/none.bin", dir);
    snprintf(nodir, sizeof nodir, "%s/no/such/dir.bin", dir);
    size_t n = 300000; /* several buffers' worth */
    unsigned char *data = malloc(n), *back = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)(i * 131 + 7);
    FILE *f = fopen(a, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
    f = fopen(b, "wb"); /* an older, longer file to replace */
    fwrite(data, 1, 100, f);
    fwrite(data, 1, n, f);
    fclose(f);
    CHECK_OK(kd_file_copy(a, b));
    f = fopen(b, "rb");
    size_t got = f ? fread(back, 1, n + 1, f) : 0;
    if (f)
        fclose(f);
    CHECK(got == n && memcmp(back, data, n) == 0, "the copy differs (%zu bytes)", got);
    CHECK_FAILS(kd_file_copy(missing, b), KD_ERR_IO, "none.bin: cannot copy it");
    CHECK_FAILS(kd_file_copy(a, nodir), KD_ERR_IO, "dir.bin");
    /* Only a and b remain: no temporary left behind. */
    char cmd[400];
    snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 2", dir);
    CHECK(system(cmd) == 0, "files other than a and b were left in %s", dir);
    free(data);
    free(back);
    unlink(a);
    unlink(b);
    rmdir(dir);
}

int main(void)
{
    kd_dataset *all = blobs(600, 11, 1.6f), *train = NULL, *val = NULL;
    kd_dataset *test = blobs(150, 12, 1.6f);
    if (!all || !test || kd_dataset_split(all, 0.2, 42, &train, &val) != KD_OK) {
        fprintf(stderr, "FAIL: test data\n");
        return 1;
    }
    test_split();
    test_sample();
    test_best_epoch();
    test_validation_in_history(train, val, test);
    test_early_stopping(train, val, test);
    test_confusion(train, test);
    test_file_copy();
    kd_dataset_free(all);
    kd_dataset_free(train);
    kd_dataset_free(val);
    kd_dataset_free(test);
    return check_summary();
}
