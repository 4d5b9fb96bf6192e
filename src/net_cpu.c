/* The CPU backend of kd_net (the table in src/backend.h): the forward and
 * backward loops over the layer table (src/layers/), the per-batch buffers
 * they use, and the optimizer step on the flat vectors. The flat vectors
 * themselves (net->params, grads, state) are the host buffers, so there is
 * nothing to copy: pull and host_written have no work to do. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "net.h"

/* Per-batch buffers, sized for cap_batch samples; made on the first
 * forward, so attaching the CPU never fails. */
typedef struct kd_cpu {
    int cap_batch;
    float **acts;   /* acts[i]: output of layer i */
    float **saved;  /* saved[i]: layer i's scratch from forward to backward */
    float *work;    /* shared scratch */
    size_t work_count;
    float *dbuf[2]; /* ping-pong gradient buffers (largest activation) */
} kd_cpu;

static void free_batch_buffers(const kd_net *net, kd_cpu *c)
{
    if (c->acts)
        for (int i = 0; i < net->num_layers; i++)
            free(c->acts[i]);
    if (c->saved)
        for (int i = 0; i < net->num_layers; i++)
            free(c->saved[i]);
    free(c->acts);
    free(c->saved);
    free(c->work);
    free(c->dbuf[0]);
    free(c->dbuf[1]);
    memset(c, 0, sizeof *c);
}

/* Grow the per-batch buffers to hold `batch` samples. */
static kd_status ensure_batch(const kd_net *net, kd_cpu *c, int batch)
{
    if (batch <= c->cap_batch)
        return KD_OK;
    free_batch_buffers(net, c);
    int n = net->num_layers;
    size_t bmax = kd_shape_size(&net->input), work = 0;
    c->acts = kd_calloc((size_t)n, sizeof *c->acts, "activations");
    c->saved = kd_calloc((size_t)n, sizeof *c->saved, "layer scratch");
    if (!c->acts || !c->saved)
        goto nomem;
    for (int i = 0; i < n; i++) {
        const kd_layer *L = &net->layers[i];
        size_t out = kd_shape_size(&L->out);
        if (out > bmax)
            bmax = out;
        c->acts[i] = kd_malloc(sizeof(float) * out * (size_t)batch, "activations");
        if (!c->acts[i])
            goto nomem;
        size_t sv = L->ops->saved_floats ? L->ops->saved_floats(L, batch) : 0;
        if (sv && !(c->saved[i] = kd_malloc(sizeof(float) * sv, "layer scratch")))
            goto nomem;
        size_t w = L->ops->work_floats ? L->ops->work_floats(L, batch) : 0;
        if (w > work)
            work = w;
    }
    c->work_count = work;
    if (work && !(c->work = kd_malloc(sizeof(float) * work, "work buffer")))
        goto nomem;
    for (int k = 0; k < 2; k++)
        if (!(c->dbuf[k] = kd_malloc(sizeof(float) * bmax * (size_t)batch, "gradient buffer")))
            goto nomem;
    c->cap_batch = batch;
    return KD_OK;
nomem:
    free_batch_buffers(net, c);
    return kd_fail(KD_ERR_NOMEM, "out of memory allocating buffers for batch size %d", batch);
}

static kd_status cpu_device_count(int *count)
{
    *count = 1;
    return KD_OK;
}

static kd_status cpu_attach(kd_net *net, int device)
{
    (void)device;
    net->backend_ctx = NULL;
    return KD_OK;
}

static void cpu_detach(kd_net *net)
{
    kd_cpu *c = net->backend_ctx;
    if (c) {
        free_batch_buffers(net, c);
        free(c);
    }
    net->backend_ctx = NULL;
}

static kd_pass layer_pass(kd_net *net, kd_cpu *c, kd_layer *L, int batch, int training, kd_rng *rng)
{
    kd_pass p;
    p.batch = batch;
    p.training = training;
    p.W = L->weight_count ? net->params + L->weight_offset : NULL;
    p.B = L->bias_count ? net->params + L->bias_offset : NULL;
    p.dW = L->weight_count ? net->grads + L->weight_offset : NULL;
    p.dB = L->bias_count ? net->grads + L->bias_offset : NULL;
    p.state = L->state_count ? net->state + L->state_offset : NULL;
    p.saved = c->saved[L->index];
    p.work = c->work;
    p.rng = rng;
    return p;
}

static kd_status cpu_forward(kd_net *net, const float *x, int batch, int training)
{
    kd_cpu *c = net->backend_ctx;
    if (!c && !(c = net->backend_ctx = kd_calloc(1, sizeof *c, "CPU batch buffers")))
        return KD_ERR_NOMEM;
    KD_TRY(ensure_batch(net, c, batch));
    kd_rng rng;
    kd_rng_seed(&rng, net->noise_seed, 0x5eed0000ULL + (uint64_t)net->noise_step);
    const float *in = x;
    for (int i = 0; i < net->num_layers; i++) {
        kd_layer *L = &net->layers[i];
        kd_pass p = layer_pass(net, c, L, batch, training, &rng);
        L->ops->forward(L, &p, in, c->acts[i]);
        in = c->acts[i];
    }
    return KD_OK;
}

static const float *cpu_output(kd_net *net)
{
    kd_cpu *c = net->backend_ctx;
    return c && c->acts ? c->acts[net->num_layers - 1] : NULL;
}

static kd_status cpu_backward(kd_net *net, const int32_t *labels)
{
    kd_cpu *c = net->backend_ctx;
    int B = net->last_batch, K = net->num_classes, n = net->num_layers;
    /* Softmax and cross-entropy fused: dL/dlogits = (p - onehot) / B. */
    const float *p = c->acts[n - 1];
    float *dy = c->dbuf[0], *dx = c->dbuf[1];
    float inv = 1.0f / (float)B;
    for (int b = 0; b < B; b++) {
        for (int k = 0; k < K; k++)
            dy[(size_t)b * K + k] = p[(size_t)b * K + k] * inv;
        dy[(size_t)b * K + labels[b]] -= inv;
    }
    kd_rng rng;
    kd_rng_seed(&rng, net->noise_seed, 0x5eed0000ULL + (uint64_t)net->noise_step);
    for (int i = n - 2; i >= 0; i--) {
        kd_layer *L = &net->layers[i];
        kd_pass ps = layer_pass(net, c, L, B, net->last_training, &rng);
        /* The first layer reads the caller's input, kept since forward (kindling.h). */
        const float *x = i ? c->acts[i - 1] : net->last_x;
        L->ops->backward(L, &ps, x, c->acts[i], dy, i ? dx : NULL);
        /* This layer's gradients are final: an overlapped allreduce may send them now. */
        if (net->grads_ready && L->weight_count + L->bias_count)
            net->grads_ready(net->grads_ready_user, L->weight_offset);
        float *t = dy;
        dy = dx;
        dx = t;
    }
    return KD_OK;
}

static kd_status cpu_activation(kd_net *net, int layer, float *host)
{
    kd_cpu *c = net->backend_ctx;
    size_t n = kd_shape_size(&net->layers[layer].out) * (size_t)net->last_batch;
    memcpy(host, c->acts[layer], sizeof(float) * n);
    return KD_OK;
}

static kd_status cpu_optim_step(kd_net *net, kd_optim *opt)
{
    return kd_optim_step(opt, net->params, net->grads);
}

/* The host buffers are the only copy. */
static kd_status cpu_pull(kd_net *net, unsigned what, kd_optim *opt)
{
    (void)net;
    (void)what;
    (void)opt;
    return KD_OK;
}

static void cpu_host_written(kd_net *net, unsigned what)
{
    (void)net;
    (void)what;
}

const kd_backend kd_cpu_backend = {
    .name = "cpu",
    .device_count = cpu_device_count,
    .attach = cpu_attach,
    .detach = cpu_detach,
    .forward = cpu_forward,
    .backward = cpu_backward,
    .output = cpu_output,
    .activation = cpu_activation,
    .optim_step = cpu_optim_step,
    .pull = cpu_pull,
    .host_written = cpu_host_written,
    .nccl = NULL,
};
