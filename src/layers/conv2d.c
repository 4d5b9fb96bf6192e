/* 2-D convolution (cross-correlation, like PyTorch's nn.Conv2d) on
 * (channels, height, width) samples. Weight [F, C, kh, kw].
 *
 * The batch goes through GEMMs a chunk of samples at a time: im2col builds
 * col [K = C*kh*kw, n*P] for n samples (P = OH*OW output pixels each), then
 * W [F, K] x col gives [F, n*P], which is reordered into the [n, F, OH, OW]
 * output. n is chosen so col is about CONV_CHUNK_BYTES: large enough for
 * efficient GEMMs (per-sample ones would be tiny: LeNet's second layer is
 * 50 x 64 x 500), small enough that col, the product and dcol stay in L2.
 * A whole-batch col (33 MB for LeNet at batch 256) fell out of cache and
 * made OpenBLAS pack and zero it from memory.
 *
 * Backward rebuilds each chunk's col instead of keeping it from forward:
 * rebuilding in cache is cheaper than writing and re-reading it from
 * memory, and the layer keeps no scratch. dW accumulates over the chunks
 * (beta = 1 after the first). Shared work holds col plus the product
 * (forward) or col, the reordered dy and dcol (backward), for one chunk. */
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

/* Target size of one chunk's column matrix: a quarter of a 2 MB L2, so the
 * product (forward) or dy and dcol (backward) fit beside it. */
#define CONV_CHUNK_BYTES ((size_t)512 * 1024)

/* Samples per chunk: as many as fit CONV_CHUNK_BYTES, at least one, at most
 * the batch. */
static int chunk_samples(const conv_geom *g, int batch)
{
    size_t per_sample = sizeof(float) * g->K * g->P;
    size_t n = per_sample ? CONV_CHUNK_BYTES / per_sample : (size_t)batch;
    if (n < 1)
        n = 1;
    return n < (size_t)batch ? (int)n : batch;
}

static size_t conv_work_floats(const kd_layer *L, int batch)
{
    conv_geom g = geom(L);
    /* Backward's col + dyr + dcol; forward's col + product is no larger. */
    return (2 * g.K + (size_t)g.F) * g.P * (size_t)chunk_samples(&g, batch);
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

/* Rows are 8 or 24 floats in LeNet: inline loops beat ~10^6 libc calls per
 * batch, so keep GCC from turning them back into memcpy/memset. */
#if defined(__GNUC__) && !defined(__clang__)
#define KD_NO_LIBC_LOOPS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define KD_NO_LIBC_LOOPS
#endif

/* Copies n floats in blocks of 8 (a fixed-size memcpy is a couple of
 * vector moves) with a scalar tail: rows here are short, so the per-row
 * overhead of a general vectorised loop dominated. */
static inline void copy_run(float *restrict dst, const float *restrict src, int n)
{
    int q = 0;
    for (; q + 8 <= n; q += 8)
        memcpy(dst + q, src + q, 8 * sizeof(float));
    for (; q < n; q++)
        dst[q] = src[q];
}

/* col[(c*kh + i)*kw + j][n*P + oh*OW + ow] = x[n][c][oh*sh - ph + i][ow*sw - pw + j]
 * (0 outside), for the `count` samples at x. */
KD_NO_LIBC_LOOPS
static void im2col(const conv_geom *g, int count, const float *restrict x, float *restrict col)
{
    size_t NP = (size_t)count * g->P, P = g->P, plane = (size_t)g->H * g->W;
    const int OH = g->OH, OW = g->OW, W = g->W, sw = g->sw;
    for (int c = 0; c < g->C; c++)
        for (int i = 0; i < g->kh; i++) {
            /* Output rows [oa, ob) read input rows inside the image. */
            int oa, ob;
            valid_range(OH, g->H, g->sh, g->ph, i, &oa, &ob);
            ptrdiff_t src_stride = (ptrdiff_t)g->sh * W;
            for (int j = 0; j < g->kw; j++) {
                float *row = col + (((size_t)c * g->kh + i) * g->kw + j) * NP;
                int lo, hi;
                valid_range(OW, W, sw, g->pw, j, &lo, &hi);
                for (int n = 0; n < count; n++) {
                    float *dst = row + (size_t)n * P;
                    for (size_t q = 0; q < (size_t)oa * OW; q++)
                        dst[q] = 0.0f;
                    for (size_t q = (size_t)ob * OW; q < P; q++)
                        dst[q] = 0.0f;
                    if (oa == ob)
                        continue;
                    /* Input (oa*sh - ph + i, ow*sw - pw + j): >= 0 for ow >= lo. */
                    const float *src = x + ((size_t)n * g->C + c) * plane +
                                       ((ptrdiff_t)oa * g->sh - g->ph + i) * W - g->pw + j;
                    dst += (size_t)oa * OW;
                    if (sw == 1 && lo == 0 && hi == OW) {
                        /* The common case: whole rows, a strided 2-D copy. */
                        for (int oh = oa; oh < ob; oh++, dst += OW, src += src_stride)
                            copy_run(dst, src, OW);
                        continue;
                    }
                    for (int oh = oa; oh < ob; oh++, dst += OW, src += src_stride) {
                        for (int ow = 0; ow < lo; ow++)
                            dst[ow] = 0.0f;
                        for (int ow = lo; ow < hi; ow++)
                            dst[ow] = src[(ptrdiff_t)ow * sw];
                        for (int ow = hi; ow < OW; ow++)
                            dst[ow] = 0.0f;
                    }
                }
            }
        }
}

/* dst[q] += src[q] for q < n, in the same blocks as copy_run. */
static inline void add_run(float *restrict dst, const float *restrict src, int n)
{
    int q = 0;
    for (; q + 8 <= n; q += 8)
        for (int l = 0; l < 8; l++)
            dst[q + l] += src[q + l];
    for (; q < n; q++)
        dst[q] += src[q];
}

/* The adjoint of im2col: dx (zeroed here) += every dcol entry at its source. */
KD_NO_LIBC_LOOPS
static void col2im(const conv_geom *g, int count, const float *restrict dcol, float *restrict dx)
{
    size_t NP = (size_t)count * g->P, P = g->P, plane = (size_t)g->H * g->W;
    const int OW = g->OW, W = g->W, sw = g->sw;
    memset(dx, 0, sizeof(float) * plane * g->C * (size_t)count);
    for (int c = 0; c < g->C; c++)
        for (int i = 0; i < g->kh; i++) {
            int oa, ob;
            valid_range(g->OH, g->H, g->sh, g->ph, i, &oa, &ob);
            if (oa == ob)
                continue;
            ptrdiff_t dst_stride = (ptrdiff_t)g->sh * W;
            for (int j = 0; j < g->kw; j++) {
                const float *row = dcol + (((size_t)c * g->kh + i) * g->kw + j) * NP;
                int lo, hi;
                valid_range(OW, W, sw, g->pw, j, &lo, &hi);
                for (int n = 0; n < count; n++) {
                    const float *src = row + (size_t)n * P + (size_t)oa * OW;
                    float *dst = dx + ((size_t)n * g->C + c) * plane +
                                 ((ptrdiff_t)oa * g->sh - g->ph + i) * W - g->pw + j;
                    if (sw == 1) {
                        for (int oh = oa; oh < ob; oh++, src += OW, dst += dst_stride)
                            add_run(dst + lo, src + lo, hi - lo);
                    } else {
                        for (int oh = oa; oh < ob; oh++, src += OW, dst += dst_stride)
                            for (int ow = lo; ow < hi; ow++)
                                dst[(ptrdiff_t)ow * sw] += src[ow];
                    }
                }
            }
        }
}

/* Eight independent partial sums: vectorisable without -ffast-math and
 * more accurate than one running float sum over n*P terms. */
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
    int chunk = chunk_samples(&g, p->batch);
    size_t in_size = (size_t)g.C * g.H * g.W, out_size = (size_t)g.F * g.P;
    float *col = p->work, *prod = p->work + g.K * g.P * (size_t)chunk;
    for (int n0 = 0; n0 < p->batch; n0 += chunk) {
        int count = p->batch - n0 < chunk ? p->batch - n0 : chunk;
        size_t NP = (size_t)count * g.P;
        im2col(&g, count, x + (size_t)n0 * in_size, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.F, (int)NP, (int)g.K, 1.0f, p->W,
                    (int)g.K, col, (int)NP, 0.0f, prod, (int)NP);
        /* [F, count, P] -> [count, F, P], adding the bias on the way. */
        float *yc = y + (size_t)n0 * out_size;
        for (int n = 0; n < count; n++)
            for (int f = 0; f < g.F; f++) {
                const float *src = prod + (size_t)f * NP + (size_t)n * g.P;
                float *dst = yc + ((size_t)n * g.F + f) * g.P;
                float b = p->B ? p->B[f] : 0.0f;
                for (size_t q = 0; q < g.P; q++)
                    dst[q] = src[q] + b;
            }
    }
}

static void conv_backward(kd_layer *L, const kd_pass *p, const float *x, const float *y,
                          const float *dy, float *dx)
{
    conv_geom g = geom(L);
    int chunk = chunk_samples(&g, p->batch);
    size_t in_size = (size_t)g.C * g.H * g.W, out_size = (size_t)g.F * g.P;
    size_t col_floats = g.K * g.P * (size_t)chunk;
    float *col = p->work, *dcol = col + col_floats, *dyr = dcol + col_floats;
    for (int n0 = 0; n0 < p->batch; n0 += chunk) {
        int count = p->batch - n0 < chunk ? p->batch - n0 : chunk;
        size_t NP = (size_t)count * g.P;
        /* backward WRITES dW and dB: the first chunk overwrites, later ones add. */
        float beta = n0 == 0 ? 0.0f : 1.0f;
        /* [count, F, P] -> [F, count, P] so dy is one matrix [F, count*P]. */
        const float *dyc = dy + (size_t)n0 * out_size;
        for (int n = 0; n < count; n++)
            for (int f = 0; f < g.F; f++) {
                const float *src = dyc + ((size_t)n * g.F + f) * g.P;
                float *dst = dyr + (size_t)f * NP + (size_t)n * g.P;
                for (size_t q = 0; q < g.P; q++)
                    dst[q] = src[q];
            }
        im2col(&g, count, x + (size_t)n0 * in_size, col);
        /* dW [F, K] (+)= dyr [F, NP] col^T [NP, K] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.F, (int)g.K, (int)NP, 1.0f, dyr,
                    (int)NP, col, (int)NP, beta, p->dW, (int)g.K);
        if (p->dB)
            for (int f = 0; f < g.F; f++) {
                float s = row_sum(dyr + (size_t)f * NP, NP);
                p->dB[f] = n0 == 0 ? s : p->dB[f] + s;
            }
        if (!dx)
            continue;
        /* dcol [K, NP] = W^T [K, F] dyr [F, NP] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)g.K, (int)NP, g.F, 1.0f, p->W,
                    (int)g.K, dyr, (int)NP, 0.0f, dcol, (int)NP);
        col2im(&g, count, dcol, dx + (size_t)n0 * in_size);
    }
}

const kd_layer_ops kd_conv2d_ops = {
    .kind = KD_LAYER_CONV2D,
    .type = "conv2d",
    .setup = conv_setup,
    .init = conv_init,
    .work_floats = conv_work_floats,
    .forward = conv_forward,
    .backward = conv_backward,
};
