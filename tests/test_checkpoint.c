/* HDF5 checkpoints: round trips are bit-exact (parameters, batch-norm
 * state, optimizer state and config, training history, predictions), a
 * failed save leaves the previous file untouched and no temporary behind,
 * and damaged or foreign files fail with a message that says why.
 *
 * The test writes some deliberately wrong files with HDF5 itself; the
 * engine's only HDF5 code stays in io/checkpoint.c. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <math.h>
#include <time.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* tests/CMakeLists.txt does not add HDF5's include directory; Debian keeps
 * the serial headers under hdf5/serial (their own includes are relative). */
#if defined(__has_include)
#if __has_include(<hdf5.h>)
#include <hdf5.h>
#else
#include <hdf5/serial/hdf5.h>
#endif
#else
#include <hdf5.h>
#endif

#include "check.h"
#include "kindling.h"
#include "safe_file.h"
#include "rng.h"

static char tmpdir[64];

static void path_in(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
}

/* Whole file as bytes; *len set. NULL if unreadable. */
static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    *len = fread(buf, 1, (size_t)n, f);
    fclose(f);
    return buf;
}

static int write_all(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = fwrite(data, 1, len, f);
    return fclose(f) == 0 && n == len ? 0 : -1;
}

/* Entries in tmpdir whose name contains ".tmp-" (left-over temporaries). */
static int count_temporaries(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    int n = 0;
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp-"))
            n++;
    closedir(d);
    return n;
}

static int same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

static void fill_normal(float *x, size_t n, uint64_t seed, float scale)
{
    kd_rng rng;
    kd_rng_seed(&rng, seed, 7);
    for (size_t i = 0; i < n; i++)
        x[i] = scale * (float)kd_rng_normal(&rng);
}

static void fill_uniform(float *x, size_t n, uint64_t seed)
{
    kd_rng rng;
    kd_rng_seed(&rng, seed, 9);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)kd_rng_uniform(&rng);
}

/* Adam with every config field off its default and a few steps taken, so
 * m, v and the step count are all non-trivial. */
static kd_optim *make_stepped_adam(kd_net *net, uint64_t seed)
{
    kd_optim_config cfg = kd_optim_config_default();
    kd_optim *opt = NULL;
    size_t n = kd_net_param_count(net);
    float *grads = malloc(n * sizeof *grads);
    cfg.kind = KD_OPT_ADAM;
    cfg.lr = 0.003;
    cfg.beta1 = 0.85;
    cfg.beta2 = 0.995;
    cfg.eps = 1e-7;
    cfg.weight_decay = 1e-4;
    cfg.momentum = 0.5;
    cfg.schedule = KD_SCHED_COSINE;
    cfg.total_steps = 1000;
    cfg.lr_min = 1e-5;
    cfg.warmup_steps = 3;
    cfg.step_size = 77;
    cfg.gamma = 0.25;
    CHECK_OK(kd_optim_create(&cfg, n, &opt));
    for (int k = 0; opt && k < 3; k++) {
        fill_normal(grads, n, seed + (uint64_t)k, 0.1f);
        CHECK_OK(kd_optim_step(opt, kd_net_params(net), grads));
    }
    free(grads);
    return opt;
}

static void make_state(kd_train_state *st)
{
    /* Epoch 1 has validation figures and no test ones, epoch 2 both. */
    kd_epoch_record r1 = {1, 0.9, 0.61, NAN, NAN, 12.5, 0.003, 0.95, 0.58};
    kd_epoch_record r2 = {2, 0.45, 0.83, 0.5, 0.81, 11.25, 0.0029, 0.52, 0.8};
    kd_train_state_init(st);
    st->epoch = 2;
    st->step = 3;
    st->seed = 0xfedcba9876543210ULL; /* high bit set: stored unsigned */
    st->batch_size = 32;
    CHECK_OK(kd_train_state_append(st, &r1));
    CHECK_OK(kd_train_state_append(st, &r2));
}

static void check_same_optim(kd_optim *a, kd_optim *b)
{
    const kd_optim_config *ca = kd_optim_get_config(a), *cb = kd_optim_get_config(b);
    size_t na = 0, nb = 0;
    float *sa = kd_optim_state(a, &na), *sb = kd_optim_state(b, &nb);
    CHECK(ca->kind == cb->kind && ca->schedule == cb->schedule && ca->nesterov == cb->nesterov,
          "kind/schedule/nesterov differ");
    CHECK(same_bits(ca->lr, cb->lr) && same_bits(ca->momentum, cb->momentum) &&
              same_bits(ca->beta1, cb->beta1) && same_bits(ca->beta2, cb->beta2) &&
              same_bits(ca->eps, cb->eps) && same_bits(ca->weight_decay, cb->weight_decay) &&
              same_bits(ca->gamma, cb->gamma) && same_bits(ca->lr_min, cb->lr_min),
          "a float config field differs");
    CHECK(ca->step_size == cb->step_size && ca->total_steps == cb->total_steps &&
              ca->warmup_steps == cb->warmup_steps,
          "step_size/total_steps/warmup_steps differ");
    CHECK(kd_optim_steps(a) == kd_optim_steps(b), "steps %lld vs %lld",
          (long long)kd_optim_steps(a), (long long)kd_optim_steps(b));
    CHECK(kd_optim_state_slots(a) == kd_optim_state_slots(b), "slot counts differ");
    CHECK(na == nb && na > 0 && memcmp(sa, sb, na * sizeof *sa) == 0,
          "optimizer state differs (%zu vs %zu floats)", na, nb);
}

static void check_same_state(const kd_train_state *a, const kd_train_state *b)
{
    CHECK(a->epoch == b->epoch && a->step == b->step && a->seed == b->seed &&
              a->batch_size == b->batch_size,
          "train state header differs (epoch %d/%d step %lld/%lld)", a->epoch, b->epoch,
          (long long)a->step, (long long)b->step);
    CHECK(a->history_len == b->history_len, "history_len %d vs %d", a->history_len, b->history_len);
    for (int i = 0; i < a->history_len && i < b->history_len; i++) {
        const kd_epoch_record *x = &a->history[i], *y = &b->history[i];
        CHECK(x->epoch == y->epoch && same_bits(x->train_loss, y->train_loss) &&
                  same_bits(x->train_accuracy, y->train_accuracy) &&
                  same_bits(x->val_loss, y->val_loss) && same_bits(x->val_accuracy, y->val_accuracy) &&
                  same_bits(x->test_loss, y->test_loss) &&
                  same_bits(x->test_accuracy, y->test_accuracy) &&
                  same_bits(x->seconds, y->seconds) &&
                  same_bits(x->learning_rate, y->learning_rate),
              "history record %d differs", i);
    }
}

/* Save net + stepped Adam + state, load, compare everything bit for bit. */
static void round_trip(const char *label, const char *spec)
{
    char path[128];
    kd_net *net = NULL, *back = NULL;
    kd_optim *opt = NULL, *opt_back = NULL;
    kd_train_state st, st_back;
    char fname[64];

    snprintf(fname, sizeof fname, "rt_%s.h5", label);
    path_in(path, sizeof path, fname);
    CHECK_OK(kd_net_create(spec, 42, &net));
    if (!net)
        return;
    if (strcmp(label, "bn") == 0)
        CHECK(kd_net_state_count(net) > 0, "the batch-norm spec has no layer state");
    /* Batch-norm running statistics that are not the initial 0/1. */
    if (kd_net_state_count(net) > 0)
        fill_uniform(kd_net_state(net), kd_net_state_count(net), 5);
    opt = make_stepped_adam(net, 11);
    make_state(&st);

    CHECK_OK(kd_checkpoint_save(path, net, opt, &st));
    CHECK(count_temporaries() == 0, "%s: temporary left after a good save", label);
    kd_train_state_init(&st_back);
    CHECK_OK(kd_checkpoint_load(path, &back, &opt_back, &st_back));
    if (!back || !opt_back) {
        CHECK(0, "%s: load returned no network or optimizer", label);
        goto out;
    }
    CHECK(strcmp(kd_net_spec_json(net), kd_net_spec_json(back)) == 0, "%s: spec differs", label);
    size_t np = kd_net_param_count(net), ns = kd_net_state_count(net);
    CHECK(np == kd_net_param_count(back) &&
              memcmp(kd_net_params(net), kd_net_params(back), np * sizeof(float)) == 0,
          "%s: parameters differ", label);
    CHECK(ns == kd_net_state_count(back) &&
              (ns == 0 || memcmp(kd_net_state(net), kd_net_state(back), ns * sizeof(float)) == 0),
          "%s: layer state differs", label);
    check_same_optim(opt, opt_back);
    check_same_state(&st, &st_back);

    /* Same predictions on random inputs. */
    {
        kd_shape in = kd_net_input_shape(net);
        int64_t n = 7;
        size_t isz = kd_shape_size(&in), c = (size_t)kd_net_num_classes(net);
        float *x = malloc((size_t)n * isz * sizeof *x);
        float *pa = malloc((size_t)n * c * sizeof *pa), *pb = malloc((size_t)n * c * sizeof *pb);
        fill_uniform(x, (size_t)n * isz, 99);
        CHECK_OK(kd_net_predict(net, x, n, pa));
        CHECK_OK(kd_net_predict(back, x, n, pb));
        CHECK(memcmp(pa, pb, (size_t)n * c * sizeof *pa) == 0, "%s: predictions differ", label);
        free(x);
        free(pa);
        free(pb);
    }
    /* The loaded optimizer continues exactly like the original one. */
    {
        float *g = malloc(np * sizeof *g);
        fill_normal(g, np, 1234, 0.05f);
        CHECK_OK(kd_optim_step(opt, kd_net_params(net), g));
        CHECK_OK(kd_optim_step(opt_back, kd_net_params(back), g));
        CHECK(memcmp(kd_net_params(net), kd_net_params(back), np * sizeof(float)) == 0,
              "%s: a step after loading diverges", label);
        free(g);
    }
out:
    kd_train_state_clear(&st);
    kd_train_state_clear(&st_back);
    kd_optim_free(opt);
    kd_optim_free(opt_back);
    kd_net_free(net);
    kd_net_free(back);
}

/* Without optimizer and state: load gives *opt_out == NULL and an empty state;
 * with NULL outputs only the network is read. */
static void test_optional_parts(void)
{
    char path[128];
    kd_net *net = NULL, *back = NULL;
    kd_optim *opt = (kd_optim *)&opt; /* must be overwritten with NULL */
    kd_train_state st;
    path_in(path, sizeof path, "bare.h5");
    CHECK_OK(kd_net_create("mlp", 3, &net));
    if (!net)
        return;
    CHECK_OK(kd_checkpoint_save(path, net, NULL, NULL));
    CHECK_OK(kd_checkpoint_load(path, &back, &opt, &st));
    CHECK(opt == NULL, "no optimizer in the file, but one was returned");
    CHECK(st.history_len == 0 && st.history == NULL && st.epoch == 0, "state not empty");
    CHECK(back && memcmp(kd_net_params(net), kd_net_params(back),
                         kd_net_param_count(net) * sizeof(float)) == 0,
          "parameters differ");
    kd_net_free(back);
    back = NULL;

    /* An empty history (a state saved before the first epoch ends). */
    kd_train_state empty, empty_back;
    kd_train_state_init(&empty);
    empty.step = 17;
    empty.batch_size = 8;
    CHECK_OK(kd_checkpoint_save(path, net, NULL, &empty));
    CHECK_OK(kd_checkpoint_load(path, &back, NULL, &empty_back));
    CHECK(empty_back.step == 17 && empty_back.batch_size == 8 && empty_back.history_len == 0,
          "empty-history state did not round-trip");
    kd_train_state_clear(&empty_back);
    kd_net_free(back);
    kd_net_free(net);
}

/* A failed save must leave the previous checkpoint byte-identical. */
static void test_crash_safety(void)
{
    char good[128], missing_dir[160], tmpname[192], dirpath[128], inner[160];
    kd_net *net = NULL, *other = NULL;
    kd_optim *wrong = NULL;
    size_t len0 = 0, len1 = 0;
    unsigned char *before, *after;

    path_in(good, sizeof good, "good.h5");
    CHECK_OK(kd_net_create("mlp", 1, &net));
    CHECK_OK(kd_net_create("mlp", 2, &other));
    if (!net || !other)
        return;
    CHECK_OK(kd_checkpoint_save(good, net, NULL, NULL));
    before = read_all(good, &len0);
    CHECK(before && len0 > 0, "good checkpoint not written");

    /* Directory does not exist. */
    snprintf(missing_dir, sizeof missing_dir, "%s/no/such/dir/x.h5", tmpdir);
    CHECK_FAILS(kd_checkpoint_save(missing_dir, other, NULL, NULL), KD_ERR_IO, missing_dir);

    /* The temporary name is taken by a directory, so creating it fails. */
    CHECK_OK(kd_safe_file_temp_name(good, tmpname, sizeof tmpname));
    CHECK(mkdir(tmpname, 0755) == 0, "mkdir %s: %s", tmpname, strerror(errno));
    CHECK_FAILS(kd_checkpoint_save(good, other, NULL, NULL), KD_ERR_IO, good);
    struct stat sb;
    CHECK(stat(tmpname, &sb) == 0 && S_ISDIR(sb.st_mode),
          "save removed a directory it did not create");
    rmdir(tmpname);

    /* Failure after the temporary exists: an optimizer sized for another net. */
    kd_optim_config cfg = kd_optim_config_default();
    cfg.kind = KD_OPT_ADAM;
    CHECK_OK(kd_optim_create(&cfg, 10, &wrong));
    CHECK_FAILS(kd_checkpoint_save(good, other, wrong, NULL), KD_ERR_SHAPE, "optimizer");

    /* The rename itself fails: the target is a non-empty directory. */
    path_in(dirpath, sizeof dirpath, "adir.h5");
    snprintf(inner, sizeof inner, "%s/keep", dirpath);
    CHECK(mkdir(dirpath, 0755) == 0 && write_all(inner, "x", 1) == 0, "setting up %s", dirpath);
    CHECK_FAILS(kd_checkpoint_save(dirpath, other, NULL, NULL), KD_ERR_IO, "rename");
    unlink(inner);
    rmdir(dirpath);

    after = read_all(good, &len1);
    CHECK(after && len1 == len0 && memcmp(before, after, len0) == 0,
          "a failed save changed the previous checkpoint");
    CHECK(count_temporaries() == 0, "a failed save left a temporary file");
    /* And it still loads as the first network. */
    kd_net *back = NULL;
    CHECK_OK(kd_checkpoint_load(good, &back, NULL, NULL));
    CHECK(back && memcmp(kd_net_params(net), kd_net_params(back),
                         kd_net_param_count(net) * sizeof(float)) == 0,
          "the surviving checkpoint is not the first network");
    kd_net_free(back);
    free(before);
    free(after);
    kd_optim_free(wrong);
    kd_net_free(net);
    kd_net_free(other);
}

/* Replaces a root string attribute with a fixed-length one (as other tools write). */
static int set_root_string(const char *path, const char *name, const char *value)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0)
        return -1;
    if (H5Aexists(f, name) > 0)
        H5Adelete(f, name);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(value) + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t w = a >= 0 ? H5Awrite(a, t, value) : -1;
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return H5Fclose(f) < 0 || w < 0 ? -1 : 0;
}

static int set_root_int(const char *path, const char *name, int value)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0)
        return -1;
    if (H5Aexists(f, name) > 0)
        H5Adelete(f, name);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t w = a >= 0 ? H5Awrite(a, H5T_NATIVE_INT, &value) : -1;
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    return H5Fclose(f) < 0 || w < 0 ? -1 : 0;
}

static int delete_link(const char *path, const char *name)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0)
        return -1;
    herr_t d = H5Ldelete(f, name, H5P_DEFAULT);
    return H5Fclose(f) < 0 || d < 0 ? -1 : 0;
}

/* Replaces /optimizer/m with a float32 vector of n zeros. */
static int replace_slot(const char *path, const char *name, hsize_t n)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0)
        return -1;
    H5Ldelete(f, name, H5P_DEFAULT);
    float *z = calloc(n, sizeof *z);
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t d = H5Dcreate2(f, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t w = d >= 0 ? H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, z) : -1;
    if (d >= 0)
        H5Dclose(d);
    H5Sclose(sp);
    free(z);
    return H5Fclose(f) < 0 || w < 0 ? -1 : 0;
}

static int copy_file(const char *from, const char *to)
{
    size_t len = 0;
    unsigned char *b = read_all(from, &len);
    int r = b ? write_all(to, b, len) : -1;
    free(b);
    return r;
}

/* One bad load: the status, a message fragment, and every output cleared. */
static void check_load_fails(const char *path, kd_status want, const char *needle)
{
    kd_net *net = (kd_net *)&net;
    kd_optim *opt = (kd_optim *)&opt;
    kd_train_state st;
    CHECK_FAILS(kd_checkpoint_load(path, &net, &opt, &st), want, needle);
    CHECK(net == NULL && opt == NULL && st.history == NULL && st.history_len == 0,
          "outputs not cleared after a failed load of %s", path);
}

/* A diverged model is never written, never loaded, and its outputs are
 * refused by predict and evaluate. */
static void test_non_finite(void)
{
    char path[512];
    path_in(path, sizeof path, "finite.h5");
    kd_net *net = NULL, *back = NULL;
    CHECK_OK(kd_net_create("{\"input\": [4], \"layers\": [{\"type\": \"dense\", \"units\": 3}, "
                           "{\"type\": \"softmax\"}]}", 3, &net));
    if (!net)
        return;
    CHECK_OK(kd_checkpoint_save(path, net, NULL, NULL));
    size_t before_len = 0;
    unsigned char *before = read_all(path, &before_len);
    float *p = kd_net_params(net);
    float saved = p[5];
    p[5] = NAN;
    CHECK_FAILS(kd_checkpoint_save(path, net, NULL, NULL), KD_ERR_NUMERIC,
                "not saved: layer 'dense_1' weight holds NaN (element 5) (training diverged: try a lower learning rate)");
    size_t after_len = 0;
    unsigned char *after = read_all(path, &after_len);
    CHECK(before && after && before_len == after_len && memcmp(before, after, before_len) == 0,
          "a refused save changed the previous checkpoint");
    free(before);
    free(after);
    p[5] = saved;

    /* The same NaN written behind Kindling's back: loading refuses it. */
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = f >= 0 ? H5Dopen2(f, "/layers/dense_1/bias", H5P_DEFAULT) : -1;
    float bias[3] = {0, INFINITY, 0};
    CHECK(d >= 0 && H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, bias) >= 0, "writing an Inf bias");
    if (d >= 0)
        H5Dclose(d);
    if (f >= 0)
        H5Fclose(f);
    CHECK_FAILS(kd_checkpoint_load(path, &back, NULL, NULL), KD_ERR_NUMERIC,
                "layer 'dense_1' bias holds Inf (element 1): the checkpoint is unusable");
    CHECK(back == NULL, "output set on failure");

    /* Finite weights that overflow: predict and evaluate name the sample. */
    for (size_t i = 0; i < kd_net_param_count(net); i++)
        p[i] = 3e38f;
    float x[8] = {1, 1, 1, 1, 2, 2, 2, 2}, probs[6];
    CHECK_FAILS(kd_net_predict(net, x, 2, probs), KD_ERR_NUMERIC, "sample 0: the network's output is NaN");
    kd_dataset *ds = NULL;
    kd_shape s4 = {1, {4, 0, 0, 0}};
    CHECK_OK(kd_dataset_alloc(2, &s4, &ds));
    if (ds) {
        memcpy(ds->x, x, sizeof x);
        ds->y[0] = 0;
        ds->y[1] = 2;
        kd_eval_result r;
        CHECK_FAILS(kd_evaluate(net, ds, 1, &r), KD_ERR_NUMERIC, "sample 0: the network's output is NaN");
    }
    kd_dataset_free(ds);
    kd_net_free(net);
}

/* The destination is checked before training: a directory, a missing
 * directory, a file where a directory should be, a directory without
 * write permission (skipped as root, who may write anyway). */
static void test_check_path(void)
{
    char ok[512], dir[512], missing[512], under_file[600], tmp[700];
    path_in(ok, sizeof ok, "dest.h5");
    CHECK_OK(kd_save_check_path(ok));
    CHECK_OK(kd_save_temp_path(ok, tmp, sizeof tmp));
    CHECK(access(tmp, F_OK) != 0 && access(ok, F_OK) != 0, "the check left a file behind");
    path_in(dir, sizeof dir, "");
    CHECK_FAILS(kd_save_check_path(dir), KD_ERR_IO, "is a directory; name a file in it");
    path_in(missing, sizeof missing, "no_such_dir/model.h5");
    CHECK_FAILS(kd_save_check_path(missing), KD_ERR_IO, "no_such_dir: No such file or directory");
    snprintf(under_file, sizeof under_file, "%s/x.h5", ok);
    CHECK(write_all(ok, "x", 1) == 0, "creating a file");
    CHECK_FAILS(kd_save_check_path(under_file), KD_ERR_IO, "dest.h5 is not a directory");
    unlink(ok);
    if (geteuid() != 0) {
        char ro[512], in_ro[600];
        path_in(ro, sizeof ro, "read_only");
        mkdir(ro, 0555);
        snprintf(in_ro, sizeof in_ro, "%s/model.h5", ro);
        CHECK_FAILS(kd_save_check_path(in_ro), KD_ERR_IO, "Permission denied");
        rmdir(ro);
    } else {
        printf("SKIP read-only directory check: root writes anyway (tests/cli_checkpoint_dest.sh mounts a read-only "
               "file system)\n");
    }
}

static void test_bad_files(void)
{
    char good[128], p[128], needle[256];
    kd_net *net = NULL;
    kd_optim *opt = NULL;
    size_t len = 0;

    path_in(good, sizeof good, "base.h5");
    CHECK_OK(kd_net_create("mlp", 7, &net));
    if (!net)
        return;
    opt = make_stepped_adam(net, 3);
    CHECK_OK(kd_checkpoint_save(good, net, opt, NULL));

    path_in(p, sizeof p, "does_not_exist.h5");
    check_load_fails(p, KD_ERR_IO, p);

    path_in(p, sizeof p, "text.h5");
    write_all(p, "epoch,loss\n1,0.5\n", 17);
    snprintf(needle, sizeof needle, "%s: not an HDF5 file", p);
    check_load_fails(p, KD_ERR_FORMAT, needle);

    path_in(p, sizeof p, "truncated.h5");
    unsigned char *bytes = read_all(good, &len);
    write_all(p, bytes, len / 2);
    free(bytes);
    check_load_fails(p, KD_ERR_FORMAT, p);

    /* HDF5, but someone else's. */
    path_in(p, sizeof p, "foreign.h5");
    {
        hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        hsize_t n = 4;
        float v[4] = {1, 2, 3, 4};
        hid_t sp = H5Screate_simple(1, &n, NULL);
        hid_t d = H5Dcreate2(f, "data", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
        H5Dclose(d);
        H5Sclose(sp);
        H5Fclose(f);
    }
    snprintf(needle, sizeof needle, "%s: not a Kindling checkpoint (no 'format' attribute)", p);
    check_load_fails(p, KD_ERR_FORMAT, needle);

    path_in(p, sizeof p, "otherformat.h5");
    copy_file(good, p);
    CHECK(set_root_string(p, "format", "keras-model") == 0, "rewriting format");
    check_load_fails(p, KD_ERR_FORMAT, "not a Kindling checkpoint");

    path_in(p, sizeof p, "future.h5");
    copy_file(good, p);
    CHECK(set_root_int(p, "format_version", 3) == 0, "rewriting format_version");
    check_load_fails(p, KD_ERR_UNSUPPORTED, "version 3");

    /* The mlp's weights under a spec whose first dense layer is narrower. */
    path_in(p, sizeof p, "narrow.h5");
    copy_file(good, p);
    {
        const char *mlp = kd_preset_json("mlp");
        const char *at = strstr(mlp, "\"units\": 128");
        char spec[1024];
        CHECK(at != NULL, "mlp preset has no \"units\": 128");
        if (at) {
            snprintf(spec, sizeof spec, "%.*s\"units\": 100%s", (int)(at - mlp), mlp,
                     at + strlen("\"units\": 128"));
            CHECK(set_root_string(p, "spec", spec) == 0, "rewriting spec");
            snprintf(needle, sizeof needle,
                     "%s: layer 'dense_1' weight has shape 128x784, the spec expects 100x784", p);
            check_load_fails(p, KD_ERR_SHAPE, needle);
        }
    }

    path_in(p, sizeof p, "badspec.h5");
    copy_file(good, p);
    CHECK(set_root_string(p, "spec", "{\"input\": [1, 28, 28], \"layers\": [{\"type\": \"nonsense\"}]}") == 0,
          "rewriting spec");
    check_load_fails(p, KD_ERR_INVALID, "stored spec");

    path_in(p, sizeof p, "nolayer.h5");
    copy_file(good, p);
    CHECK(delete_link(p, "/layers/dense_2") == 0, "deleting /layers/dense_2");
    check_load_fails(p, KD_ERR_FORMAT, "dense_2");

    path_in(p, sizeof p, "shortslot.h5");
    copy_file(good, p);
    CHECK(replace_slot(p, "/optimizer/m", 5) == 0, "replacing /optimizer/m");
    check_load_fails(p, KD_ERR_SHAPE, "optimizer state 'm' has shape 5");
    /* The network alone still loads when the optimizer is not asked for. */
    {
        kd_net *only = NULL;
        CHECK_OK(kd_checkpoint_load(p, &only, NULL, NULL));
        kd_net_free(only);
    }

    kd_optim_free(opt);
    kd_net_free(net);
}

/* Saving and loading must not leave HDF5's error printing switched off. */
static void test_error_handler_restored(void)
{
    H5E_auto2_t f0 = NULL, f1 = NULL;
    void *d0 = NULL, *d1 = NULL;
    char p[128];
    kd_net *net = NULL;
    H5Eget_auto2(H5E_DEFAULT, &f0, &d0);
    path_in(p, sizeof p, "text.h5");
    CHECK(kd_checkpoint_load(p, &net, NULL, NULL) != KD_OK, "text file loaded");
    CHECK(kd_checkpoint_save("/nonexistent-dir/x.h5", NULL, NULL, NULL) == KD_ERR_INVALID,
          "NULL net accepted");
    H5Eget_auto2(H5E_DEFAULT, &f1, &d1);
    CHECK(f0 == f1 && d0 == d1 && f0 != NULL, "HDF5 error handler changed");
}

static void remove_tree(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char p[512];
    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

/* A writer killed mid-save leaves "<path>.tmp-<host>-<pid>": the next save
 * on this host removes it once that pid is gone, and never touches a live
 * process's temporary or another host's. */
static void test_stale_temporaries(void)
{
    char path[512], mine[640], dead[640], live[640], other[640];
    path_in(path, sizeof path, "stale.h5");
    CHECK_OK(kd_safe_file_temp_name(path, mine, sizeof mine));
    /* The public name (what a program's signal handler removes) is the one saves write. */
    char pub[640];
    CHECK_OK(kd_save_temp_path(path, pub, sizeof pub));
    CHECK(strcmp(pub, mine) == 0, "kd_save_temp_path gives %s, saves write %s", pub, mine);
    CHECK_FAILS(kd_save_temp_path(path, pub, 8), KD_ERR_INVALID, "too long");
    pid_t child = fork();
    if (child == 0)
        _exit(0);
    waitpid(child, NULL, 0); /* its pid is now free */
    char *dash = strrchr(mine, '-');
    CHECK(dash != NULL, "temporary name %s has no pid", mine);
    if (!dash)
        return;
    snprintf(dead, sizeof dead, "%.*s-%ld", (int)(dash - mine), mine, (long)child);
    snprintf(live, sizeof live, "%.*s-%ld", (int)(dash - mine), mine, (long)getppid());
    snprintf(other, sizeof other, "%s.tmp-some-other-host-%ld", path, (long)child);
    CHECK(write_all(dead, "x", 1) == 0 && write_all(live, "x", 1) == 0 && write_all(other, "x", 1) == 0,
          "creating temporaries");
    kd_net *net = NULL;
    CHECK_OK(kd_net_create("mlp", 1, &net));
    CHECK_OK(kd_checkpoint_save(path, net, NULL, NULL));
    CHECK(access(dead, F_OK) != 0, "a dead writer's temporary %s was kept", dead);
    CHECK(access(live, F_OK) == 0, "a live process's temporary %s was removed", live);
    CHECK(access(other, F_OK) == 0, "another host's temporary %s was removed", other);
    CHECK(access(mine, F_OK) != 0, "the save left its own temporary");

    /* A writer killed but not yet reaped (a zombie) is dead too; so is a
     * pid now held by a process that started after the file's last write. */
    char zombie_tmp[640], reused_tmp[640];
    pid_t zombie = fork();
    if (zombie == 0)
        _exit(0);
    pid_t sleeper = fork();
    if (sleeper == 0) {
        sleep(30);
        _exit(0);
    }
    for (int i = 0; i < 200; i++) { /* until the kernel shows it as a zombie */
        char sp[64], st[256] = "";
        snprintf(sp, sizeof sp, "/proc/%ld/stat", (long)zombie);
        FILE *f = fopen(sp, "r");
        if (f) {
            size_t got = fread(st, 1, sizeof st - 1, f);
            st[got] = 0;
            fclose(f);
        }
        char *rp = strrchr(st, ')');
        if (rp && rp[1] == ' ' && rp[2] == 'Z')
            break;
        usleep(10000);
    }
    snprintf(zombie_tmp, sizeof zombie_tmp, "%.*s-%ld", (int)(dash - mine), mine, (long)zombie);
    snprintf(reused_tmp, sizeof reused_tmp, "%.*s-%ld", (int)(dash - mine), mine, (long)sleeper);
    CHECK(write_all(zombie_tmp, "x", 1) == 0 && write_all(reused_tmp, "x", 1) == 0, "creating temporaries");
    struct timespec old_times[2] = {{time(NULL) - 3600, 0}, {time(NULL) - 3600, 0}};
    CHECK(utimensat(AT_FDCWD, reused_tmp, old_times, 0) == 0, "backdating %s", reused_tmp);
    CHECK_OK(kd_checkpoint_save(path, net, NULL, NULL));
    CHECK(access(zombie_tmp, F_OK) != 0, "a zombie writer's temporary %s was kept", zombie_tmp);
    CHECK(access(reused_tmp, F_OK) != 0, "a temporary whose pid was reused later (%s) was kept", reused_tmp);
    CHECK(access(live, F_OK) == 0, "a live process's temporary %s was removed", live);
    kill(sleeper, SIGKILL);
    waitpid(sleeper, NULL, 0);
    waitpid(zombie, NULL, 0);
    unlink(zombie_tmp);
    unlink(reused_tmp);
    unlink(live);
    unlink(other);
    unlink(path);
    kd_net_free(net);
}

/* A checkpoint of format version 1 (tests/data/checkpoint_v1.h5, written
 * by Kindling before version 2): it loads, its 7-column history reads with
 * NaN validation figures and no warmup, and saved again it round-trips as
 * version 2 with everything kept. */
static void test_version_1(void)
{
    const char *src = getenv("KD_SOURCE_DIR");
    char v1[1024], again[128];
    snprintf(v1, sizeof v1, "%s/tests/data/checkpoint_v1.h5", src ? src : "..");
    kd_net *net = NULL, *back = NULL;
    kd_optim *opt = NULL, *opt_back = NULL;
    kd_train_state st, st_back;
    CHECK_OK(kd_checkpoint_load(v1, &net, &opt, &st));
    if (!net || !opt)
        return;
    CHECK(kd_net_param_count(net) == 6 * 5 + 5 + 5 * 2 + 5 * 3 + 3, "v1: %zu parameters", kd_net_param_count(net));
    const kd_optim_config *c = kd_optim_get_config(opt);
    CHECK(c->kind == KD_OPT_MOMENTUM && c->schedule == KD_SCHED_COSINE && c->warmup_steps == 0 &&
              c->total_steps == 24 && kd_optim_steps(opt) == 24,
          "v1 optimizer: kind %d schedule %d warmup %lld total %lld steps %lld", (int)c->kind, (int)c->schedule,
          (long long)c->warmup_steps, (long long)c->total_steps, (long long)kd_optim_steps(opt));
    CHECK(st.epoch == 3 && st.step == 24 && st.batch_size == 8 && st.seed == 42 && st.history_len == 3,
          "v1 state: epoch %d step %lld history %d", st.epoch, (long long)st.step, st.history_len);
    for (int i = 0; i < st.history_len; i++) {
        const kd_epoch_record *r = &st.history[i];
        CHECK(r->epoch == i + 1 && isnan(r->val_loss) && isnan(r->val_accuracy) && r->test_accuracy == 1.0 &&
                  r->train_loss > 0 && r->test_loss > 0 && r->learning_rate >= 0,
              "v1 history row %d: epoch %d val %g/%g test acc %g", i, r->epoch, r->val_loss, r->val_accuracy,
              r->test_accuracy);
    }
    CHECK(st.history_len == 3 && st.history[0].train_loss > st.history[2].train_loss, "v1: the loss fell");
    path_in(again, sizeof again, "v1_saved_again.h5");
    CHECK_OK(kd_checkpoint_save(again, net, opt, &st));
    CHECK_OK(kd_checkpoint_load(again, &back, &opt_back, &st_back));
    if (back && opt_back) {
        CHECK(memcmp(kd_net_params(net), kd_net_params(back), kd_net_param_count(net) * sizeof(float)) == 0,
              "v1 parameters changed on the way to version 2");
        check_same_optim(opt, opt_back);
        check_same_state(&st, &st_back);
    }
    kd_train_state_clear(&st_back);
    kd_optim_free(opt_back);
    kd_net_free(back);
    kd_train_state_clear(&st);
    kd_optim_free(opt);
    kd_net_free(net);
    unlink(again);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kd_ckpt_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    static const char BN_SPEC[] =
        "{\"input\": [2, 10, 10], \"layers\": ["
        "{\"type\": \"conv2d\", \"filters\": 4, \"kernel\": 3}, {\"type\": \"batchnorm\"},"
        "{\"type\": \"relu\"}, {\"type\": \"maxpool\", \"size\": 2}, {\"type\": \"flatten\"},"
        "{\"type\": \"dense\", \"units\": 12, \"name\": \"hidden\"}, {\"type\": \"batchnorm\"},"
        "{\"type\": \"dropout\", \"rate\": 0.5}, {\"type\": \"relu\"},"
        "{\"type\": \"dense\", \"units\": 3}, {\"type\": \"softmax\"}]}";
    round_trip("mlp", "mlp");
    round_trip("lenet", "lenet");
    round_trip("bn", BN_SPEC);
    test_optional_parts();
    test_version_1();
    test_crash_safety();
    test_stale_temporaries();
    test_non_finite();
    test_check_path();
    test_bad_files();
    test_error_handler_restored();
    remove_tree();
    return check_summary();
}
