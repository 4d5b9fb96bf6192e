/* Every layer type on the GPU against the CPU op on the same inputs and
 * parameters: outputs of every layer, the loss, dW/dB of every layer (the
 * layer before the op under test has weights, so its gradients check the
 * op's dx) and batch-norm running statistics, in training and inference
 * mode, within 1e-4 relative. Dropout draws its mask on the device from its
 * own generator, so in training it is checked by its properties instead. */
#include "gpu_internal.h"
#include "gpu_test.h"
#include "net.h"

#define BATCH 5

/* rank 1: input [12] -> dense 10 -> OP -> dense 4 -> softmax
 * rank 3: input [2,9,9] -> conv 1x1 (3 filters) -> OP -> flatten -> dense 4 -> softmax */
static void spec_for(char *buf, size_t len, int rank3, const char *op)
{
    if (rank3)
        snprintf(buf, len,
                 "{\"input\": [2, 9, 9], \"layers\": [{\"type\": \"conv2d\", \"filters\": 3, \"kernel\": 1}, %s, "
                 "{\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 4}, {\"type\": \"softmax\"}]}",
                 op);
    else
        snprintf(buf, len,
                 "{\"input\": [12], \"layers\": [{\"type\": \"dense\", \"units\": 10}, %s, "
                 "{\"type\": \"dense\", \"units\": 4}, {\"type\": \"softmax\"}]}",
                 op);
}

static void compare_acts(const char *name, kd_net *cpu, kd_net *gpu, int skip_layer)
{
    char what[400];
    for (int i = 0; i < cpu->num_layers; i++) {
        if (i == skip_layer)
            continue;
        size_t n = kd_shape_size(&cpu->layers[i].out) * (size_t)cpu->last_batch;
        float *h = malloc(sizeof(float) * n), *c = malloc(sizeof(float) * n);
        CHECK_OK(kd_net_activation(gpu, i, h));
        CHECK_OK(kd_net_activation(cpu, i, c));
        snprintf(what, sizeof what, "%.200s: layer %d (%.32s) output", name, i, cpu->layers[i].ops->type);
        close_vec(what, h, c, n, GPU_RTOL);
        free(h);
        free(c);
    }
}

static void run_case(const char *name, int rank3, const char *op, int batch)
{
    char spec[1024], what[400];
    spec_for(spec, sizeof spec, rank3, op);
    kd_net *cpu, *gpu;
    if (!make_pair(spec, &cpu, &gpu)) {
        kd_net_free(cpu);
        kd_net_free(gpu);
        return;
    }
    size_t in = kd_shape_size(&cpu->input);
    float *x = malloc(sizeof(float) * in * (size_t)batch);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)batch);
    fill_uniform(x, in * (size_t)batch, -1.0f, 1.0f, 99);
    for (int b = 0; b < batch; b++)
        y[b] = b % cpu->num_classes;
    int is_dropout = strstr(op, "dropout") != NULL;
    for (int training = 1; training >= 0; training--) {
        kd_net_set_noise_seed(cpu, 5, 3);
        kd_net_set_noise_seed(gpu, 5, 3);
        CHECK_OK(kd_net_forward(cpu, x, batch, training));
        CHECK_OK(kd_net_forward(gpu, x, batch, training));
        double lc = 0, lg = 0;
        int cc = 0, cg = 0;
        CHECK_OK(kd_net_loss(cpu, y, &lc, &cc));
        CHECK_OK(kd_net_loss(gpu, y, &lg, &cg));
        if (is_dropout && training) {
            /* y is 0 or x / (1 - rate) elementwise; about `rate` of it is 0. */
            size_t n = kd_shape_size(&cpu->layers[1].out) * (size_t)batch, zeros = 0, bad = 0;
            float *pre = malloc(sizeof(float) * n), *out = malloc(sizeof(float) * n);
            CHECK_OK(kd_net_activation(gpu, 0, pre));
            CHECK_OK(kd_net_activation(gpu, 1, out));
            float scale = 1.0f / (1.0f - cpu->layers[1].rate);
            for (size_t i = 0; i < n; i++) {
                if (out[i] == 0.0f)
                    zeros++;
                else if (fabsf(out[i] - pre[i] * scale) > 1e-6f * fabsf(out[i]))
                    bad++;
            }
            double frac = (double)zeros / (double)n;
            CHECK(bad == 0 && frac > cpu->layers[1].rate - 0.1 && frac < cpu->layers[1].rate + 0.1,
                  "%s: dropout output: %zu values not x*scale, %.3f dropped (rate %.2f)", name, bad, frac,
                  (double)cpu->layers[1].rate);
            free(pre);
            free(out);
            CHECK_OK(kd_net_backward(gpu, y));
            continue;
        }
        snprintf(what, sizeof what, "%s (%s)", name, training ? "training" : "inference");
        compare_acts(what, cpu, gpu, -1);
        CHECK(fabs(lc - lg) <= GPU_RTOL * fabs(lc), "%s: loss gpu %.9g cpu %.9g", what, lg, lc);
        CHECK(cc == cg, "%s: correct gpu %d cpu %d", what, cg, cc);
        CHECK_OK(kd_net_backward(cpu, y));
        CHECK_OK(kd_net_backward(gpu, y));
        snprintf(what, sizeof what, "%s (%s): gradients dW, dB", name, training ? "training" : "inference");
        CHECK_OK(kd_net_to_host(gpu, KD_NET_GRADS | KD_NET_STATE));
        close_vec(what, kd_net_grads(gpu), cpu->grads, cpu->param_count, GPU_RTOL);
        if (cpu->state_count) {
            snprintf(what, sizeof what, "%s (%s): running statistics", name, training ? "training" : "inference");
            close_vec(what, kd_net_state(gpu), cpu->state, cpu->state_count, GPU_RTOL);
        }
    }
    free(x);
    free(y);
    kd_net_free(cpu);
    kd_net_free(gpu);
}

int main(void)
{
    gpu_require_device();
    run_case("dense", 0, "{\"type\": \"dense\", \"units\": 8}", BATCH);
    run_case("dense without bias", 0, "{\"type\": \"dense\", \"units\": 8, \"bias\": false}", BATCH);
    run_case("relu", 0, "{\"type\": \"relu\"}", BATCH);
    run_case("tanh", 0, "{\"type\": \"tanh\"}", BATCH);
    run_case("sigmoid", 0, "{\"type\": \"sigmoid\"}", BATCH);
    run_case("batchnorm 1d", 0, "{\"type\": \"batchnorm\"}", BATCH);
    run_case("dropout", 0, "{\"type\": \"dropout\", \"rate\": 0.3}", 64);
    run_case("conv2d 3x3 pad 1", 1, "{\"type\": \"conv2d\", \"filters\": 4, \"kernel\": 3, \"padding\": 1}", BATCH);
    run_case("conv2d 3x2 stride 2", 1,
             "{\"type\": \"conv2d\", \"filters\": 5, \"kernel\": [3, 2], \"stride\": 2, \"padding\": [1, 0]}", BATCH);
    run_case("conv2d no bias", 1, "{\"type\": \"conv2d\", \"filters\": 2, \"kernel\": 5, \"bias\": false}", BATCH);
    run_case("maxpool 2", 1, "{\"type\": \"maxpool\", \"size\": 2}", BATCH);
    run_case("maxpool 3 stride 2 pad 1", 1, "{\"type\": \"maxpool\", \"size\": 3, \"stride\": 2, \"padding\": 1}", BATCH);
    run_case("avgpool 2", 1, "{\"type\": \"avgpool\", \"size\": 2}", BATCH);
    run_case("avgpool 3 stride 1 pad 1", 1, "{\"type\": \"avgpool\", \"size\": 3, \"stride\": 1, \"padding\": 1}", BATCH);
    run_case("relu 3d", 1, "{\"type\": \"relu\"}", BATCH);
    run_case("batchnorm 2d", 1, "{\"type\": \"batchnorm\", \"momentum\": 0.2}", BATCH);
    run_case("flatten", 1, "{\"type\": \"tanh\"}", BATCH);
    return check_summary();
}
