/* Device kernels of the CUDA backend (declarations and contracts in
 * kernels.h). Built with --fmad=false so products and sums round as the
 * CPU's separate multiplies and adds do; none of these kernels is
 * compute-bound. */
#include <math.h>

#include "kernels.h"

#define KDK_THREADS 256

static inline unsigned blocks_for(size_t n)
{
    size_t b = (n + KDK_THREADS - 1) / KDK_THREADS;
    if (b < 1)
        b = 1;
    return b > 65535u * 16u ? 65535u * 16u : (unsigned)b;
}

/* Grid-stride loop over [0, n). */
#define KDK_FOR(i, n) for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)blockDim.x * gridDim.x)

/* ----------------------------------------------------------- dense, bias */

__global__ void k_fill_rows(float *y, const float *b, size_t rows, size_t cols)
{
    KDK_FOR(i, rows * cols) y[i] = b[i % cols];
}

__global__ void k_col_sum(const float *dy, int rows, int cols, float *db)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols)
        return;
    float s = dy[c];
    for (int r = 1; r < rows; r++)
        s += dy[(size_t)r * cols + c];
    db[c] = s;
}

__global__ void k_bias_nchw(float *y, const float *b, size_t total, int f, size_t p)
{
    KDK_FOR(i, total) y[i] += b[(i / p) % f];
}

/* One block per channel f; double partial sums, tree-reduced. */
__global__ void k_bias_grad_nchw(const float *dy, int n, int f, size_t p, float *db)
{
    __shared__ double part[KDK_THREADS];
    int ch = blockIdx.x;
    double s = 0.0;
    size_t count = (size_t)n * p;
    for (size_t i = threadIdx.x; i < count; i += blockDim.x) {
        size_t b = i / p, q = i % p;
        s += dy[(b * f + ch) * p + q];
    }
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w)
            part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        db[ch] = (float)part[0];
}

/* ------------------------------------------------------------ activations */

/* The CPU's rational tanh (src/layers/activation.c), term for term. */
__device__ static inline float fast_tanh(float x)
{
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
    return num / den;
}

__global__ void k_relu_fwd(size_t n, const float *x, float *y) { KDK_FOR(i, n) y[i] = x[i] > 0.0f ? x[i] : 0.0f; }
__global__ void k_relu_bwd(size_t n, const float *y, const float *dy, float *dx)
{
    KDK_FOR(i, n) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}
__global__ void k_tanh_fwd(size_t n, const float *x, float *y) { KDK_FOR(i, n) y[i] = fast_tanh(x[i]); }
__global__ void k_tanh_bwd(size_t n, const float *y, const float *dy, float *dx)
{
    KDK_FOR(i, n) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}
__global__ void k_sigmoid_fwd(size_t n, const float *x, float *y) { KDK_FOR(i, n) y[i] = 1.0f / (1.0f + expf(-x[i])); }
__global__ void k_sigmoid_bwd(size_t n, const float *y, const float *dy, float *dx)
{
    KDK_FOR(i, n) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

/* ---------------------------------------------------------------- dropout */

__device__ static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

__global__ void k_dropout_fwd(size_t n, const float *x, float *y, float *mask, float rate, float scale, uint64_t key)
{
    KDK_FOR(i, n) {
        uint64_t h = mix64(key + 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1));
        double u = (double)(h >> 11) * 0x1.0p-53;
        float m = u >= (double)rate ? scale : 0.0f;
        mask[i] = m;
        y[i] = x[i] * m;
    }
}

__global__ void k_mul(size_t n, const float *a, const float *b, float *y) { KDK_FOR(i, n) y[i] = a[i] * b[i]; }
__global__ void k_scale(size_t n, float *x, float w) { KDK_FOR(i, n) x[i] *= w; }

/* ---------------------------------------------------------------- softmax */

__global__ void k_softmax_fwd(int batch, int K, const float *x, float *y)
{
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= batch)
        return;
    const float *z = x + (size_t)b * K;
    float *o = y + (size_t)b * K;
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

__global__ void k_softmax_bwd(int batch, int K, const float *y, const float *dy, float *dx)
{
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= batch)
        return;
    const float *yo = y + (size_t)b * K, *g = dy + (size_t)b * K;
    double dot = 0.0;
    for (int k = 0; k < K; k++)
        dot += (double)g[k] * yo[k];
    for (int k = 0; k < K; k++)
        dx[(size_t)b * K + k] = yo[k] * (g[k] - (float)dot);
}

__global__ void k_loss_grad(int batch, int K, const float *p, const int32_t *labels, float *dy)
{
    float inv = 1.0f / (float)batch;
    KDK_FOR(i, (size_t)batch * K) {
        int b = (int)(i / K), k = (int)(i % K);
        float d = p[i] * inv;
        if (k == labels[b])
            d -= inv;
        dy[i] = d;
    }
}

/* ---------------------------------------------------------------- pooling */

__device__ static inline void window(int o, int s, int pad, int k, int n, int *lo, int *hi)
{
    int a = o * s - pad, b = a + k;
    *lo = a > 0 ? a : 0;
    *hi = b < n ? b : n;
}

/* Output rows/columns o whose window covers input position i: [lo, hi). */
__device__ static inline void covering(int i, int s, int pad, int k, int out_n, int *lo, int *hi)
{
    /* o*s - pad <= i  and  i < o*s - pad + k */
    int num = i + pad - k + 1;
    int a = num > 0 ? (num + s - 1) / s : 0;
    int b = (i + pad) / s + 1;
    *lo = a;
    *hi = b < out_n ? b : out_n;
}

__global__ void k_maxpool_fwd(kdk_pool g, const float *x, float *y, int32_t *arg)
{
    KDK_FOR(i, (size_t)g.planes * g.OH * g.OW) {
        size_t pl = i / ((size_t)g.OH * g.OW);
        int q = (int)(i % ((size_t)g.OH * g.OW)), oh = q / g.OW, ow = q % g.OW;
        const float *xp = x + pl * g.H * g.W;
        int h0, h1, w0, w1;
        window(oh, g.sh, g.ph, g.kh, g.H, &h0, &h1);
        window(ow, g.sw, g.pw, g.kw, g.W, &w0, &w1);
        int best = h0 * g.W + w0;
        float m = xp[best];
        for (int ih = h0; ih < h1; ih++)
            for (int iw = w0; iw < w1; iw++)
                if (xp[ih * g.W + iw] > m) {
                    m = xp[ih * g.W + iw];
                    best = ih * g.W + iw;
                }
        y[i] = m;
        arg[i] = best;
    }
}

/* Gather form of the CPU's scatter: the same terms in the same order. */
__global__ void k_maxpool_bwd(kdk_pool g, const float *dy, const int32_t *arg, float *dx)
{
    KDK_FOR(i, (size_t)g.planes * g.H * g.W) {
        size_t pl = i / ((size_t)g.H * g.W);
        int q = (int)(i % ((size_t)g.H * g.W)), ih = q / g.W, iw = q % g.W;
        int o0, o1, p0, p1;
        covering(ih, g.sh, g.ph, g.kh, g.OH, &o0, &o1);
        covering(iw, g.sw, g.pw, g.kw, g.OW, &p0, &p1);
        const float *gp = dy + pl * g.OH * g.OW;
        const int32_t *ap = arg + pl * g.OH * g.OW;
        float s = 0.0f;
        for (int oh = o0; oh < o1; oh++)
            for (int ow = p0; ow < p1; ow++)
                if (ap[oh * g.OW + ow] == q)
                    s += gp[oh * g.OW + ow];
        dx[i] = s;
    }
}

__global__ void k_avgpool_fwd(kdk_pool g, const float *x, float *y)
{
    float scale = 1.0f / (float)(g.kh * g.kw);
    KDK_FOR(i, (size_t)g.planes * g.OH * g.OW) {
        size_t pl = i / ((size_t)g.OH * g.OW);
        int q = (int)(i % ((size_t)g.OH * g.OW)), oh = q / g.OW, ow = q % g.OW;
        const float *xp = x + pl * g.H * g.W;
        int h0, h1, w0, w1;
        window(oh, g.sh, g.ph, g.kh, g.H, &h0, &h1);
        window(ow, g.sw, g.pw, g.kw, g.W, &w0, &w1);
        float s = 0.0f;
        for (int ih = h0; ih < h1; ih++)
            for (int iw = w0; iw < w1; iw++)
                s += xp[ih * g.W + iw];
        y[i] = s * scale;
    }
}

__global__ void k_avgpool_bwd(kdk_pool g, const float *dy, float *dx)
{
    float scale = 1.0f / (float)(g.kh * g.kw);
    KDK_FOR(i, (size_t)g.planes * g.H * g.W) {
        size_t pl = i / ((size_t)g.H * g.W);
        int q = (int)(i % ((size_t)g.H * g.W)), ih = q / g.W, iw = q % g.W;
        int o0, o1, p0, p1;
        covering(ih, g.sh, g.ph, g.kh, g.OH, &o0, &o1);
        covering(iw, g.sw, g.pw, g.kw, g.OW, &p0, &p1);
        const float *gp = dy + pl * g.OH * g.OW;
        float s = 0.0f;
        for (int oh = o0; oh < o1; oh++)
            for (int ow = p0; ow < p1; ow++)
                s += gp[oh * g.OW + ow] * scale;
        dx[i] = s;
    }
}

/* ------------------------------------------------------------- batch norm */

__device__ static double block_sum(double v, double *part)
{
    part[threadIdx.x] = v;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w)
            part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    double r = part[0];
    __syncthreads();
    return r;
}

/* One block per channel: statistics as the CPU (two passes in double). */
__global__ void k_bn_stats(int training, int N, int C, size_t S, float eps, float momentum, const float *x,
                           float *run_mean, float *run_var, float *saved)
{
    __shared__ double part[KDK_THREADS];
    int c = blockIdx.x;
    size_t M = (size_t)N * S, rowlen = (size_t)C * S;
    float *mean = saved, *invstd = saved + C;
    if (!training) {
        if (threadIdx.x == 0) {
            mean[c] = run_mean[c];
            invstd[c] = (float)(1.0 / sqrt((double)run_var[c] + eps));
        }
        return;
    }
    double sum = 0.0;
    for (size_t i = threadIdx.x; i < M; i += blockDim.x)
        sum += x[(i / S) * rowlen + (size_t)c * S + i % S];
    sum = block_sum(sum, part);
    double mu = sum / (double)M, ss = 0.0;
    for (size_t i = threadIdx.x; i < M; i += blockDim.x) {
        double d = x[(i / S) * rowlen + (size_t)c * S + i % S] - mu;
        ss += d * d;
    }
    ss = block_sum(ss, part);
    if (threadIdx.x == 0) {
        double var = ss / (double)M;
        double unbiased = M > 1 ? ss / (double)(M - 1) : var;
        mean[c] = (float)mu;
        invstd[c] = (float)(1.0 / sqrt(var + eps));
        run_mean[c] = (float)((1.0 - momentum) * run_mean[c] + momentum * mu);
        run_var[c] = (float)((1.0 - momentum) * run_var[c] + momentum * unbiased);
    }
}

__global__ void k_bn_apply(int N, int C, size_t S, const float *x, float *y, const float *gamma, const float *beta,
                           const float *saved)
{
    const float *mean = saved, *invstd = saved + C;
    KDK_FOR(i, (size_t)N * C * S) {
        int c = (int)((i / S) % C);
        float a = gamma[c] * invstd[c], b = beta[c] - a * mean[c];
        y[i] = a * x[i] + b;
    }
}

__global__ void k_bn_bwd_reduce(int N, int C, size_t S, const float *x, const float *dy, float *dgamma, float *dbeta,
                                float *saved)
{
    __shared__ double part[KDK_THREADS];
    int c = blockIdx.x;
    size_t M = (size_t)N * S, rowlen = (size_t)C * S;
    const float *mean = saved, *invstd = saved + C;
    double sdy = 0.0, sdx = 0.0;
    for (size_t i = threadIdx.x; i < M; i += blockDim.x) {
        size_t at = (i / S) * rowlen + (size_t)c * S + i % S;
        float g = dy[at];
        sdy += g;
        sdx += (double)g * ((x[at] - mean[c]) * invstd[c]);
    }
    sdy = block_sum(sdy, part);
    sdx = block_sum(sdx, part);
    if (threadIdx.x == 0) {
        dgamma[c] = (float)sdx;
        dbeta[c] = (float)sdy;
        saved[2 * C + c] = (float)(sdy / (double)M);
        saved[3 * C + c] = (float)(sdx / (double)M);
    }
}

__global__ void k_bn_bwd_dx(int training, int N, int C, size_t S, const float *x, const float *dy, float *dx,
                            const float *gamma, const float *saved)
{
    const float *mean = saved, *invstd = saved + C, *mdy = saved + 2 * C, *mdx = saved + 3 * C;
    KDK_FOR(i, (size_t)N * C * S) {
        int c = (int)((i / S) % C);
        float k = gamma[c] * invstd[c];
        if (training) {
            float xhat = (x[i] - mean[c]) * invstd[c];
            dx[i] = k * (dy[i] - mdy[c] - xhat * mdx[c]);
        } else {
            dx[i] = k * dy[i];
        }
    }
}

/* ------------------------------------------------------------- optimizers */

__global__ void k_sgd(size_t n, float *p, const float *g, float lr, float wd)
{
    KDK_FOR(i, n) p[i] -= lr * (g[i] + wd * p[i]);
}

__global__ void k_momentum(size_t n, float *p, const float *grad, float *buf, float lr, float wd, float momentum,
                           float a, float c)
{
    KDK_FOR(i, n) {
        float g = grad[i] + wd * p[i];
        float b = momentum * buf[i] + g;
        buf[i] = b;
        p[i] -= lr * (a * g + c * b);
    }
}

__global__ void k_adam(size_t n, float *p, const float *grad, float *m, float *v, kdk_adam_consts k)
{
    KDK_FOR(i, n) {
        float w = p[i] * k.decay;
        float g = grad[i] + k.l2 * w;
        float mi = k.b1 * m[i] + k.one_minus_b1 * g;
        float vi = k.b2 * v[i] + k.one_minus_b2 * (g * g);
        m[i] = mi;
        v[i] = vi;
        p[i] = w - k.step_size * mi / (sqrtf(vi) / k.sqrt_bc2 + k.eps);
    }
}

/* --------------------------------------------------------------- launchers */

extern "C" {

void kdk_fill_rows(cudaStream_t s, float *y, const float *b, int rows, int cols)
{
    size_t n = (size_t)rows * cols;
    k_fill_rows<<<blocks_for(n), KDK_THREADS, 0, s>>>(y, b, (size_t)rows, (size_t)cols);
}

void kdk_col_sum(cudaStream_t s, const float *dy, int rows, int cols, float *db)
{
    k_col_sum<<<blocks_for((size_t)cols), KDK_THREADS, 0, s>>>(dy, rows, cols, db);
}

void kdk_bias_nchw(cudaStream_t s, float *y, const float *b, int n, int f, size_t p)
{
    size_t total = (size_t)n * f * p;
    k_bias_nchw<<<blocks_for(total), KDK_THREADS, 0, s>>>(y, b, total, f, p);
}

void kdk_bias_grad_nchw(cudaStream_t s, const float *dy, int n, int f, size_t p, float *db)
{
    k_bias_grad_nchw<<<f, KDK_THREADS, 0, s>>>(dy, n, f, p, db);
}

void kdk_relu_fwd(cudaStream_t s, size_t n, const float *x, float *y) { k_relu_fwd<<<blocks_for(n), KDK_THREADS, 0, s>>>(n, x, y); }
void kdk_relu_bwd(cudaStream_t s, size_t n, const float *y, const float *dy, float *dx)
{
    k_relu_bwd<<<blocks_for(n), KDK_THREADS, 0, s>>>(n, y, dy, dx);
}
void kdk_tanh_fwd(cudaStream_t s, size_t n, const float *x, float *y) { k_tanh_fwd<<<blocks_for(n), KDK_THREADS, 0, s>>>(n, x, y); }
void kdk_tanh_bwd(cudaStream_t s, size_t n, const float *y, const float *dy, float *dx)
{
    k_tanh_bwd<<<blocks_for(n), KDK_THREADS, 0, s>>>(n, y, dy, dx);
}
void kdk_sigmoid_fwd(cudaStream_t s, size_t n, const float *x, float *y)
{
    k_sigmoid_fwd<<<blocks_for(n), KDK_THREADS, 0, s>>>(n, x, y);
}
void kdk_sigmoid_bwd(cudaStream_t s, size_t n, const float *y, const float *dy, float *dx)
{
    k_sigmoid_bwd<<<blocks_for(n), KDK_THREADS, 0, s>>>(n, y, dy, dx);
}

void kdk_dropout_fwd(cudaStream_t s, size_t n, const float *x, float *y, float *mask, float rate, uint64_t seed,
                     uint64_t stream)
{
    /* One key per (seed, stream); element i hashes key + golden * (i + 1). */
    uint64_t key = seed ^ (stream * 0xd1342543de82ef95ULL + 0x2545f4914f6cdd1dULL);
    k_dropout_fwd<<<blocks_for(n), KDK_THREADS, 0, s>>>(n, x, y, mask, rate, 1.0f / (1.0f - rate), key);
}

void kdk_mul(cudaStream_t s, size_t n, const float *a, const float *b, float *y)
{
    k_mul<<<blocks_for(n), KDK_THREADS, 0, s>>>(n, a, b, y);
}

void kdk_scale(cudaStream_t s, size_t n, float *x, float w) { k_scale<<<blocks_for(n), KDK_THREADS, 0, s>>>(n, x, w); }

void kdk_softmax_fwd(cudaStream_t s, int batch, int K, const float *x, float *y)
{
    k_softmax_fwd<<<blocks_for((size_t)batch), KDK_THREADS, 0, s>>>(batch, K, x, y);
}

void kdk_softmax_bwd(cudaStream_t s, int batch, int K, const float *y, const float *dy, float *dx)
{
    k_softmax_bwd<<<blocks_for((size_t)batch), KDK_THREADS, 0, s>>>(batch, K, y, dy, dx);
}

void kdk_loss_grad(cudaStream_t s, int batch, int K, const float *p, const int32_t *labels, float *dy)
{
    k_loss_grad<<<blocks_for((size_t)batch * K), KDK_THREADS, 0, s>>>(batch, K, p, labels, dy);
}

void kdk_maxpool_fwd(cudaStream_t s, const kdk_pool *g, const float *x, float *y, int32_t *arg)
{
    k_maxpool_fwd<<<blocks_for((size_t)g->planes * g->OH * g->OW), KDK_THREADS, 0, s>>>(*g, x, y, arg);
}

void kdk_maxpool_bwd(cudaStream_t s, const kdk_pool *g, const float *dy, const int32_t *arg, float *dx)
{
    k_maxpool_bwd<<<blocks_for((size_t)g->planes * g->H * g->W), KDK_THREADS, 0, s>>>(*g, dy, arg, dx);
}

void kdk_avgpool_fwd(cudaStream_t s, const kdk_pool *g, const float *x, float *y)
{
    k_avgpool_fwd<<<blocks_for((size_t)g->planes * g->OH * g->OW), KDK_THREADS, 0, s>>>(*g, x, y);
}

void kdk_avgpool_bwd(cudaStream_t s, const kdk_pool *g, const float *dy, float *dx)
{
    k_avgpool_bwd<<<blocks_for((size_t)g->planes * g->H * g->W), KDK_THREADS, 0, s>>>(*g, dy, dx);
}

void kdk_bn_fwd(cudaStream_t s, int training, int N, int C, size_t S, float eps, float momentum, const float *x,
                float *y, const float *gamma, const float *beta, float *run_mean, float *run_var, float *saved)
{
    k_bn_stats<<<C, KDK_THREADS, 0, s>>>(training, N, C, S, eps, momentum, x, run_mean, run_var, saved);
    size_t n = (size_t)N * C * S;
    k_bn_apply<<<blocks_for(n), KDK_THREADS, 0, s>>>(N, C, S, x, y, gamma, beta, saved);
}

void kdk_bn_bwd(cudaStream_t s, int training, int N, int C, size_t S, const float *x, const float *dy, float *dx,
                const float *gamma, float *dgamma, float *dbeta, float *saved)
{
    k_bn_bwd_reduce<<<C, KDK_THREADS, 0, s>>>(N, C, S, x, dy, dgamma, dbeta, saved);
    if (dx) {
        size_t n = (size_t)N * C * S;
        k_bn_bwd_dx<<<blocks_for(n), KDK_THREADS, 0, s>>>(training, N, C, S, x, dy, dx, gamma, saved);
    }
}

void kdk_sgd(cudaStream_t s, size_t n, float *p, const float *g, float lr, float wd)
{
    k_sgd<<<blocks_for(n), KDK_THREADS, 0, s>>>(n, p, g, lr, wd);
}

void kdk_momentum(cudaStream_t s, size_t n, float *p, const float *g, float *buf, float lr, float wd, float momentum,
                  float a, float c)
{
    k_momentum<<<blocks_for(n), KDK_THREADS, 0, s>>>(n, p, g, buf, lr, wd, momentum, a, c);
}

void kdk_adam(cudaStream_t s, size_t n, float *p, const float *g, float *m, float *v, kdk_adam_consts k)
{
    k_adam<<<blocks_for(n), KDK_THREADS, 0, s>>>(n, p, g, m, v, k);
}

} /* extern "C" */
