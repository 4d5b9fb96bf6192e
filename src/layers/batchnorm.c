/* Batch normalisation (PyTorch's BatchNorm1d/2d). Rank-1 input: one
 * statistic per feature over the batch; rank 3 (C, H, W): one per channel
 * over batch * H * W. Weight = gamma, bias = beta, both [C]; state =
 * running mean [C] then running variance [C], updated in training as
 * running = (1 - momentum) * running + momentum * batch_stat, with the
 * unbiased batch variance. `saved` keeps the mean and 1/sqrt(var + eps)
 * that forward used, so backward can rebuild the normalised input. */
#include <math.h>
#include <string.h>

#include "error.h"
#include "layer.h"

static kd_status bn_setup(kd_layer *L, cJSON *cfg)
{
    static const char *const keys[] = {"eps", "momentum", NULL};
    KD_TRY(kd_cfg_known_keys(cfg, keys));
    double eps, momentum;
    KD_TRY(kd_cfg_num(cfg, "eps", 1e-5, 1e-12, 1.0, &eps));
    KD_TRY(kd_cfg_num(cfg, "momentum", 0.1, 0.0, 1.0, &momentum));
    L->eps = (float)eps;
    L->momentum = (float)momentum;
    if (L->in.rank != 1 && L->in.rank != 3) {
        char buf[64];
        return kd_fail(KD_ERR_SHAPE, "batchnorm needs a rank-1 or rank-3 input, got %s",
                       kd_shape_str(&L->in, buf, sizeof buf));
    }
    int C = L->in.dim[0];
    L->out = L->in;
    L->weight_count = L->bias_count = (size_t)C;
    L->state_count = 2 * (size_t)C;
    L->weight_rank = 1;
    L->weight_dims[0] = C;
    return KD_OK;
}

static void bn_init(kd_layer *L, float *W, float *B, float *state, kd_rng *rng)
{
    size_t C = L->weight_count;
    for (size_t c = 0; c < C; c++) {
        W[c] = 1.0f;
        B[c] = 0.0f;
        state[c] = 0.0f;     /* running mean */
        state[C + c] = 1.0f; /* running variance */
    }
}

static size_t bn_saved_floats(const kd_layer *L, int batch) { return 2 * (size_t)L->in.dim[0]; }

/* Layout of one pass: value (n, c, s) is at n*C*S + c*S + s. */
typedef struct bn_geom {
    int C;
    size_t S, N; /* spatial size per channel (1 for rank 1), batch */
} bn_geom;

static bn_geom geom(const kd_layer *L, int batch)
{
    bn_geom g;
    g.C = L->in.dim[0];
    g.S = L->in.rank == 3 ? (size_t)L->in.dim[1] * L->in.dim[2] : 1;
    g.N = (size_t)batch;
    return g;
}

static void bn_forward(kd_layer *L, const kd_pass *p, const float *x, float *y)
{
    bn_geom g = geom(L, p->batch);
    size_t rowlen = (size_t)g.C * g.S, M = g.N * g.S;
    float *mean = p->saved, *invstd = p->saved + g.C;
    float *run_mean = p->state, *run_var = p->state + g.C;
    for (int c = 0; c < g.C; c++) {
        if (p->training) {
            /* Two passes in double: mean, then the squared deviations. */
            double sum = 0.0;
            for (size_t n = 0; n < g.N; n++) {
                const float *xc = x + n * rowlen + (size_t)c * g.S;
                for (size_t s = 0; s < g.S; s++)
                    sum += xc[s];
            }
            double mu = sum / (double)M, ss = 0.0;
            for (size_t n = 0; n < g.N; n++) {
                const float *xc = x + n * rowlen + (size_t)c * g.S;
                for (size_t s = 0; s < g.S; s++)
                    ss += (xc[s] - mu) * (xc[s] - mu);
            }
            double var = ss / (double)M;
            double unbiased = M > 1 ? ss / (double)(M - 1) : var;
            mean[c] = (float)mu;
            invstd[c] = (float)(1.0 / sqrt(var + L->eps));
            run_mean[c] = (float)((1.0 - L->momentum) * run_mean[c] + L->momentum * mu);
            run_var[c] = (float)((1.0 - L->momentum) * run_var[c] + L->momentum * unbiased);
        } else {
            mean[c] = run_mean[c];
            invstd[c] = (float)(1.0 / sqrt((double)run_var[c] + L->eps));
        }
        /* y = gamma * (x - mean) * invstd + beta = a * x + b */
        float a = p->W[c] * invstd[c], b = p->B[c] - a * mean[c];
        for (size_t n = 0; n < g.N; n++) {
            const float *xc = x + n * rowlen + (size_t)c * g.S;
            float *yc = y + n * rowlen + (size_t)c * g.S;
            for (size_t s = 0; s < g.S; s++)
                yc[s] = a * xc[s] + b;
        }
    }
}

static void bn_backward(kd_layer *L, const kd_pass *p, const float *x, const float *y,
                        const float *dy, float *dx)
{
    bn_geom g = geom(L, p->batch);
    size_t rowlen = (size_t)g.C * g.S, M = g.N * g.S;
    const float *mean = p->saved, *invstd = p->saved + g.C;
    for (int c = 0; c < g.C; c++) {
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (size_t n = 0; n < g.N; n++) {
            const float *xc = x + n * rowlen + (size_t)c * g.S;
            const float *gc = dy + n * rowlen + (size_t)c * g.S;
            for (size_t s = 0; s < g.S; s++) {
                sum_dy += gc[s];
                sum_dy_xhat += (double)gc[s] * ((xc[s] - mean[c]) * invstd[c]);
            }
        }
        p->dW[c] = (float)sum_dy_xhat;
        p->dB[c] = (float)sum_dy;
        if (!dx)
            continue;
        float k = p->W[c] * invstd[c];
        if (p->training) {
            /* Through the batch statistics too:
             * dx = gamma*invstd/M * (M*dy - sum(dy) - xhat*sum(dy*xhat)). */
            float mdy = (float)(sum_dy / (double)M), mdx = (float)(sum_dy_xhat / (double)M);
            for (size_t n = 0; n < g.N; n++) {
                const float *xc = x + n * rowlen + (size_t)c * g.S;
                const float *gc = dy + n * rowlen + (size_t)c * g.S;
                float *dc = dx + n * rowlen + (size_t)c * g.S;
                for (size_t s = 0; s < g.S; s++) {
                    float xhat = (xc[s] - mean[c]) * invstd[c];
                    dc[s] = k * (gc[s] - mdy - xhat * mdx);
                }
            }
        } else {
            /* Running statistics are constants: an affine map. */
            for (size_t n = 0; n < g.N; n++) {
                const float *gc = dy + n * rowlen + (size_t)c * g.S;
                float *dc = dx + n * rowlen + (size_t)c * g.S;
                for (size_t s = 0; s < g.S; s++)
                    dc[s] = k * gc[s];
            }
        }
    }
}

const kd_layer_ops kd_batchnorm_ops = {
    .kind = KD_LAYER_BATCHNORM,
    .type = "batchnorm",
    .setup = bn_setup,
    .init = bn_init,
    .saved_floats = bn_saved_floats,
    .forward = bn_forward,
    .backward = bn_backward,
};
