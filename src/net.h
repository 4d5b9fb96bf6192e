/* The network object: the layer list from the spec plus every buffer the
 * layers use. Internal; the public view is kd_net_* in kindling.h. */
#ifndef KD_NET_H
#define KD_NET_H

#include <math.h>

#include "backend.h"
#include "layer.h"

struct kd_net {
    kd_shape input;
    int num_layers;
    kd_layer *layers;
    int num_classes;
    char *spec_json; /* resolved spec, every default filled in */

    /* The flat vectors: params and grads have param_count floats. */
    size_t param_count, state_count;
    float *params, *grads, *state;

    /* What the last forward saw, for loss and backward. */
    const float *last_x;
    int last_batch;
    int last_training;

    uint64_t noise_seed;
    int64_t noise_step;

    /* Where the network computes (src/context.c): never NULL. backend is
     * the function table of the CPU (src/net_cpu.c) or of a device
     * (gpu/net_gpu.c), backend_ctx its per-batch buffers and, on a
     * device, its mirror of the flat vectors above. */
    kd_context ctx;
    const kd_backend *backend;
    void *backend_ctx;

    /* A CPU backward pass calls grads_ready(user, first) after each layer
     * with parameters: from `first` to the end of the flat vector every
     * gradient is final, so an exchange may send them while backward goes
     * on (mpi/dist_train.c: the overlapped allreduce). NULL: never. */
    void (*grads_ready)(void *user, size_t first);
    void *grads_ready_user;
};

/* Negative log-likelihood of a predicted probability. Underflow to 0 is
 * clamped so the loss stays finite, but NaN passes through so divergence
 * is seen. */
static inline double kd_nll(double p)
{
    return p != p ? p : -log(p > 1e-30 ? p : 1e-30);
}

/* KD_ERR_NUMERIC naming the sample (first + row) when an output holds NaN
 * or Inf: eval and predict refuse a diverged model instead of printing NaN. */
kd_status kd_output_check(const float *p, int batch, int classes, int64_t first);

/* Layer `layer`'s output of the last forward (last_batch x its size
 * floats), copied to host memory by the network's backend (tests). */
kd_status kd_net_activation(kd_net *net, int layer, float *host);

/* src/spec.c: JSON text -> input shape and set-up layers (no buffers). */
kd_status kd_spec_build(const char *json, kd_shape *input, kd_layer **layers,
                        int *num_layers, char **resolved_json);

#endif
