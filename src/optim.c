/* Optimizers (SGD, heavy-ball momentum, Adam, AdamW) and learning-rate
 * schedules over one flat float vector. The update rules are those of
 * torch.optim (first-step momentum buffer, bias-correction form, AdamW's
 * decay before the update), so a PyTorch run from the same start agrees
 * to float rounding (tests/python/test_optim_torch.py: below 1e-6).
 *
 * The per-element loops run over the whole model every step: every
 * per-step constant is computed once in double, rounded to float, and the
 * loop body is branch-free float arithmetic the compiler can vectorise. */
#include "error.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

struct kd_optim {
    kd_optim_config cfg;
    size_t n;
    int64_t steps;  /* completed steps */
    int slots;      /* state vectors of n floats each */
    float *state;   /* slots * n, slot-major; NULL when slots == 0 */
};

/* The Adam loop needs sqrt, and under the default -fmath-errno GCC keeps a
 * scalar errno path for every sqrtf call and will not vectorise the loop
 * (no function attribute or pragma lifts that in GCC 12). So on x86 the
 * loop is written with SSE2 intrinsics; sqrt and division are correctly
 * rounded there too, so both paths give identical results. */
#if defined(__SSE2__)
#include <emmintrin.h>
#define KD_ADAM_SSE2 1
#endif

/* ------------------------------------------------------------- config */

kd_optim_config kd_optim_config_default(void)
{
    kd_optim_config c;
    memset(&c, 0, sizeof c);
    c.kind = KD_OPT_SGD;
    c.lr = 0.01;
    c.momentum = 0.9; /* read only by MOMENTUM */
    c.nesterov = 0;
    c.beta1 = 0.9;
    c.beta2 = 0.999;
    c.eps = 1e-8;
    c.weight_decay = 0.0;
    c.schedule = KD_SCHED_CONSTANT;
    c.step_size = 0;
    c.gamma = 0.1;
    c.total_steps = 0;
    c.lr_min = 0.0;
    c.warmup_steps = 0;
    return c;
}

static const char *const KIND_NAMES[] = {"sgd", "momentum", "adam", "adamw"};
static const char *const SCHEDULE_NAMES[] = {"constant", "step", "cosine"};
#define N_KINDS (int)(sizeof KIND_NAMES / sizeof KIND_NAMES[0])
#define N_SCHEDULES (int)(sizeof SCHEDULE_NAMES / sizeof SCHEDULE_NAMES[0])

const char *kd_optim_kind_name(kd_optim_kind k)
{
    return (int)k >= 0 && (int)k < N_KINDS ? KIND_NAMES[k] : "unknown";
}

const char *kd_schedule_kind_name(kd_schedule_kind k)
{
    return (int)k >= 0 && (int)k < N_SCHEDULES ? SCHEDULE_NAMES[k] : "unknown";
}

kd_status kd_optim_kind_parse(const char *name, kd_optim_kind *out)
{
    if (!name || !out)
        return kd_fail(KD_ERR_INVALID, "kd_optim_kind_parse: NULL argument");
    for (int k = 0; k < N_KINDS; k++)
        if (strcmp(name, KIND_NAMES[k]) == 0) {
            *out = (kd_optim_kind)k;
            return KD_OK;
        }
    return kd_fail(KD_ERR_INVALID, "unknown optimizer '%s' (valid: sgd, momentum, adam, adamw)", name);
}

kd_status kd_schedule_kind_parse(const char *name, kd_schedule_kind *out)
{
    if (!name || !out)
        return kd_fail(KD_ERR_INVALID, "kd_schedule_kind_parse: NULL argument");
    for (int k = 0; k < N_SCHEDULES; k++)
        if (strcmp(name, SCHEDULE_NAMES[k]) == 0) {
            *out = (kd_schedule_kind)k;
            return KD_OK;
        }
    return kd_fail(KD_ERR_INVALID, "unknown learning-rate schedule '%s' (valid: constant, step, cosine)", name);
}

/* Every field is checked whatever the kind, so a config never carries a
 * nonsensical value that would surface later (e.g. after a checkpoint
 * round trip into a different kind). The defaults pass. */
kd_status kd_optim_config_validate(const kd_optim_config *c)
{
    if (!c)
        return kd_fail(KD_ERR_INVALID, "optimizer config is NULL");
    if ((int)c->kind < 0 || (int)c->kind >= N_KINDS)
        return kd_fail(KD_ERR_INVALID, "optimizer kind %d is not one of sgd, momentum, adam, adamw", (int)c->kind);
    if ((int)c->schedule < 0 || (int)c->schedule >= N_SCHEDULES)
        return kd_fail(KD_ERR_INVALID, "schedule kind %d is not one of constant, step, cosine", (int)c->schedule);
    if (!(c->lr > 0) || !isfinite(c->lr))
        return kd_fail(KD_ERR_INVALID, "learning rate must be > 0, got %g", c->lr);
    if (!(c->momentum >= 0 && c->momentum < 1))
        return kd_fail(KD_ERR_INVALID, "momentum must be in [0, 1), got %g", c->momentum);
    if (c->nesterov && c->kind != KD_OPT_MOMENTUM)
        return kd_fail(KD_ERR_INVALID, "nesterov applies only to the momentum optimizer, not %s",
                       kd_optim_kind_name(c->kind));
    if (c->nesterov && c->momentum <= 0)
        return kd_fail(KD_ERR_INVALID, "nesterov needs momentum > 0, got %g", c->momentum);
    if (!(c->beta1 >= 0 && c->beta1 < 1))
        return kd_fail(KD_ERR_INVALID, "beta1 must be in [0, 1), got %g", c->beta1);
    if (!(c->beta2 >= 0 && c->beta2 < 1))
        return kd_fail(KD_ERR_INVALID, "beta2 must be in [0, 1), got %g", c->beta2);
    if (!(c->eps > 0) || !isfinite(c->eps))
        return kd_fail(KD_ERR_INVALID, "eps must be > 0, got %g", c->eps);
    if (!(c->weight_decay >= 0) || !isfinite(c->weight_decay))
        return kd_fail(KD_ERR_INVALID, "weight decay must be >= 0, got %g", c->weight_decay);
    if (c->schedule == KD_SCHED_STEP) {
        if (c->step_size < 1)
            return kd_fail(KD_ERR_INVALID, "step schedule needs step_size >= 1, got %lld",
                           (long long)c->step_size);
        if (!(c->gamma > 0 && c->gamma <= 1))
            return kd_fail(KD_ERR_INVALID, "step schedule needs gamma in (0, 1], got %g", c->gamma);
    }
    if (c->schedule == KD_SCHED_COSINE) {
        if (c->total_steps < 1)
            return kd_fail(KD_ERR_INVALID, "cosine schedule needs total_steps >= 1, got %lld",
                           (long long)c->total_steps);
        if (!(c->lr_min >= 0 && c->lr_min <= c->lr))
            return kd_fail(KD_ERR_INVALID, "cosine schedule needs 0 <= lr_min <= lr (%g), got %g", c->lr,
                           c->lr_min);
    }
    if (c->warmup_steps < 0)
        return kd_fail(KD_ERR_INVALID, "warmup steps must be >= 0, got %lld", (long long)c->warmup_steps);
    if (c->schedule == KD_SCHED_COSINE && c->warmup_steps >= c->total_steps && c->warmup_steps > 0)
        return kd_fail(KD_ERR_INVALID, "the warmup (%lld steps) must be shorter than the cosine schedule's %lld steps",
                       (long long)c->warmup_steps, (long long)c->total_steps);
    return KD_OK;
}

/* Learning rate of the step that follows `t` completed steps: the linear
 * warmup, then the schedule counted from the warmup's end. */
static double scheduled_lr(const kd_optim_config *c, int64_t t)
{
    int64_t w = c->warmup_steps > 0 ? c->warmup_steps : 0;
    if (t < w)
        return c->lr * (double)(t + 1) / (double)w;
    t -= w;
    switch (c->schedule) {
    case KD_SCHED_STEP:
        return c->lr * pow(c->gamma, (double)(t / c->step_size));
    case KD_SCHED_COSINE: {
        /* A re-planned total (kd_optim_set_total_steps) may leave no room after the warmup. */
        int64_t span = c->total_steps - w > 0 ? c->total_steps - w : 1;
        double progress = (double)(t < span ? t : span) / (double)span;
        return c->lr_min + (c->lr - c->lr_min) * (1 + cos(M_PI * progress)) / 2;
    }
    case KD_SCHED_CONSTANT:
        break;
    }
    return c->lr;
}

/* ---------------------------------------------------------- lifecycle */

static int slots_for(kd_optim_kind k)
{
    switch (k) {
    case KD_OPT_MOMENTUM: return 1;
    case KD_OPT_ADAM:
    case KD_OPT_ADAMW: return 2;
    case KD_OPT_SGD: break;
    }
    return 0;
}

kd_status kd_optim_create(const kd_optim_config *cfg, size_t n, kd_optim **out)
{
    if (!out)
        return kd_fail(KD_ERR_INVALID, "kd_optim_create: out is NULL");
    *out = NULL;
    KD_TRY(kd_optim_config_validate(cfg));
    int slots = slots_for(cfg->kind);
    if (slots && n > SIZE_MAX / sizeof(float) / (size_t)slots)
        return kd_fail(KD_ERR_NOMEM, "optimizer state for %zu parameters x %d slots overflows", n, slots);

    kd_optim *opt = kd_calloc(1, sizeof *opt, "optimizer");
    if (!opt)
        return KD_ERR_NOMEM;
    opt->cfg = *cfg;
    opt->n = n;
    opt->slots = slots;
    if (slots) {
        /* Zeroed: PyTorch starts m and v at zero (and the velocity at the
         * first gradient, see kd_optim_step). */
        opt->state = kd_calloc((size_t)slots * n, sizeof(float), "optimizer state");
        if (!opt->state) {
            free(opt);
            return KD_ERR_NOMEM;
        }
    }
    *out = opt;
    return KD_OK;
}

void kd_optim_free(kd_optim *opt)
{
    if (!opt)
        return;
    free(opt->state);
    free(opt);
}

const kd_optim_config *kd_optim_get_config(const kd_optim *opt) { return opt ? &opt->cfg : NULL; }
double kd_optim_current_lr(const kd_optim *opt) { return opt ? scheduled_lr(&opt->cfg, opt->steps) : 0.0; }
int64_t kd_optim_steps(const kd_optim *opt) { return opt ? opt->steps : 0; }
size_t kd_optim_param_count(const kd_optim *opt) { return opt ? opt->n : 0; }
int kd_optim_state_slots(const kd_optim *opt) { return opt ? opt->slots : 0; }

kd_status kd_optim_set_total_steps(kd_optim *opt, int64_t total_steps)
{
    if (!opt)
        return kd_fail(KD_ERR_INVALID, "kd_optim_set_total_steps: NULL optimizer");
    if (total_steps < 1)
        return kd_fail(KD_ERR_INVALID, "a schedule needs total_steps >= 1, got %lld", (long long)total_steps);
    opt->cfg.total_steps = total_steps;
    return KD_OK;
}

void kd_optim_set_steps(kd_optim *opt, int64_t steps)
{
    if (opt)
        opt->steps = steps < 0 ? 0 : steps;
}

float *kd_optim_state(kd_optim *opt, size_t *count)
{
    if (count)
        *count = opt ? (size_t)opt->slots * opt->n : 0;
    return opt ? opt->state : NULL;
}

const char *kd_optim_state_slot_name(const kd_optim *opt, int slot)
{
    if (!opt || slot < 0 || slot >= opt->slots)
        return NULL;
    if (opt->cfg.kind == KD_OPT_MOMENTUM)
        return "velocity";
    return slot == 0 ? "m" : "v";
}

/* -------------------------------------------------------------- steps */

/* torch.optim.SGD with dampening 0:
 *   g = grad + wd p;  buf = momentum buf + g (buf = g on the first step);
 *   update = nesterov ? g + momentum buf : buf;  p -= lr update.
 * Written as update = a g + c buf (a = 0, c = 1 plain; a = 1, c = momentum
 * nesterov) so one branch-free loop serves both. */
static void step_momentum(size_t n, float *restrict p, const float *restrict grad, float *restrict buf,
                          float lr, float wd, float momentum, float a, float c)
{
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] + wd * p[i];
        float b = momentum * buf[i] + g;
        buf[i] = b;
        p[i] -= lr * (a * g + c * b);
    }
}

static void step_sgd(size_t n, float *restrict p, const float *restrict grad, float lr, float wd)
{
    for (size_t i = 0; i < n; i++)
        p[i] -= lr * (grad[i] + wd * p[i]);
}

/* torch.optim.Adam / AdamW (amsgrad off):
 *   AdamW first: p *= 1 - lr wd (decay), Adam: g = grad + wd p (l2);
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)  (bc = 1 - beta^t). */
typedef struct adam_consts {
    float decay, l2, b1, one_minus_b1, b2, one_minus_b2, step_size, sqrt_bc2, eps;
} adam_consts;

static void step_adam(size_t n, float *restrict p, const float *restrict grad, float *restrict m,
                      float *restrict v, const adam_consts *k)
{
    size_t i = 0;
#ifdef KD_ADAM_SSE2
    const __m128 decay = _mm_set1_ps(k->decay), l2 = _mm_set1_ps(k->l2), b1 = _mm_set1_ps(k->b1),
                 omb1 = _mm_set1_ps(k->one_minus_b1), b2 = _mm_set1_ps(k->b2),
                 omb2 = _mm_set1_ps(k->one_minus_b2), step = _mm_set1_ps(k->step_size),
                 sbc2 = _mm_set1_ps(k->sqrt_bc2), eps = _mm_set1_ps(k->eps);
    for (; i + 4 <= n; i += 4) {
        __m128 w = _mm_mul_ps(_mm_loadu_ps(p + i), decay);
        __m128 g = _mm_add_ps(_mm_loadu_ps(grad + i), _mm_mul_ps(l2, w));
        __m128 mi = _mm_add_ps(_mm_mul_ps(b1, _mm_loadu_ps(m + i)), _mm_mul_ps(omb1, g));
        __m128 vi = _mm_add_ps(_mm_mul_ps(b2, _mm_loadu_ps(v + i)), _mm_mul_ps(omb2, _mm_mul_ps(g, g)));
        _mm_storeu_ps(m + i, mi);
        _mm_storeu_ps(v + i, vi);
        __m128 denom = _mm_add_ps(_mm_div_ps(_mm_sqrt_ps(vi), sbc2), eps);
        _mm_storeu_ps(p + i, _mm_sub_ps(w, _mm_div_ps(_mm_mul_ps(step, mi), denom)));
    }
#endif
    for (; i < n; i++) {
        float w = p[i] * k->decay;
        float g = grad[i] + k->l2 * w;
        float mi = k->b1 * m[i] + k->one_minus_b1 * g;
        float vi = k->b2 * v[i] + k->one_minus_b2 * (g * g);
        m[i] = mi;
        v[i] = vi;
        p[i] = w - k->step_size * mi / (sqrtf(vi) / k->sqrt_bc2 + k->eps);
    }
}

kd_status kd_optim_step(kd_optim *opt, float *params, const float *grads)
{
    if (!opt || !params || !grads)
        return kd_fail(KD_ERR_INVALID, "kd_optim_step: %s is NULL",
                       !opt ? "optimizer" : !params ? "params" : "grads");
    const kd_optim_config *c = &opt->cfg;
    double lr = scheduled_lr(c, opt->steps);
    size_t n = opt->n;

    switch (c->kind) {
    case KD_OPT_SGD:
        step_sgd(n, params, grads, (float)lr, (float)c->weight_decay);
        break;
    case KD_OPT_MOMENTUM: {
        /* PyTorch starts the buffer at the first gradient: zeroing it makes
         * momentum * buf + g = g, whatever the buffer held before. */
        if (opt->steps == 0)
            memset(opt->state, 0, n * sizeof(float));
        float mu = (float)c->momentum;
        step_momentum(n, params, grads, opt->state, (float)lr, (float)c->weight_decay, mu,
                      c->nesterov ? 1.0f : 0.0f, c->nesterov ? mu : 1.0f);
        break;
    }
    case KD_OPT_ADAM:
    case KD_OPT_ADAMW: {
        double t = (double)(opt->steps + 1);
        double bc1 = 1 - pow(c->beta1, t), bc2 = 1 - pow(c->beta2, t);
        int decoupled = c->kind == KD_OPT_ADAMW;
        adam_consts k = {
            .decay = decoupled ? (float)(1 - lr * c->weight_decay) : 1.0f,
            .l2 = decoupled ? 0.0f : (float)c->weight_decay,
            .b1 = (float)c->beta1,
            .one_minus_b1 = (float)(1 - c->beta1),
            .b2 = (float)c->beta2,
            .one_minus_b2 = (float)(1 - c->beta2),
            .step_size = (float)(lr / bc1),
            .sqrt_bc2 = (float)sqrt(bc2),
            .eps = (float)c->eps,
        };
        step_adam(n, params, grads, opt->state, opt->state + n, &k);
        break;
    }
    }
    opt->steps++;
    return KD_OK;
}
