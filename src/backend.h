/* The compute-backend interface: the table of functions through which a
 * network computes, like a ggml backend. The CPU is one backend
 * (kd_cpu_backend, src/net_cpu.c, over the layer table in src/layers/), the
 * CUDA module another (gpu/net_gpu.c); net->backend is always one of them,
 * and net.c, train.c and the context calls always dispatch here. Internal.
 *
 * Buffers that exist on both sides (params, grads, state, optimizer state)
 * carry a "which copy is newer" mark kept by the backend: kd_backend.pull
 * copies device values down when the device is newer, kd_backend.host_written
 * records that the host copy may have been written, so the next device use
 * uploads it. */
#ifndef KD_BACKEND_H
#define KD_BACKEND_H

#include "error.h"
#include "kindling.h"

/* Which buffers a pull / host_written call is about (bit set): the public
 * KD_NET_* of kd_net_to_host, plus the optimizer state. */
enum {
    KD_BUF_PARAMS = KD_NET_PARAMS,
    KD_BUF_GRADS = KD_NET_GRADS,
    KD_BUF_STATE = KD_NET_STATE,
    KD_BUF_OPTIM = 8,
    KD_BUF_ALL = KD_NET_BUFFERS | KD_BUF_OPTIM
};

typedef struct kd_backend {
    const char *name;
    /* Devices available (fails with a message when none). */
    kd_status (*device_count)(int *count);
    /* Create the device mirror of net on `device` (>= 0) and upload params
     * and state; sets net->backend_ctx. */
    kd_status (*attach)(kd_net *net, int device);
    /* Free the device mirror (the caller has pulled what it needs). */
    void (*detach)(kd_net *net);
    /* As kd_net_forward / kd_net_backward (arguments already checked). x is
     * host memory; it is copied to the device. */
    kd_status (*forward)(kd_net *net, const float *x, int batch, int training);
    kd_status (*backward)(kd_net *net, const int32_t *labels);
    /* Host copy of the last forward's output (batch * classes), waiting
     * for it if needed; NULL on a device error (message set). */
    const float *(*output)(kd_net *net);
    /* Copy layer `layer`'s output of the last forward (last_batch x its
     * size floats) into host memory: for tests that compare backends. */
    kd_status (*activation)(kd_net *net, int layer, float *host);
    /* One optimizer step on the device. */
    kd_status (*optim_step)(kd_net *net, kd_optim *opt);
    /* Copy the buffers in `what` to the host where the device is newer
     * (KD_BUF_OPTIM into opt's state). */
    kd_status (*pull)(kd_net *net, unsigned what, kd_optim *opt);
    /* The host copies in `what` may have changed: upload before next use. */
    void (*host_written)(kd_net *net, unsigned what);
    /* NCCL on the device gradients (NULL when built without NCCL); the MPI
     * side (mpi/nccl_allreduce.c, in kindling_mpi) bootstraps it. */
    const struct kd_nccl_ops *nccl;
} kd_backend;

#define KD_NCCL_ID_BYTES 128 /* NCCL_UNIQUE_ID_BYTES */

typedef struct kd_nccl_ops {
    /* ncclGetUniqueId into id (KD_NCCL_ID_BYTES). */
    kd_status (*unique_id)(unsigned char *id);
    /* ncclCommInitRank on net's device. */
    kd_status (*init)(kd_net *net, int nranks, int rank, const unsigned char *id, void **comm);
    /* grads <- sum over ranks of weight_r * grads_r, buckets of `bucket` floats,
     * queued on the network's compute stream. */
    kd_status (*weighted_sum)(void *comm, kd_net *net, double weight, size_t bucket);
    void (*destroy)(void *comm);
} kd_nccl_ops;

/* What the module needs from libkindling, handed over when it is loaded
 * (kd_cuda_backend_module(&host)): the module links no copy of the library
 * and looks up none of its symbols, so it binds to the very library that
 * loaded it, whether that is libkindling.so opened by Python with
 * RTLD_LOCAL or the static library inside the CLI. */
typedef struct kd_host_api {
    kd_status (*fail)(kd_status s, const char *fmt, ...) KD_PRINTF(2, 3);
    kd_status (*fail_context)(kd_status s, const char *fmt, ...) KD_PRINTF(2, 3);
    void *(*calloc)(size_t count, size_t size, const char *what);
    const kd_optim_config *(*optim_get_config)(const kd_optim *opt);
    int64_t (*optim_steps)(const kd_optim *opt);
    void (*optim_set_steps)(kd_optim *opt, int64_t steps);
    float *(*optim_state)(kd_optim *opt, size_t *count);
    double (*optim_current_lr)(const kd_optim *opt);
    size_t (*shape_size)(const kd_shape *s);
} kd_host_api;

/* The CPU backend: every network starts on it. Its attach cannot fail (its
 * buffers are made on the first forward) and its flat vectors are the host
 * buffers, so pull and host_written do nothing. */
extern const kd_backend kd_cpu_backend;

/* The CUDA backend. With gpu/ built it lives in the shared module
 * libkindling_gpu.so, loaded on first use (src/gpu_loader.c) so that CPU-only
 * runs never load the CUDA libraries; otherwise there is none. NULL when
 * unavailable, with the reason in *why ("Kindling was built without CUDA",
 * or why the module did not load). */
const kd_backend *kd_cuda_backend(const char **why);
/* 1 when this library was built with gpu/. */
int kd_cuda_backend_built(void);

#endif
