/* Whole networks GPU vs CPU: MLP and LeNet forward/backward (outputs, loss,
 * every gradient), a few kd_train steps with Adam, a checkpoint written from
 * the GPU network and read back on the CPU, and moving back and forth. */
#include <unistd.h>

#include "gpu_test.h"

#define LENET_NO_DROPOUT                                                                                            \
    "{\"input\": [1, 28, 28], \"layers\": [{\"type\": \"conv2d\", \"filters\": 20, \"kernel\": 5}, {\"type\": \"tanh\"}, " \
    "{\"type\": \"maxpool\", \"size\": 2}, {\"type\": \"conv2d\", \"filters\": 50, \"kernel\": 5}, {\"type\": \"tanh\"}, " \
    "{\"type\": \"maxpool\", \"size\": 2}, {\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 500, \"init\": \"he\"}, " \
    "{\"type\": \"relu\"}, {\"type\": \"dense\", \"units\": 10}, {\"type\": \"softmax\"}]}"

static void forward_backward(const char *name, const char *spec, int training, int batch)
{
    kd_net *cpu, *gpu;
    char what[128];
    if (!make_pair(spec, &cpu, &gpu))
        goto done;
    size_t n;
    kd_shape s = kd_net_input_shape(cpu);
    n = kd_shape_size(&s) * (size_t)batch;
    float *x = malloc(sizeof(float) * n);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)batch);
    fill_uniform(x, n, 0.0f, 1.0f, 4242);
    for (int b = 0; b < batch; b++)
        y[b] = (b * 7) % 10;
    CHECK_OK(kd_net_forward(cpu, x, batch, training));
    CHECK_OK(kd_net_forward(gpu, x, batch, training));
    snprintf(what, sizeof what, "%s: probabilities", name);
    close_vec(what, kd_net_output(gpu), kd_net_output(cpu), (size_t)batch * 10, GPU_RTOL);
    double lc, lg;
    CHECK_OK(kd_net_loss(cpu, y, &lc, NULL));
    CHECK_OK(kd_net_loss(gpu, y, &lg, NULL));
    CHECK(fabs(lc - lg) <= GPU_RTOL * fabs(lc), "%s: loss gpu %.9g cpu %.9g", name, lg, lc);
    CHECK_OK(kd_net_backward(cpu, y));
    CHECK_OK(kd_net_backward(gpu, y));
    snprintf(what, sizeof what, "%s: gradients", name);
    CHECK_OK(kd_net_to_host(gpu, KD_NET_GRADS));
    close_vec(what, kd_net_grads(gpu), kd_net_grads(cpu), kd_net_param_count(cpu), GPU_RTOL);
    free(x);
    free(y);
done:
    kd_net_free(cpu);
    kd_net_free(gpu);
}

/* A few Adam steps through kd_train on random data, then a checkpoint. */
static void train_steps(const char *name, const char *spec)
{
    kd_net *cpu, *gpu;
    kd_optim *oc = NULL, *og = NULL;
    kd_dataset *ds = NULL;
    kd_train_state sc, sg;
    kd_train_state_init(&sc);
    kd_train_state_init(&sg);
    char what[128], path[64];
    if (!make_pair(spec, &cpu, &gpu))
        goto done;
    kd_shape shape = kd_net_input_shape(cpu);
    CHECK_OK(kd_dataset_alloc(96, &shape, &ds));
    if (!ds)
        goto done;
    fill_uniform(ds->x, (size_t)ds->n * kd_shape_size(&shape), 0.0f, 1.0f, 77);
    for (int64_t i = 0; i < ds->n; i++)
        ds->y[i] = (int32_t)(i % 10);
    ds->num_classes = 10;
    kd_optim_config c = kd_optim_config_default();
    c.kind = KD_OPT_ADAM;
    c.lr = 1e-3;
    CHECK_OK(kd_optim_create(&c, kd_net_param_count(cpu), &oc));
    CHECK_OK(kd_optim_create(&c, kd_net_param_count(cpu), &og));
    kd_train_config cfg = kd_train_config_default();
    cfg.epochs = 1;
    cfg.batch_size = 32;
    CHECK_OK(kd_train(cpu, oc, ds, &cfg, &sc));
    snprintf(path, sizeof path, "gpu_net_%d.h5", (int)getpid());
    cfg.checkpoint_path = path;
    CHECK_OK(kd_train(gpu, og, ds, &cfg, &sg));
    /* Three Adam steps: differences stay at float rounding of the gradients. */
    snprintf(what, sizeof what, "%s: parameters after 3 Adam steps", name);
    close_vec(what, kd_net_params(gpu), kd_net_params(cpu), kd_net_param_count(cpu), 1e-3);
    kd_net *back = NULL;
    kd_optim *ob = NULL;
    CHECK_OK(kd_checkpoint_load(path, &back, &ob, NULL));
    if (back) {
        CHECK(memcmp(kd_net_params(back), kd_net_params(gpu), sizeof(float) * kd_net_param_count(gpu)) == 0,
              "%s: checkpoint from the GPU network differs from its parameters", name);
        size_t n1 = 0, n2 = 0;
        float *s1 = kd_optim_state(ob, &n1), *s2 = kd_optim_state(og, &n2);
        CHECK(n1 == n2 && memcmp(s1, s2, sizeof(float) * n1) == 0, "%s: checkpointed Adam state differs", name);
    }
    kd_net_free(back);
    kd_optim_free(ob);
    unlink(path);
    /* Back to the CPU and forward again: same output as on the GPU. */
    float *x = ds->x;
    CHECK_OK(kd_net_forward(gpu, x, 8, 0));
    float out[80];
    memcpy(out, kd_net_output(gpu), sizeof out);
    kd_context cpu_ctx = {KD_DEVICE_CPU, 0};
    CHECK_OK(kd_net_set_context(gpu, cpu_ctx));
    CHECK(kd_net_get_context(gpu).kind == KD_DEVICE_CPU, "%s: still on the GPU", name);
    CHECK_OK(kd_net_forward(gpu, x, 8, 0));
    snprintf(what, sizeof what, "%s: output after moving back to the CPU", name);
    close_vec(what, kd_net_output(gpu), out, 80, GPU_RTOL);
done:
    kd_train_state_clear(&sc);
    kd_train_state_clear(&sg);
    kd_dataset_free(ds);
    kd_optim_free(oc);
    kd_optim_free(og);
    kd_net_free(cpu);
    kd_net_free(gpu);
}

int main(void)
{
    gpu_require_device();
    forward_backward("mlp (training)", "mlp", 1, 32);
    forward_backward("lenet without dropout (training)", LENET_NO_DROPOUT, 1, 32);
    forward_backward("lenet (inference: dropout is the identity)", "lenet", 0, 32);
    forward_backward("mlp, batch 1", "mlp", 1, 1);
    train_steps("mlp", "mlp");
    train_steps("lenet without dropout", LENET_NO_DROPOUT);
    kd_context bad = {KD_DEVICE_GPU, 4096};
    kd_net *net = NULL;
    CHECK_OK(kd_net_create("mlp", 1, &net));
    CHECK_FAILS(kd_net_set_context(net, bad), KD_ERR_INVALID, "does not exist");
    kd_net_free(net);
    return check_summary();
}
