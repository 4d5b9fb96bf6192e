/* The NCCL half of the --dist sync exchange on GPUs (kd_nccl_ops in
 * src/backend.h): unique id, communicator and the bucketed allreduce on the
 * device gradients. MPI never appears here: mpi/nccl_allreduce.c, built into
 * kindling_mpi, sends the id with MPI_Bcast and calls these through the
 * backend table, so kindling_mpi does not link NCCL. */
#include <string.h>

#include <nccl.h>

#include "gpu_internal.h"

_Static_assert(sizeof(ncclUniqueId) == KD_NCCL_ID_BYTES, "ncclUniqueId size");

static kd_status nccl_fail(ncclResult_t r, const char *what)
{
    return kd_fail(KD_ERR_DEVICE, "NCCL: %s: %s", what, ncclGetErrorString(r));
}

static kd_status nccl_unique_id(unsigned char *id)
{
    ncclUniqueId u;
    ncclResult_t r = ncclGetUniqueId(&u);
    if (r != ncclSuccess)
        return nccl_fail(r, "ncclGetUniqueId");
    memcpy(id, &u, sizeof u);
    return KD_OK;
}

static kd_status nccl_init(kd_net *net, int nranks, int rank, const unsigned char *id, void **comm)
{
    kd_gpu *g = kd_gpu_of(net);
    if (!g)
        return kd_fail(KD_ERR_STATE, "NCCL: the network is not on a GPU");
    KD_CUDA(cudaSetDevice(g->device), "selecting the device for NCCL");
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclComm_t c;
    ncclResult_t r = ncclCommInitRank(&c, nranks, u, rank);
    if (r != ncclSuccess)
        return nccl_fail(r, "ncclCommInitRank");
    *comm = c;
    return KD_OK;
}

static kd_status nccl_weighted_sum(void *comm, kd_net *net, double weight, size_t bucket)
{
    float *grads;
    cudaStream_t stream;
    KD_TRY(kd_gpu_device_grads(net, &grads, &stream));
    size_t n = net->param_count;
    /* As mpi/allreduce.c: scale in float first, then sum. */
    float w = (float)weight;
    if (w != 1.0f) {
        kdk_scale(stream, n, grads, w);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
            return kd_gpu_cuda_fail(e, "scaling the gradients");
    }
    if (bucket < 1)
        bucket = 1;
    ncclResult_t r = ncclGroupStart();
    for (size_t off = 0; r == ncclSuccess && off < n; off += bucket) {
        size_t count = n - off < bucket ? n - off : bucket;
        r = ncclAllReduce(grads + off, grads + off, count, ncclFloat, ncclSum, (ncclComm_t)comm, stream);
    }
    ncclResult_t end = ncclGroupEnd();
    if (r != ncclSuccess)
        return nccl_fail(r, "ncclAllReduce of the gradients");
    if (end != ncclSuccess)
        return nccl_fail(end, "ncclGroupEnd");
    kd_gpu_grads_written(net);
    return KD_OK;
}

static void nccl_destroy(void *comm)
{
    if (comm)
        ncclCommDestroy((ncclComm_t)comm);
}

const kd_nccl_ops kd_gpu_nccl_ops = {
    .unique_id = nccl_unique_id,
    .init = nccl_init,
    .weighted_sum = nccl_weighted_sum,
    .destroy = nccl_destroy,
};
