/* Compute contexts: which backend a network runs on (the CPU, src/net_cpu.c,
 * or a GPU through the module gpu/ builds), moving it between them, and the
 * calls that dispatch to its backend (src/backend.h). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "net.h"

kd_status kd_context_parse(const char *text, kd_context *out)
{
    if (!text || !out)
        return kd_fail(KD_ERR_INVALID, "kd_context_parse: NULL argument");
    if (strcmp(text, "cpu") == 0) {
        out->kind = KD_DEVICE_CPU;
        out->device_id = 0;
        return KD_OK;
    }
    if (strcmp(text, "gpu") == 0 || strcmp(text, "cuda") == 0) {
        out->kind = KD_DEVICE_GPU;
        out->device_id = -1;
        return KD_OK;
    }
    const char *num = strncmp(text, "gpu:", 4) == 0 ? text + 4 : strncmp(text, "cuda:", 5) == 0 ? text + 5 : NULL;
    if (num && *num >= '0' && *num <= '9') {
        char *end;
        errno = 0;
        long id = strtol(num, &end, 10);
        if (*end == '\0' && errno == 0 && id <= INT_MAX) {
            out->kind = KD_DEVICE_GPU;
            out->device_id = (int)id;
            return KD_OK;
        }
    }
    return kd_fail(KD_ERR_INVALID, "unknown context '%s' (use cpu, gpu or gpu:N)", text);
}

const char *kd_context_str(kd_context ctx, char *buf, size_t len)
{
    if (ctx.kind == KD_DEVICE_GPU && ctx.device_id >= 0)
        snprintf(buf, len, "gpu:%d", ctx.device_id);
    else
        snprintf(buf, len, "%s", ctx.kind == KD_DEVICE_GPU ? "gpu" : "cpu");
    return buf;
}

int kd_gpu_built(void) { return kd_cuda_backend_built(); }

kd_status kd_gpu_device_count(int *count)
{
    if (!count)
        return kd_fail(KD_ERR_INVALID, "kd_gpu_device_count: NULL argument");
    *count = 0;
    const char *why = NULL;
    const kd_backend *be = kd_cuda_backend(&why);
    if (!be)
        return kd_fail(KD_ERR_UNSUPPORTED, "%s", why);
    return be->device_count(count);
}

/* The node-local rank under mpirun / srun, or 0. */
static int local_rank(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID",
                                       "LOCAL_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v >= '0' && *v <= '9')
            return atoi(v);
    }
    return 0;
}

/* Move net to backend `be` on `device`. The host copies are what the next
 * backend starts from, so the current one hands them back first; if it
 * cannot, the network stays where it is. If the new device cannot take the
 * network, it is left on the CPU. */
static kd_status move_to(kd_net *net, const kd_backend *be, int device)
{
    KD_TRY(net->backend->pull(net, KD_BUF_PARAMS | KD_BUF_GRADS | KD_BUF_STATE, NULL));
    net->backend->detach(net);
    net->backend = &kd_cpu_backend;
    net->backend->attach(net, 0); /* cannot fail */
    net->ctx.kind = KD_DEVICE_CPU;
    net->ctx.device_id = 0;
    net->last_batch = 0;
    net->last_x = NULL;
    if (be == &kd_cpu_backend)
        return KD_OK;
    KD_TRY(be->attach(net, device));
    net->backend = be;
    net->ctx.kind = KD_DEVICE_GPU;
    net->ctx.device_id = device;
    return KD_OK;
}

kd_status kd_net_set_context(kd_net *net, kd_context ctx)
{
    if (!net)
        return kd_fail(KD_ERR_INVALID, "kd_net_set_context: NULL network");
    if (ctx.kind == KD_DEVICE_CPU)
        return net->backend == &kd_cpu_backend ? KD_OK : move_to(net, &kd_cpu_backend, 0);
    if (ctx.kind != KD_DEVICE_GPU)
        return kd_fail(KD_ERR_INVALID, "unknown device kind %d", (int)ctx.kind);
    const char *why = NULL;
    const kd_backend *be = kd_cuda_backend(&why);
    if (!be)
        return kd_fail(KD_ERR_UNSUPPORTED, "%s", why);
    int count = 0;
    KD_TRY(be->device_count(&count));
    int id = ctx.device_id;
    if (id < 0)
        id = local_rank() % count;
    if (id >= count)
        return kd_fail(KD_ERR_INVALID, "GPU %d does not exist (%d CUDA device%s: 0..%d)", id, count,
                       count == 1 ? "" : "s", count - 1);
    if (net->backend == be && net->ctx.device_id == id)
        return KD_OK;
    return move_to(net, be, id);
}

kd_context kd_net_get_context(const kd_net *net)
{
    kd_context c = {KD_DEVICE_CPU, 0};
    return net ? net->ctx : c;
}

kd_status kd_net_sync(kd_net *net, kd_optim *opt)
{
    if (!net)
        return kd_fail(KD_ERR_INVALID, "kd_net_sync: NULL network");
    return net->backend->pull(net, KD_BUF_ALL, opt);
}

kd_status kd_net_to_host(kd_net *net, unsigned buffers)
{
    if (!net)
        return kd_fail(KD_ERR_INVALID, "kd_net_to_host: NULL network");
    if (buffers & ~(unsigned)KD_NET_BUFFERS)
        return kd_fail(KD_ERR_INVALID, "kd_net_to_host: unknown buffers 0x%x (use KD_NET_PARAMS, KD_NET_GRADS, "
                                       "KD_NET_STATE)", buffers);
    /* Only a complete copy hands the host buffers over. */
    KD_TRY(net->backend->pull(net, buffers, NULL));
    net->backend->host_written(net, buffers);
    return KD_OK;
}

kd_status kd_net_optim_step(kd_net *net, kd_optim *opt)
{
    if (!net || !opt)
        return kd_fail(KD_ERR_INVALID, "kd_net_optim_step: %s is NULL", !net ? "network" : "optimizer");
    if (kd_optim_param_count(opt) != net->param_count)
        return kd_fail(KD_ERR_SHAPE, "the optimizer is for %zu parameters but the network has %zu",
                       kd_optim_param_count(opt), net->param_count);
    return net->backend->optim_step(net, opt);
}
