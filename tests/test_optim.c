/* Optimizers, schedules and the training-state record.
 *
 * Each optimizer is checked against a double-precision re-implementation
 * written here from the torch.optim formulas (not by calling the library),
 * over several steps with changing gradients, including the state vectors.
 * The vector has 7 elements so that a 4-wide SIMD body and a scalar tail
 * are both exercised. */
#include "kindling.h"
#include "check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define N 7
#define STEPS 5

/* ----------------------------------------------------------- reference */

static double ref_lr(const kd_optim_config *c, int64_t t)
{
    if (c->schedule == KD_SCHED_STEP) {
        double lr = c->lr;
        for (int64_t k = 0; k < t / c->step_size; k++)
            lr *= c->gamma;
        return lr;
    }
    if (c->schedule == KD_SCHED_COSINE) {
        double frac = (double)(t < c->total_steps ? t : c->total_steps) / (double)c->total_steps;
        return c->lr_min + 0.5 * (c->lr - c->lr_min) * (1.0 + cos(3.14159265358979323846 * frac));
    }
    return c->lr;
}

typedef struct ref_state {
    double p[N], buf[N], m[N], v[N];
    int64_t t; /* completed steps */
} ref_state;

static void ref_step(const kd_optim_config *c, ref_state *s, const double *grad)
{
    double lr = ref_lr(c, s->t);
    for (int i = 0; i < N; i++) {
        double p = s->p[i];
        switch (c->kind) {
        case KD_OPT_SGD:
            s->p[i] = p - lr * (grad[i] + c->weight_decay * p);
            break;
        case KD_OPT_MOMENTUM: {
            double g = grad[i] + c->weight_decay * p;
            s->buf[i] = s->t == 0 ? g : c->momentum * s->buf[i] + g;
            double update = c->nesterov ? g + c->momentum * s->buf[i] : s->buf[i];
            s->p[i] = p - lr * update;
            break;
        }
        case KD_OPT_ADAM:
        case KD_OPT_ADAMW: {
            double g = grad[i];
            if (c->kind == KD_OPT_ADAMW)
                p *= 1.0 - lr * c->weight_decay;
            else
                g += c->weight_decay * p;
            s->m[i] = c->beta1 * s->m[i] + (1 - c->beta1) * g;
            s->v[i] = c->beta2 * s->v[i] + (1 - c->beta2) * g * g;
            double step = (double)(s->t + 1);
            double mhat = s->m[i] / (1 - pow(c->beta1, step));
            double vhat = s->v[i] / (1 - pow(c->beta2, step));
            s->p[i] = p - lr * mhat / (sqrt(vhat) + c->eps);
            break;
        }
        }
    }
    s->t++;
}

/* Gradients that change sign and size from step to step and element to element. */
static void make_grad(int step, double *g)
{
    for (int i = 0; i < N; i++)
        g[i] = sin(1.3 * i + 0.7 * step) * (1.0 + 0.25 * i) + 0.05 * step;
}

static void initial_params(double *p)
{
    for (int i = 0; i < N; i++)
        p[i] = 0.5 - 0.2 * i;
}

/* Runs `steps` library steps and the reference side by side from the same
 * start, comparing the parameters after every step and the state at the end. */
static void compare_with_reference(const char *label, const kd_optim_config *cfg, int steps, double tol)
{
    kd_optim *opt = NULL;
    float p[N], g[N];
    double gd[N];
    ref_state ref;
    memset(&ref, 0, sizeof ref);
    initial_params(ref.p);
    for (int i = 0; i < N; i++)
        p[i] = (float)ref.p[i];

    CHECK_OK(kd_optim_create(cfg, N, &opt));
    if (!opt)
        return;
    double worst = 0;
    for (int s = 0; s < steps; s++) {
        make_grad(s, gd);
        for (int i = 0; i < N; i++) {
            g[i] = (float)gd[i];
            gd[i] = g[i]; /* the reference sees the same float gradients */
        }
        CHECK(fabs(kd_optim_current_lr(opt) - ref_lr(cfg, s)) < 1e-12, "%s: lr before step %d: %g vs %g", label, s,
              kd_optim_current_lr(opt), ref_lr(cfg, s));
        CHECK_OK(kd_optim_step(opt, p, g));
        ref_step(cfg, &ref, gd);
        for (int i = 0; i < N; i++)
            if (fabs(p[i] - ref.p[i]) > worst)
                worst = fabs(p[i] - ref.p[i]);
    }
    CHECK(worst < tol, "%s: parameters differ from the reference by %g", label, worst);
    CHECK(kd_optim_steps(opt) == steps, "%s: step counter %lld", label, (long long)kd_optim_steps(opt));
    /* The parameters must have moved, or the comparison proves little. */
    double moved = 0;
    double p0[N];
    initial_params(p0);
    for (int i = 0; i < N; i++)
        moved += fabs(p[i] - p0[i]);
    CHECK(moved > 1e-3, "%s: parameters hardly moved (%g)", label, moved);

    size_t count = 0;
    float *st = kd_optim_state(opt, &count);
    double state_err = 0;
    for (int i = 0; i < N && st; i++) {
        if (cfg->kind == KD_OPT_MOMENTUM)
            state_err = fmax(state_err, fabs(st[i] - ref.buf[i]));
        if (cfg->kind == KD_OPT_ADAM || cfg->kind == KD_OPT_ADAMW) {
            state_err = fmax(state_err, fabs(st[i] - ref.m[i]));
            state_err = fmax(state_err, fabs(st[N + i] - ref.v[i]));
        }
    }
    CHECK(state_err < tol, "%s: state differs from the reference by %g", label, state_err);
    kd_optim_free(opt);
}

static kd_optim_config config_of(kd_optim_kind kind, double lr, double wd)
{
    kd_optim_config c = kd_optim_config_default();
    c.kind = kind;
    c.lr = lr;
    c.weight_decay = wd;
    return c;
}

static void test_against_reference(void)
{
    kd_optim_config c;
    c = config_of(KD_OPT_SGD, 0.1, 0);
    compare_with_reference("sgd", &c, STEPS, 1e-5);
    c = config_of(KD_OPT_SGD, 0.1, 0.05);
    compare_with_reference("sgd+wd", &c, STEPS, 1e-5);
    c = config_of(KD_OPT_MOMENTUM, 0.05, 0);
    compare_with_reference("momentum", &c, STEPS, 1e-5);
    c = config_of(KD_OPT_MOMENTUM, 0.05, 0.01);
    c.momentum = 0.8;
    c.nesterov = 1;
    compare_with_reference("nesterov+wd", &c, STEPS, 1e-5);
    c = config_of(KD_OPT_MOMENTUM, 0.05, 0);
    c.nesterov = 1;
    compare_with_reference("nesterov", &c, STEPS, 1e-5);
    c = config_of(KD_OPT_ADAM, 0.01, 0);
    compare_with_reference("adam", &c, STEPS, 1e-5);
    c = config_of(KD_OPT_ADAM, 0.01, 0.1);
    c.beta1 = 0.8;
    c.beta2 = 0.99;
    compare_with_reference("adam+wd", &c, STEPS, 1e-5);
    c = config_of(KD_OPT_ADAMW, 0.01, 0.1);
    compare_with_reference("adamw", &c, STEPS, 1e-5);

    /* With schedules: the lr each step uses comes from the step counter. */
    c = config_of(KD_OPT_MOMENTUM, 0.05, 0);
    c.schedule = KD_SCHED_STEP;
    c.step_size = 2;
    c.gamma = 0.5;
    compare_with_reference("momentum+step", &c, 7, 1e-5);
    c = config_of(KD_OPT_ADAMW, 0.02, 0.1);
    c.schedule = KD_SCHED_COSINE;
    c.total_steps = 4;
    c.lr_min = 0.001;
    compare_with_reference("adamw+cosine", &c, 7, 1e-5);
}

/* ----------------------------------------------------------- schedules */

static double lr_after(const kd_optim_config *c, int64_t steps)
{
    kd_optim *opt = NULL;
    double lr = NAN;
    if (kd_optim_create(c, 1, &opt) == KD_OK) {
        kd_optim_set_steps(opt, steps);
        lr = kd_optim_current_lr(opt);
    }
    kd_optim_free(opt);
    return lr;
}

static void test_schedules(void)
{
    kd_optim_config c = config_of(KD_OPT_SGD, 0.1, 0);
    CHECK(lr_after(&c, 0) == 0.1 && lr_after(&c, 123456) == 0.1, "constant schedule changed the lr");

    c.schedule = KD_SCHED_STEP;
    c.step_size = 3;
    c.gamma = 0.5; /* powers of 0.5 are exact, so the boundaries can be compared exactly */
    CHECK(lr_after(&c, 0) == 0.1, "step t=0: %g", lr_after(&c, 0));
    CHECK(lr_after(&c, 2) == 0.1, "step t=2 (last of the first interval): %g", lr_after(&c, 2));
    CHECK(lr_after(&c, 3) == 0.05, "step t=3 (first decay): %g", lr_after(&c, 3));
    CHECK(lr_after(&c, 5) == 0.05, "step t=5: %g", lr_after(&c, 5));
    CHECK(lr_after(&c, 6) == 0.025, "step t=6: %g", lr_after(&c, 6));
    CHECK(lr_after(&c, 9) == 0.0125, "step t=9: %g", lr_after(&c, 9));
    c.gamma = 1.0;
    CHECK(lr_after(&c, 1000) == 0.1, "gamma 1 must keep the lr: %g", lr_after(&c, 1000));

    c = config_of(KD_OPT_SGD, 0.1, 0);
    c.schedule = KD_SCHED_COSINE;
    c.total_steps = 10;
    c.lr_min = 0.01;
    CHECK_NEAR(lr_after(&c, 0), 0.1, 1e-15);
    CHECK_NEAR(lr_after(&c, 5), 0.055, 1e-15);         /* half way: the mean */
    CHECK_NEAR(lr_after(&c, 10), 0.01, 1e-15);         /* the end: lr_min */
    CHECK_NEAR(lr_after(&c, 25), 0.01, 1e-15);         /* beyond: stays at lr_min */
    CHECK(lr_after(&c, 3) < lr_after(&c, 2), "cosine must decrease: %g then %g", lr_after(&c, 2), lr_after(&c, 3));
    CHECK_NEAR(lr_after(&c, 2), 0.01 + 0.09 * (1 + cos(3.14159265358979323846 * 0.2)) / 2, 1e-15);

    /* Warmup: lr (t + 1) / w for the first w steps, then the schedule from
     * the warmup's end (the cosine over total - w). */
    c = config_of(KD_OPT_SGD, 0.1, 0);
    c.schedule = KD_SCHED_COSINE;
    c.total_steps = 14;
    c.lr_min = 0.01;
    c.warmup_steps = 4;
    CHECK_OK(kd_optim_config_validate(&c));
    CHECK_NEAR(lr_after(&c, 0), 0.025, 1e-15);
    CHECK_NEAR(lr_after(&c, 2), 0.075, 1e-15);
    CHECK_NEAR(lr_after(&c, 3), 0.1, 1e-15);  /* the last warmup step reaches the peak */
    CHECK_NEAR(lr_after(&c, 4), 0.1, 1e-15);  /* the cosine starts at the peak */
    CHECK_NEAR(lr_after(&c, 9), 0.055, 1e-15); /* half of the remaining 10 steps */
    CHECK_NEAR(lr_after(&c, 14), 0.01, 1e-15);
    c.schedule = KD_SCHED_STEP;
    c.step_size = 3;
    c.gamma = 0.5;
    CHECK(lr_after(&c, 1) == 0.05 && lr_after(&c, 4) == 0.1 && lr_after(&c, 6) == 0.1 && lr_after(&c, 7) == 0.05,
          "warmup then step: %g %g %g %g", lr_after(&c, 1), lr_after(&c, 4), lr_after(&c, 6), lr_after(&c, 7));
    c.schedule = KD_SCHED_CONSTANT;
    CHECK(lr_after(&c, 0) == 0.025 && lr_after(&c, 100) == 0.1, "warmup then constant");
    /* A cosine re-planned (resume) to fewer steps than the warmup ends at lr_min, not a division by 0. */
    kd_optim *short_run = NULL;
    c.schedule = KD_SCHED_COSINE;
    CHECK_OK(kd_optim_create(&c, 1, &short_run));
    CHECK_OK(kd_optim_set_total_steps(short_run, 3));
    kd_optim_set_steps(short_run, 5);
    CHECK_NEAR(kd_optim_current_lr(short_run), 0.01, 1e-15);
    kd_optim_free(short_run);

    /* current_lr follows real steps, not only set_steps. */
    kd_optim *opt = NULL;
    c = config_of(KD_OPT_SGD, 0.1, 0);
    c.schedule = KD_SCHED_STEP;
    c.step_size = 2;
    c.gamma = 0.5;
    CHECK_OK(kd_optim_create(&c, 1, &opt));
    float p = 1, g = 1;
    double expected_p = 1;
    for (int s = 0; s < 5 && opt; s++) {
        expected_p -= (s < 2 ? 0.1 : s < 4 ? 0.05 : 0.025) * 1.0;
        CHECK_OK(kd_optim_step(opt, &p, &g));
    }
    CHECK_NEAR(kd_optim_current_lr(opt), 0.025, 1e-15); /* 5 steps done: floor(5/2) = 2 halvings */
    CHECK_NEAR(p, expected_p, 1e-6);
    kd_optim_free(opt);
}

/* ---------------------------------------------------------- validation */

static void test_defaults_and_names(void)
{
    kd_optim_config c = kd_optim_config_default();
    CHECK(c.kind == KD_OPT_SGD && c.lr == 0.01 && c.momentum == 0.9 && c.nesterov == 0, "default sgd settings");
    CHECK(c.beta1 == 0.9 && c.beta2 == 0.999 && c.eps == 1e-8 && c.weight_decay == 0, "default adam settings");
    CHECK(c.schedule == KD_SCHED_CONSTANT && c.step_size == 0 && c.gamma == 0.1 && c.total_steps == 0 &&
              c.lr_min == 0,
          "default schedule settings");
    CHECK_OK(kd_optim_config_validate(&c));

    const char *kinds[] = {"sgd", "momentum", "adam", "adamw"};
    for (int k = 0; k < 4; k++) {
        kd_optim_kind parsed = (kd_optim_kind)-1;
        CHECK_OK(kd_optim_kind_parse(kinds[k], &parsed));
        CHECK(parsed == (kd_optim_kind)k, "%s parsed as %d", kinds[k], (int)parsed);
        CHECK(strcmp(kd_optim_kind_name((kd_optim_kind)k), kinds[k]) == 0, "name of kind %d: %s", k,
              kd_optim_kind_name((kd_optim_kind)k));
    }
    const char *schedules[] = {"constant", "step", "cosine"};
    for (int k = 0; k < 3; k++) {
        kd_schedule_kind parsed = (kd_schedule_kind)-1;
        CHECK_OK(kd_schedule_kind_parse(schedules[k], &parsed));
        CHECK(parsed == (kd_schedule_kind)k, "%s parsed as %d", schedules[k], (int)parsed);
        CHECK(strcmp(kd_schedule_kind_name((kd_schedule_kind)k), schedules[k]) == 0, "name of schedule %d", k);
    }
    kd_optim_kind kind = KD_OPT_ADAM;
    kd_schedule_kind sched = KD_SCHED_COSINE;
    CHECK_FAILS(kd_optim_kind_parse("rmsprop", &kind), KD_ERR_INVALID, "sgd, momentum, adam, adamw");
    CHECK_FAILS(kd_optim_kind_parse("rmsprop", &kind), KD_ERR_INVALID, "'rmsprop'");
    CHECK_FAILS(kd_optim_kind_parse("nesterov", &kind), KD_ERR_INVALID, "nesterov");
    CHECK_FAILS(kd_optim_kind_parse("SGD", &kind), KD_ERR_INVALID, "sgd");
    CHECK(kind == KD_OPT_ADAM, "a failed parse must not change the output");
    CHECK_FAILS(kd_schedule_kind_parse("linear", &sched), KD_ERR_INVALID, "constant, step, cosine");
    CHECK_FAILS(kd_schedule_kind_parse("", &sched), KD_ERR_INVALID, "constant, step, cosine");
    CHECK(sched == KD_SCHED_COSINE, "a failed parse must not change the output");
    CHECK_FAILS(kd_optim_kind_parse(NULL, &kind), KD_ERR_INVALID, "NULL");
}

static void test_validation(void)
{
    kd_optim_config c;
#define BAD(field_set, needle)                                                  \
    do {                                                                        \
        c = kd_optim_config_default();                                          \
        field_set;                                                              \
        CHECK_FAILS(kd_optim_config_validate(&c), KD_ERR_INVALID, needle);      \
    } while (0)

    BAD(c.lr = -0.1, "learning rate must be > 0, got -0.1");
    BAD(c.lr = 0, "learning rate must be > 0, got 0");
    BAD(c.lr = NAN, "learning rate must be > 0");
    BAD(c.lr = INFINITY, "learning rate must be > 0, got inf");
    BAD(c.momentum = 1.0, "momentum must be in [0, 1), got 1");
    BAD(c.momentum = -0.5, "momentum must be in [0, 1), got -0.5");
    BAD(c.beta1 = 1.0, "beta1 must be in [0, 1), got 1");
    BAD(c.beta2 = -0.1, "beta2 must be in [0, 1), got -0.1");
    BAD(c.beta2 = 1.0, "beta2");
    BAD(c.eps = 0, "eps must be > 0, got 0");
    BAD(c.weight_decay = -0.01, "weight decay must be >= 0, got -0.01");
    BAD(c.weight_decay = NAN, "weight decay");
    BAD((c.schedule = KD_SCHED_STEP, c.step_size = 0), "step_size >= 1, got 0");
    BAD((c.schedule = KD_SCHED_STEP, c.step_size = 5, c.gamma = 0), "gamma in (0, 1], got 0");
    BAD((c.schedule = KD_SCHED_STEP, c.step_size = 5, c.gamma = 1.5), "gamma in (0, 1], got 1.5");
    BAD((c.schedule = KD_SCHED_COSINE, c.total_steps = 0), "total_steps >= 1, got 0");
    BAD((c.schedule = KD_SCHED_COSINE, c.total_steps = 10, c.lr_min = 0.5), "lr_min <= lr");
    BAD((c.schedule = KD_SCHED_COSINE, c.total_steps = 10, c.lr_min = -0.001), "lr_min");
    BAD((c.warmup_steps = -1), "warmup steps must be >= 0, got -1");
    BAD((c.schedule = KD_SCHED_COSINE, c.total_steps = 10, c.warmup_steps = 10), "shorter than the cosine");
    BAD((c.kind = KD_OPT_ADAM, c.nesterov = 1), "nesterov applies only to the momentum optimizer, not adam");
    BAD((c.kind = KD_OPT_SGD, c.nesterov = 1), "nesterov");
    BAD((c.kind = KD_OPT_MOMENTUM, c.nesterov = 1, c.momentum = 0), "nesterov needs momentum > 0");
    BAD(c.kind = (kd_optim_kind)9, "optimizer kind 9");
    BAD(c.schedule = (kd_schedule_kind)-1, "schedule kind -1");
#undef BAD
    CHECK_FAILS(kd_optim_config_validate(NULL), KD_ERR_INVALID, "NULL");

    /* Edge values that are allowed. */
    c = kd_optim_config_default();
    c.kind = KD_OPT_MOMENTUM;
    c.momentum = 0;
    c.schedule = KD_SCHED_COSINE;
    c.total_steps = 1;
    c.lr_min = c.lr;
    CHECK_OK(kd_optim_config_validate(&c));
    c.schedule = KD_SCHED_STEP;
    c.step_size = 1;
    c.gamma = 1;
    CHECK_OK(kd_optim_config_validate(&c));

    /* create validates too and leaves *out NULL on failure. */
    kd_optim *opt = (kd_optim *)&c; /* any non-NULL value */
    c = kd_optim_config_default();
    c.lr = -0.1;
    CHECK_FAILS(kd_optim_create(&c, 4, &opt), KD_ERR_INVALID, "learning rate must be > 0, got -0.1");
    CHECK(opt == NULL, "create must clear *out on failure");
    CHECK_FAILS(kd_optim_create(NULL, 4, &opt), KD_ERR_INVALID, "NULL");
    c = kd_optim_config_default();
    CHECK_FAILS(kd_optim_create(&c, 4, NULL), KD_ERR_INVALID, "NULL");
}

/* ---------------------------------------------------------------- state */

static void test_state_slots(void)
{
    struct {
        kd_optim_kind kind;
        int slots;
        const char *names[2];
    } cases[] = {
        {KD_OPT_SGD, 0, {NULL, NULL}},
        {KD_OPT_MOMENTUM, 1, {"velocity", NULL}},
        {KD_OPT_ADAM, 2, {"m", "v"}},
        {KD_OPT_ADAMW, 2, {"m", "v"}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        kd_optim_config c = config_of(cases[k].kind, 0.01, 0);
        kd_optim *opt = NULL;
        CHECK_OK(kd_optim_create(&c, 13, &opt));
        if (!opt)
            continue;
        const char *kname = kd_optim_kind_name(cases[k].kind);
        size_t count = 999;
        float *st = kd_optim_state(opt, &count);
        CHECK(kd_optim_state_slots(opt) == cases[k].slots, "%s: %d slots", kname, kd_optim_state_slots(opt));
        CHECK(count == (size_t)cases[k].slots * 13, "%s: state count %zu", kname, count);
        CHECK(kd_optim_param_count(opt) == 13, "%s: param count %zu", kname, kd_optim_param_count(opt));
        CHECK(kd_optim_steps(opt) == 0, "%s: a new optimizer has done %lld steps", kname,
              (long long)kd_optim_steps(opt));
        CHECK(kd_optim_get_config(opt)->kind == cases[k].kind && kd_optim_get_config(opt)->lr == 0.01,
              "%s: config not kept", kname);
        int zero = 1;
        for (size_t i = 0; i < count; i++)
            zero &= st[i] == 0.0f;
        CHECK(count == 0 || (st && zero), "%s: state must start at zero", kname);
        for (int s = 0; s < cases[k].slots; s++) {
            const char *name = kd_optim_state_slot_name(opt, s);
            CHECK(name && strcmp(name, cases[k].names[s]) == 0, "%s: slot %d named %s", kname, s, name ? name : "NULL");
        }
        CHECK(kd_optim_state_slot_name(opt, cases[k].slots) == NULL, "%s: slot past the end has a name", kname);
        CHECK(kd_optim_state_slot_name(opt, -1) == NULL, "%s: slot -1 has a name", kname);

        float p[13] = {0}, g[13] = {0};
        CHECK_FAILS(kd_optim_step(opt, NULL, g), KD_ERR_INVALID, "params");
        CHECK_FAILS(kd_optim_step(opt, p, NULL), KD_ERR_INVALID, "grads");
        CHECK(kd_optim_steps(opt) == 0, "%s: a rejected step counted", kname);
        kd_optim_free(opt);
    }
    float p = 0, g = 0;
    CHECK_FAILS(kd_optim_step(NULL, &p, &g), KD_ERR_INVALID, "optimizer");
    kd_optim_free(NULL);
}

/* A resumed optimizer (state copied, set_steps) continues exactly like one
 * that never stopped: same lr from the schedule, same bias correction, and
 * the momentum buffer is not re-initialised. */
static void check_resume(const char *label, const kd_optim_config *c)
{
    enum { BEFORE = 3, AFTER = 3 };
    kd_optim *whole = NULL, *first = NULL, *resumed = NULL;
    float pw[N], pr[N], g[N];
    double gd[N], p0[N];
    initial_params(p0);
    for (int i = 0; i < N; i++)
        pw[i] = pr[i] = (float)p0[i];
    CHECK_OK(kd_optim_create(c, N, &whole));
    CHECK_OK(kd_optim_create(c, N, &first));
    CHECK_OK(kd_optim_create(c, N, &resumed));
    if (!whole || !first || !resumed)
        goto out;
    for (int s = 0; s < BEFORE; s++) {
        make_grad(s, gd);
        for (int i = 0; i < N; i++)
            g[i] = (float)gd[i];
        CHECK_OK(kd_optim_step(whole, pw, g));
        CHECK_OK(kd_optim_step(first, pr, g));
    }
    size_t n1 = 0, n2 = 0;
    float *src = kd_optim_state(first, &n1), *dst = kd_optim_state(resumed, &n2);
    CHECK(n1 == n2, "%s: state sizes %zu vs %zu", label, n1, n2);
    if (n1 && n1 == n2)
        memcpy(dst, src, n1 * sizeof *dst);
    kd_optim_set_steps(resumed, BEFORE);
    CHECK(kd_optim_steps(resumed) == BEFORE, "%s: set_steps", label);
    CHECK(kd_optim_current_lr(resumed) == kd_optim_current_lr(whole), "%s: lr after resume %g vs %g", label,
          kd_optim_current_lr(resumed), kd_optim_current_lr(whole));
    for (int s = BEFORE; s < BEFORE + AFTER; s++) {
        make_grad(s, gd);
        for (int i = 0; i < N; i++)
            g[i] = (float)gd[i];
        CHECK_OK(kd_optim_step(whole, pw, g));
        CHECK_OK(kd_optim_step(resumed, pr, g));
    }
    CHECK(memcmp(pw, pr, sizeof pw) == 0, "%s: resumed run differs (p[0] %.9g vs %.9g)", label, pw[0], pr[0]);

    /* Without set_steps the bias correction / buffer start would be wrong:
     * the check above must be able to fail. */
    if (c->kind != KD_OPT_SGD && c->schedule == KD_SCHED_CONSTANT) {
        kd_optim *fresh = NULL;
        float pf[N];
        for (int i = 0; i < N; i++)
            pf[i] = (float)p0[i];
        CHECK_OK(kd_optim_create(c, N, &fresh));
        if (fresh) {
            float *fs = kd_optim_state(fresh, &n2);
            memcpy(fs, src, n1 * sizeof *fs);
            make_grad(BEFORE, gd);
            for (int i = 0; i < N; i++)
                g[i] = (float)gd[i];
            float pc[N];
            memcpy(pc, pf, sizeof pc);
            CHECK_OK(kd_optim_step(fresh, pf, g)); /* counter 0: treated as the first step */
            kd_optim_set_steps(fresh, BEFORE);
            memcpy(fs, src, n1 * sizeof *fs);
            CHECK_OK(kd_optim_step(fresh, pc, g)); /* counter 3: a continuing step */
            CHECK(memcmp(pf, pc, sizeof pf) != 0, "%s: set_steps made no difference", label);
        }
        kd_optim_free(fresh);
    }
out:
    kd_optim_free(whole);
    kd_optim_free(first);
    kd_optim_free(resumed);
}

static void test_resume(void)
{
    kd_optim_config c = config_of(KD_OPT_MOMENTUM, 0.05, 0.01);
    check_resume("momentum", &c);
    c = config_of(KD_OPT_ADAM, 0.01, 0.01);
    check_resume("adam", &c);
    c = config_of(KD_OPT_ADAMW, 0.01, 0.01);
    check_resume("adamw", &c);
    c = config_of(KD_OPT_SGD, 0.1, 0);
    c.schedule = KD_SCHED_STEP;
    c.step_size = 2;
    c.gamma = 0.3;
    check_resume("sgd+step", &c);
    c = config_of(KD_OPT_ADAM, 0.01, 0);
    c.schedule = KD_SCHED_COSINE;
    c.total_steps = 5;
    check_resume("adam+cosine", &c);

    /* Adam after set_steps(k) uses bias correction for step k+1 (checked
     * against the reference with pre-filled state). */
    kd_optim *opt = NULL;
    c = config_of(KD_OPT_ADAM, 0.01, 0);
    CHECK_OK(kd_optim_create(&c, 1, &opt));
    if (opt) {
        size_t count;
        float *st = kd_optim_state(opt, &count);
        st[0] = 0.2f;  /* m */
        st[1] = 0.05f; /* v */
        kd_optim_set_steps(opt, 9);
        float p = 1.0f, g = 0.5f;
        CHECK_OK(kd_optim_step(opt, &p, &g));
        double m = 0.9 * (double)0.2f + 0.1 * 0.5, v = 0.999 * (double)0.05f + 0.001 * 0.25;
        double expected = 1.0 - 0.01 * (m / (1 - pow(0.9, 10))) / (sqrt(v / (1 - pow(0.999, 10))) + 1e-8);
        CHECK_NEAR(p, expected, 1e-6);
        CHECK(kd_optim_steps(opt) == 10, "step counter %lld", (long long)kd_optim_steps(opt));
    }
    kd_optim_free(opt);
}

/* ------------------------------------------------------------ quadratic */

/* Every optimizer minimises f(p) = 0.5 (p - 3)^2 from p = 0. */
static void test_quadratic(void)
{
    struct {
        const char *label;
        kd_optim_kind kind;
        double lr;
        int nesterov;
    } cases[] = {
        {"sgd", KD_OPT_SGD, 0.1, 0},     {"momentum", KD_OPT_MOMENTUM, 0.02, 0},
        {"nesterov", KD_OPT_MOMENTUM, 0.02, 1}, {"adam", KD_OPT_ADAM, 0.05, 0},
        {"adamw", KD_OPT_ADAMW, 0.05, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        kd_optim_config c = config_of(cases[k].kind, cases[k].lr, 0);
        c.nesterov = cases[k].nesterov;
        if (c.kind == KD_OPT_ADAM || c.kind == KD_OPT_ADAMW) {
            /* Adam's step is ~lr whatever the gradient size; anneal to settle. */
            c.schedule = KD_SCHED_COSINE;
            c.total_steps = 400;
        }
        kd_optim *opt = NULL;
        CHECK_OK(kd_optim_create(&c, 1, &opt));
        if (!opt)
            continue;
        float p = 0, g;
        for (int s = 0; s < 400; s++) {
            g = p - 3.0f;
            CHECK_OK(kd_optim_step(opt, &p, &g));
        }
        CHECK(fabsf(p - 3.0f) < 1e-3f, "%s: ended at %.6f, not 3", cases[k].label, p);
        kd_optim_free(opt);
    }
}

/* A long vector through the SIMD path agrees with the scalar path: the
 * same update on each element alone (n = 1 uses only the scalar tail). */
static void test_long_vector_matches_single(void)
{
    enum { LEN = 1027 };
    kd_optim_kind kinds[] = {KD_OPT_SGD, KD_OPT_MOMENTUM, KD_OPT_ADAM, KD_OPT_ADAMW};
    float *p = malloc(LEN * sizeof *p), *g = malloc(LEN * sizeof *g);
    if (!p || !g) {
        CHECK(0, "out of memory");
        free(p);
        free(g);
        return;
    }
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        kd_optim_config c = config_of(kinds[k], 0.01, 0.02);
        kd_optim *all = NULL;
        CHECK_OK(kd_optim_create(&c, LEN, &all));
        for (int i = 0; i < LEN; i++)
            p[i] = (float)cos(0.37 * i);
        for (int s = 0; s < 3 && all; s++) {
            for (int i = 0; i < LEN; i++)
                g[i] = (float)sin(0.11 * i + s);
            CHECK_OK(kd_optim_step(all, p, g));
        }
        int mismatches = 0;
        for (int i = 0; i < LEN && all; i += 97) {
            kd_optim *one = NULL;
            CHECK_OK(kd_optim_create(&c, 1, &one));
            float q = (float)cos(0.37 * i);
            for (int s = 0; s < 3 && one; s++) {
                float gi = (float)sin(0.11 * i + s);
                kd_optim_step(one, &q, &gi);
            }
            mismatches += q != p[i];
            kd_optim_free(one);
        }
        CHECK(mismatches == 0, "%s: %d elements differ between the vector and scalar paths",
              kd_optim_kind_name(kinds[k]), mismatches);
        kd_optim_free(all);
    }
    free(p);
    free(g);
}

/* ---------------------------------------------------------- train state */

static void test_train_state(void)
{
    kd_train_state st;
    memset(&st, 0xAB, sizeof st);
    kd_train_state_init(&st);
    CHECK(st.epoch == 0 && st.step == 0 && st.seed == 0 && st.batch_size == 0 && st.history_len == 0 &&
              st.history == NULL,
          "init must zero everything");

    for (int e = 1; e <= 20; e++) {
        kd_epoch_record r = {.epoch = e, .train_loss = 1.0 / e, .train_accuracy = 0.5 + 0.01 * e,
                             .test_loss = NAN, .test_accuracy = NAN, .seconds = e * 0.5,
                             .learning_rate = 0.1 * e};
        CHECK_OK(kd_train_state_append(&st, &r));
    }
    CHECK(st.history_len == 20 && st.history, "history_len %d", st.history_len);
    int good = 1;
    for (int i = 0; i < st.history_len && st.history; i++) {
        const kd_epoch_record *r = &st.history[i];
        good &= r->epoch == i + 1 && r->train_loss == 1.0 / (i + 1) && isnan(r->test_loss) &&
                r->seconds == (i + 1) * 0.5 && r->learning_rate == 0.1 * (i + 1);
    }
    CHECK(good, "history records not kept in order");

    st.epoch = 20;
    st.step = 12345;
    st.seed = 7;
    st.batch_size = 64;
    kd_train_state_clear(&st);
    CHECK(st.epoch == 0 && st.step == 0 && st.seed == 0 && st.batch_size == 0 && st.history_len == 0 &&
              st.history == NULL,
          "clear must free and re-initialise");
    kd_epoch_record r = {.epoch = 1};
    CHECK_OK(kd_train_state_append(&st, &r));
    CHECK(st.history_len == 1 && st.history[0].epoch == 1, "append after clear");
    kd_train_state_clear(&st);
    kd_train_state_clear(&st); /* twice is harmless */
    kd_train_state_clear(NULL);

    CHECK_FAILS(kd_train_state_append(NULL, &r), KD_ERR_INVALID, "state");
    CHECK_FAILS(kd_train_state_append(&st, NULL), KD_ERR_INVALID, "record");
    st.history_len = 3; /* a record claiming history it does not have */
    CHECK_FAILS(kd_train_state_append(&st, &r), KD_ERR_STATE, "history_len 3");
    kd_train_state_init(&st);
}

int main(void)
{
    test_defaults_and_names();
    test_validation();
    test_against_reference();
    test_schedules();
    test_state_slots();
    test_resume();
    test_quadratic();
    test_long_vector_matches_single();
    test_train_state();
    return check_summary();
}
