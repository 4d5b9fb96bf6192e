/* The CUDA backend's device mirror of a kd_net (internal to gpu/).
 *
 * Same flat vectors as the CPU network (params, grads, state: same lengths,
 * same per-layer offsets), per-layer activations and scratch on the device,
 * a compute stream and a copy stream. Batches go host -> pinned staging ->
 * device on the copy stream, double-buffered, so copying batch k+1 overlaps
 * the backward pass and optimizer step of batch k (see net_gpu.c).
 *
 * Dense layers use cuBLAS; conv2d uses cuDNN's descriptor API (FMA math
 * only, so no TF32 rounding); everything else is a kernel of ours
 * (kernels.cu) that repeats the CPU loop's arithmetic. */
#ifndef KD_GPU_INTERNAL_H
#define KD_GPU_INTERNAL_H

#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#ifdef KD_HAVE_CUDNN
#include <cudnn.h>
#endif

#include "backend.h"
#include "error.h"
#include "kernels.h"
#include "net.h"

/* libkindling's functions come from the table the loader hands to
 * kd_cuda_backend_module (src/backend.h), not from symbol lookup: the
 * module links no copy of libkindling. */
#ifdef KD_GPU_MODULE_SOURCE /* the module's own files; a test including this header calls the library directly */
extern kd_host_api kd_gpu_host;
#define kd_fail kd_gpu_host.fail
#define kd_fail_context kd_gpu_host.fail_context
#define kd_calloc kd_gpu_host.calloc
#define kd_optim_get_config kd_gpu_host.optim_get_config
#define kd_optim_steps kd_gpu_host.optim_steps
#define kd_optim_set_steps kd_gpu_host.optim_set_steps
#define kd_optim_state kd_gpu_host.optim_state
#define kd_optim_current_lr kd_gpu_host.optim_current_lr
#define kd_shape_size kd_gpu_host.shape_size
#endif

/* Which copy of a mirrored buffer is current. */
typedef enum kd_where { KD_WHERE_BOTH = 0, KD_WHERE_DEVICE = 1, KD_WHERE_HOST = 2 } kd_where;

/* A layer's device resources; its kind is L->ops->kind (layer.h). */
typedef struct kd_gpu_layer {
    void *saved;           /* device scratch from forward to backward (may be NULL) */
#ifdef KD_HAVE_CUDNN
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    int algo_batch;        /* batch size the algorithms below were chosen for; 0 none */
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    size_t ws_fwd, ws_bwd_data, ws_bwd_filter;
#endif
} kd_gpu_layer;

typedef struct kd_gpu {
    int device;
    cudaStream_t compute, copy;
    cublasHandle_t blas;
#ifdef KD_HAVE_CUDNN
    cudnnHandle_t dnn;
#endif
    /* The flat vectors and where they are current. */
    float *params, *grads, *state;
    kd_where where_params, where_grads, where_state, where_optim;
    /* Optimizer state (slots * n floats, slot-major as kd_optim_state). */
    float *opt_state;
    size_t opt_floats;
    const kd_optim *opt_bound;

    /* Per-batch buffers for cap_batch samples. */
    int cap_batch;
    float **acts;
    kd_gpu_layer *layers;
    float *dbuf[2];
    void *work;            /* cuDNN workspace */
    size_t work_bytes;
    /* Inputs: two device buffers, two pinned staging buffers; cur is the
     * one the last forward used. */
    float *x[2], *h_x[2];
    int cur;
    cudaEvent_t h2d_done[2], consumed[2], out_ready, labels_done;
    int32_t *labels, *h_labels;
    float *h_out;          /* pinned: the last forward's output */
} kd_gpu;

/* Record a failed CUDA / cuBLAS / cuDNN call: KD_ERR_DEVICE (or NOMEM) with
 * the library's message and `what`. */
kd_status kd_gpu_cuda_fail(cudaError_t e, const char *what);
kd_status kd_gpu_blas_fail(cublasStatus_t e, const char *what);
#ifdef KD_HAVE_CUDNN
kd_status kd_gpu_dnn_fail(cudnnStatus_t e, const char *what);
#endif

#define KD_CUDA(call, what)                                  \
    do {                                                     \
        cudaError_t kd_cuda_e_ = (call);                     \
        if (kd_cuda_e_ != cudaSuccess)                       \
            return kd_gpu_cuda_fail(kd_cuda_e_, (what));     \
    } while (0)

#define KD_BLAS(call, what)                                  \
    do {                                                     \
        cublasStatus_t kd_blas_e_ = (call);                  \
        if (kd_blas_e_ != CUBLAS_STATUS_SUCCESS)             \
            return kd_gpu_blas_fail(kd_blas_e_, (what));     \
    } while (0)

#define KD_DNN(call, what)                                   \
    do {                                                     \
        cudnnStatus_t kd_dnn_e_ = (call);                    \
        if (kd_dnn_e_ != CUDNN_STATUS_SUCCESS)               \
            return kd_gpu_dnn_fail(kd_dnn_e_, (what));       \
    } while (0)

static inline kd_gpu *kd_gpu_of(const kd_net *net) { return (kd_gpu *)net->backend_ctx; }

/* gpu/layers_gpu.c: the per-layer device ops. */
kd_status kd_gpu_layer_setup(kd_gpu *g, const kd_layer *L, kd_gpu_layer *gl);
void kd_gpu_layer_release(kd_gpu_layer *gl);
/* Bytes of device scratch the layer keeps from forward to backward. */
size_t kd_gpu_layer_saved_bytes(const kd_layer *L, int batch);
kd_status kd_gpu_layer_forward(kd_gpu *g, kd_net *net, const kd_layer *L, kd_gpu_layer *gl, int batch,
                               int training, const float *x, float *y);
kd_status kd_gpu_layer_backward(kd_gpu *g, kd_net *net, const kd_layer *L, kd_gpu_layer *gl, int batch,
                                int training, const float *x, const float *y, const float *dy, float *dx);

/* gpu/net_gpu.c: for the NCCL exchange. Uploads the host
 * gradients first if they are newer; returns the device gradient vector
 * and the compute stream the next steps must follow. */
kd_status kd_gpu_device_grads(kd_net *net, float **grads, cudaStream_t *stream);
/* After the device gradients were changed outside the backend. */
void kd_gpu_grads_written(kd_net *net);
#ifdef KD_HAVE_NCCL
/* gpu/nccl_gpu.c */
extern const kd_nccl_ops kd_gpu_nccl_ops;
#endif

#endif
