/* Max and average pooling over (channels, height, width) samples, with
 * PyTorch's semantics: output size floor((H + 2p - k) / s) + 1, padding at
 * most half the window, padded cells never win a max and count in the
 * average's divisor (count_include_pad=True). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "layer.h"

static kd_status pool_setup(kd_layer *L, cJSON *cfg)
{
    static const char *const keys[] = {"size", "stride", "padding", NULL};
    KD_TRY(kd_cfg_known_keys(cfg, keys));
    KD_TRY(kd_cfg_pair(cfg, "size", 2, 1, &L->kernel_h, &L->kernel_w));
    if (cJSON_GetObjectItemCaseSensitive(cfg, "stride")) {
        KD_TRY(kd_cfg_pair(cfg, "stride", 1, 1, &L->stride_h, &L->stride_w));
    } else {
        /* Default stride = size: non-overlapping windows. */
        L->stride_h = L->kernel_h;
        L->stride_w = L->kernel_w;
        cJSON *v = L->kernel_h == L->kernel_w ? cJSON_CreateNumber(L->kernel_h)
                                              : cJSON_CreateIntArray((const int[]){L->kernel_h, L->kernel_w}, 2);
        if (!v || !cJSON_AddItemToObject(cfg, "stride", v)) {
            cJSON_Delete(v);
            return kd_fail(KD_ERR_NOMEM, "out of memory writing the default of key 'stride'");
        }
    }
    KD_TRY(kd_cfg_pair(cfg, "padding", 0, 0, &L->pad_h, &L->pad_w));
    if (2 * L->pad_h > L->kernel_h || 2 * L->pad_w > L->kernel_w)
        return kd_fail(KD_ERR_INVALID, "key 'padding': must be at most half the pool size %dx%d, got %dx%d",
                       L->kernel_h, L->kernel_w, L->pad_h, L->pad_w);

    char buf[64];
    if (L->in.rank != 3)
        return kd_fail(KD_ERR_SHAPE, "%s needs a rank-3 input (channels, height, width), got %s",
                       L->ops->type, kd_shape_str(&L->in, buf, sizeof buf));
    long span_h = (long)L->in.dim[1] + 2L * L->pad_h, span_w = (long)L->in.dim[2] + 2L * L->pad_w;
    if (span_h < L->kernel_h || span_w < L->kernel_w)
        return kd_fail(KD_ERR_SHAPE, "input %s too small for pool size %dx%d with padding %dx%d",
                       kd_shape_str(&L->in, buf, sizeof buf), L->kernel_h, L->kernel_w, L->pad_h,
                       L->pad_w);
    memset(&L->out, 0, sizeof L->out);
    L->out.rank = 3;
    L->out.dim[0] = L->in.dim[0];
    L->out.dim[1] = (int)((span_h - L->kernel_h) / L->stride_h + 1);
    L->out.dim[2] = (int)((span_w - L->kernel_w) / L->stride_w + 1);
    L->weight_count = L->bias_count = L->state_count = 0;
    L->weight_rank = 0;
    return KD_OK;
}

/* The input rows/columns [lo, hi) that window o covers inside [0, n). */
static inline void window(int o, int s, int pad, int k, int n, int *lo, int *hi)
{
    int a = o * s - pad, b = a + k;
    *lo = a > 0 ? a : 0;
    *hi = b < n ? b : n;
}

static size_t maxpool_saved_floats(const kd_layer *L, int batch)
{
    /* One int32 argmax per output (int32 and float have the same size). */
    return kd_shape_size(&L->out) * (size_t)batch;
}

/* The common 2x2 window, stride 2, no padding: the fast paths below. */
static int is_2x2(const kd_layer *L)
{
    return L->kernel_h == 2 && L->kernel_w == 2 && L->stride_h == 2 && L->stride_w == 2 &&
           L->pad_h == 0 && L->pad_w == 0;
}

/* The common 2x2 window, stride 2, no padding, without the general loop's
 * bookkeeping: branch-free selects over the four cells. */
static void maxpool_2x2(const float *x, float *y, int32_t *arg, size_t planes, int H, int W,
                        int OH, int OW)
{
    for (size_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * H * W;
        float *yp = y + pl * OH * OW;
        int32_t *ap = arg + pl * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
            const float *r0 = xp + (size_t)2 * oh * W, *r1 = r0 + W;
            int base = 2 * oh * W;
            for (int ow = 0; ow < OW; ow++) {
                float a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
                int ia = base + 2 * ow;
                /* First maximum in row-major order wins, as in the general loop. */
                float m0 = b > a ? b : a, m1 = d > c ? d : c;
                int i0 = b > a ? ia + 1 : ia, i1 = d > c ? ia + W + 1 : ia + W;
                yp[oh * OW + ow] = m1 > m0 ? m1 : m0;
                ap[oh * OW + ow] = m1 > m0 ? i1 : i0;
            }
        }
    }
}

static void maxpool_forward(kd_layer *L, const kd_pass *p, const float *x, float *y)
{
    int C = L->in.dim[0], H = L->in.dim[1], W = L->in.dim[2];
    int OH = L->out.dim[1], OW = L->out.dim[2];
    int32_t *arg = (int32_t *)p->saved;
    size_t planes = (size_t)p->batch * C;
    if (is_2x2(L)) {
        maxpool_2x2(x, y, arg, planes, H, W, OH, OW);
        return;
    }
    for (size_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * H * W;
        float *yp = y + pl * OH * OW;
        int32_t *ap = arg + pl * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
            int h0, h1;
            window(oh, L->stride_h, L->pad_h, L->kernel_h, H, &h0, &h1);
            for (int ow = 0; ow < OW; ow++) {
                int w0, w1;
                window(ow, L->stride_w, L->pad_w, L->kernel_w, W, &w0, &w1);
                /* Padding is at most half the window, so it holds a real cell. */
                int best = h0 * W + w0;
                float m = xp[best];
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++)
                        if (xp[ih * W + iw] > m) {
                            m = xp[ih * W + iw];
                            best = ih * W + iw;
                        }
                yp[oh * OW + ow] = m;
                ap[oh * OW + ow] = best;
            }
        }
    }
}

/* Backward of maxpool_2x2: every cell of a window gets its output's
 * gradient or 0, written once, so dx needs no zeroing pass first. The
 * choice is a bit mask, not a ?: on floats, so it compiles without
 * branches (the argmax is unpredictable) and gives exact zeros even for a
 * non-finite gradient. An odd last row or column belongs to no window. */
static inline float keep_if(float g, int keep)
{
    uint32_t bits;
    memcpy(&bits, &g, sizeof bits);
    bits &= -(uint32_t)keep;
    memcpy(&g, &bits, sizeof g);
    return g;
}

static void maxpool_2x2_backward(const float *restrict dy, const int32_t *restrict arg,
                                 float *restrict dx, size_t planes, int H, int W, int OH, int OW)
{
    for (size_t pl = 0; pl < planes; pl++) {
        float *xp = dx + pl * H * W;
        const float *gp = dy + pl * OH * OW;
        const int32_t *ap = arg + pl * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
            float *r0 = xp + (size_t)2 * oh * W, *r1 = r0 + W;
            int base = 2 * oh * W;
            for (int ow = 0; ow < OW; ow++) {
                float g = gp[oh * OW + ow];
                /* Offset of the maximum inside the window: 0, 1, W or W + 1. */
                int d = ap[oh * OW + ow] - (base + 2 * ow);
                r0[2 * ow] = keep_if(g, d == 0);
                r0[2 * ow + 1] = keep_if(g, d == 1);
                r1[2 * ow] = keep_if(g, d == W);
                r1[2 * ow + 1] = keep_if(g, d == W + 1);
            }
            for (int iw = 2 * OW; iw < W; iw++)
                r0[iw] = r1[iw] = 0.0f;
        }
        for (size_t q = (size_t)2 * OH * W; q < (size_t)H * W; q++)
            xp[q] = 0.0f;
    }
}

static void maxpool_backward(kd_layer *L, const kd_pass *p, const float *x, const float *y,
                             const float *dy, float *dx)
{
    if (!dx)
        return;
    if (is_2x2(L)) {
        maxpool_2x2_backward(dy, (const int32_t *)p->saved, dx, (size_t)p->batch * L->in.dim[0],
                             L->in.dim[1], L->in.dim[2], L->out.dim[1], L->out.dim[2]);
        return;
    }
    size_t in = (size_t)L->in.dim[1] * L->in.dim[2], out = (size_t)L->out.dim[1] * L->out.dim[2];
    size_t planes = (size_t)p->batch * L->in.dim[0];
    const int32_t *arg = (const int32_t *)p->saved;
    memset(dx, 0, sizeof(float) * in * planes);
    for (size_t pl = 0; pl < planes; pl++)
        for (size_t q = 0; q < out; q++)
            dx[pl * in + arg[pl * out + q]] += dy[pl * out + q];
}

static void avgpool_forward(kd_layer *L, const kd_pass *p, const float *x, float *y)
{
    int C = L->in.dim[0], H = L->in.dim[1], W = L->in.dim[2];
    int OH = L->out.dim[1], OW = L->out.dim[2];
    float scale = 1.0f / (float)(L->kernel_h * L->kernel_w);
    size_t planes = (size_t)p->batch * C;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * H * W;
        float *yp = y + pl * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
            int h0, h1;
            window(oh, L->stride_h, L->pad_h, L->kernel_h, H, &h0, &h1);
            for (int ow = 0; ow < OW; ow++) {
                int w0, w1;
                window(ow, L->stride_w, L->pad_w, L->kernel_w, W, &w0, &w1);
                float s = 0.0f;
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++)
                        s += xp[ih * W + iw];
                yp[oh * OW + ow] = s * scale;
            }
        }
    }
}

static void avgpool_backward(kd_layer *L, const kd_pass *p, const float *x, const float *y,
                             const float *dy, float *dx)
{
    if (!dx)
        return;
    int C = L->in.dim[0], H = L->in.dim[1], W = L->in.dim[2];
    int OH = L->out.dim[1], OW = L->out.dim[2];
    float scale = 1.0f / (float)(L->kernel_h * L->kernel_w);
    size_t planes = (size_t)p->batch * C;
    memset(dx, 0, sizeof(float) * planes * H * W);
    for (size_t pl = 0; pl < planes; pl++) {
        float *xp = dx + pl * H * W;
        const float *yp = dy + pl * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
            int h0, h1;
            window(oh, L->stride_h, L->pad_h, L->kernel_h, H, &h0, &h1);
            for (int ow = 0; ow < OW; ow++) {
                int w0, w1;
                window(ow, L->stride_w, L->pad_w, L->kernel_w, W, &w0, &w1);
                float g = yp[oh * OW + ow] * scale;
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++)
                        xp[ih * W + iw] += g;
            }
        }
    }
}

const kd_layer_ops kd_maxpool_ops = {
    .kind = KD_LAYER_MAXPOOL,
    .type = "maxpool",
    .setup = pool_setup,
    .saved_floats = maxpool_saved_floats,
    .forward = maxpool_forward,
    .backward = maxpool_backward,
};

const kd_layer_ops kd_avgpool_ops = {
    .kind = KD_LAYER_AVGPOOL,
    .type = "avgpool",
    .setup = pool_setup,
    .forward = avgpool_forward,
    .backward = avgpool_backward,
};
