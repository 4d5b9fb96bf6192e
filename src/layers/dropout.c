/* Inverted dropout: in training each value is zeroed with probability
 * `rate` and the survivors scaled by 1/(1-rate), so inference is the
 * identity. The mask (0 or the scale per value) is kept in `saved` for
 * backward; it is drawn from the pass's rng, which the network seeds per
 * step, so a run is reproducible. */
#include <string.h>

#include "error.h"
#include "layer.h"

static kd_status dropout_setup(kd_layer *L, cJSON *cfg)
{
    static const char *const keys[] = {"rate", NULL};
    KD_TRY(kd_cfg_known_keys(cfg, keys));
    double rate;
    /* 1 would drop everything (and scale the rest by 1/0). */
    KD_TRY(kd_cfg_num_below(cfg, "rate", 0.5, 0.0, 1.0, &rate));
    L->rate = (float)rate;
    L->out = L->in;
    L->weight_count = L->bias_count = L->state_count = 0;
    L->weight_rank = 0;
    return KD_OK;
}

static size_t dropout_saved_floats(const kd_layer *L, int batch)
{
    return kd_shape_size(&L->in) * (size_t)batch;
}

static void dropout_forward(kd_layer *L, const kd_pass *p, const float *x, float *y)
{
    size_t n = kd_shape_size(&L->in) * (size_t)p->batch;
    if (!p->training) {
        memcpy(y, x, sizeof(float) * n);
        return;
    }
    float scale = 1.0f / (1.0f - L->rate), *mask = p->saved;
    for (size_t i = 0; i < n; i++) {
        mask[i] = kd_rng_uniform(p->rng) >= L->rate ? scale : 0.0f;
        y[i] = x[i] * mask[i];
    }
}

static void dropout_backward(kd_layer *L, const kd_pass *p, const float *x, const float *y,
                             const float *dy, float *dx)
{
    if (!dx)
        return;
    size_t n = kd_shape_size(&L->in) * (size_t)p->batch;
    if (!p->training) {
        memcpy(dx, dy, sizeof(float) * n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        dx[i] = dy[i] * p->saved[i];
}

const kd_layer_ops kd_dropout_ops = {
    .kind = KD_LAYER_DROPOUT,
    .type = "dropout",
    .setup = dropout_setup,
    .saved_floats = dropout_saved_floats,
    .forward = dropout_forward,
    .backward = dropout_backward,
};
