/* The layer table on its own: every layer's backward against double
 * precision central differences, dense and conv2d against direct loops,
 * setup's key checking and shape errors, batch-norm statistics, dropout
 * masks, and the fused softmax + cross-entropy gradient the network uses. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "error.h"
#include "layer.h"

/* ------------------------------------------------------------ test rig */

/* One layer with buffers of exactly the advertised sizes (so ASan sees any
 * overrun of saved_floats / work_floats). */
typedef struct tlayer {
    kd_layer L;
    int batch;
    size_t nin, nout; /* batch * per-sample size */
    float *W, *B, *dW, *dB, *state, *saved, *work;
} tlayer;

static kd_shape shape1(int a)
{
    kd_shape s = {1, {a, 0, 0, 0}};
    return s;
}

static kd_shape shape3(int c, int h, int w)
{
    kd_shape s = {3, {c, h, w, 0}};
    return s;
}

static float *fbuf(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static void tl_free(tlayer *t)
{
    free(t->W);
    free(t->B);
    free(t->dW);
    free(t->dB);
    free(t->state);
    free(t->saved);
    free(t->work);
    memset(t, 0, sizeof *t);
}

/* Parse `json`, run setup on input `in`, allocate and init. If resolved is
 * not NULL it receives the spec as setup left it (caller frees). */
static kd_status tl_make(const char *json, kd_shape in, int batch, tlayer *t, char **resolved)
{
    memset(t, 0, sizeof *t);
    cJSON *cfg = cJSON_Parse(json);
    if (!cfg)
        return kd_fail(KD_ERR_INVALID, "test: bad JSON %s", json);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(cfg, "type");
    t->L.ops = cJSON_IsString(type) ? kd_layer_ops_find(type->valuestring) : NULL;
    if (!t->L.ops) {
        cJSON_Delete(cfg);
        return kd_fail(KD_ERR_INVALID, "test: no layer type in %s", json);
    }
    t->L.in = in;
    kd_status s = t->L.ops->setup(&t->L, cfg);
    if (s == KD_OK && resolved)
        *resolved = cJSON_PrintUnformatted(cfg);
    cJSON_Delete(cfg);
    if (s != KD_OK)
        return s;
    const kd_layer *L = &t->L;
    t->batch = batch;
    t->nin = kd_shape_size(&L->in) * (size_t)batch;
    t->nout = kd_shape_size(&L->out) * (size_t)batch;
    t->W = fbuf(L->weight_count);
    t->dW = fbuf(L->weight_count);
    t->B = fbuf(L->bias_count);
    t->dB = fbuf(L->bias_count);
    t->state = fbuf(L->state_count);
    t->saved = fbuf(L->ops->saved_floats ? L->ops->saved_floats(L, batch) : 0);
    t->work = fbuf(L->ops->work_floats ? L->ops->work_floats(L, batch) : 0);
    kd_rng rng;
    kd_rng_seed(&rng, 42, 0);
    if (L->ops->init)
        L->ops->init(&t->L, L->weight_count ? t->W : NULL, L->bias_count ? t->B : NULL,
                     L->state_count ? t->state : NULL, &rng);
    return KD_OK;
}

/* The setup status alone, for error tests. */
static kd_status setup_only(const char *json, kd_shape in)
{
    tlayer t;
    kd_status s = tl_make(json, in, 1, &t, NULL);
    tl_free(&t);
    return s;
}

/* Every pass reseeds its rng the same way, so dropout draws the same mask
 * on every evaluation (as the network does within one step). */
static kd_pass tl_pass(tlayer *t, int training, kd_rng *rng)
{
    kd_rng_seed(rng, 1234, 5);
    kd_pass p = {0};
    p.batch = t->batch;
    p.training = training;
    p.W = t->L.weight_count ? t->W : NULL;
    p.B = t->L.bias_count ? t->B : NULL;
    p.dW = t->L.weight_count ? t->dW : NULL;
    p.dB = t->L.bias_count ? t->dB : NULL;
    p.state = t->L.state_count ? t->state : NULL;
    p.saved = t->saved;
    p.work = t->work;
    p.rng = rng;
    return p;
}

static void tl_forward(tlayer *t, const float *x, float *y, int training)
{
    kd_rng rng;
    kd_pass p = tl_pass(t, training, &rng);
    t->L.ops->forward(&t->L, &p, x, y);
}

static void tl_backward(tlayer *t, const float *x, const float *y, const float *dy, float *dx,
                        int training)
{
    kd_rng rng;
    kd_pass p = tl_pass(t, training, &rng);
    t->L.ops->backward(&t->L, &p, x, y, dy, dx);
}

static void fill_uniform(float *v, size_t n, float lo, float hi, uint64_t seed)
{
    kd_rng rng;
    kd_rng_seed(&rng, seed, 99);
    for (size_t i = 0; i < n; i++)
        v[i] = lo + (hi - lo) * (float)kd_rng_uniform(&rng);
}

/* ------------------------------------------------- finite differences */

typedef struct fd_ctx {
    tlayer *t;
    const float *x, *r;
    float *y, *state0;
    int training;
} fd_ctx;

/* L = sum(r * y), accumulated in double. State is restored first so a
 * training batch-norm forward (which updates it) is the same function
 * every time. */
static double fd_loss(fd_ctx *c)
{
    if (c->t->L.state_count)
        memcpy(c->t->state, c->state0, sizeof(float) * c->t->L.state_count);
    tl_forward(c->t, c->x, c->y, c->training);
    double s = 0.0;
    for (size_t i = 0; i < c->t->nout; i++)
        s += (double)c->r[i] * c->y[i];
    return s;
}

/* Compare analytic[i] with the central difference of L in v[i], for up to
 * ~120 entries spread over v. One CHECK per tensor. */
static void fd_compare(const char *what, const char *which, fd_ctx *c, float *v, size_t n,
                       const float *analytic, double eps)
{
    size_t step = n > 120 ? n / 120 : 1, bad = 0, tried = 0, worst_i = 0;
    double worst = 0.0, worst_a = 0.0, worst_n = 0.0;
    for (size_t i = 0; i < n; i += step) {
        float old = v[i];
        float hi = (float)(old + eps), lo = (float)(old - eps);
        v[i] = hi;
        double lp = fd_loss(c);
        v[i] = lo;
        double lm = fd_loss(c);
        v[i] = old;
        double num = (lp - lm) / ((double)hi - (double)lo), a = analytic[i];
        double err = fabs(num - a) / (fabs(num) + fabs(a) + 1e-1);
        tried++;
        if (err > 1e-2)
            bad++;
        if (err >= worst) {
            worst = err;
            worst_i = i;
            worst_a = a;
            worst_n = num;
        }
    }
    CHECK(bad == 0, "%s: d/d%s: %zu of %zu entries off; worst [%zu] analytic %.7g numeric %.7g",
          what, which, bad, tried, worst_i, worst_a, worst_n);
}

/* Gradient check of one set-up layer on input x (t->nin floats). */
static void grad_check(const char *what, tlayer *t, float *x, int training, double eps)
{
    float *y = fbuf(t->nout), *r = fbuf(t->nout), *dx = fbuf(t->nin);
    float *state0 = fbuf(t->L.state_count);
    float *gW = fbuf(t->L.weight_count), *gB = fbuf(t->L.bias_count);
    memcpy(state0, t->state, sizeof(float) * t->L.state_count);
    fill_uniform(r, t->nout, -1.0f, 1.0f, 777);

    fd_ctx c = {t, x, r, y, state0, training};
    fd_loss(&c);
    /* Poison the outputs: backward must write every entry, not add. */
    for (size_t i = 0; i < t->nin; i++)
        dx[i] = NAN;
    for (size_t i = 0; i < t->L.weight_count; i++)
        t->dW[i] = NAN;
    for (size_t i = 0; i < t->L.bias_count; i++)
        t->dB[i] = NAN;
    tl_backward(t, x, y, r, dx, training);
    memcpy(gW, t->dW, sizeof(float) * t->L.weight_count);
    memcpy(gB, t->dB, sizeof(float) * t->L.bias_count);

    fd_compare(what, "input", &c, x, t->nin, dx, eps);
    fd_compare(what, "weight", &c, t->W, t->L.weight_count, gW, eps);
    fd_compare(what, "bias", &c, t->B, t->L.bias_count, gB, eps);

    /* dx == NULL (first layer) must still produce the parameter grads. */
    if (t->L.weight_count) {
        fd_loss(&c);
        tl_backward(t, x, y, r, NULL, training);
        int same = 1;
        for (size_t i = 0; i < t->L.weight_count; i++)
            same &= t->dW[i] == gW[i];
        CHECK(same, "%s: dW differs when dx is NULL", what);
    }
    free(y);
    free(r);
    free(dx);
    free(state0);
    free(gW);
    free(gB);
}

/* Set up `json` on `in` with `batch`, fill x in [-1, 1] and check. */
static void grad_check_json(const char *json, kd_shape in, int batch, int training, double eps)
{
    tlayer t;
    kd_status s = tl_make(json, in, batch, &t, NULL);
    CHECK(s == KD_OK, "%s: setup failed: %s", json, kd_last_error());
    if (s != KD_OK)
        return;
    float *x = fbuf(t.nin);
    fill_uniform(x, t.nin, -1.0f, 1.0f, 31);
    /* Biases start at 0; make them non-trivial so their use is checked. */
    fill_uniform(t.B, t.L.bias_count, -0.5f, 0.5f, 32);
    grad_check(json, &t, x, training, eps);
    free(x);
    tl_free(&t);
}

/* Distinct values at least 0.05 apart (a shuffled ramp): no max-pool tie
 * or relu kink lies within eps of any input. */
static void fill_distinct(float *x, size_t n, uint64_t seed)
{
    kd_rng rng;
    kd_rng_seed(&rng, seed, 3);
    int64_t *idx = malloc(sizeof *idx * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        idx[i] = (int64_t)i;
    kd_rng_shuffle(&rng, idx, (int64_t)n);
    for (size_t i = 0; i < n; i++)
        x[i] = 0.05f * (float)(idx[i] - (int64_t)n / 2) + 0.025f;
    free(idx);
}

static void grad_check_distinct(const char *json, kd_shape in, int batch)
{
    tlayer t;
    kd_status s = tl_make(json, in, batch, &t, NULL);
    CHECK(s == KD_OK, "%s: setup failed: %s", json, kd_last_error());
    if (s != KD_OK)
        return;
    float *x = fbuf(t.nin);
    fill_distinct(x, t.nin, 5);
    grad_check(json, &t, x, 1, 1e-2);
    free(x);
    tl_free(&t);
}

static void test_gradients(void)
{
    /* dense: rank-1 input, a rank-3 input read flattened, no bias. */
    grad_check_json("{\"type\":\"dense\",\"units\":5}", shape1(7), 3, 1, 1e-2);
    grad_check_json("{\"type\":\"dense\",\"units\":4,\"init\":\"he\"}", shape3(2, 3, 2), 2, 1, 1e-2);
    grad_check_json("{\"type\":\"dense\",\"units\":3,\"bias\":false}", shape1(6), 4, 1, 1e-2);

    /* conv2d: stride 2 + padding 1 + non-square kernel; mixed pairs. */
    grad_check_json("{\"type\":\"conv2d\",\"filters\":3,\"kernel\":[3,2],\"stride\":2,\"padding\":1}",
                    shape3(2, 7, 6), 2, 1, 1e-2);
    grad_check_json("{\"type\":\"conv2d\",\"filters\":2,\"kernel\":3}", shape3(3, 5, 5), 3, 1, 1e-2);
    grad_check_json("{\"type\":\"conv2d\",\"filters\":4,\"kernel\":[2,3],\"stride\":[1,2],"
                    "\"padding\":[2,0],\"bias\":false}", shape3(2, 4, 7), 2, 1, 1e-2);

    /* pools: stride != size, padding, rectangular windows. */
    grad_check_distinct("{\"type\":\"maxpool\",\"size\":3,\"stride\":2,\"padding\":1}", shape3(2, 7, 6), 2);
    grad_check_distinct("{\"type\":\"maxpool\",\"size\":[2,3],\"stride\":[1,2]}", shape3(2, 5, 7), 2);
    grad_check_distinct("{\"type\":\"maxpool\"}", shape3(3, 4, 6), 2);
    grad_check_json("{\"type\":\"avgpool\",\"size\":3,\"stride\":2,\"padding\":1}", shape3(2, 7, 6), 2, 1, 1e-2);
    grad_check_json("{\"type\":\"avgpool\",\"size\":[2,3],\"stride\":[1,2],\"padding\":[1,1]}",
                    shape3(2, 5, 7), 2, 1, 1e-2);

    grad_check_distinct("{\"type\":\"relu\"}", shape3(2, 3, 4), 3);
    grad_check_json("{\"type\":\"tanh\"}", shape3(2, 3, 4), 3, 1, 1e-2);
    grad_check_json("{\"type\":\"sigmoid\"}", shape1(9), 3, 1, 1e-2);
    grad_check_json("{\"type\":\"flatten\"}", shape3(2, 3, 4), 2, 1, 1e-2);
    grad_check_json("{\"type\":\"softmax\"}", shape1(6), 3, 1, 1e-2);

    /* dropout with the same mask on every evaluation, and as identity. */
    grad_check_json("{\"type\":\"dropout\",\"rate\":0.3}", shape1(40), 3, 1, 1e-2);
    grad_check_json("{\"type\":\"dropout\",\"rate\":0.3}", shape1(40), 3, 0, 1e-2);

    /* batch norm through the batch statistics (training), rank 1 and 3,
     * with non-trivial gamma; and in inference mode. */
    const char *bn = "{\"type\":\"batchnorm\"}";
    kd_shape bn_shapes[2] = {shape1(5), shape3(3, 4, 5)};
    int bn_batches[2] = {6, 2};
    for (int k = 0; k < 2; k++)
        for (int training = 1; training >= 0; training--) {
            tlayer t;
            CHECK_OK(tl_make(bn, bn_shapes[k], bn_batches[k], &t, NULL));
            float *x = fbuf(t.nin);
            fill_uniform(x, t.nin, -1.0f, 2.0f, 41);
            fill_uniform(t.W, t.L.weight_count, 0.5f, 1.5f, 42);
            fill_uniform(t.B, t.L.bias_count, -0.5f, 0.5f, 43);
            fill_uniform(t.state, t.L.state_count, 0.2f, 1.2f, 44);
            char what[64];
            snprintf(what, sizeof what, "batchnorm rank %d %s", bn_shapes[k].rank,
                     training ? "training" : "inference");
            grad_check(what, &t, x, training, 1e-2);
            free(x);
            tl_free(&t);
        }
}

/* ------------------------------------------- forward against references */

static void test_dense_reference(void)
{
    tlayer t;
    CHECK_OK(tl_make("{\"type\":\"dense\",\"units\":7}", shape1(13), 5, &t, NULL));
    float *x = fbuf(t.nin), *y = fbuf(t.nout);
    fill_uniform(x, t.nin, -1.0f, 1.0f, 1);
    fill_uniform(t.B, 7, -1.0f, 1.0f, 2);
    tl_forward(&t, x, y, 1);
    double worst = 0.0;
    for (int b = 0; b < 5; b++)
        for (int o = 0; o < 7; o++) {
            double s = t.B[o];
            for (int i = 0; i < 13; i++)
                s += (double)x[b * 13 + i] * t.W[o * 13 + i];
            worst = fmax(worst, fabs(s - y[b * 7 + o]));
        }
    CHECK(worst < 1e-5, "dense forward differs from direct loops by %g", worst);
    free(x);
    free(y);
    tl_free(&t);
}

static void conv_reference_case(const char *json, kd_shape in, int batch)
{
    tlayer t;
    kd_status s = tl_make(json, in, batch, &t, NULL);
    CHECK(s == KD_OK, "%s: %s", json, kd_last_error());
    if (s != KD_OK)
        return;
    const kd_layer *L = &t.L;
    int C = in.dim[0], H = in.dim[1], W = in.dim[2];
    int F = L->filters, OH = L->out.dim[1], OW = L->out.dim[2];
    float *x = fbuf(t.nin), *y = fbuf(t.nout);
    fill_uniform(x, t.nin, -1.0f, 1.0f, 3);
    fill_uniform(t.B, L->bias_count, -1.0f, 1.0f, 4);
    tl_forward(&t, x, y, 1);
    double worst = 0.0;
    for (int n = 0; n < batch; n++)
        for (int f = 0; f < F; f++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double acc = L->bias_count ? t.B[f] : 0.0;
                    for (int c = 0; c < C; c++)
                        for (int i = 0; i < L->kernel_h; i++)
                            for (int j = 0; j < L->kernel_w; j++) {
                                int ih = oh * L->stride_h - L->pad_h + i;
                                int iw = ow * L->stride_w - L->pad_w + j;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                                    continue;
                                acc += (double)x[((n * C + c) * H + ih) * W + iw] *
                                       t.W[((f * C + c) * L->kernel_h + i) * L->kernel_w + j];
                            }
                    worst = fmax(worst, fabs(acc - y[((n * F + f) * OH + oh) * OW + ow]));
                }
    CHECK(worst < 1e-5, "%s: conv forward differs from direct loops by %g", json, worst);
    free(x);
    free(y);
    tl_free(&t);
}

static void test_conv_reference(void)
{
    tlayer t;
    CHECK_OK(tl_make("{\"type\":\"conv2d\",\"filters\":3,\"kernel\":[3,2],\"stride\":2,\"padding\":1}",
                     shape3(2, 7, 6), 1, &t, NULL));
    /* (7 + 2 - 3)/2 + 1 = 4, (6 + 2 - 2)/2 + 1 = 4 */
    CHECK(t.L.out.rank == 3 && t.L.out.dim[0] == 3 && t.L.out.dim[1] == 4 && t.L.out.dim[2] == 4,
          "conv out %dx%dx%d", t.L.out.dim[0], t.L.out.dim[1], t.L.out.dim[2]);
    CHECK(t.L.weight_rank == 4 && t.L.weight_dims[0] == 3 && t.L.weight_dims[1] == 2 &&
          t.L.weight_dims[2] == 3 && t.L.weight_dims[3] == 2 && t.L.weight_count == 36 &&
          t.L.bias_count == 3, "conv weight dims");
    tl_free(&t);

    conv_reference_case("{\"type\":\"conv2d\",\"filters\":3,\"kernel\":[3,2],\"stride\":2,\"padding\":1}",
                        shape3(2, 7, 6), 3);
    conv_reference_case("{\"type\":\"conv2d\",\"filters\":4,\"kernel\":[2,3],\"stride\":[1,2],"
                        "\"padding\":[2,0],\"bias\":false}", shape3(2, 4, 7), 2);
    /* LeNet's first layer. */
    conv_reference_case("{\"type\":\"conv2d\",\"filters\":6,\"kernel\":5}", shape3(1, 28, 28), 2);
    /* Kernel wider than the input, covered by padding. */
    conv_reference_case("{\"type\":\"conv2d\",\"filters\":2,\"kernel\":5,\"padding\":2,\"stride\":3}",
                        shape3(3, 3, 4), 2);
}

static void test_pools(void)
{
    /* Padded cells never win a max: all-negative input, padding 1. */
    tlayer t;
    CHECK_OK(tl_make("{\"type\":\"maxpool\",\"size\":3,\"stride\":1,\"padding\":1}", shape3(1, 3, 3), 1, &t, NULL));
    float x[9], y[9];
    for (int i = 0; i < 9; i++)
        x[i] = -1.0f - (float)i; /* max is the top-left-most cell in reach */
    tl_forward(&t, x, y, 0);
    CHECK(y[0] == -1.0f && y[4] == -1.0f && y[8] == -5.0f, "maxpool padded %g %g %g", y[0], y[4], y[8]);
    tl_free(&t);

    /* count_include_pad: a corner window of 3x3 with padding 1 sees 4 ones. */
    CHECK_OK(tl_make("{\"type\":\"avgpool\",\"size\":3,\"stride\":1,\"padding\":1}", shape3(1, 3, 3), 1, &t, NULL));
    for (int i = 0; i < 9; i++)
        x[i] = 1.0f;
    tl_forward(&t, x, y, 0);
    CHECK_NEAR(y[0], 4.0 / 9.0, 1e-6);
    CHECK_NEAR(y[1], 6.0 / 9.0, 1e-6);
    CHECK_NEAR(y[4], 1.0, 1e-6);
    tl_free(&t);

    /* Ties: the first maximum in row-major order takes the gradient, in
     * the 2x2 fast path and the general loop alike. */
    const char *tie_specs[2] = {"{\"type\":\"maxpool\"}",
                                "{\"type\":\"maxpool\",\"size\":3,\"stride\":2,\"padding\":1}"};
    for (int k = 0; k < 2; k++) {
        int C = 2, H = 7, W = 6;
        CHECK_OK(tl_make(tie_specs[k], shape3(C, H, W), 2, &t, NULL));
        float *tx = fbuf(t.nin), *ty = fbuf(t.nout), *ones = fbuf(t.nout), *tdx = fbuf(t.nin);
        kd_rng rng;
        kd_rng_seed(&rng, 17, 0);
        for (size_t i = 0; i < t.nin; i++)
            tx[i] = (float)kd_rng_below(&rng, 3); /* many ties */
        for (size_t i = 0; i < t.nout; i++)
            ones[i] = 1.0f;
        tl_forward(&t, tx, ty, 1);
        tl_backward(&t, tx, ty, ones, tdx, 1);
        const kd_layer *L = &t.L;
        int OH = L->out.dim[1], OW = L->out.dim[2], bad = 0;
        float *want_dx = fbuf(t.nin);
        for (int pl = 0; pl < 2 * C; pl++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    int best = -1;
                    for (int i = 0; i < L->kernel_h; i++)
                        for (int j = 0; j < L->kernel_w; j++) {
                            int ih = oh * L->stride_h - L->pad_h + i, iw = ow * L->stride_w - L->pad_w + j;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                                continue;
                            int at = pl * H * W + ih * W + iw;
                            if (best < 0 || tx[at] > tx[best])
                                best = at;
                        }
                    bad += ty[(pl * OH + oh) * OW + ow] != tx[best];
                    want_dx[best] += 1.0f;
                }
        for (size_t i = 0; i < t.nin; i++)
            bad += tdx[i] != want_dx[i];
        CHECK(bad == 0, "%s: %d values or gradients differ from first-max reference", tie_specs[k], bad);
        free(tx);
        free(ty);
        free(ones);
        free(tdx);
        free(want_dx);
        tl_free(&t);
    }

    /* Output shapes: floor((H + 2p - k)/s) + 1. */
    CHECK_OK(tl_make("{\"type\":\"maxpool\",\"size\":[2,3],\"stride\":[1,2]}", shape3(4, 5, 7), 1, &t, NULL));
    CHECK(t.L.out.dim[0] == 4 && t.L.out.dim[1] == 4 && t.L.out.dim[2] == 3, "pool out %dx%dx%d",
          t.L.out.dim[0], t.L.out.dim[1], t.L.out.dim[2]);
    tl_free(&t);
    CHECK_OK(tl_make("{\"type\":\"maxpool\"}", shape3(20, 24, 24), 1, &t, NULL));
    CHECK(t.L.out.dim[0] == 20 && t.L.out.dim[1] == 12 && t.L.out.dim[2] == 12, "lenet pool out");
    tl_free(&t);
}

/* ----------------------------------------------------------- batch norm */

static void test_batchnorm_stats(void)
{
    /* Rank 3, batch 3: each channel's statistics run over 3 * 2 * 3 = 18 values. */
    tlayer t;
    char *res = NULL;
    CHECK_OK(tl_make("{\"type\":\"batchnorm\",\"momentum\":0.2}", shape3(2, 2, 3), 3, &t, &res));
    CHECK(res && strstr(res, "\"eps\":1e-05") && strstr(res, "\"momentum\":0.2"), "resolved %s", res);
    free(res);
    CHECK(t.L.weight_rank == 1 && t.L.weight_dims[0] == 2 && t.L.weight_count == 2 &&
          t.L.bias_count == 2 && t.L.state_count == 4, "batchnorm counts");
    CHECK(t.W[0] == 1 && t.W[1] == 1 && t.B[0] == 0 && t.state[0] == 0 && t.state[1] == 0 &&
          t.state[2] == 1 && t.state[3] == 1, "batchnorm init gamma 1, beta 0, mean 0, var 1");

    float x[36], y[36];
    fill_uniform(x, 36, -2.0f, 3.0f, 8);
    t.state[0] = 0.5f;  /* running mean of channel 0 */
    t.state[3] = 2.0f;  /* running var of channel 1 */
    float before[4];
    memcpy(before, t.state, sizeof before);
    tl_forward(&t, x, y, 1);
    for (int c = 0; c < 2; c++) {
        double s = 0, ss = 0;
        for (int n = 0; n < 3; n++)
            for (int q = 0; q < 6; q++)
                s += x[n * 12 + c * 6 + q];
        double mu = s / 18;
        for (int n = 0; n < 3; n++)
            for (int q = 0; q < 6; q++)
                ss += (x[n * 12 + c * 6 + q] - mu) * (x[n * 12 + c * 6 + q] - mu);
        CHECK_NEAR(t.state[c], 0.8 * before[c] + 0.2 * mu, 1e-5);
        CHECK_NEAR(t.state[2 + c], 0.8 * before[2 + c] + 0.2 * ss / 17, 1e-5);
        /* Training output is normalised with the biased batch variance. */
        double yn = (x[c * 6] - mu) / sqrt(ss / 18 + 1e-5);
        CHECK_NEAR(y[c * 6], yn, 1e-4);
    }

    /* Inference: running statistics, no update. */
    t.W[0] = 2.0f;
    t.B[1] = -1.0f;
    memcpy(before, t.state, sizeof before);
    tl_forward(&t, x, y, 0);
    CHECK(memcmp(before, t.state, sizeof before) == 0, "inference must not touch running stats");
    double worst = 0.0;
    for (int n = 0; n < 3; n++)
        for (int c = 0; c < 2; c++)
            for (int q = 0; q < 6; q++) {
                int i = n * 12 + c * 6 + q;
                double want = t.W[c] * (x[i] - t.state[c]) / sqrt(t.state[2 + c] + 1e-5) + t.B[c];
                worst = fmax(worst, fabs(want - y[i]));
            }
    CHECK(worst < 1e-5, "batchnorm inference differs from running-stat formula by %g", worst);
    tl_free(&t);
}

/* -------------------------------------------------------------- dropout */

static void test_dropout(void)
{
    tlayer t;
    char *res = NULL;
    CHECK_OK(tl_make("{\"type\":\"dropout\"}", shape1(1000), 10, &t, &res));
    CHECK(res && strstr(res, "\"rate\":0.5"), "resolved %s", res);
    free(res);
    tl_free(&t);

    CHECK_OK(tl_make("{\"type\":\"dropout\",\"rate\":0.3}", shape1(1000), 10, &t, NULL));
    float *x = fbuf(t.nin), *y = fbuf(t.nout), *y2 = fbuf(t.nout);
    fill_uniform(x, t.nin, 0.5f, 1.5f, 12);
    tl_forward(&t, x, y, 0);
    CHECK(memcmp(x, y, sizeof(float) * t.nin) == 0, "dropout in inference is the identity");

    tl_forward(&t, x, y, 1);
    size_t dropped = 0, scaled = 0;
    for (size_t i = 0; i < t.nin; i++) {
        dropped += y[i] == 0.0f;
        scaled += fabsf(y[i] - x[i] / 0.7f) < 1e-6f;
    }
    CHECK(dropped + scaled == t.nin, "every value is dropped or scaled by 1/(1-rate)");
    CHECK(fabs((double)dropped / t.nin - 0.3) < 0.02, "dropped fraction %g, want 0.3",
          (double)dropped / t.nin);
    tl_forward(&t, x, y2, 1);
    CHECK(memcmp(y, y2, sizeof(float) * t.nin) == 0, "same rng state, same mask");

    /* A different rng state gives a different mask. */
    kd_rng rng;
    kd_pass p = tl_pass(&t, 1, &rng);
    kd_rng_seed(&rng, 99, 99);
    t.L.ops->forward(&t.L, &p, x, y2);
    CHECK(memcmp(y, y2, sizeof(float) * t.nin) != 0, "another rng state, another mask");
    free(x);
    free(y);
    free(y2);
    tl_free(&t);
}

/* ---------------------------------------------------- activation values */

static void test_activation_values(void)
{
    int n = 20001;
    tlayer t;
    CHECK_OK(tl_make("{\"type\":\"tanh\"}", shape1(n), 1, &t, NULL));
    float *x = fbuf((size_t)n), *y = fbuf((size_t)n);
    for (int i = 0; i < n; i++)
        x[i] = -10.0f + 0.001f * (float)i;
    x[0] = 1e-6f;
    x[1] = -3e-4f;
    x[2] = 40.0f;
    tl_forward(&t, x, y, 0);
    double worst = 0.0;
    int bounded = 1;
    for (int i = 0; i < n; i++) {
        double want = tanh((double)x[i]);
        worst = fmax(worst, fabs(y[i] - want) / fmax(fabs(want), 1e-30));
        bounded &= fabsf(y[i]) <= 1.0f;
    }
    CHECK(worst < 1e-6, "tanh relative error %g", worst);
    CHECK(bounded, "tanh within [-1, 1]");
    tl_free(&t);

    CHECK_OK(tl_make("{\"type\":\"sigmoid\"}", shape1(n), 1, &t, NULL));
    x[0] = -200.0f;
    x[1] = 200.0f;
    tl_forward(&t, x, y, 0);
    worst = 0.0;
    for (int i = 0; i < n; i++) {
        double want = 1.0 / (1.0 + exp(-(double)x[i]));
        worst = fmax(worst, fabs(y[i] - want) / fmax(want, 1e-30));
    }
    CHECK(worst < 1e-5, "sigmoid relative error %g", worst);
    CHECK(y[0] == 0.0f && y[1] == 1.0f, "sigmoid saturates cleanly: %g %g", y[0], y[1]);
    tl_free(&t);

    CHECK_OK(tl_make("{\"type\":\"relu\"}", shape1(4), 1, &t, NULL));
    float rx[4] = {-2.0f, -0.0f, 0.5f, 3.0f}, ry[4];
    tl_forward(&t, rx, ry, 0);
    CHECK(ry[0] == 0 && ry[1] == 0 && ry[2] == 0.5f && ry[3] == 3.0f, "relu values");
    tl_free(&t);
    free(x);
    free(y);
}

/* -------------------------------------------- softmax and cross-entropy */

static void test_softmax_values(void)
{
    tlayer t;
    CHECK_OK(tl_make("{\"type\":\"softmax\"}", shape1(3), 2, &t, NULL));
    /* Huge logits must not overflow: softmax is shift-invariant. */
    float z[6] = {1000.0f, 1001.0f, 999.0f, 1.0f, 2.0f, 0.0f}, p[6];
    tl_forward(&t, z, p, 0);
    double e = exp(1.0), s = 1 + e + 1 / e;
    for (int b = 0; b < 2; b++) {
        CHECK_NEAR(p[b * 3 + 0], 1 / s, 1e-6);
        CHECK_NEAR(p[b * 3 + 1], e / s, 1e-6);
        CHECK_NEAR(p[b * 3 + 2], 1 / e / s, 1e-6);
    }
    tl_free(&t);
}

/* What the network does: loss = -mean_b log softmax(z_b)[t_b], whose
 * gradient in the logits is (softmax(z) - onehot(t)) / batch. */
static double ce_loss(tlayer *t, const float *z, const int *labels, float *p)
{
    tl_forward(t, z, p, 1);
    int B = t->batch, K = t->L.in.dim[0];
    double s = 0.0;
    for (int b = 0; b < B; b++)
        s -= log((double)p[b * K + labels[b]]);
    return s / B;
}

static void test_softmax_cross_entropy(void)
{
    enum { B = 4, K = 5 };
    tlayer t;
    CHECK_OK(tl_make("{\"type\":\"softmax\"}", shape1(K), B, &t, NULL));
    float z[B * K], p[B * K], g[B * K];
    int labels[B] = {0, 3, 4, 3};
    fill_uniform(z, B * K, -3.0f, 3.0f, 21);
    ce_loss(&t, z, labels, p);
    for (int b = 0; b < B; b++)
        for (int k = 0; k < K; k++)
            g[b * K + k] = (p[b * K + k] - (k == labels[b] ? 1.0f : 0.0f)) / B;
    int bad = 0;
    for (int i = 0; i < B * K; i++) {
        float old = z[i], hi = old + 1e-2f, lo = old - 1e-2f;
        z[i] = hi;
        double lp = ce_loss(&t, z, labels, p);
        z[i] = lo;
        double lm = ce_loss(&t, z, labels, p);
        z[i] = old;
        double num = (lp - lm) / ((double)hi - lo);
        if (fabs(num - g[i]) > 1e-2 * fabs(num) + 1e-4) {
            bad++;
            fprintf(stderr, "  ce grad [%d]: fused %g numeric %g\n", i, g[i], num);
        }
    }
    CHECK(bad == 0, "fused softmax cross-entropy gradient: %d entries off", bad);
    tl_free(&t);
}

/* ------------------------------------------------------- setup and keys */

static void test_setup_errors(void)
{
    kd_shape img = shape3(1, 4, 4), vec = shape1(10);
    CHECK_FAILS(setup_only("{\"type\":\"dense\"}", vec), KD_ERR_INVALID, "missing required key 'units'");
    CHECK_FAILS(setup_only("{\"type\":\"dense\",\"units\":\"ten\"}", vec), KD_ERR_INVALID,
                "key 'units': must be an integer >= 1, got \"ten\"");
    CHECK_FAILS(setup_only("{\"type\":\"dense\",\"units\":0}", vec), KD_ERR_INVALID,
                "key 'units': must be an integer >= 1, got 0");
    CHECK_FAILS(setup_only("{\"type\":\"dense\",\"units\":2.5}", vec), KD_ERR_INVALID, "got 2.5");
    CHECK_FAILS(setup_only("{\"type\":\"dense\",\"units\":3,\"unitz\":4}", vec), KD_ERR_INVALID,
                "unknown key 'unitz'");
    CHECK_FAILS(setup_only("{\"type\":\"dense\",\"units\":3,\"bias\":1}", vec), KD_ERR_INVALID,
                "key 'bias': must be true or false, got 1");
    CHECK_FAILS(setup_only("{\"type\":\"dense\",\"units\":3,\"init\":\"glorot\"}", vec), KD_ERR_INVALID,
                "key 'init': must be \"xavier\" or \"he\", got \"glorot\"");
    CHECK_FAILS(setup_only("{\"type\":\"conv2d\",\"filters\":2,\"kernel\":5}", img), KD_ERR_SHAPE,
                "input 1x4x4 too small for kernel 5x5 with padding 0");
    CHECK_OK(setup_only("{\"type\":\"conv2d\",\"filters\":2,\"kernel\":5,\"padding\":1}", img));
    CHECK_FAILS(setup_only("{\"type\":\"conv2d\",\"filters\":2,\"kernel\":-3}", img), KD_ERR_INVALID,
                "key 'kernel': must be an integer >= 1");
    CHECK_FAILS(setup_only("{\"type\":\"conv2d\",\"filters\":2,\"kernel\":[3]}", img), KD_ERR_INVALID,
                "got an array of 1 items");
    CHECK_FAILS(setup_only("{\"type\":\"conv2d\",\"filters\":2,\"kernel\":3,\"padding\":-1}", img),
                KD_ERR_INVALID, "key 'padding': must be an integer >= 0");
    CHECK_FAILS(setup_only("{\"type\":\"conv2d\",\"filters\":2}", img), KD_ERR_INVALID,
                "missing required key 'kernel'");
    CHECK_FAILS(setup_only("{\"type\":\"conv2d\",\"kernel\":3}", img), KD_ERR_INVALID,
                "missing required key 'filters'");
    CHECK_FAILS(setup_only("{\"type\":\"conv2d\",\"filters\":2,\"kernel\":3}", vec), KD_ERR_SHAPE,
                "rank-3 input");
    CHECK_FAILS(setup_only("{\"type\":\"conv2d\",\"filters\":2,\"kernel\":3,\"strides\":2}", img),
                KD_ERR_INVALID, "unknown key 'strides'");
    CHECK_FAILS(setup_only("{\"type\":\"softmax\"}", img), KD_ERR_SHAPE, "flatten");
    CHECK_FAILS(setup_only("{\"type\":\"maxpool\",\"size\":5}", img), KD_ERR_SHAPE, "too small");
    CHECK_FAILS(setup_only("{\"type\":\"maxpool\",\"size\":2,\"padding\":2}", img), KD_ERR_INVALID,
                "at most half");
    CHECK_FAILS(setup_only("{\"type\":\"avgpool\"}", vec), KD_ERR_SHAPE, "rank-3 input");
    /* One message for both ends of dropout's range [0, 1). */
    CHECK_FAILS(setup_only("{\"type\":\"dropout\",\"rate\":1}", vec), KD_ERR_INVALID,
                "key 'rate': must be a number in [0, 1), got 1");
    CHECK_FAILS(setup_only("{\"type\":\"dropout\",\"rate\":-0.1}", vec), KD_ERR_INVALID,
                "key 'rate': must be a number in [0, 1), got -0.1");
    CHECK_FAILS(setup_only("{\"type\":\"dropout\",\"rate\":\"half\"}", vec), KD_ERR_INVALID,
                "key 'rate': must be a number in [0, 1), got \"half\"");
    CHECK_OK(setup_only("{\"type\":\"dropout\",\"rate\":0.999}", vec));
    CHECK_FAILS(setup_only("{\"type\":\"batchnorm\",\"momentum\":\"fast\"}", vec), KD_ERR_INVALID,
                "key 'momentum'");
    CHECK_FAILS(setup_only("{\"type\":\"relu\",\"alpha\":0.1}", vec), KD_ERR_INVALID, "unknown key 'alpha'");
    CHECK_OK(setup_only("{\"type\":\"relu\",\"name\":\"act\"}", vec));
}

static void test_resolved_defaults(void)
{
    tlayer t;
    char *res = NULL;
    CHECK_OK(tl_make("{\"type\":\"conv2d\",\"filters\":2,\"kernel\":3}", shape3(1, 6, 6), 1, &t, &res));
    cJSON *cfg = res ? cJSON_Parse(res) : NULL;
    const cJSON *v;
    CHECK((v = cJSON_GetObjectItem(cfg, "stride")) && v->valueint == 1, "stride default in %s", res);
    CHECK((v = cJSON_GetObjectItem(cfg, "padding")) && v->valueint == 0, "padding default in %s", res);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cfg, "bias")), "bias default in %s", res);
    CHECK((v = cJSON_GetObjectItem(cfg, "init")) && cJSON_IsString(v) &&
          strcmp(v->valuestring, "xavier") == 0, "init default in %s", res);
    cJSON_Delete(cfg);
    free(res);
    tl_free(&t);

    res = NULL;
    CHECK_OK(tl_make("{\"type\":\"avgpool\",\"size\":[2,3]}", shape3(1, 6, 6), 1, &t, &res));
    CHECK(t.L.stride_h == 2 && t.L.stride_w == 3, "pool stride defaults to size");
    CHECK(res && strstr(res, "\"stride\":[2,3]") && strstr(res, "\"padding\":0"), "resolved %s", res);
    free(res);
    tl_free(&t);

    res = NULL;
    CHECK_OK(tl_make("{\"type\":\"dense\",\"units\":4,\"bias\":false}", shape3(2, 3, 2), 1, &t, &res));
    CHECK(t.L.out.rank == 1 && t.L.out.dim[0] == 4 && t.L.weight_rank == 2 && t.L.weight_dims[0] == 4 &&
          t.L.weight_dims[1] == 12 && t.L.weight_count == 48 && t.L.bias_count == 0, "dense counts");
    CHECK(res && strstr(res, "\"bias\":false") && strstr(res, "\"init\":\"xavier\""), "resolved %s", res);
    free(res);
    tl_free(&t);

    CHECK_OK(tl_make("{\"type\":\"flatten\"}", shape3(2, 3, 4), 1, &t, NULL));
    CHECK(t.L.out.rank == 1 && t.L.out.dim[0] == 24, "flatten out %d", t.L.out.dim[0]);
    tl_free(&t);
}

static void test_registry(void)
{
    char list[512];
    kd_layer_types(list, sizeof list);
    for (int k = 0; k < KD_LAYER_KINDS; k++) {
        const kd_layer_ops *ops = kd_layer_ops_of((kd_layer_kind)k);
        CHECK(ops && ops->kind == (kd_layer_kind)k && kd_layer_ops_find(ops->type) == ops,
              "registry entry %d holds its own kind", k);
    }
    CHECK(!kd_layer_ops_of(KD_LAYER_KINDS) && !kd_layer_ops_of((kd_layer_kind)-1), "no ops outside the kinds");
    char tiny[12];
    CHECK(strcmp(kd_layer_types(tiny, sizeof tiny), "dense, conv") == 0, "a short buffer is cut, got '%s'", tiny);
    int n = 0;
    for (char *tok = strtok(list, ", "); tok; tok = strtok(NULL, ", ")) {
        const kd_layer_ops *ops = kd_layer_ops_find(tok);
        CHECK(ops && strcmp(ops->type, tok) == 0, "listed type '%s' is registered", tok);
        n++;
    }
    CHECK(n == 11, "%d layer types listed", n);
    const char *want[] = {"dense", "conv2d", "maxpool", "avgpool", "relu", "tanh", "sigmoid",
                          "flatten", "dropout", "batchnorm", "softmax"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECK(kd_layer_ops_find(want[i]) != NULL, "type %s", want[i]);
    CHECK(kd_layer_ops_find("Dense") == NULL && kd_layer_ops_find("lstm") == NULL &&
          kd_layer_ops_find(NULL) == NULL, "unknown types are not found");
}

/* ----------------------------------------------------------- initialisers */

static void test_init(void)
{
    size_t n = 200000;
    float *w = fbuf(n);
    kd_rng rng;
    kd_rng_seed(&rng, 3, 0);
    kd_init_weights(w, n, 300, 200, KD_INIT_XAVIER, &rng);
    double a = sqrt(6.0 / 500), s = 0, ss = 0, amax = 0;
    for (size_t i = 0; i < n; i++) {
        s += w[i];
        ss += (double)w[i] * w[i];
        amax = fmax(amax, fabs(w[i]));
    }
    CHECK(amax <= a && amax > 0.99 * a, "xavier: max |w| %g, limit %g", amax, a);
    CHECK(fabs(s / n) < 0.01 * a, "xavier mean %g", s / n);
    CHECK(fabs(ss / n / (a * a / 3) - 1) < 0.02, "xavier variance %g, want %g", ss / n, a * a / 3);

    kd_init_weights(w, n, 300, 200, KD_INIT_HE, &rng);
    double sd = sqrt(2.0 / 300);
    s = ss = amax = 0;
    for (size_t i = 0; i < n; i++) {
        s += w[i];
        ss += (double)w[i] * w[i];
        amax = fmax(amax, fabs(w[i]));
    }
    CHECK(fabs(sqrt(ss / n) / sd - 1) < 0.02, "he std %g, want %g", sqrt(ss / n), sd);
    CHECK(fabs(s / n) < 0.01 * sd, "he mean %g", s / n);
    CHECK(amax > 3.5 * sd, "he is normal, not uniform (max %g sd)", amax / sd);
    free(w);

    /* conv2d fans: in 3*5*5, out 8*5*5; biases start at 0. */
    tlayer t;
    CHECK_OK(tl_make("{\"type\":\"conv2d\",\"filters\":8,\"kernel\":5}", shape3(3, 9, 9), 1, &t, NULL));
    double lim = sqrt(6.0 / (75 + 200)), m = 0;
    for (size_t i = 0; i < t.L.weight_count; i++)
        m = fmax(m, fabs(t.W[i]));
    CHECK(m <= lim && m > 0.9 * lim, "conv xavier max %g, limit %g", m, lim);
    int zero = 1;
    for (size_t i = 0; i < t.L.bias_count; i++)
        zero &= t.B[i] == 0.0f;
    CHECK(zero, "conv biases start at 0");
    tl_free(&t);
}

int main(void)
{
    test_registry();
    test_setup_errors();
    test_resolved_defaults();
    test_init();
    test_dense_reference();
    test_conv_reference();
    test_pools();
    test_activation_values();
    test_softmax_values();
    test_softmax_cross_entropy();
    test_batchnorm_stats();
    test_dropout();
    test_gradients();
    return check_summary();
}
