/* The CUDA backend of kd_net (the table in src/backend.h): device buffers,
 * the forward/backward loop over the layers, the optimizer step and the
 * host <-> device synchronisation of the flat vectors.
 *
 * Streams: all compute (kernels, cuBLAS, cuDNN) runs on one compute stream;
 * inputs are copied on a second stream from pinned staging buffers. A
 * forward call records "consumed" on the compute stream for the input
 * buffer of the previous step (everything queued so far for that step:
 * its forward, backward and optimizer step), then fills the other staging
 * buffer and queues its copy, which the compute stream waits for. So while
 * the device still runs step k's backward and update, the host gathers
 * batch k+1 and the copy engine moves it. The only per-step wait is for the
 * output probabilities (batch x classes floats), which kd_net_loss reads on
 * the host with the CPU path's exact code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "gpu_internal.h"

/* ------------------------------------------------------------------ errors */

kd_status kd_gpu_cuda_fail(cudaError_t e, const char *what)
{
    cudaGetLastError(); /* clear a sticky launch error so the next call reports its own */
    return kd_fail(e == cudaErrorMemoryAllocation ? KD_ERR_NOMEM : KD_ERR_DEVICE, "CUDA: %s: %s (%s)", what,
                   cudaGetErrorString(e), cudaGetErrorName(e));
}

kd_status kd_gpu_blas_fail(cublasStatus_t e, const char *what)
{
    return kd_fail(e == CUBLAS_STATUS_ALLOC_FAILED ? KD_ERR_NOMEM : KD_ERR_DEVICE, "cuBLAS: %s: %s", what,
                   cublasGetStatusString(e));
}

#ifdef KD_HAVE_CUDNN
kd_status kd_gpu_dnn_fail(cudnnStatus_t e, const char *what)
{
    return kd_fail(e == CUDNN_STATUS_ALLOC_FAILED ? KD_ERR_NOMEM : KD_ERR_DEVICE, "cuDNN: %s: %s", what,
                   cudnnGetErrorString(e));
}
#endif

/* Kernel launches report through cudaGetLastError. */
static kd_status launched(const char *what)
{
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? KD_OK : kd_gpu_cuda_fail(e, what);
}

/* ----------------------------------------------------------------- devices */

static kd_status gpu_device_count(int *count)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    *count = 0;
    if (e != cudaSuccess) {
        cudaGetLastError();
        return kd_fail(KD_ERR_UNSUPPORTED, "no CUDA device: %s", cudaGetErrorString(e));
    }
    if (n < 1)
        return kd_fail(KD_ERR_UNSUPPORTED, "no CUDA device: the driver reports 0 devices");
    *count = n;
    return KD_OK;
}

/* ------------------------------------------------------------ buffers */

static void free_batch_buffers(kd_net *net, kd_gpu *g)
{
    if (g->acts)
        for (int i = 0; i < net->num_layers; i++)
            if (g->acts[i])
                cudaFree(g->acts[i]);
    free(g->acts);
    g->acts = NULL;
    if (g->layers)
        for (int i = 0; i < net->num_layers; i++)
            if (g->layers[i].saved) {
                cudaFree(g->layers[i].saved);
                g->layers[i].saved = NULL;
            }
    for (int k = 0; k < 2; k++) {
        if (g->dbuf[k])
            cudaFree(g->dbuf[k]);
        if (g->x[k])
            cudaFree(g->x[k]);
        if (g->h_x[k])
            cudaFreeHost(g->h_x[k]);
        g->dbuf[k] = g->x[k] = g->h_x[k] = NULL;
    }
    if (g->labels)
        cudaFree(g->labels);
    if (g->h_labels)
        cudaFreeHost(g->h_labels);
    if (g->h_out)
        cudaFreeHost(g->h_out);
    g->labels = g->h_labels = NULL;
    g->h_out = NULL;
    g->cap_batch = 0;
}

/* Never 0 bytes, so every buffer has an address. */
static size_t nonzero(size_t bytes) { return bytes ? bytes : 4; }
#define DEV_ALLOC(ptr, bytes, what) KD_CUDA(cudaMalloc((void **)&(ptr), nonzero(bytes)), what)
#define HOST_ALLOC(ptr, bytes, what) KD_CUDA(cudaMallocHost((void **)&(ptr), nonzero(bytes)), what)

static kd_status alloc_batch_buffers(kd_net *net, kd_gpu *g, int batch)
{
    size_t in = kd_shape_size(&net->input), bmax = in;
    g->acts = kd_calloc((size_t)net->num_layers, sizeof *g->acts, "device activations");
    if (!g->acts)
        return KD_ERR_NOMEM;
    for (int i = 0; i < net->num_layers; i++) {
        const kd_layer *L = &net->layers[i];
        size_t out = kd_shape_size(&L->out);
        if (out > bmax)
            bmax = out;
        DEV_ALLOC(g->acts[i], sizeof(float) * out * (size_t)batch, "allocating activations");
        size_t sv = kd_gpu_layer_saved_bytes(L, batch);
        if (sv)
            DEV_ALLOC(g->layers[i].saved, sv, "allocating layer scratch");
    }
    for (int k = 0; k < 2; k++) {
        DEV_ALLOC(g->dbuf[k], sizeof(float) * bmax * (size_t)batch, "allocating gradient buffers");
        DEV_ALLOC(g->x[k], sizeof(float) * in * (size_t)batch, "allocating input buffers");
        HOST_ALLOC(g->h_x[k], sizeof(float) * in * (size_t)batch, "allocating pinned input buffers");
    }
    DEV_ALLOC(g->labels, sizeof(int32_t) * (size_t)batch, "allocating labels");
    HOST_ALLOC(g->h_labels, sizeof(int32_t) * (size_t)batch, "allocating pinned labels");
    HOST_ALLOC(g->h_out, sizeof(float) * (size_t)net->num_classes * (size_t)batch, "allocating pinned outputs");
    g->cap_batch = batch;
    return KD_OK;
}

static kd_status ensure_batch(kd_net *net, kd_gpu *g, int batch)
{
    if (batch <= g->cap_batch)
        return KD_OK;
    /* Everything queued may still use the old buffers. */
    KD_CUDA(cudaDeviceSynchronize(), "waiting for the device before growing its buffers");
    free_batch_buffers(net, g);
    kd_status s = alloc_batch_buffers(net, g, batch);
    if (s != KD_OK) {
        free_batch_buffers(net, g);
        return kd_fail_context(s, "batch size %d on GPU %d", batch, g->device);
    }
    return KD_OK;
}

/* ------------------------------------------------------------ sync */

static kd_status upload(kd_gpu *g, float *dst, const float *src, size_t n, kd_where *where, const char *what)
{
    if (*where != KD_WHERE_HOST)
        return KD_OK;
    if (n)
        KD_CUDA(cudaMemcpyAsync(dst, src, sizeof(float) * n, cudaMemcpyHostToDevice, g->compute), what);
    /* The host buffer is pageable, so the call returns once it has been read. */
    *where = KD_WHERE_BOTH;
    return KD_OK;
}

static kd_status download(kd_gpu *g, float *dst, const float *src, size_t n, kd_where *where, const char *what)
{
    if (*where != KD_WHERE_DEVICE)
        return KD_OK;
    if (n) {
        KD_CUDA(cudaMemcpyAsync(dst, src, sizeof(float) * n, cudaMemcpyDeviceToHost, g->compute), what);
        KD_CUDA(cudaStreamSynchronize(g->compute), what);
    }
    *where = KD_WHERE_BOTH;
    return KD_OK;
}

static kd_status use_device(kd_gpu *g)
{
    KD_CUDA(cudaSetDevice(g->device), "selecting the device");
    return KD_OK;
}

static kd_status gpu_pull(kd_net *net, unsigned what, kd_optim *opt)
{
    kd_gpu *g = kd_gpu_of(net);
    KD_TRY(use_device(g));
    if (what & KD_BUF_PARAMS)
        KD_TRY(download(g, net->params, g->params, net->param_count, &g->where_params, "copying parameters to the host"));
    if (what & KD_BUF_GRADS)
        KD_TRY(download(g, net->grads, g->grads, net->param_count, &g->where_grads, "copying gradients to the host"));
    if (what & KD_BUF_STATE)
        KD_TRY(download(g, net->state, g->state, net->state_count, &g->where_state, "copying layer state to the host"));
    if ((what & KD_BUF_OPTIM) && opt && opt == g->opt_bound) {
        size_t count = 0;
        float *host = kd_optim_state(opt, &count);
        if (count != g->opt_floats)
            return kd_fail(KD_ERR_STATE, "GPU optimizer state has %zu floats, the optimizer %zu", g->opt_floats, count);
        KD_TRY(download(g, host, g->opt_state, count, &g->where_optim, "copying optimizer state to the host"));
    }
    return KD_OK;
}

static void gpu_host_written(kd_net *net, unsigned what)
{
    kd_gpu *g = kd_gpu_of(net);
    if (what & KD_BUF_PARAMS)
        g->where_params = KD_WHERE_HOST;
    if (what & KD_BUF_GRADS)
        g->where_grads = KD_WHERE_HOST;
    if (what & KD_BUF_STATE)
        g->where_state = KD_WHERE_HOST;
    if (what & KD_BUF_OPTIM)
        g->where_optim = KD_WHERE_HOST;
}

/* ------------------------------------------------------- attach / detach */

static void gpu_detach(kd_net *net)
{
    kd_gpu *g = kd_gpu_of(net);
    if (!g)
        return;
    cudaSetDevice(g->device);
    cudaDeviceSynchronize();
    free_batch_buffers(net, g);
    if (g->layers)
        for (int i = 0; i < net->num_layers; i++)
            kd_gpu_layer_release(&g->layers[i]);
    free(g->layers);
    if (g->work)
        cudaFree(g->work);
    if (g->params)
        cudaFree(g->params);
    if (g->grads)
        cudaFree(g->grads);
    if (g->state)
        cudaFree(g->state);
    if (g->opt_state)
        cudaFree(g->opt_state);
    for (int k = 0; k < 2; k++) {
        if (g->h2d_done[k])
            cudaEventDestroy(g->h2d_done[k]);
        if (g->consumed[k])
            cudaEventDestroy(g->consumed[k]);
    }
    if (g->out_ready)
        cudaEventDestroy(g->out_ready);
    if (g->labels_done)
        cudaEventDestroy(g->labels_done);
    if (g->blas)
        cublasDestroy(g->blas);
#ifdef KD_HAVE_CUDNN
    if (g->dnn)
        cudnnDestroy(g->dnn);
#endif
    if (g->compute)
        cudaStreamDestroy(g->compute);
    if (g->copy)
        cudaStreamDestroy(g->copy);
    free(g);
    net->backend_ctx = NULL;
}

static kd_status attach_into(kd_net *net, kd_gpu *g)
{
    KD_TRY(use_device(g));
    KD_CUDA(cudaStreamCreateWithFlags(&g->compute, cudaStreamNonBlocking), "creating the compute stream");
    KD_CUDA(cudaStreamCreateWithFlags(&g->copy, cudaStreamNonBlocking), "creating the copy stream");
    for (int k = 0; k < 2; k++) {
        KD_CUDA(cudaEventCreateWithFlags(&g->h2d_done[k], cudaEventDisableTiming), "creating events");
        KD_CUDA(cudaEventCreateWithFlags(&g->consumed[k], cudaEventDisableTiming), "creating events");
    }
    KD_CUDA(cudaEventCreateWithFlags(&g->out_ready, cudaEventDisableTiming), "creating events");
    KD_CUDA(cudaEventCreateWithFlags(&g->labels_done, cudaEventDisableTiming), "creating events");
    KD_BLAS(cublasCreate(&g->blas), "creating a handle");
    KD_BLAS(cublasSetStream(g->blas, g->compute), "binding the compute stream");
    /* FP32 everywhere: no TF32 tensor-core rounding, so results match the CPU. */
    KD_BLAS(cublasSetMathMode(g->blas, CUBLAS_PEDANTIC_MATH), "setting the math mode");
#ifdef KD_HAVE_CUDNN
    cudnnStatus_t ds = cudnnCreate(&g->dnn);
    if (ds != CUDNN_STATUS_SUCCESS)
        return kd_gpu_dnn_fail(ds, "creating a handle");
    KD_DNN(cudnnSetStream(g->dnn, g->compute), "binding the compute stream");
#endif
    g->layers = kd_calloc((size_t)net->num_layers, sizeof *g->layers, "GPU layers");
    if (!g->layers)
        return KD_ERR_NOMEM;
    for (int i = 0; i < net->num_layers; i++) {
        kd_status s = kd_gpu_layer_setup(g, &net->layers[i], &g->layers[i]);
        if (s != KD_OK)
            return kd_fail_context(s, "layer %d ('%s')", i, net->layers[i].name);
    }
    DEV_ALLOC(g->params, sizeof(float) * net->param_count, "allocating parameters");
    DEV_ALLOC(g->grads, sizeof(float) * net->param_count, "allocating gradients");
    DEV_ALLOC(g->state, sizeof(float) * net->state_count, "allocating layer state");
    g->where_params = g->where_grads = g->where_state = KD_WHERE_HOST;
    g->where_optim = KD_WHERE_HOST;
    KD_TRY(upload(g, g->params, net->params, net->param_count, &g->where_params, "copying parameters to the device"));
    KD_TRY(upload(g, g->grads, net->grads, net->param_count, &g->where_grads, "copying gradients to the device"));
    KD_TRY(upload(g, g->state, net->state, net->state_count, &g->where_state, "copying layer state to the device"));
    KD_CUDA(cudaStreamSynchronize(g->compute), "uploading the network");
    return KD_OK;
}

static kd_status gpu_attach(kd_net *net, int device)
{
    kd_gpu *g = kd_calloc(1, sizeof *g, "GPU network");
    if (!g)
        return KD_ERR_NOMEM;
    g->device = device;
    net->backend_ctx = g;
    kd_status s = attach_into(net, g);
    if (s != KD_OK) {
        kd_fail_context(s, "moving the network to GPU %d", device);
        gpu_detach(net);
    }
    return s;
}

/* ------------------------------------------------------ forward/backward */

static kd_status gpu_forward(kd_net *net, const float *x, int batch, int training)
{
    kd_gpu *g = kd_gpu_of(net);
    KD_TRY(use_device(g));
    KD_TRY(ensure_batch(net, g, batch));
    KD_TRY(upload(g, g->params, net->params, net->param_count, &g->where_params, "copying parameters to the device"));
    KD_TRY(upload(g, g->state, net->state, net->state_count, &g->where_state, "copying layer state to the device"));

    size_t in_bytes = sizeof(float) * kd_shape_size(&net->input) * (size_t)batch;
    int prev = g->cur, j = prev ^ 1;
    g->cur = j;
    /* Everything queued so far read x[prev]; x[j] was last read two steps ago. */
    KD_CUDA(cudaEventRecord(g->consumed[prev], g->compute), "recording an event");
    KD_CUDA(cudaEventSynchronize(g->h2d_done[j]), "waiting for the staging buffer");
    memcpy(g->h_x[j], x, in_bytes);
    KD_CUDA(cudaStreamWaitEvent(g->copy, g->consumed[j], 0), "ordering the input copy");
    KD_CUDA(cudaMemcpyAsync(g->x[j], g->h_x[j], in_bytes, cudaMemcpyHostToDevice, g->copy), "copying the batch to the device");
    KD_CUDA(cudaEventRecord(g->h2d_done[j], g->copy), "recording an event");
    KD_CUDA(cudaStreamWaitEvent(g->compute, g->h2d_done[j], 0), "ordering the forward pass");

    const float *in = g->x[j];
    for (int i = 0; i < net->num_layers; i++) {
        const kd_layer *L = &net->layers[i];
        kd_status s = kd_gpu_layer_forward(g, net, L, &g->layers[i], batch, training, in, g->acts[i]);
        if (s == KD_OK)
            s = launched("forward");
        if (s != KD_OK)
            return kd_fail_context(s, "layer %d ('%s') forward", i, L->name);
        in = g->acts[i];
    }
    if (training && net->state_count)
        g->where_state = KD_WHERE_DEVICE; /* batch norm moved its running statistics */
    KD_CUDA(cudaMemcpyAsync(g->h_out, g->acts[net->num_layers - 1],
                            sizeof(float) * (size_t)net->num_classes * (size_t)batch, cudaMemcpyDeviceToHost,
                            g->compute),
            "copying the output to the host");
    KD_CUDA(cudaEventRecord(g->out_ready, g->compute), "recording an event");
    return KD_OK;
}

static const float *gpu_output(kd_net *net)
{
    kd_gpu *g = kd_gpu_of(net);
    cudaError_t e = cudaEventSynchronize(g->out_ready);
    if (e != cudaSuccess) {
        kd_gpu_cuda_fail(e, "waiting for the forward pass");
        return NULL;
    }
    return g->h_out;
}

static kd_status gpu_backward(kd_net *net, const int32_t *labels)
{
    kd_gpu *g = kd_gpu_of(net);
    int B = net->last_batch, K = net->num_classes, n = net->num_layers;
    KD_TRY(use_device(g));
    KD_TRY(upload(g, g->params, net->params, net->param_count, &g->where_params, "copying parameters to the device"));
    KD_CUDA(cudaEventSynchronize(g->labels_done), "waiting for the label buffer");
    memcpy(g->h_labels, labels, sizeof(int32_t) * (size_t)B);
    KD_CUDA(cudaMemcpyAsync(g->labels, g->h_labels, sizeof(int32_t) * (size_t)B, cudaMemcpyHostToDevice, g->compute),
            "copying labels to the device");
    KD_CUDA(cudaEventRecord(g->labels_done, g->compute), "recording an event");
    float *dy = g->dbuf[0], *dx = g->dbuf[1];
    kdk_loss_grad(g->compute, B, K, g->acts[n - 1], g->labels, dy);
    KD_TRY(launched("loss gradient"));
    /* Backward overwrites every gradient; whatever the host held is stale. */
    g->where_grads = KD_WHERE_DEVICE;
    for (int i = n - 2; i >= 0; i--) {
        const kd_layer *L = &net->layers[i];
        const float *x = i ? g->acts[i - 1] : g->x[g->cur];
        kd_status s = kd_gpu_layer_backward(g, net, L, &g->layers[i], B, net->last_training, x, g->acts[i], dy,
                                            i ? dx : NULL);
        if (s == KD_OK)
            s = launched("backward");
        if (s != KD_OK)
            return kd_fail_context(s, "layer %d ('%s') backward", i, L->name);
        float *t = dy;
        dy = dx;
        dx = t;
    }
    return KD_OK;
}

/* ------------------------------------------------------------ optimizer */

static kd_status bind_optimizer(kd_net *net, kd_gpu *g, kd_optim *opt)
{
    size_t count = 0;
    float *host = kd_optim_state(opt, &count);
    if (opt != g->opt_bound || count != g->opt_floats) {
        if (g->opt_state)
            cudaFree(g->opt_state);
        g->opt_state = NULL;
        g->opt_floats = 0;
        g->opt_bound = NULL;
        if (count)
            DEV_ALLOC(g->opt_state, sizeof(float) * count, "allocating optimizer state");
        g->opt_floats = count;
        g->opt_bound = opt;
        g->where_optim = KD_WHERE_HOST;
    }
    (void)net;
    return upload(g, g->opt_state, host, count, &g->where_optim, "copying optimizer state to the device");
}

static kd_status gpu_optim_step(kd_net *net, kd_optim *opt)
{
    kd_gpu *g = kd_gpu_of(net);
    KD_TRY(use_device(g));
    KD_TRY(upload(g, g->params, net->params, net->param_count, &g->where_params, "copying parameters to the device"));
    KD_TRY(upload(g, g->grads, net->grads, net->param_count, &g->where_grads, "copying gradients to the device"));
    KD_TRY(bind_optimizer(net, g, opt));
    const kd_optim_config *c = kd_optim_get_config(opt);
    int64_t steps = kd_optim_steps(opt);
    double lr = kd_optim_current_lr(opt);
    size_t n = net->param_count;
    cudaStream_t s = g->compute;
    /* The per-step constants exactly as src/optim.c computes them. */
    switch (c->kind) {
    case KD_OPT_SGD:
        kdk_sgd(s, n, g->params, g->grads, (float)lr, (float)c->weight_decay);
        break;
    case KD_OPT_MOMENTUM: {
        if (steps == 0)
            KD_CUDA(cudaMemsetAsync(g->opt_state, 0, n * sizeof(float), s), "clearing the momentum buffer");
        float mu = (float)c->momentum;
        kdk_momentum(s, n, g->params, g->grads, g->opt_state, (float)lr, (float)c->weight_decay, mu,
                     c->nesterov ? 1.0f : 0.0f, c->nesterov ? mu : 1.0f);
        break;
    }
    case KD_OPT_ADAM:
    case KD_OPT_ADAMW: {
        double t = (double)(steps + 1);
        double bc1 = 1 - pow(c->beta1, t), bc2 = 1 - pow(c->beta2, t);
        int decoupled = c->kind == KD_OPT_ADAMW;
        kdk_adam_consts k = {
            .decay = decoupled ? (float)(1 - lr * c->weight_decay) : 1.0f,
            .l2 = decoupled ? 0.0f : (float)c->weight_decay,
            .b1 = (float)c->beta1,
            .one_minus_b1 = (float)(1 - c->beta1),
            .b2 = (float)c->beta2,
            .one_minus_b2 = (float)(1 - c->beta2),
            .step_size = (float)(lr / bc1),
            .sqrt_bc2 = (float)sqrt(bc2),
            .eps = (float)c->eps,
        };
        kdk_adam(s, n, g->params, g->grads, g->opt_state, g->opt_state + n, k);
        break;
    }
    }
    KD_TRY(launched("optimizer step"));
    g->where_params = KD_WHERE_DEVICE;
    if (g->opt_floats)
        g->where_optim = KD_WHERE_DEVICE;
    kd_optim_set_steps(opt, steps + 1);
    return KD_OK;
}

/* ------------------------------------------------------------ for NCCL */

kd_status kd_gpu_device_grads(kd_net *net, float **grads, cudaStream_t *stream)
{
    kd_gpu *g = kd_gpu_of(net);
    if (!g)
        return kd_fail(KD_ERR_STATE, "the network is not on a GPU");
    KD_TRY(use_device(g));
    KD_TRY(upload(g, g->grads, net->grads, net->param_count, &g->where_grads, "copying gradients to the device"));
    *grads = g->grads;
    *stream = g->compute;
    return KD_OK;
}

void kd_gpu_grads_written(kd_net *net)
{
    kd_gpu *g = kd_gpu_of(net);
    if (g)
        g->where_grads = KD_WHERE_DEVICE;
}

static kd_status gpu_activation(kd_net *net, int layer, float *host)
{
    kd_gpu *g = kd_gpu_of(net);
    if (!g || !g->acts)
        return kd_fail(KD_ERR_STATE, "no GPU activations for layer %d", layer);
    size_t n = kd_shape_size(&net->layers[layer].out) * (size_t)net->last_batch;
    KD_TRY(use_device(g));
    KD_CUDA(cudaStreamSynchronize(g->compute), "waiting for the device");
    KD_CUDA(cudaMemcpy(host, g->acts[layer], sizeof(float) * n, cudaMemcpyDeviceToHost), "copying activations");
    return KD_OK;
}

static const kd_backend CUDA_BACKEND = {
    .name = "cuda",
    .device_count = gpu_device_count,
    .attach = gpu_attach,
    .detach = gpu_detach,
    .forward = gpu_forward,
    .backward = gpu_backward,
    .output = gpu_output,
    .activation = gpu_activation,
    .optim_step = gpu_optim_step,
    .pull = gpu_pull,
    .host_written = gpu_host_written,
#ifdef KD_HAVE_NCCL
    .nccl = &kd_gpu_nccl_ops,
#endif
};

kd_host_api kd_gpu_host;

/* The module's entry point, looked up by src/gpu_loader.c, which passes the
 * functions of the libkindling that loaded it. */
__attribute__((visibility("default"))) const kd_backend *kd_cuda_backend_module(const kd_host_api *host);
const kd_backend *kd_cuda_backend_module(const kd_host_api *host)
{
    kd_gpu_host = *host;
    return &CUDA_BACKEND;
}
