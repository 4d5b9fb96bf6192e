/* Softmax over a vector of class scores. The network fuses its backward
 * with cross-entropy ((p - onehot) / batch) and never calls this one; it
 * is the general Jacobian-vector product for completeness. */
#include <math.h>
#include <string.h>

#include "error.h"
#include "layer.h"

static kd_status softmax_setup(kd_layer *L, cJSON *cfg)
{
    static const char *const keys[] = {NULL};
    KD_TRY(kd_cfg_known_keys(cfg, keys));
    if (L->in.rank != 1) {
        char buf[64];
        return kd_fail(KD_ERR_SHAPE,
                       "softmax needs a rank-1 input (one score per class), got %s; add a \"flatten\" "
                       "and a \"dense\" layer with one unit per class before it",
                       kd_shape_str(&L->in, buf, sizeof buf));
    }
    L->out = L->in;
    L->weight_count = L->bias_count = L->state_count = 0;
    L->weight_rank = 0;
    return KD_OK;
}

static void softmax_forward(kd_layer *L, const kd_pass *p, const float *x, float *y)
{
    int K = L->in.dim[0];
    for (int b = 0; b < p->batch; b++) {
        const float *z = x + (size_t)b * K;
        float *o = y + (size_t)b * K;
        /* Subtracting the max keeps exp() from overflowing. */
        float m = z[0];
        for (int k = 1; k < K; k++)
            if (z[k] > m)
                m = z[k];
        double sum = 0.0;
        for (int k = 0; k < K; k++) {
            o[k] = expf(z[k] - m);
            sum += o[k];
        }
        float inv = (float)(1.0 / sum);
        for (int k = 0; k < K; k++)
            o[k] *= inv;
    }
}

static void softmax_backward(kd_layer *L, const kd_pass *p, const float *x, const float *y,
                             const float *dy, float *dx)
{
    if (!dx)
        return;
    int K = L->in.dim[0];
    for (int b = 0; b < p->batch; b++) {
        const float *yo = y + (size_t)b * K, *g = dy + (size_t)b * K;
        double dot = 0.0;
        for (int k = 0; k < K; k++)
            dot += (double)g[k] * yo[k];
        for (int k = 0; k < K; k++)
            dx[(size_t)b * K + k] = yo[k] * (g[k] - (float)dot);
    }
}

const kd_layer_ops kd_softmax_ops = {
    .kind = KD_LAYER_SOFTMAX,
    .type = "softmax",
    .setup = softmax_setup,
    .forward = softmax_forward,
    .backward = softmax_backward,
};
