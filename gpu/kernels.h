/* Device kernels of the CUDA backend, behind plain C launchers (gpu/kernels.cu)
 * so the orchestration in gpu/ stays C. Each mirrors one CPU loop in
 * src/layers/ or src/optim.c with the same float arithmetic, in the same
 * order where a sum is sequential on the CPU, so GPU and CPU agree to float
 * rounding (tests/gpu/ compare them). All launch on `s` and return nothing:
 * the caller checks cudaGetLastError() after a sequence of launches. */
#ifndef KD_GPU_KERNELS_H
#define KD_GPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Geometry of a pooling layer (PyTorch semantics, as src/layers/pool.c). */
typedef struct kdk_pool {
    int planes;            /* batch * channels */
    int H, W, OH, OW;
    int kh, kw, sh, sw, ph, pw;
} kdk_pool;

/* Per-step constants of Adam/AdamW, computed on the host as src/optim.c does. */
typedef struct kdk_adam_consts {
    float decay, l2, b1, one_minus_b1, b2, one_minus_b2, step_size, sqrt_bc2, eps;
} kdk_adam_consts;

/* y[r, c] = b[c] (dense: the bias before the GEMM adds x W^T, as on the CPU). */
void kdk_fill_rows(cudaStream_t s, float *y, const float *b, int rows, int cols);
/* db[c] = sum over r of dy[r, c], rows in order (the CPU's loop). */
void kdk_col_sum(cudaStream_t s, const float *dy, int rows, int cols, float *db);
/* NCHW: y[n, f, p] += b[f]. */
void kdk_bias_nchw(cudaStream_t s, float *y, const float *b, int n, int f, size_t p);
/* NCHW: db[f] = sum over n, p of dy[n, f, p] (double accumulation). */
void kdk_bias_grad_nchw(cudaStream_t s, const float *dy, int n, int f, size_t p, float *db);

void kdk_relu_fwd(cudaStream_t s, size_t n, const float *x, float *y);
void kdk_relu_bwd(cudaStream_t s, size_t n, const float *y, const float *dy, float *dx);
void kdk_tanh_fwd(cudaStream_t s, size_t n, const float *x, float *y);
void kdk_tanh_bwd(cudaStream_t s, size_t n, const float *y, const float *dy, float *dx);
void kdk_sigmoid_fwd(cudaStream_t s, size_t n, const float *x, float *y);
void kdk_sigmoid_bwd(cudaStream_t s, size_t n, const float *y, const float *dy, float *dx);

/* Inverted dropout: mask[i] = u_i >= rate ? 1/(1-rate) : 0 with u_i uniform
 * in [0, 1) from a counter-based hash of (seed, stream, i); y = x * mask. */
void kdk_dropout_fwd(cudaStream_t s, size_t n, const float *x, float *y, float *mask, float rate,
                     uint64_t seed, uint64_t stream);
/* y[i] = a[i] * b[i] */
void kdk_mul(cudaStream_t s, size_t n, const float *a, const float *b, float *y);
/* x[i] *= w */
void kdk_scale(cudaStream_t s, size_t n, float *x, float w);

/* Row softmax of [batch, K] (max subtracted, sum in double). */
void kdk_softmax_fwd(cudaStream_t s, int batch, int K, const float *x, float *y);
void kdk_softmax_bwd(cudaStream_t s, int batch, int K, const float *y, const float *dy, float *dx);
/* Fused softmax + cross-entropy gradient: dy = (p - onehot(label)) / batch. */
void kdk_loss_grad(cudaStream_t s, int batch, int K, const float *p, const int32_t *labels, float *dy);

void kdk_maxpool_fwd(cudaStream_t s, const kdk_pool *g, const float *x, float *y, int32_t *arg);
void kdk_maxpool_bwd(cudaStream_t s, const kdk_pool *g, const float *dy, const int32_t *arg, float *dx);
void kdk_avgpool_fwd(cudaStream_t s, const kdk_pool *g, const float *x, float *y);
void kdk_avgpool_bwd(cudaStream_t s, const kdk_pool *g, const float *dy, float *dx);

/* Batch norm over N samples of C channels x S values. saved holds 4C floats:
 * mean, invstd (as the CPU's saved) and two backward scratch rows. */
void kdk_bn_fwd(cudaStream_t s, int training, int N, int C, size_t S, float eps, float momentum,
                const float *x, float *y, const float *gamma, const float *beta, float *run_mean,
                float *run_var, float *saved);
void kdk_bn_bwd(cudaStream_t s, int training, int N, int C, size_t S, const float *x, const float *dy,
                float *dx, const float *gamma, float *dgamma, float *dbeta, float *saved);

/* Optimizer updates of src/optim.c, element for element. */
void kdk_sgd(cudaStream_t s, size_t n, float *p, const float *g, float lr, float wd);
void kdk_momentum(cudaStream_t s, size_t n, float *p, const float *g, float *buf, float lr, float wd,
                  float momentum, float a, float c);
void kdk_adam(cudaStream_t s, size_t n, float *p, const float *g, float *m, float *v, kdk_adam_consts k);

#ifdef __cplusplus
}
#endif
#endif
