/* Flatten: (channels, height, width) -> one feature vector. The memory
 * layout is already row-major per sample, so both passes are copies. */
#include <string.h>

#include "error.h"
#include "layer.h"

static kd_status flatten_setup(kd_layer *L, cJSON *cfg)
{
    static const char *const keys[] = {NULL};
    KD_TRY(kd_cfg_known_keys(cfg, keys));
    size_t n = kd_shape_size(&L->in);
    if (n > (size_t)1 << 30)
        return kd_fail(KD_ERR_SHAPE, "flatten: %zu features is too many", n);
    memset(&L->out, 0, sizeof L->out);
    L->out.rank = 1;
    L->out.dim[0] = (int)n;
    L->weight_count = L->bias_count = L->state_count = 0;
    L->weight_rank = 0;
    return KD_OK;
}

static void flatten_forward(kd_layer *L, const kd_pass *p, const float *x, float *y)
{
    memcpy(y, x, sizeof(float) * kd_shape_size(&L->in) * (size_t)p->batch);
}

static void flatten_backward(kd_layer *L, const kd_pass *p, const float *x, const float *y,
                             const float *dy, float *dx)
{
    if (dx)
        memcpy(dx, dy, sizeof(float) * kd_shape_size(&L->in) * (size_t)p->batch);
}

const kd_layer_ops kd_flatten_ops = {
    .kind = KD_LAYER_FLATTEN,
    .type = "flatten",
    .setup = flatten_setup,
    .forward = flatten_forward,
    .backward = flatten_backward,
};
