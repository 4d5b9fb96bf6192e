/* Fuzzes the JSON network spec: kd_net_create on the input as JSON text,
 * then, for a network small enough to run quickly, a forward pass on
 * zeros, the loss, a backward pass, and a round trip of the resolved spec.
 *
 * The size gate uses the internal kd_spec_build (this harness links the
 * library's sources), so a hostile spec never makes the harness allocate
 * and initialise gigabytes: the library's own limits are what keep
 * kd_spec_build itself bounded. */
#include "fuzz_common.h"

#include "net.h"

/* Run a network only when everything it allocates for a batch of BATCH
 * stays under this many floats: fuzzing wants many small inputs per second. */
#define RUN_MAX_FLOATS ((size_t)4 << 20)
#define BATCH 2

/* Floats kd_net_create and one forward/backward of BATCH samples allocate
 * for these layers, or SIZE_MAX if it is more than RUN_MAX_FLOATS. */
static size_t run_cost(const kd_shape *input, const kd_layer *layers, int n)
{
    size_t total = kd_shape_size(input) * 3 * BATCH; /* input, two gradient buffers */
    for (int i = 0; i < n; i++) {
        const kd_layer *L = &layers[i];
        size_t parts[5] = {
            2 * (L->weight_count + L->bias_count) + L->state_count, /* params + grads */
            kd_shape_size(&L->out) * BATCH * 3,                    /* activation, gradient buffers */
            L->ops->saved_floats ? L->ops->saved_floats(L, BATCH) : 0,
            L->ops->work_floats ? L->ops->work_floats(L, BATCH) : 0,
            0};
        for (int k = 0; k < 5; k++) {
            if (parts[k] > RUN_MAX_FLOATS || total + parts[k] > RUN_MAX_FLOATS)
                return SIZE_MAX;
            total += parts[k];
        }
    }
    return total;
}

static void run_net(kd_net *net)
{
    kd_shape shape = kd_net_input_shape(net);
    size_t in = kd_shape_size(&shape), classes = (size_t)kd_net_num_classes(net);
    if (in == 0 || classes < 2)
        abort(); /* kd_net_create accepted a network without input or classes */

    /* The layer table must tile the flat vectors exactly. */
    size_t params = 0, state = 0;
    for (int i = 0; i < kd_net_num_layers(net); i++) {
        kd_layer_info li;
        if (kd_net_layer_info(net, i, &li) != KD_OK)
            abort();
        if (li.weight_offset != params || li.bias_offset != params + li.weight_count ||
            li.state_offset != state)
            abort();
        params += li.weight_count + li.bias_count;
        state += li.state_count;
    }
    if (params != kd_net_param_count(net) || state != kd_net_state_count(net))
        abort();

    float *x = calloc(in * BATCH, sizeof *x);
    int32_t labels[BATCH] = {0, (int32_t)classes - 1};
    if (!x)
        abort();
    kd_status s = kd_net_forward(net, x, BATCH, 1);
    fuzz_check_error(s);
    if (s == KD_OK) {
        double loss;
        int correct;
        s = kd_net_loss(net, labels, &loss, &correct);
        fuzz_check_error(s);
        if (correct < 0 || correct > BATCH)
            abort();
        if (s == KD_OK || s == KD_ERR_NUMERIC)
            fuzz_check_error(kd_net_backward(net, labels));
        float probs[BATCH * 64];
        if (classes <= 64)
            fuzz_check_error(kd_net_predict(net, x, BATCH, probs));
    }
    free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';

    /* The gate: build the layer list alone and price it. */
    kd_shape input;
    kd_layer *layers = NULL;
    int n = 0;
    char *resolved = NULL;
    kd_clear_error();
    kd_status s = kd_spec_build(text, &input, &layers, &n, &resolved);
    fuzz_check_error(s);
    if (s == KD_OK) {
        /* Whatever the spec says, the totals the network will allocate must
         * not wrap around (src/spec.c bounds them at 2^30). */
        size_t params = 0, state = 0;
        for (int i = 0; i < n; i++)
            if (__builtin_add_overflow(params, layers[i].weight_count, &params) ||
                __builtin_add_overflow(params, layers[i].bias_count, &params) ||
                __builtin_add_overflow(state, layers[i].state_count, &state) ||
                params > ((size_t)1 << 30) || state > ((size_t)1 << 30)) {
                fprintf(stderr, "spec accepted with %zu+ parameters, %zu+ state values\n", params, state);
                abort();
            }
    }
    int small = s == KD_OK && run_cost(&input, layers, n) != SIZE_MAX;
    free(layers);
    free(resolved);
    if (!small) {
        free(text);
        return 0;
    }

    kd_net *net = NULL;
    kd_clear_error();
    s = kd_net_create(text, 1, &net);
    fuzz_check_error(s);
    if (s == KD_OK) {
        run_net(net);
        /* The resolved spec must describe the same network and be a fixed point. */
        kd_net *again = NULL;
        kd_clear_error();
        s = kd_net_create(kd_net_spec_json(net), 1, &again);
        if (s != KD_OK) {
            fprintf(stderr, "resolved spec rejected: %s\n%s\n", kd_last_error(), kd_net_spec_json(net));
            abort();
        }
        if (kd_net_param_count(again) != kd_net_param_count(net) ||
            kd_net_num_layers(again) != kd_net_num_layers(net) ||
            strcmp(kd_net_spec_json(again), kd_net_spec_json(net)) != 0) {
            fprintf(stderr, "resolved spec differs:\n%s\n%s\n", kd_net_spec_json(net),
                    kd_net_spec_json(again));
            abort();
        }
        /* Same seed, same parameters. */
        if (memcmp(kd_net_params(again), kd_net_params(net),
                   kd_net_param_count(net) * sizeof(float)) != 0)
            abort();
        kd_net_free(again);
    } else if (net) {
        abort();
    }
    kd_net_free(net);
    free(text);
    return 0;
}
