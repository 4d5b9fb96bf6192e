/* The device version of every layer in the CPU registry (src/layers/):
 * dense through cuBLAS, conv2d through cuDNN, the rest through kernels.cu.
 * Shapes, weight layouts and what backward writes are those of the CPU ops;
 * each op is chosen by the layer's kind from the registry (layer.h). */
#include <string.h>

#include "gpu_internal.h"

static const float ONE = 1.0f, ZERO = 0.0f;

static size_t in_count(const kd_layer *L, int batch) { return kd_shape_size(&L->in) * (size_t)batch; }

static kdk_pool pool_geom(const kd_layer *L, int batch)
{
    kdk_pool p;
    p.planes = batch * L->in.dim[0];
    p.H = L->in.dim[1];
    p.W = L->in.dim[2];
    p.OH = L->out.dim[1];
    p.OW = L->out.dim[2];
    p.kh = L->kernel_h;
    p.kw = L->kernel_w;
    p.sh = L->stride_h;
    p.sw = L->stride_w;
    p.ph = L->pad_h;
    p.pw = L->pad_w;
    return p;
}

kd_status kd_gpu_layer_setup(kd_gpu *g, const kd_layer *L, kd_gpu_layer *gl)
{
    memset(gl, 0, sizeof *gl);
    if ((unsigned)L->ops->kind >= KD_LAYER_KINDS)
        return kd_fail(KD_ERR_UNSUPPORTED, "layer type '%s' has no GPU implementation", L->ops->type);
    if (L->ops->kind != KD_LAYER_CONV2D)
        return KD_OK;
#ifdef KD_HAVE_CUDNN
    KD_DNN(cudnnCreateTensorDescriptor(&gl->xd), "creating a tensor descriptor");
    KD_DNN(cudnnCreateTensorDescriptor(&gl->yd), "creating a tensor descriptor");
    KD_DNN(cudnnCreateFilterDescriptor(&gl->wd), "creating a filter descriptor");
    KD_DNN(cudnnCreateConvolutionDescriptor(&gl->cd), "creating a convolution descriptor");
    KD_DNN(cudnnSetFilter4dDescriptor(gl->wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, L->filters, L->in.dim[0],
                                      L->kernel_h, L->kernel_w),
           "conv2d filter descriptor");
    KD_DNN(cudnnSetConvolution2dDescriptor(gl->cd, L->pad_h, L->pad_w, L->stride_h, L->stride_w, 1, 1,
                                           CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
           "conv2d descriptor");
    /* Plain FP32 FMA kernels: tensor-core TF32 would round inputs to 10 bits. */
    KD_DNN(cudnnSetConvolutionMathType(gl->cd, CUDNN_FMA_MATH), "conv2d math type");
    (void)g;
    return KD_OK;
#else
    (void)g;
    return kd_fail(KD_ERR_UNSUPPORTED, "conv2d on a GPU needs cuDNN, and this Kindling was built without it");
#endif
}

void kd_gpu_layer_release(kd_gpu_layer *gl)
{
    if (gl->saved)
        cudaFree(gl->saved);
    gl->saved = NULL;
#ifdef KD_HAVE_CUDNN
    if (gl->xd)
        cudnnDestroyTensorDescriptor(gl->xd);
    if (gl->yd)
        cudnnDestroyTensorDescriptor(gl->yd);
    if (gl->wd)
        cudnnDestroyFilterDescriptor(gl->wd);
    if (gl->cd)
        cudnnDestroyConvolutionDescriptor(gl->cd);
    gl->xd = gl->yd = NULL;
    gl->wd = NULL;
    gl->cd = NULL;
#endif
}

size_t kd_gpu_layer_saved_bytes(const kd_layer *L, int batch)
{
    switch (L->ops->kind) {
    case KD_LAYER_DROPOUT: return sizeof(float) * in_count(L, batch);
    case KD_LAYER_MAXPOOL: return sizeof(int32_t) * kd_shape_size(&L->out) * (size_t)batch;
    case KD_LAYER_BATCHNORM: return sizeof(float) * 4 * (size_t)L->in.dim[0];
    default: return 0;
    }
}

/* ----------------------------------------------------------------- conv2d */
#ifdef KD_HAVE_CUDNN

/* Grow the shared cuDNN workspace (cudaFree waits for the device). */
static kd_status ensure_work(kd_gpu *g, size_t bytes)
{
    if (bytes <= g->work_bytes)
        return KD_OK;
    if (g->work)
        cudaFree(g->work);
    g->work = NULL;
    g->work_bytes = 0;
    KD_CUDA(cudaMalloc(&g->work, bytes), "allocating the cuDNN workspace");
    g->work_bytes = bytes;
    return KD_OK;
}

/* The first algorithm cuDNN's heuristics rank that runs in FMA math,
 * preferring deterministic ones. */
#define PICK_ALGO(perf, count, out)                                                                    \
    do {                                                                                               \
        int best_ = -1;                                                                                \
        for (int pass_ = 0; pass_ < 2 && best_ < 0; pass_++)                                           \
            for (int i_ = 0; i_ < (count) && best_ < 0; i_++)                                          \
                if ((perf)[i_].status == CUDNN_STATUS_SUCCESS && (perf)[i_].mathType != CUDNN_TENSOR_OP_MATH && \
                    (pass_ == 1 || (perf)[i_].determinism == CUDNN_DETERMINISTIC))                     \
                    best_ = i_;                                                                        \
        if (best_ < 0)                                                                                 \
            return kd_fail(KD_ERR_DEVICE, "cuDNN offers no FP32 algorithm for conv2d '%s'", L->name);  \
        (out) = (perf)[best_].algo;                                                                    \
    } while (0)

static kd_status conv_prepare(kd_gpu *g, const kd_layer *L, kd_gpu_layer *gl, int batch)
{
    KD_DNN(cudnnSetTensor4dDescriptor(gl->xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, batch, L->in.dim[0], L->in.dim[1],
                                      L->in.dim[2]),
           "conv2d input descriptor");
    KD_DNN(cudnnSetTensor4dDescriptor(gl->yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, batch, L->out.dim[0],
                                      L->out.dim[1], L->out.dim[2]),
           "conv2d output descriptor");
    if (gl->algo_batch == batch)
        return KD_OK;
    int n = 0;
    cudnnConvolutionFwdAlgoPerf_t fp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    KD_DNN(cudnnGetConvolutionForwardAlgorithm_v7(g->dnn, gl->xd, gl->wd, gl->cd, gl->yd,
                                                  CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, fp),
           "choosing the conv2d forward algorithm");
    PICK_ALGO(fp, n, gl->fwd);
    cudnnConvolutionBwdDataAlgoPerf_t dp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    KD_DNN(cudnnGetConvolutionBackwardDataAlgorithm_v7(g->dnn, gl->wd, gl->yd, gl->cd, gl->xd,
                                                       CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, dp),
           "choosing the conv2d backward-data algorithm");
    PICK_ALGO(dp, n, gl->bwd_data);
    cudnnConvolutionBwdFilterAlgoPerf_t wp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    KD_DNN(cudnnGetConvolutionBackwardFilterAlgorithm_v7(g->dnn, gl->xd, gl->yd, gl->cd, gl->wd,
                                                         CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, wp),
           "choosing the conv2d backward-filter algorithm");
    PICK_ALGO(wp, n, gl->bwd_filter);
    KD_DNN(cudnnGetConvolutionForwardWorkspaceSize(g->dnn, gl->xd, gl->wd, gl->cd, gl->yd, gl->fwd, &gl->ws_fwd),
           "conv2d forward workspace size");
    KD_DNN(cudnnGetConvolutionBackwardDataWorkspaceSize(g->dnn, gl->wd, gl->yd, gl->cd, gl->xd, gl->bwd_data,
                                                        &gl->ws_bwd_data),
           "conv2d backward-data workspace size");
    KD_DNN(cudnnGetConvolutionBackwardFilterWorkspaceSize(g->dnn, gl->xd, gl->yd, gl->cd, gl->wd, gl->bwd_filter,
                                                          &gl->ws_bwd_filter),
           "conv2d backward-filter workspace size");
    size_t ws = gl->ws_fwd;
    if (gl->ws_bwd_data > ws)
        ws = gl->ws_bwd_data;
    if (gl->ws_bwd_filter > ws)
        ws = gl->ws_bwd_filter;
    KD_TRY(ensure_work(g, ws));
    gl->algo_batch = batch;
    return KD_OK;
}

static kd_status conv_forward(kd_gpu *g, const kd_layer *L, kd_gpu_layer *gl, int batch, const float *W,
                              const float *B, const float *x, float *y)
{
    KD_TRY(conv_prepare(g, L, gl, batch));
    KD_DNN(cudnnConvolutionForward(g->dnn, &ONE, gl->xd, x, gl->wd, W, gl->cd, gl->fwd, g->work, gl->ws_fwd, &ZERO,
                                   gl->yd, y),
           "conv2d forward");
    if (B)
        kdk_bias_nchw(g->compute, y, B, batch, L->filters, (size_t)L->out.dim[1] * L->out.dim[2]);
    return KD_OK;
}

static kd_status conv_backward(kd_gpu *g, const kd_layer *L, kd_gpu_layer *gl, int batch, const float *W, float *dW,
                               float *dB, const float *x, const float *dy, float *dx)
{
    KD_TRY(conv_prepare(g, L, gl, batch));
    KD_DNN(cudnnConvolutionBackwardFilter(g->dnn, &ONE, gl->xd, x, gl->yd, dy, gl->cd, gl->bwd_filter, g->work,
                                          gl->ws_bwd_filter, &ZERO, gl->wd, dW),
           "conv2d backward (weights)");
    if (dB)
        kdk_bias_grad_nchw(g->compute, dy, batch, L->filters, (size_t)L->out.dim[1] * L->out.dim[2], dB);
    if (dx)
        KD_DNN(cudnnConvolutionBackwardData(g->dnn, &ONE, gl->wd, W, gl->yd, dy, gl->cd, gl->bwd_data, g->work,
                                            gl->ws_bwd_data, &ZERO, gl->xd, dx),
               "conv2d backward (input)");
    return KD_OK;
}
#endif /* KD_HAVE_CUDNN */

/* ------------------------------------------------------------------ dense */
/* Row-major [rows, cols] is column-major [cols, rows]: the CPU's row-major
 * GEMMs become these column-major ones with the operands swapped. */
static kd_status dense_forward(kd_gpu *g, const kd_layer *L, int batch, const float *W, const float *B,
                               const float *x, float *y)
{
    int in = L->weight_dims[1], out = L->units;
    float beta = 0.0f;
    if (B) {
        kdk_fill_rows(g->compute, y, B, batch, out);
        beta = 1.0f;
    }
    /* y' [out, n] = W' ^T [out, in] x' [in, n] */
    KD_BLAS(cublasSgemm(g->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, batch, in, &ONE, W, in, x, in, &beta, y, out),
            "dense forward (cublasSgemm)");
    return KD_OK;
}

static kd_status dense_backward(kd_gpu *g, const kd_layer *L, int batch, const float *W, float *dW, float *dB,
                                const float *x, const float *dy, float *dx)
{
    int in = L->weight_dims[1], out = L->units;
    /* dW' [in, out] = x' [in, n] dy'^T [n, out] */
    KD_BLAS(cublasSgemm(g->blas, CUBLAS_OP_N, CUBLAS_OP_T, in, out, batch, &ONE, x, in, dy, out, &ZERO, dW, in),
            "dense backward (weights)");
    if (dB)
        kdk_col_sum(g->compute, dy, batch, out, dB);
    /* dx' [in, n] = W' [in, out] dy' [out, n] */
    if (dx)
        KD_BLAS(cublasSgemm(g->blas, CUBLAS_OP_N, CUBLAS_OP_N, in, batch, out, &ONE, W, in, dy, out, &ZERO, dx, in),
                "dense backward (input)");
    return KD_OK;
}

/* ------------------------------------------------------------- dispatch */

static void bn_geom(const kd_layer *L, int *C, size_t *S)
{
    *C = L->in.dim[0];
    *S = L->in.rank == 3 ? (size_t)L->in.dim[1] * L->in.dim[2] : 1;
}

kd_status kd_gpu_layer_forward(kd_gpu *g, kd_net *net, const kd_layer *L, kd_gpu_layer *gl, int batch,
                               int training, const float *x, float *y)
{
    const float *W = L->weight_count ? g->params + L->weight_offset : NULL;
    const float *B = L->bias_count ? g->params + L->bias_offset : NULL;
    size_t n = in_count(L, batch);
    cudaStream_t s = g->compute;
    switch (L->ops->kind) {
    case KD_LAYER_DENSE: return dense_forward(g, L, batch, W, B, x, y);
    case KD_LAYER_CONV2D:
#ifdef KD_HAVE_CUDNN
        return conv_forward(g, L, gl, batch, W, B, x, y);
#else
        return kd_fail(KD_ERR_UNSUPPORTED, "conv2d on a GPU needs cuDNN");
#endif
    case KD_LAYER_MAXPOOL: {
        kdk_pool p = pool_geom(L, batch);
        kdk_maxpool_fwd(s, &p, x, y, (int32_t *)gl->saved);
        break;
    }
    case KD_LAYER_AVGPOOL: {
        kdk_pool p = pool_geom(L, batch);
        kdk_avgpool_fwd(s, &p, x, y);
        break;
    }
    case KD_LAYER_RELU: kdk_relu_fwd(s, n, x, y); break;
    case KD_LAYER_TANH: kdk_tanh_fwd(s, n, x, y); break;
    case KD_LAYER_SIGMOID: kdk_sigmoid_fwd(s, n, x, y); break;
    case KD_LAYER_FLATTEN:
        KD_CUDA(cudaMemcpyAsync(y, x, sizeof(float) * n, cudaMemcpyDeviceToDevice, s), "flatten");
        break;
    case KD_LAYER_DROPOUT:
        if (training)
            /* Same seeding inputs as the CPU's per-step stream, plus the layer. */
            kdk_dropout_fwd(s, n, x, y, (float *)gl->saved, L->rate, net->noise_seed,
                            ((0x5eed0000ULL + (uint64_t)net->noise_step) << 8) ^ (uint64_t)L->index);
        else
            KD_CUDA(cudaMemcpyAsync(y, x, sizeof(float) * n, cudaMemcpyDeviceToDevice, s), "dropout (inference)");
        break;
    case KD_LAYER_BATCHNORM: {
        int C;
        size_t S;
        bn_geom(L, &C, &S);
        float *st = g->state + L->state_offset;
        kdk_bn_fwd(s, training, batch, C, S, L->eps, L->momentum, x, y, W, B, st, st + C, (float *)gl->saved);
        break;
    }
    case KD_LAYER_SOFTMAX: kdk_softmax_fwd(s, batch, L->in.dim[0], x, y); break;
    case KD_LAYER_KINDS: /* not a kind; kd_gpu_layer_setup refused it */
        return kd_fail(KD_ERR_UNSUPPORTED, "layer type '%s' has no GPU implementation", L->ops->type);
    }
    return KD_OK;
}

kd_status kd_gpu_layer_backward(kd_gpu *g, kd_net *net, const kd_layer *L, kd_gpu_layer *gl, int batch,
                                int training, const float *x, const float *y, const float *dy, float *dx)
{
    const float *W = L->weight_count ? g->params + L->weight_offset : NULL;
    float *dW = L->weight_count ? g->grads + L->weight_offset : NULL;
    float *dB = L->bias_count ? g->grads + L->bias_offset : NULL;
    size_t n = in_count(L, batch);
    cudaStream_t s = g->compute;
    (void)net;
    switch (L->ops->kind) {
    case KD_LAYER_DENSE: return dense_backward(g, L, batch, W, dW, dB, x, dy, dx);
    case KD_LAYER_CONV2D:
#ifdef KD_HAVE_CUDNN
        return conv_backward(g, L, gl, batch, W, dW, dB, x, dy, dx);
#else
        return kd_fail(KD_ERR_UNSUPPORTED, "conv2d on a GPU needs cuDNN");
#endif
    case KD_LAYER_BATCHNORM: {
        int C;
        size_t S;
        bn_geom(L, &C, &S);
        kdk_bn_bwd(s, training, batch, C, S, x, dy, dx, W, dW, dB, (float *)gl->saved);
        return KD_OK;
    }
    default: break;
    }
    if (!dx)
        return KD_OK;
    switch (L->ops->kind) {
    case KD_LAYER_MAXPOOL: {
        kdk_pool p = pool_geom(L, batch);
        kdk_maxpool_bwd(s, &p, dy, (const int32_t *)gl->saved, dx);
        break;
    }
    case KD_LAYER_AVGPOOL: {
        kdk_pool p = pool_geom(L, batch);
        kdk_avgpool_bwd(s, &p, dy, dx);
        break;
    }
    case KD_LAYER_RELU: kdk_relu_bwd(s, n, y, dy, dx); break;
    case KD_LAYER_TANH: kdk_tanh_bwd(s, n, y, dy, dx); break;
    case KD_LAYER_SIGMOID: kdk_sigmoid_bwd(s, n, y, dy, dx); break;
    case KD_LAYER_DROPOUT:
        if (training)
            kdk_mul(s, n, dy, (const float *)gl->saved, dx);
        else /* the identity in inference */
            KD_CUDA(cudaMemcpyAsync(dx, dy, sizeof(float) * n, cudaMemcpyDeviceToDevice, s), "dropout backward");
        break;
    case KD_LAYER_FLATTEN:
        KD_CUDA(cudaMemcpyAsync(dx, dy, sizeof(float) * n, cudaMemcpyDeviceToDevice, s), "flatten backward");
        break;
    case KD_LAYER_SOFTMAX: kdk_softmax_bwd(s, batch, L->in.dim[0], y, dy, dx); break;
    default: break;
    }
    return KD_OK;
}
