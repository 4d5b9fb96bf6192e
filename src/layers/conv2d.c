/* 2-D convolution (cross-correlation, like PyTorch's nn.Conv2d) on
 * (channels, height, width) samples. Weight [F, C, kh, kw].
 *
 * The whole batch goes through one GEMM: im2col builds
 * col [K = C*kh*kw, batch*P] (P = OH*OW output pixels per sample), then
 * W [F, K] x col gives [F, batch*P], which is reordered into the
 * [batch, F, OH, OW] output. Per-sample GEMMs would be tiny (LeNet's second
 * layer is 50 x 500 x 64) and far from BLAS peak.
 *
 * col is kept in `saved` so backward can reuse it for dW instead of
 * rebuilding it. Shared work holds the [F, batch*P] product (forward) or the
 * reordered dy plus dcol [K, batch*P] (backward). */
#include <cblas.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "layer.h"

typedef struct conv_geom {
    int C, H, W;    /* input */
    int F, OH, OW;  /* output */
    int kh, kw, sh, sw, ph, pw;
    size_t K, P;    /* C*kh*kw and OH*OW */
} conv_geom;

static conv_geom geom(const kd_layer *L)
{
    conv_geom g;
    g.C = L->in.dim[0];
    g.H = L->in.dim[1];
    g.W = L->in.dim[2];
    g.F = L->filters;
    g.OH = L->out.dim[1];
    g.OW = L->out.dim[2];
    g.kh = L->kernel_h;
    g.kw = L->kernel_w;
    g.sh = L->stride_h;
    g.sw = L->stride_w;
    g.ph = L->pad_h;
    g.pw = L->pad_w;
    g.K = (size_t)g.C * g.kh * g.kw;
    g.P = (size_t)g.OH * g.OW;
    return g;
}

static kd_status conv_setup(kd_layer *L, cJSON *cfg)
{
    static const char *const keys[] = {"filters", "kernel", "stride", "padding", "bias", "init", NULL};
    KD_TRY(kd_cfg_known_keys(cfg, keys));
    if (!cJSON_GetObjectItemCaseSensitive(cfg, "filters"))
        return kd_fail(KD_ERR_INVALID, "missing required key 'filters' (the number of output channels, an integer >= 1)");
    if (!cJSON_GetObjectItemCaseSensitive(cfg, "kernel"))
        return kd_fail(KD_ERR_INVALID, "missing required key 'kernel' (an integer or [height, width])");
    KD_TRY(kd_cfg_int(cfg, "filters", 1, 1, &L->filters));
    KD_TRY(kd_cfg_pair(cfg, "kernel", 1, 1, &L->kernel_h, &L->kernel_w));
    KD_TRY(kd_cfg_pair(cfg, "stride", 1, 1, &L->stride_h, &L->stride_w));
    KD_TRY(kd_cfg_pair(cfg, "padding", 0, 0, &L->pad_h, &L->pad_w));
    KD_TRY(kd_cfg_bool(cfg, "bias", 1, &L->use_bias));
    KD_TRY(kd_cfg_init(cfg, KD_INIT_XAVIER, &L->init));

    char buf[64];
    if (L->in.rank != 3)
        return kd_fail(KD_ERR_SHAPE, "conv2d needs a rank-3 input (channels, height, width), got %s",
                       kd_shape_str(&L->in, buf, sizeof buf));
    long span_h = (long)L->in.dim[1] + 2L * L->pad_h, span_w = (long)L->in.dim[2] + 2L * L->pad_w;
    if (span_h < L->kernel_h || span_w < L->kernel_w) {
        char pad[32];
        if (L->pad_h == L->pad_w)
            snprintf(pad, sizeof pad, "%d", L->pad_h);
        else
            snprintf(pad, sizeof pad, "%dx%d", L->pad_h, L->pad_w);
        return kd_fail(KD_ERR_SHAPE, "input %s too small for kernel %dx%d with padding %s",
                       kd_shape_str(&L->in, buf, sizeof buf), L->kernel_h, L->kernel_w, pad);
    }
    memset(&L->out, 0, sizeof L->out);
    L->out.rank = 3;
    L->out.dim[0] = L->filters;
    L->out.dim[1] = (int)((span_h - L->kernel_h) / L->stride_h + 1);
    L->out.dim[2] = (int)((span_w - L->kernel_w) / L->stride_w + 1);

    conv_geom g = geom(L);
    if (g.K > INT_MAX || g.P > INT_MAX)
        return kd_fail(KD_ERR_SHAPE, "conv2d too large: %zu inputs per output pixel, %zu output pixels",
                       g.K, g.P);
    L->weight_count = (size_t)g.F * g.K;
    L->bias_count = L->use_bias ? (size_t)g.F : 0;
    L->state_count = 0;
    L->weight_rank = 4;
    L->weight_dims[0] = g.F;
    L->weight_dims[1] = g.C;
    L->weight_dims[2] = g.kh;
    L->weight_dims[3] = g.kw;
    return KD_OK;
}

static void conv_init(kd_layer *L, float *W, float *B, float *state, kd_rng *rng)
{
    /* PyTorch's fans for conv: in_c * kh * kw and out_c * kh * kw. */
    int area = L->kernel_h * L->kernel_w;
    kd_init_weights(W, L->weight_count, L->in.dim[0] * area, L->filters * area, L->init, rng);
    if (B)
        memset(B, 0, sizeof(float) * L->bias_count);
}

static size_t conv_saved_floats(const kd_layer *L, int batch)
{
    conv_geom g = geom(L);
    return g.K * g.P * (size_t)batch;
}

static size_t conv_work_floats(const kd_layer *L, int batch)
{
    conv_geom g = geom(L);
    return ((size_t)g.F + g.K) * g.P * (size_t)batch;
}

/* Output columns [lo, hi) whose input column o*s - pad + j lies inside [0, n). */
static void valid_range(int out_n, int n, int s, int pad, int j, int *lo, int *hi)
{
    int first = pad - j; /* o*s >= first */
    int a = first > 0 ? (first + s - 1) / s : 0;
    int last = n - 1 + pad - j; /* o*s <= last */
    int b = last >= 0 ? last / s + 1 : 0;
    if (a > out_n)
        a = out_n;
    if (b > out_n)
        b = out_n;
    if (b < a)
        b = a;
    *lo = a;
    *hi = b;
}

/* col[(c*kh + i)*kw + j][n*P + oh*OW + ow] = x[n][c][oh*sh - ph + i][ow*sw - pw + j] (0 outside). */
static void im2col(const conv_geom *g, int batch, const float *x, float *col)
{
    size_t NP = (size_t)batch * g->P, plane = (size_t)g->H * g->W;
    for (int c = 0; c < g->C; c++)
        for (int i = 0; i < g->kh; i++)
            for (int j = 0; j < g->kw; j++) {
                float *row = col + (((size_t)c * g->kh + i) * g->kw + j) * NP;
                int lo, hi;
                valid_range(g->OW, g->W, g->sw, g->pw, j, &lo, &hi);
                for (int n = 0; n < batch; n++) {
                    const float *xc = x + ((size_t)n * g->C + c) * plane;
                    for (int oh = 0; oh < g->OH; oh++) {
                        float *dst = row + (size_t)n * g->P + (size_t)oh * g->OW;
                        int ih = oh * g->sh - g->ph + i;
                        if (ih < 0 || ih >= g->H) {
                            memset(dst, 0, sizeof(float) * g->OW);
                            continue;
                        }
                        /* Input column of output column ow is base + ow*sw (>= 0 from lo on). */
                        ptrdiff_t base = (ptrdiff_t)ih * g->W - g->pw + j;
                        for (int ow = 0; ow < lo; ow++)
                            dst[ow] = 0.0f;
                        if (g->sw == 1)
                            memcpy(dst + lo, xc + base + lo, sizeof(float) * (size_t)(hi - lo));
                        else
                            for (int ow = lo; ow < hi; ow++)
                                dst[ow] = xc[base + (ptrdiff_t)ow * g->sw];
                        for (int ow = hi; ow < g->OW; ow++)
                            dst[ow] = 0.0f;
                    }
                }
            }
}

/* The adjoint of im2col: dx (zeroed here) += every dcol entry at its source. */
static void col2im(const conv_geom *g, int batch, const float *dcol, float *dx)
{
    size_t NP = (size_t)batch * g->P, plane = (size_t)g->H * g->W;
    memset(dx, 0, sizeof(float) * plane * g->C * (size_t)batch);
    for (int c = 0; c < g->C; c++)
        for (int i = 0; i < g->kh; i++)
            for (int j = 0; j < g->kw; j++) {
                const float *row = dcol + (((size_t)c * g->kh + i) * g->kw + j) * NP;
                int lo, hi;
                valid_range(g->OW, g->W, g->sw, g->pw, j, &lo, &hi);
                for (int n = 0; n < batch; n++) {
                    float *xc = dx + ((size_t)n * g->C + c) * plane;
                    for (int oh = 0; oh < g->OH; oh++) {
                        int ih = oh * g->sh - g->ph + i;
                        if (ih < 0 || ih >= g->H)
                            continue;
                        const float *src = row + (size_t)n * g->P + (size_t)oh * g->OW;
                        ptrdiff_t base = (ptrdiff_t)ih * g->W - g->pw + j;
                        if (g->sw == 1) {
                            float *dst = xc + base + lo;
                            for (int ow = lo; ow < hi; ow++)
                                dst[ow - lo] += src[ow];
                        } else {
                            for (int ow = lo; ow < hi; ow++)
                                xc[base + (ptrdiff_t)ow * g->sw] += src[ow];
                        }
                    }
                }
            }
}

/* Eight independent partial sums: vectorisable without -ffast-math and
 * more accurate than one running float sum over batch*P terms. */
static float row_sum(const float *r, size_t n)
{
    float acc[8] = {0};
    size_t q = 0;
    for (; q + 8 <= n; q += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += r[q + l];
    for (; q < n; q++)
        acc[0] += r[q];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

static void conv_forward(kd_layer *L, const kd_pass *p, const float *x, float *y)
{
    conv_geom g = geom(L);
    int batch = p->batch;
    size_t NP = (size_t)batch * g.P;
    float *col = p->saved, *prod = p->work;
    im2col(&g, batch, x, col);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.F, (int)NP, (int)g.K, 1.0f, p->W,
                (int)g.K, col, (int)NP, 0.0f, prod, (int)NP);
    /* [F, batch, P] -> [batch, F, P], adding the bias on the way. */
    for (int n = 0; n < batch; n++)
        for (int f = 0; f < g.F; f++) {
            const float *src = prod + (size_t)f * NP + (size_t)n * g.P;
            float *dst = y + ((size_t)n * g.F + f) * g.P;
            float b = p->B ? p->B[f] : 0.0f;
            for (size_t q = 0; q < g.P; q++)
                dst[q] = src[q] + b;
        }
}

static void conv_backward(kd_layer *L, const kd_pass *p, const float *x, const float *y,
                          const float *dy, float *dx)
{
    conv_geom g = geom(L);
    int batch = p->batch;
    size_t NP = (size_t)batch * g.P;
    const float *col = p->saved;
    float *dyr = p->work, *dcol = p->work + (size_t)g.F * NP;
    /* [batch, F, P] -> [F, batch, P] so dy is one matrix [F, batch*P]. */
    for (int n = 0; n < batch; n++)
        for (int f = 0; f < g.F; f++)
            memcpy(dyr + (size_t)f * NP + (size_t)n * g.P, dy + ((size_t)n * g.F + f) * g.P,
                   sizeof(float) * g.P);
    /* dW [F, K] = dyr [F, NP] col^T [NP, K] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.F, (int)g.K, (int)NP, 1.0f, dyr,
                (int)NP, col, (int)NP, 0.0f, p->dW, (int)g.K);
    if (p->dB)
        for (int f = 0; f < g.F; f++)
            p->dB[f] = row_sum(dyr + (size_t)f * NP, NP);
    if (!dx)
        return;
    /* dcol [K, NP] = W^T [K, F] dyr [F, NP] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)g.K, (int)NP, g.F, 1.0f, p->W,
                (int)g.K, dyr, (int)NP, 0.0f, dcol, (int)NP);
    col2im(&g, batch, dcol, dx);
}

const kd_layer_ops kd_conv2d_ops = {
    .type = "conv2d",
    .setup = conv_setup,
    .init = conv_init,
    .saved_floats = conv_saved_floats,
    .work_floats = conv_work_floats,
    .forward = conv_forward,
    .backward = conv_backward,
};
