/* Compute contexts without a GPU: parsing, the CPU context (a no-op), the
 * CPU as a backend (a network always has one), kd_net_optim_step on the
 * CPU (exactly kd_optim_step), and the clear
 * error for a GPU: "Kindling was built without CUDA" in a CPU-only build,
 * "no CUDA device: ..." in a CUDA build on a machine without one. */
#include <string.h>

#include "check.h"
#include "kindling.h"
#include "net.h"

int main(void)
{
    kd_context c;
    char buf[32];
    CHECK_OK(kd_context_parse("cpu", &c));
    CHECK(c.kind == KD_DEVICE_CPU, "cpu");
    CHECK_OK(kd_context_parse("gpu", &c));
    CHECK(c.kind == KD_DEVICE_GPU && c.device_id == -1, "gpu -> %d", c.device_id);
    CHECK_OK(kd_context_parse("gpu:3", &c));
    CHECK(c.kind == KD_DEVICE_GPU && c.device_id == 3, "gpu:3 -> %d", c.device_id);
    CHECK(strcmp(kd_context_str(c, buf, sizeof buf), "gpu:3") == 0, "str %s", buf);
    CHECK_FAILS(kd_context_parse("gpu:", &c), KD_ERR_INVALID, "unknown context");
    CHECK_FAILS(kd_context_parse("gpu:x", &c), KD_ERR_INVALID, "unknown context");
    CHECK_FAILS(kd_context_parse("tpu", &c), KD_ERR_INVALID, "cpu, gpu or gpu:N");
    CHECK(strcmp(kd_status_name(KD_ERR_DEVICE), "device error") == 0, "status name");

    kd_net *net = NULL, *ref = NULL;
    CHECK_OK(kd_net_create("mlp", 7, &net));
    CHECK_OK(kd_net_create("mlp", 7, &ref));
    if (!net || !ref)
        return check_summary();
    CHECK(net->backend == &kd_cpu_backend, "a new network is on the CPU backend");
    float act[10];
    CHECK_FAILS(kd_net_activation(net, 0, act), KD_ERR_STATE, "no forward pass");
    kd_context cpu = {KD_DEVICE_CPU, 0};
    CHECK_OK(kd_net_set_context(net, cpu));
    CHECK(net->backend == &kd_cpu_backend, "setting the CPU again keeps its backend");
    CHECK(kd_net_get_context(net).kind == KD_DEVICE_CPU, "context");
    CHECK_OK(kd_net_sync(net, NULL));
    CHECK_OK(kd_net_to_host(net, KD_NET_BUFFERS));
    CHECK_FAILS(kd_net_to_host(net, 8), KD_ERR_INVALID, "unknown buffers 0x8");
    CHECK_FAILS(kd_net_to_host(NULL, KD_NET_PARAMS), KD_ERR_INVALID, "NULL network");

    /* kd_net_optim_step on the CPU is kd_optim_step on the flat buffers. */
    kd_optim_config oc = kd_optim_config_default();
    oc.kind = KD_OPT_ADAM;
    oc.lr = 0.01;
    kd_optim *o1 = NULL, *o2 = NULL;
    size_t n = kd_net_param_count(net);
    CHECK_OK(kd_optim_create(&oc, n, &o1));
    CHECK_OK(kd_optim_create(&oc, n, &o2));
    for (size_t i = 0; i < n; i++)
        kd_net_grads(net)[i] = kd_net_grads(ref)[i] = (float)((i % 13) - 6) * 0.01f;
    CHECK_OK(kd_net_optim_step(net, o1));
    CHECK_OK(kd_optim_step(o2, kd_net_params(ref), kd_net_grads(ref)));
    CHECK(memcmp(kd_net_params(net), kd_net_params(ref), n * sizeof(float)) == 0, "optim step differs");
    CHECK_FAILS(kd_net_optim_step(net, NULL), KD_ERR_INVALID, "optimizer is NULL");

    kd_context gpu = {KD_DEVICE_GPU, -1};
    int count = 0;
    if (!kd_gpu_built()) {
        CHECK_FAILS(kd_net_set_context(net, gpu), KD_ERR_UNSUPPORTED, "Kindling was built without CUDA");
        CHECK_FAILS(kd_gpu_device_count(&count), KD_ERR_UNSUPPORTED, "built without CUDA");
    } else if (kd_gpu_device_count(&count) != KD_OK) {
        CHECK(strstr(kd_last_error(), "no CUDA device: ") != NULL, "message: %s", kd_last_error());
        CHECK_FAILS(kd_net_set_context(net, gpu), KD_ERR_UNSUPPORTED, "no CUDA device: ");
    } else {
        printf("note: %d CUDA device(s); the GPU paths are tested in tests/gpu/\n", count);
    }
    CHECK(kd_net_get_context(net).kind == KD_DEVICE_CPU, "a failed move leaves the network on the CPU");
    CHECK(net->backend == &kd_cpu_backend, "and on its backend");
    CHECK_OK(kd_net_forward(net, kd_net_params(ref), 1, 0)); /* still usable */
    CHECK_OK(kd_net_activation(net, kd_net_num_layers(net) - 1, act));
    CHECK(memcmp(act, kd_net_output(net), sizeof act) == 0, "the CPU backend's last activation is the output");
    kd_optim_free(o1);
    kd_optim_free(o2);
    kd_net_free(net);
    kd_net_free(ref);
    return check_summary();
}
