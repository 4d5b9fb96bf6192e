/* Fully connected layer: y = x W^T + b with W laid out [out, in] like
 * PyTorch's nn.Linear. Any input rank is accepted and read flattened. Each
 * pass is one OpenBLAS sgemm over the whole batch. */
#include <cblas.h>
#include <limits.h>
#include <string.h>

#include "error.h"
#include "layer.h"

static kd_status dense_setup(kd_layer *L, cJSON *cfg)
{
    static const char *const keys[] = {"units", "bias", "init", NULL};
    KD_TRY(kd_cfg_known_keys(cfg, keys));
    if (!cJSON_GetObjectItemCaseSensitive(cfg, "units"))
        return kd_fail(KD_ERR_INVALID, "missing required key 'units' (the number of outputs, an integer >= 1)");
    KD_TRY(kd_cfg_int(cfg, "units", 1, 1, &L->units));
    KD_TRY(kd_cfg_bool(cfg, "bias", 1, &L->use_bias));
    KD_TRY(kd_cfg_init(cfg, KD_INIT_XAVIER, &L->init));

    size_t in = kd_shape_size(&L->in);
    if (in > INT_MAX)
        return kd_fail(KD_ERR_SHAPE, "dense: %zu inputs is too many for BLAS", in);
    memset(&L->out, 0, sizeof L->out);
    L->out.rank = 1;
    L->out.dim[0] = L->units;
    L->weight_count = (size_t)L->units * in;
    L->bias_count = L->use_bias ? (size_t)L->units : 0;
    L->state_count = 0;
    L->weight_rank = 2;
    L->weight_dims[0] = L->units;
    L->weight_dims[1] = (int)in;
    return KD_OK;
}

static void dense_init(kd_layer *L, float *W, float *B, float *state, kd_rng *rng)
{
    int in = L->weight_dims[1];
    kd_init_weights(W, L->weight_count, in, L->units, L->init, rng);
    if (B)
        memset(B, 0, sizeof(float) * L->bias_count);
}

static void dense_forward(kd_layer *L, const kd_pass *p, const float *x, float *y)
{
    int n = p->batch, in = L->weight_dims[1], out = L->units;
    float beta = 0.0f;
    if (p->B) {
        /* Start every row at the bias and let the GEMM add x W^T to it. */
        for (int b = 0; b < n; b++)
            memcpy(y + (size_t)b * out, p->B, sizeof(float) * out);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, p->W, in,
                beta, y, out);
}

static void dense_backward(kd_layer *L, const kd_pass *p, const float *x, const float *y,
                           const float *dy, float *dx)
{
    int n = p->batch, in = L->weight_dims[1], out = L->units;
    /* dW [out, in] = dy^T [out, n] x [n, in] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 0.0f,
                p->dW, in);
    if (p->dB) {
        memcpy(p->dB, dy, sizeof(float) * out);
        for (int b = 1; b < n; b++) {
            const float *row = dy + (size_t)b * out;
            for (int j = 0; j < out; j++)
                p->dB[j] += row[j];
        }
    }
    /* dx [n, in] = dy [n, out] W [out, in] */
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, p->W,
                    in, 0.0f, dx, in);
}

const kd_layer_ops kd_dense_ops = {
    .kind = KD_LAYER_DENSE,
    .type = "dense",
    .setup = dense_setup,
    .init = dense_init,
    .forward = dense_forward,
    .backward = dense_backward,
};
