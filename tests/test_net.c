/* Network construction, spec errors, determinism and a whole-network
 * finite-difference gradient check through the fused softmax/cross-entropy. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kindling.h"

static void test_presets(void)
{
    kd_net *mlp = NULL, *lenet = NULL;
    CHECK_OK(kd_net_create("mlp", 1, &mlp));
    CHECK_OK(kd_net_create("lenet", 1, &lenet));
    if (!mlp || !lenet)
        goto out;
    /* 784-128-64-10 and the MXNet LeNet, counted by hand. */
    CHECK(kd_net_param_count(mlp) == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10, "mlp params %zu",
          kd_net_param_count(mlp));
    CHECK(kd_net_param_count(lenet) == (20 * 25 + 20) + (50 * 20 * 25 + 50) + (800 * 500 + 500) + (500 * 10 + 10),
          "lenet params %zu", kd_net_param_count(lenet));
    CHECK(kd_net_num_classes(mlp) == 10 && kd_net_num_classes(lenet) == 10, "classes");
    kd_layer_info li;
    CHECK_OK(kd_net_layer_info(lenet, 3, &li));
    CHECK(strcmp(li.type, "conv2d") == 0 && strcmp(li.name, "conv2d_2") == 0, "layer 3 is %s %s", li.type, li.name);
    CHECK(li.in.rank == 3 && li.in.dim[0] == 20 && li.in.dim[1] == 12 && li.out.dim[0] == 50 && li.out.dim[1] == 8,
          "conv2 shapes");
    CHECK(li.weight_rank == 4 && li.weight_dims[0] == 50 && li.weight_dims[1] == 20 && li.weight_dims[2] == 5,
          "conv2 weight dims");
    CHECK(li.bias_offset == li.weight_offset + li.weight_count, "bias follows weight in the flat vector");
    /* The resolved spec round-trips to an identical network. */
    kd_net *again = NULL;
    CHECK_OK(kd_net_create(kd_net_spec_json(lenet), 1, &again));
    if (again) {
        CHECK(kd_net_param_count(again) == kd_net_param_count(lenet) &&
                  memcmp(kd_net_params(again), kd_net_params(lenet), sizeof(float) * kd_net_param_count(lenet)) == 0,
              "same spec and seed give identical parameters");
        kd_net_free(again);
    }
    kd_net *other = NULL;
    CHECK_OK(kd_net_create("lenet", 2, &other));
    if (other) {
        CHECK(memcmp(kd_net_params(other), kd_net_params(lenet), sizeof(float) * kd_net_param_count(lenet)) != 0,
              "another seed gives other parameters");
        kd_net_free(other);
    }
out:
    kd_net_free(mlp);
    kd_net_free(lenet);
}

static void test_spec_errors(void)
{
    kd_net *net = (kd_net *)&net; /* must be reset to NULL on failure */
    CHECK_FAILS(kd_net_create("resnet", 1, &net), KD_ERR_INVALID, "unknown network preset 'resnet'");
    CHECK(net == NULL, "output cleared on failure");
    CHECK_FAILS(kd_net_create("{\"input\": [784], \"layers\": [{\"type\": \"dense\", \"units\": 10}, {\"type\": \"fancy\"}, "
                              "{\"type\": \"softmax\"}]}", 1, &net),
                KD_ERR_INVALID, "layer 1: unknown layer type 'fancy'");
    CHECK_FAILS(kd_net_create("{\"input\": [1, 28, 28], \"layers\": [{\"type\": \"conv2d\", \"filters\": 4, \"kernel\": 31},"
                              "{\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 10}, {\"type\": \"softmax\"}]}",
                              1, &net),
                KD_ERR_SHAPE, "layer 0 (conv2d");
    CHECK_FAILS(kd_net_create("{\"input\": [784], \"layers\": [{\"type\": \"softmax\"}, {\"type\": \"dense\", \"units\": 10}]}",
                              1, &net),
                KD_ERR_INVALID, "softmax must be the last layer");
    CHECK_FAILS(kd_net_create("{\"input\": [784], \"layers\": [{\"type\": \"dense\", \"units\": 10}]}", 1, &net),
                KD_ERR_INVALID, "last layer must be \"softmax\"");
    CHECK_FAILS(kd_net_create("{\"layers\": []}", 1, &net), KD_ERR_INVALID, "missing \"input\"");
    CHECK_FAILS(kd_net_create("{\"input\": 2.5, \"layers\": [{\"type\": \"softmax\"}]}", 1, &net), KD_ERR_INVALID,
                "\"input\" 2.5 must be a whole number");
    CHECK_OK(kd_net_create("{\"input\": 3, \"layers\": [{\"type\": \"softmax\"}]}", 1, &net));
    kd_net_free(net);
    net = NULL;
    CHECK_FAILS(kd_net_create("{\"input\": [784], \"layers\": [", 1, &net), KD_ERR_INVALID, "invalid JSON");
    CHECK_FAILS(kd_net_create("{\"input\": [0], \"layers\": [{\"type\": \"softmax\"}]}", 1, &net), KD_ERR_INVALID,
                "dimension 0 must be");
    CHECK_FAILS(kd_net_create("{\"input\": [784], \"layers\": [{\"type\": \"dense\", \"units\": 10, \"name\": \"a\"},"
                              "{\"type\": \"dense\", \"units\": 10, \"name\": \"a\"}, {\"type\": \"softmax\"}]}",
                              1, &net),
                KD_ERR_INVALID, "name 'a' is already used");
    CHECK_FAILS(kd_net_create("{\"input\": [784], \"layers\": [{\"type\": \"dense\"}, {\"type\": \"softmax\"}]}", 1, &net),
                KD_ERR_INVALID, "units");
    CHECK_FAILS(kd_net_create_from_file("/nonexistent/spec.json", 1, &net), KD_ERR_IO, "/nonexistent/spec.json");
    /* Unknown top-level keys are refused, as unknown layer keys are. */
    CHECK_FAILS(kd_net_create("{\"input\": [784], \"layers\": [{\"type\": \"softmax\"}], \"optimizer\": \"adam\"}", 1, &net),
                KD_ERR_INVALID, "unknown top-level key \"optimizer\"");
    CHECK_FAILS(kd_net_create("{\"input\": [784], \"layer\": [], \"layers\": [{\"type\": \"softmax\"}]}", 1, &net),
                KD_ERR_INVALID, "unknown top-level key \"layer\"");
    /* Duplicate keys anywhere: cJSON would take the first, Python's json the last. */
    CHECK_FAILS(kd_net_create("{\"input\": [784], \"layers\": [{\"type\": \"softmax\"}], \"input\": [10]}", 1, &net),
                KD_ERR_INVALID, "key \"input\" appears more than once in the top level");
    CHECK_FAILS(kd_net_create("{\"input\": [784], \"layers\": [{\"type\": \"dense\", \"units\": 10}, "
                              "{\"type\": \"dropout\", \"rate\": 0.1, \"rate\": 0.5}, {\"type\": \"softmax\"}]}", 1, &net),
                KD_ERR_INVALID, "key \"rate\" appears more than once in layer 1");
    CHECK(net == NULL, "output cleared on failure");
    /* The same keys once each build the network. */
    CHECK_OK(kd_net_create("{\"layers\": [{\"type\": \"dense\", \"units\": 10}, {\"type\": \"dropout\", \"rate\": 0.5}, "
                           "{\"type\": \"softmax\"}], \"input\": [784]}", 1, &net));
    kd_net_free(net);
    net = NULL;
}

/* Loss of the whole network on a fixed batch, in double. */
static double net_loss(kd_net *net, const float *x, const int32_t *y, int batch)
{
    double loss = 0;
    kd_net_forward(net, x, batch, 1);
    kd_net_loss(net, y, &loss, NULL);
    return loss;
}

static void gradcheck(const char *spec, int batch)
{
    kd_net *net = NULL;
    CHECK_OK(kd_net_create(spec, 7, &net));
    if (!net)
        return;
    kd_shape in = kd_net_input_shape(net);
    size_t nin = kd_shape_size(&in), np = kd_net_param_count(net);
    float *x = malloc(sizeof(float) * nin * batch);
    int32_t *y = malloc(sizeof(int32_t) * batch);
    float *g = malloc(sizeof(float) * np);
    srand(3);
    for (size_t i = 0; i < nin * batch; i++)
        x[i] = (float)rand() / RAND_MAX * 2 - 1;
    for (int b = 0; b < batch; b++)
        y[b] = b % kd_net_num_classes(net);
    kd_net_set_noise_seed(net, 11, 5); /* same dropout mask in every evaluation */
    CHECK_OK(kd_net_forward(net, x, batch, 1));
    CHECK_OK(kd_net_backward(net, y));
    memcpy(g, kd_net_grads(net), sizeof(float) * np);
    float *p = kd_net_params(net);
    int bad = 0, checked = 0, kinks = 0;
    /* Every parameter of small nets; a stride over big ones. */
    size_t stride = np > 600 ? np / 600 : 1;
    for (size_t i = 0; i < np; i += stride) {
        float keep = p[i];
        double num[2];
        for (int k = 0; k < 2; k++) {
            const float h = k ? 1.5e-3f : 3e-3f;
            p[i] = keep + h;
            double lp = net_loss(net, x, y, batch);
            p[i] = keep - h;
            double lm = net_loss(net, x, y, batch);
            p[i] = keep;
            num[k] = (lp - lm) / (2 * h);
        }
        /* Max pooling and ReLU are piecewise: where two step sizes disagree
         * the step crossed a kink (an argmax switched) and the point is
         * not differentiable enough to judge. Such points must stay rare. */
        if (fabs(num[0] - num[1]) > 0.05 * fabs(num[0]) + 2e-4) {
            kinks++;
            continue;
        }
        double err = fabs(num[1] - g[i]) / fmax(1e-3, fabs(num[1]) + fabs(g[i]));
        if (err > 2e-2 && fabs(num[1] - g[i]) > 2e-4) {
            if (bad++ < 5)
                fprintf(stderr, "  param %zu: numeric %g analytic %g\n", i, num[1], g[i]);
        }
        checked++;
    }
    CHECK(kinks * 20 <= checked, "%s: %d kinks in %d checks", spec, kinks, checked);
    CHECK(bad == 0, "%s: %d of %d gradients disagree with finite differences", spec, bad, checked);
    free(x);
    free(y);
    free(g);
    kd_net_free(net);
}

static void test_backward_before_forward(void)
{
    kd_net *net = NULL;
    CHECK_OK(kd_net_create("mlp", 1, &net));
    int32_t y[1] = {0};
    CHECK_FAILS(kd_net_backward(net, y), KD_ERR_STATE, "no forward pass");
    float x[784] = {0};
    CHECK_OK(kd_net_forward(net, x, 1, 0));
    int32_t bad[1] = {10};
    CHECK_FAILS(kd_net_backward(net, bad), KD_ERR_INVALID, "outside the 10 classes");
    CHECK_FAILS(kd_net_forward(net, x, 0, 0), KD_ERR_INVALID, "batch size must be >= 1");
    kd_net_free(net);
}

int main(void)
{
    test_presets();
    test_spec_errors();
    test_backward_before_forward();
    gradcheck("{\"input\": [12], \"layers\": [{\"type\": \"dense\", \"units\": 8}, {\"type\": \"relu\"},"
              "{\"type\": \"dense\", \"units\": 6}, {\"type\": \"sigmoid\"}, {\"type\": \"dense\", \"units\": 4},"
              "{\"type\": \"softmax\"}]}", 5);
    gradcheck("{\"input\": [2, 9, 9], \"layers\": [{\"type\": \"conv2d\", \"filters\": 3, \"kernel\": 3, \"padding\": 1},"
              "{\"type\": \"batchnorm\"}, {\"type\": \"tanh\"}, {\"type\": \"avgpool\", \"size\": 2},"
              "{\"type\": \"conv2d\", \"filters\": 4, \"kernel\": [2, 3], \"stride\": 1}, {\"type\": \"avgpool\", \"size\": 2, \"stride\": 1},"
              "{\"type\": \"flatten\"}, {\"type\": \"dropout\", \"rate\": 0.3}, {\"type\": \"dense\", \"units\": 5},"
              "{\"type\": \"batchnorm\"}, {\"type\": \"relu\"}, {\"type\": \"dense\", \"units\": 3}, {\"type\": \"softmax\"}]}", 4);
    gradcheck("mlp", 3);
    gradcheck("lenet", 2);
    return check_summary();
}
