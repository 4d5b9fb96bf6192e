/* The NCCL gradient allreduce on a one-rank communicator (run under
 * mpirun -np 1): the weighted sum of one rank is its gradients times the
 * weight, over several fused buckets; then a --dist sync style step. */
#include "gpu_test.h"
#include "kindling_mpi.h"
#include "nccl_allreduce.h"

int main(void)
{
    gpu_require_device(); /* before MPI: a skip must not need a clean MPI exit */
    CHECK_OK(kd_mpi_init(NULL, NULL));
    kd_net *net = NULL;
    kd_nccl *nc = NULL;
    CHECK_OK(kd_net_create("mlp", 3, &net));
    kd_context ctx = {KD_DEVICE_GPU, -1};
    CHECK_OK(kd_net_set_context(net, ctx));
    size_t n = net ? kd_net_param_count(net) : 0;
    float *g = malloc(sizeof(float) * (n ? n : 1));
    fill_uniform(g, n, -1.0f, 1.0f, 11);
    if (net && kd_net_get_context(net).kind == KD_DEVICE_GPU) {
        CHECK_OK(kd_net_to_host(net, KD_NET_GRADS));
        memcpy(kd_net_grads(net), g, sizeof(float) * n);
        /* 64 KiB buckets: the MLP's 109K floats take several. */
        CHECK_OK(kd_nccl_create(MPI_COMM_WORLD, net, 64 << 10, &nc));
        CHECK(nc != NULL, "no NCCL communicator although the network is on a GPU");
        if (nc) {
            CHECK_OK(kd_nccl_weighted_sum(nc, net, 0.25));
            CHECK_OK(kd_net_to_host(net, KD_NET_GRADS));
            const float *r = kd_net_grads(net);
            size_t bad = 0;
            for (size_t i = 0; i < n; i++)
                bad += r[i] != g[i] * 0.25f;
            CHECK(bad == 0, "%zu of %zu gradients are not 0.25 x the input", bad, n);
            CHECK_OK(kd_nccl_weighted_sum(nc, net, 1.0));
        }
    }
    kd_nccl_free(nc);
    free(g);
    kd_net_free(net);
    kd_mpi_finalize();
    return check_summary();
}
