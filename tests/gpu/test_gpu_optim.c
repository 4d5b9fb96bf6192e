/* The optimizer kernels against src/optim.c: the same gradients applied for
 * several steps to the same parameters by kd_optim_step on the host and by
 * kd_net_optim_step on a GPU network; parameters after every step and the
 * optimizer state (after kd_net_sync) agree within 1e-4 relative. */
#include "gpu_test.h"

#define SPEC "{\"input\": [30], \"layers\": [{\"type\": \"dense\", \"units\": 20}, {\"type\": \"relu\"}, " \
             "{\"type\": \"dense\", \"units\": 3}, {\"type\": \"softmax\"}]}"
#define STEPS 6

static void run(const char *name, kd_optim_config oc)
{
    kd_net *cpu, *gpu;
    kd_optim *oc_cpu = NULL, *oc_gpu = NULL;
    char what[128];
    if (!make_pair(SPEC, &cpu, &gpu))
        goto done;
    size_t n = kd_net_param_count(cpu);
    CHECK_OK(kd_optim_create(&oc, n, &oc_cpu));
    CHECK_OK(kd_optim_create(&oc, n, &oc_gpu));
    if (!oc_cpu || !oc_gpu)
        goto done;
    float *g = malloc(sizeof(float) * n);
    for (int t = 0; t < STEPS; t++) {
        fill_uniform(g, n, -0.5f, 0.5f, 1000 + (uint64_t)t);
        CHECK_OK(kd_optim_step(oc_cpu, kd_net_params(cpu), g));
        /* Host gradients handed over by kd_net_to_host are uploaded by the step. */
        CHECK_OK(kd_net_to_host(gpu, KD_NET_GRADS));
        memcpy(kd_net_grads(gpu), g, sizeof(float) * n);
        CHECK_OK(kd_net_optim_step(gpu, oc_gpu));
        snprintf(what, sizeof what, "%s: parameters after step %d", name, t + 1);
        CHECK_OK(kd_net_to_host(gpu, KD_NET_PARAMS));
        close_vec(what, kd_net_params(gpu), kd_net_params(cpu), n, GPU_RTOL);
    }
    CHECK(kd_optim_steps(oc_gpu) == STEPS, "%s: GPU optimizer counted %lld steps", name,
          (long long)kd_optim_steps(oc_gpu));
    CHECK_OK(kd_net_sync(gpu, oc_gpu));
    size_t sc = 0, sg = 0;
    float *state_c = kd_optim_state(oc_cpu, &sc), *state_g = kd_optim_state(oc_gpu, &sg);
    CHECK(sc == sg, "%s: state sizes %zu vs %zu", name, sg, sc);
    if (sc && sc == sg) {
        snprintf(what, sizeof what, "%s: optimizer state", name);
        close_vec(what, state_g, state_c, sc, GPU_RTOL);
    }
    free(g);
done:
    kd_optim_free(oc_cpu);
    kd_optim_free(oc_gpu);
    kd_net_free(cpu);
    kd_net_free(gpu);
}

int main(void)
{
    gpu_require_device();
    kd_optim_config c = kd_optim_config_default();
    c.kind = KD_OPT_SGD;
    c.lr = 0.05;
    run("sgd", c);
    c.weight_decay = 0.01;
    run("sgd + weight decay", c);

    c = kd_optim_config_default();
    c.kind = KD_OPT_MOMENTUM;
    c.lr = 0.05;
    c.momentum = 0.9;
    c.weight_decay = 0.001;
    run("momentum", c);
    c.nesterov = 1;
    run("nesterov", c);

    c = kd_optim_config_default();
    c.kind = KD_OPT_ADAM;
    c.lr = 0.01;
    run("adam", c);
    c.weight_decay = 0.01;
    c.schedule = KD_SCHED_COSINE;
    c.total_steps = STEPS;
    c.lr_min = 0.001;
    run("adam + l2 + cosine", c);

    c = kd_optim_config_default();
    c.kind = KD_OPT_ADAMW;
    c.lr = 0.01;
    c.weight_decay = 0.05;
    c.schedule = KD_SCHED_STEP;
    c.step_size = 2;
    c.gamma = 0.5;
    run("adamw + step schedule", c);
    return check_summary();
}
