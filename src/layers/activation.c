/* Element-wise activations: relu, tanh, sigmoid. Output shape = input
 * shape; backward uses y (the forward's output), so no scratch is kept. */
#include <math.h>
#include <string.h>

#include "error.h"
#include "layer.h"

static kd_status act_setup(kd_layer *L, cJSON *cfg)
{
    static const char *const keys[] = {NULL};
    KD_TRY(kd_cfg_known_keys(cfg, keys));
    L->out = L->in;
    L->weight_count = L->bias_count = L->state_count = 0;
    L->weight_rank = 0;
    return KD_OK;
}

/* The build has no -march, so plain loops are SSE (4 floats). tanh is a
 * visible part of a LeNet step, so x86-64 GCC also builds AVX2 and AVX-512
 * copies of these loops and the loader picks one for the CPU. The AVX-512
 * copy fuses multiply-adds (AVX-512F has FMA), so fast_tanh may differ in
 * the last bit between CPUs, as OpenBLAS's per-CPU kernels already do. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KD_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KD_VECTOR_CLONES
#endif

static size_t count(const kd_layer *L, const kd_pass *p)
{
    return kd_shape_size(&L->in) * (size_t)p->batch;
}

/* tanh as a rational function (the minimax fit Eigen uses), correct to a
 * few float ulps. Unlike libm's tanhf it has no calls or branches, so the
 * loops below vectorise: LeNet evaluates ~10^6 tanh per batch. Beyond
 * |x| = 7.9 tanh rounds to +-1 in float. */
static inline float fast_tanh(float x)
{
    /* Unconditional arithmetic and selects on x only: under GCC's default
     * -ftrapping-math a ?: with a division in an arm, or one select
     * feeding another's condition, stops the loop from vectorising. */
    const float clamp = 7.90531110763549805f;
    float hi = x > clamp ? clamp : x, lo = x < -clamp ? -clamp : x;
    float c = x > 0.0f ? hi : lo;
    float x2 = c * c;
    float num = -2.76076847742355e-16f;
    num = num * x2 + 2.00018790482477e-13f;
    num = num * x2 + -8.60467152213735e-11f;
    num = num * x2 + 5.12229709037114e-08f;
    num = num * x2 + 1.48572235717979e-05f;
    num = num * x2 + 6.37261928875436e-04f;
    num = num * x2 + 4.89352455891786e-03f;
    num = num * c;
    float den = 1.19825839466702e-06f;
    den = den * x2 + 1.18534705686654e-04f;
    den = den * x2 + 2.26843463243900e-03f;
    den = den * x2 + 4.89352518554385e-03f;
    /* For tiny x this is x * (1 - 1.3e-7): no special case needed. */
    return num / den;
}

KD_VECTOR_CLONES
static void relu_forward(kd_layer *L, const kd_pass *p, const float *x, float *y)
{
    size_t n = count(L, p);
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

KD_VECTOR_CLONES
static void relu_backward(kd_layer *L, const kd_pass *p, const float *x, const float *y,
                          const float *dy, float *dx)
{
    if (!dx)
        return;
    size_t n = count(L, p);
    for (size_t i = 0; i < n; i++)
    {
        float g = dy[i]; /* loaded unconditionally so the select vectorises */
        dx[i] = y[i] > 0.0f ? g : 0.0f;
    }
}

KD_VECTOR_CLONES
static void tanh_forward(kd_layer *L, const kd_pass *p, const float *x, float *y)
{
    size_t n = count(L, p);
    for (size_t i = 0; i < n; i++)
        y[i] = fast_tanh(x[i]);
}

KD_VECTOR_CLONES
static void tanh_backward(kd_layer *L, const kd_pass *p, const float *x, const float *y,
                          const float *dy, float *dx)
{
    if (!dx)
        return;
    size_t n = count(L, p);
    for (size_t i = 0; i < n; i++)
        dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

static void sigmoid_forward(kd_layer *L, const kd_pass *p, const float *x, float *y)
{
    size_t n = count(L, p);
    /* exp(-x) overflowing to inf for very negative x still gives 0. */
    for (size_t i = 0; i < n; i++)
        y[i] = 1.0f / (1.0f + expf(-x[i]));
}

static void sigmoid_backward(kd_layer *L, const kd_pass *p, const float *x, const float *y,
                             const float *dy, float *dx)
{
    if (!dx)
        return;
    size_t n = count(L, p);
    for (size_t i = 0; i < n; i++)
        dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

const kd_layer_ops kd_relu_ops = {
    .kind = KD_LAYER_RELU,
    .type = "relu",
    .setup = act_setup,
    .forward = relu_forward,
    .backward = relu_backward,
};

const kd_layer_ops kd_tanh_ops = {
    .kind = KD_LAYER_TANH,
    .type = "tanh",
    .setup = act_setup,
    .forward = tanh_forward,
    .backward = tanh_backward,
};

const kd_layer_ops kd_sigmoid_ops = {
    .kind = KD_LAYER_SIGMOID,
    .type = "sigmoid",
    .setup = act_setup,
    .forward = sigmoid_forward,
    .backward = sigmoid_backward,
};
