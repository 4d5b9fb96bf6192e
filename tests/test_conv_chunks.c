/* conv2d works on the batch in cache-sized chunks of samples: batches and
 * shapes that take several chunks (and a partial last one) against direct
 * double-precision loops for y, dW, dB and dx; backward must overwrite the
 * gradients. Also the 2x2 max-pool fast path on odd sizes, exactly. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include "check.h"
#include "layer.h"

static float urand(unsigned *s) { *s = *s * 1103515245u + 12345u; return ((*s >> 8) & 0xffff) / 32768.0f - 1.0f; }
static void conv_case(const char *json, kd_shape in, int batch)
{
    kd_layer L; memset(&L, 0, sizeof L);
    cJSON *cfg = cJSON_Parse(json);
    L.ops = kd_layer_ops_find("conv2d"); L.in = in;
    kd_status st = L.ops->setup(&L, cfg);
    CHECK(st == KD_OK, "setup %s: %s", json, kd_last_error());
    if (st != KD_OK) { cJSON_Delete(cfg); return; }
    cJSON_Delete(cfg);
    int C = in.dim[0], H = in.dim[1], W = in.dim[2], F = L.filters, OH = L.out.dim[1], OW = L.out.dim[2];
    size_t nin = (size_t)batch * C * H * W, nout = (size_t)batch * F * OH * OW;
    size_t nw = L.ops->work_floats(&L, batch);
    size_t ns = L.ops->saved_floats ? L.ops->saved_floats(&L, batch) : 0;
    float *x = malloc(4 * nin), *y = malloc(4 * nout), *dy = malloc(4 * nout), *dx = malloc(4 * nin);
    float *Wt = malloc(4 * L.weight_count), *B = malloc(4 * (L.bias_count + 1)), *dW = malloc(4 * L.weight_count),
          *dB = malloc(4 * (L.bias_count + 1)), *work = malloc(4 * nw), *saved = ns ? malloc(4 * ns) : NULL;
    unsigned s = 7;
    for (size_t i = 0; i < nin; i++) x[i] = urand(&s);
    for (size_t i = 0; i < nout; i++) dy[i] = urand(&s);
    for (size_t i = 0; i < L.weight_count; i++) Wt[i] = urand(&s);
    for (size_t i = 0; i < L.bias_count; i++) B[i] = urand(&s);
    for (size_t i = 0; i < L.weight_count; i++) dW[i] = 1e9f; /* backward must overwrite */
    for (size_t i = 0; i < L.bias_count; i++) dB[i] = 1e9f;
    for (size_t i = 0; i < nin; i++) dx[i] = 1e9f;
    kd_pass p = {0}; p.batch = batch; p.training = 1; p.W = Wt; p.B = L.bias_count ? B : NULL;
    p.dW = dW; p.dB = L.bias_count ? dB : NULL; p.saved = saved; p.work = work;
    L.ops->forward(&L, &p, x, y);
    L.ops->backward(&L, &p, x, y, dy, dx);
    double *rdW = calloc(L.weight_count, 8), *rdB = calloc(F, 8), *rdx = calloc(nin, 8);
    double wy = 0, wdw = 0, wdb = 0, wdx = 0;
    int kh = L.kernel_h, kw = L.kernel_w;
    for (int n = 0; n < batch; n++) for (int f = 0; f < F; f++) for (int oh = 0; oh < OH; oh++) for (int ow = 0; ow < OW; ow++) {
        double acc = L.bias_count ? B[f] : 0; size_t o = (((size_t)n * F + f) * OH + oh) * OW + ow;
        double g = dy[o]; rdB[f] += g;
        for (int c = 0; c < C; c++) for (int i = 0; i < kh; i++) for (int j = 0; j < kw; j++) {
            int ih = oh * L.stride_h - L.pad_h + i, iw = ow * L.stride_w - L.pad_w + j;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            size_t xi = (((size_t)n * C + c) * H + ih) * W + iw, wi = (((size_t)f * C + c) * kh + i) * kw + j;
            acc += (double)x[xi] * Wt[wi]; rdW[wi] += g * x[xi]; rdx[xi] += g * Wt[wi];
        }
        wy = fmax(wy, fabs(acc - y[o]));
    }
    for (size_t i = 0; i < L.weight_count; i++) wdw = fmax(wdw, fabs(rdW[i] - dW[i]));
    for (int f = 0; f < (int)L.bias_count; f++) wdb = fmax(wdb, fabs(rdB[f] - dB[f]));
    for (size_t i = 0; i < nin; i++) wdx = fmax(wdx, fabs(rdx[i] - dx[i]));
    CHECK(wy < 1e-4 && wdw < 1e-3 && wdb < 1e-3 && wdx < 1e-4, "%s batch %d: y %g dW %g dB %g dx %g", json, batch,
          wy, wdw, wdb, wdx);
    free(x); free(y); free(dy); free(dx); free(Wt); free(B); free(dW); free(dB); free(work); free(saved); free(rdW); free(rdB); free(rdx);
}
static void pool_case(int C, int H, int W, int batch)
{
    kd_layer L; memset(&L, 0, sizeof L);
    cJSON *cfg = cJSON_Parse("{\"type\":\"maxpool\"}");
    L.ops = kd_layer_ops_find("maxpool"); L.in = (kd_shape){3, {C, H, W, 0}};
    L.ops->setup(&L, cfg); cJSON_Delete(cfg);
    int OH = L.out.dim[1], OW = L.out.dim[2];
    size_t nin = (size_t)batch * C * H * W, nout = (size_t)batch * C * OH * OW;
    float *x = malloc(4 * nin), *y = malloc(4 * nout), *dy = malloc(4 * nout), *dx = malloc(4 * nin), *saved = malloc(4 * L.ops->saved_floats(&L, batch));
    unsigned s = 9;
    for (size_t i = 0; i < nin; i++) { x[i] = urand(&s); dx[i] = 1e9f; }
    for (size_t i = 0; i < nout; i++) dy[i] = urand(&s);
    kd_pass p = {0}; p.batch = batch; p.saved = saved;
    L.ops->forward(&L, &p, x, y); L.ops->backward(&L, &p, x, y, dy, dx);
    double *r = calloc(nin, 8); double wy = 0, wdx = 0;
    for (int pl = 0; pl < batch * C; pl++) for (int oh = 0; oh < OH; oh++) for (int ow = 0; ow < OW; ow++) {
        int best = -1; float m = -INFINITY;
        for (int i = 0; i < 2; i++) for (int j = 0; j < 2; j++) { int q = (2 * oh + i) * W + 2 * ow + j; if (x[(size_t)pl * H * W + q] > m) { m = x[(size_t)pl * H * W + q]; best = q; } }
        wy = fmax(wy, fabs(m - y[((size_t)pl * OH + oh) * OW + ow]));
        r[(size_t)pl * H * W + best] += dy[((size_t)pl * OH + oh) * OW + ow];
    }
    for (size_t i = 0; i < nin; i++) wdx = fmax(wdx, fabs(r[i] - dx[i]));
    CHECK(wy == 0 && wdx == 0, "maxpool %dx%dx%d batch %d: y %g dx %g", C, H, W, batch, wy, wdx);
    free(x); free(y); free(dy); free(dx); free(saved); free(r);
}
int main(void)
{
    conv_case("{\"filters\":20,\"kernel\":5}", (kd_shape){3, {1, 28, 28, 0}}, 37);
    conv_case("{\"filters\":50,\"kernel\":5}", (kd_shape){3, {20, 12, 12, 0}}, 11);
    conv_case("{\"filters\":7,\"kernel\":[3,2],\"stride\":2,\"padding\":1}", (kd_shape){3, {30, 21, 19, 0}}, 13);
    conv_case("{\"filters\":4,\"kernel\":[2,3],\"stride\":[1,2],\"padding\":[2,0],\"bias\":false}", (kd_shape){3, {40, 24, 27, 0}}, 9);
    conv_case("{\"filters\":3,\"kernel\":5,\"padding\":2,\"stride\":3}", (kd_shape){3, {64, 30, 31, 0}}, 5);
    pool_case(3, 5, 7, 3); pool_case(2, 8, 8, 2); pool_case(2, 7, 6, 2); pool_case(1, 6, 9, 1);
    return check_summary();
}
