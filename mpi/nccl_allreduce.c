/* NCCL gradient allreduce, MPI side (see nccl_allreduce.h): the id goes out
 * by MPI_Bcast, everything NCCL happens in the CUDA backend module through
 * its kd_nccl_ops, so this file (in kindling_mpi) links neither NCCL nor
 * CUDA. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "nccl_allreduce.h"

/* PyTorch DDP's default bucket: large enough to run at link bandwidth. */
#define KD_NCCL_BUCKET_BYTES_DEFAULT ((size_t)25 << 20)

struct kd_nccl {
    const kd_nccl_ops *ops;
    void *comm;
    size_t bucket; /* floats */
};

static kd_status mpi_fail(int rc, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return kd_fail(KD_ERR_IO, "MPI: %s: %.*s", what, len, msg);
}

kd_status kd_nccl_create(MPI_Comm comm, kd_net *net, size_t bucket_bytes, kd_nccl **out)
{
    *out = NULL;
    int rank = 0, size = 1, rc;
    if ((rc = MPI_Comm_rank(comm, &rank)) != MPI_SUCCESS || (rc = MPI_Comm_size(comm, &size)) != MPI_SUCCESS)
        return mpi_fail(rc, "NCCL set-up");
    /* NCCL only when every rank's network is on a GPU and the backend has it. */
    const kd_backend *be = kd_net_get_context(net).kind == KD_DEVICE_GPU ? kd_cuda_backend(NULL) : NULL;
    const kd_nccl_ops *ops = be ? be->nccl : NULL;
    int mine = ops != NULL, all = 0;
    if ((rc = MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, comm)) != MPI_SUCCESS)
        return mpi_fail(rc, "agreeing on NCCL");
    if (!all)
        return KD_OK;

    struct {
        int ok;
        unsigned char id[KD_NCCL_ID_BYTES];
    } boot;
    memset(&boot, 0, sizeof boot);
    kd_status s = KD_OK;
    if (rank == 0)
        boot.ok = (s = ops->unique_id(boot.id)) == KD_OK;
    if ((rc = MPI_Bcast(&boot, (int)sizeof boot, MPI_BYTE, 0, comm)) != MPI_SUCCESS)
        return mpi_fail(rc, "sending the NCCL id");
    if (!boot.ok)
        return rank == 0 ? s : kd_fail(KD_ERR_DEVICE, "NCCL: rank 0 could not create a unique id");

    kd_nccl *nc = kd_calloc(1, sizeof *nc, "NCCL allreduce");
    if (!nc)
        return KD_ERR_NOMEM; /* the other ranks fail in the agreement below */
    nc->ops = ops;
    nc->bucket = (bucket_bytes ? bucket_bytes : KD_NCCL_BUCKET_BYTES_DEFAULT) / sizeof(float);
    s = ops->init(net, size, rank, boot.id, &nc->comm);
    /* A failure on one rank must not leave the others inside NCCL calls later. */
    int ok = s == KD_OK, all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm);
    if (!all_ok) {
        if (ok)
            s = kd_fail(KD_ERR_DEVICE, "NCCL: another rank failed to join the communicator");
        kd_nccl_free(nc);
        return s;
    }
    *out = nc;
    return KD_OK;
}

void kd_nccl_free(kd_nccl *nc)
{
    if (!nc)
        return;
    nc->ops->destroy(nc->comm);
    free(nc);
}

kd_status kd_nccl_weighted_sum(kd_nccl *nc, kd_net *net, double weight)
{
    return nc->ops->weighted_sum(nc->comm, net, weight, nc->bucket);
}
