/* The network: layers from the spec, one flat parameter vector, one flat
 * gradient vector, and the activations of the last forward pass. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "net.h"

#define KD_PREDICT_BATCH 256

void kd_net_free(kd_net *net)
{
    if (!net)
        return;
    net->backend->detach(net);
    free(net->layers);
    free(net->params);
    free(net->grads);
    free(net->state);
    free(net->spec_json);
    free(net);
}

kd_status kd_net_create(const char *spec, uint64_t seed, kd_net **out)
{
    if (!out)
        return kd_fail(KD_ERR_INVALID, "kd_net_create: NULL output pointer");
    *out = NULL;
    if (!spec)
        return kd_fail(KD_ERR_INVALID, "kd_net_create: NULL spec");
    const char *json = kd_preset_json(spec);
    if (!json) {
        const char *p = spec;
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (*p != '{')
            return kd_fail(KD_ERR_INVALID, "unknown network preset '%s' (presets: mlp, lenet; or give JSON text / a spec file)", spec);
        json = spec;
    }
    kd_net *net = kd_calloc(1, sizeof *net, "network");
    if (!net)
        return KD_ERR_NOMEM;
    /* Every network starts on the CPU backend (attaching it cannot fail). */
    net->backend = &kd_cpu_backend;
    net->backend->attach(net, 0);
    kd_status s = kd_spec_build(json, &net->input, &net->layers, &net->num_layers, &net->spec_json);
    if (s != KD_OK) {
        free(net);
        return s;
    }
    /* Lay the parameters out in one vector: weight then bias, layer by layer. */
    for (int i = 0; i < net->num_layers; i++) {
        kd_layer *L = &net->layers[i];
        L->weight_offset = net->param_count;
        L->bias_offset = L->weight_offset + L->weight_count;
        net->param_count = L->bias_offset + L->bias_count;
        L->state_offset = net->state_count;
        net->state_count += L->state_count;
    }
    net->num_classes = net->layers[net->num_layers - 1].out.dim[0];
    net->params = kd_calloc(net->param_count, sizeof(float), "parameters");
    net->grads = kd_calloc(net->param_count, sizeof(float), "gradients");
    net->state = kd_calloc(net->state_count, sizeof(float), "layer state");
    if (!net->params || !net->grads || !net->state) {
        kd_net_free(net);
        return KD_ERR_NOMEM;
    }
    kd_net_init_params(net, seed);
    net->noise_seed = seed;
    *out = net;
    return KD_OK;
}

kd_status kd_net_create_from_file(const char *spec_path, uint64_t seed, kd_net **out)
{
    if (!out || !spec_path)
        return kd_fail(KD_ERR_INVALID, "kd_net_create_from_file: NULL argument");
    *out = NULL;
    FILE *f = fopen(spec_path, "rb");
    if (!f)
        return kd_fail(KD_ERR_IO, "%s: cannot open spec file", spec_path);
    char *text = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        len = ftell(f);
    if (len < 0 || len > (16 << 20) || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return kd_fail(KD_ERR_IO, "%s: cannot read spec file (or larger than 16 MiB)", spec_path);
    }
    text = kd_malloc((size_t)len + 1, "spec text");
    if (!text) {
        fclose(f);
        return KD_ERR_NOMEM;
    }
    size_t got = fread(text, 1, (size_t)len, f);
    fclose(f);
    text[got] = '\0';
    kd_status s = got == (size_t)len ? KD_OK : kd_fail(KD_ERR_IO, "%s: short read", spec_path);
    const char *p = text;
    while (s == KD_OK && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    /* A file always holds JSON, never a preset name. */
    if (s == KD_OK && *p != '{')
        s = kd_fail(KD_ERR_INVALID, "%s: a spec file must hold a JSON object ({\"input\": ..., \"layers\": [...]})", spec_path);
    if (s == KD_OK && (s = kd_net_create(p, seed, out)) != KD_OK)
        kd_fail_context(s, "%s", spec_path);
    free(text);
    return s;
}

kd_status kd_net_init_params(kd_net *net, uint64_t seed)
{
    if (!net)
        return kd_fail(KD_ERR_INVALID, "NULL network");
    for (int i = 0; i < net->num_layers; i++) {
        kd_layer *L = &net->layers[i];
        kd_rng rng;
        /* One stream per layer: changing one layer leaves the others' init alone. */
        kd_rng_seed(&rng, seed, 0x1000u + (uint64_t)i);
        if (L->ops->init)
            L->ops->init(L, L->weight_count ? net->params + L->weight_offset : NULL,
                         L->bias_count ? net->params + L->bias_offset : NULL,
                         L->state_count ? net->state + L->state_offset : NULL, &rng);
    }
    net->backend->host_written(net, KD_BUF_PARAMS | KD_BUF_STATE);
    return KD_OK;
}

const char *kd_net_spec_json(const kd_net *net) { return net ? net->spec_json : NULL; }
kd_shape kd_net_input_shape(const kd_net *net) { return net->input; }
int kd_net_num_classes(const kd_net *net) { return net->num_classes; }
size_t kd_net_param_count(const kd_net *net) { return net->param_count; }
size_t kd_net_state_count(const kd_net *net) { return net->state_count; }

/* The host buffers; copies from a device are kd_net_to_host's (context.c). */
float *kd_net_params(kd_net *net) { return net->params; }
float *kd_net_grads(kd_net *net) { return net->grads; }
float *kd_net_state(kd_net *net) { return net->state; }
int kd_net_num_layers(const kd_net *net) { return net->num_layers; }

kd_status kd_net_layer_info(const kd_net *net, int i, kd_layer_info *out)
{
    if (!net || !out || i < 0 || i >= net->num_layers)
        return kd_fail(KD_ERR_INVALID, "layer index %d out of range [0, %d)", i, net ? net->num_layers : 0);
    const kd_layer *L = &net->layers[i];
    memset(out, 0, sizeof *out);
    out->index = i;
    out->name = L->name;
    out->type = L->ops->type;
    out->in = L->in;
    out->out = L->out;
    out->weight_offset = L->weight_offset;
    out->weight_count = L->weight_count;
    out->weight_rank = L->weight_rank;
    memcpy(out->weight_dims, L->weight_dims, sizeof out->weight_dims);
    out->bias_offset = L->bias_offset;
    out->bias_count = L->bias_count;
    out->state_offset = L->state_offset;
    out->state_count = L->state_count;
    return KD_OK;
}

void kd_net_set_noise_seed(kd_net *net, uint64_t seed, int64_t step)
{
    net->noise_seed = seed;
    net->noise_step = step;
}

kd_status kd_net_forward(kd_net *net, const float *x, int batch, int training)
{
    if (!net || !x)
        return kd_fail(KD_ERR_INVALID, "kd_net_forward: NULL argument");
    if (batch < 1)
        return kd_fail(KD_ERR_INVALID, "batch size must be >= 1, got %d", batch);
    net->last_batch = 0;
    KD_TRY(net->backend->forward(net, x, batch, training));
    net->last_x = x;
    net->last_batch = batch;
    net->last_training = training;
    return KD_OK;
}

const float *kd_net_output(const kd_net *net)
{
    if (!net || !net->last_batch)
        return NULL;
    /* A device backend fetches its output lazily (a cache, hence the cast). */
    return net->backend->output((kd_net *)net);
}

kd_status kd_net_activation(kd_net *net, int layer, float *host)
{
    if (!net || !host || layer < 0 || layer >= net->num_layers || !net->last_batch)
        return kd_fail(KD_ERR_STATE, "no activations of layer %d (no forward pass, or no such layer)", layer);
    return net->backend->activation(net, layer, host);
}

static kd_status check_labels(const kd_net *net, const int32_t *labels)
{
    if (!labels)
        return kd_fail(KD_ERR_INVALID, "NULL labels");
    for (int b = 0; b < net->last_batch; b++)
        if (labels[b] < 0 || labels[b] >= net->num_classes)
            return kd_fail(KD_ERR_INVALID, "label %d of batch sample %d is outside the %d classes [0, %d]",
                           labels[b], b, net->num_classes, net->num_classes - 1);
    return KD_OK;
}

kd_status kd_net_loss(kd_net *net, const int32_t *labels, double *loss, int *correct)
{
    if (!net || !net->last_batch)
        return kd_fail(KD_ERR_STATE, "kd_net_loss: no forward pass yet");
    KD_TRY(check_labels(net, labels));
    const float *p = kd_net_output(net);
    if (!p)
        return KD_ERR_DEVICE; /* the backend set the message */
    int K = net->num_classes, hits = 0;
    double sum = 0;
    for (int b = 0; b < net->last_batch; b++) {
        const float *row = p + (size_t)b * K;
        int best = 0;
        for (int k = 1; k < K; k++)
            if (row[k] > row[best])
                best = k;
        hits += best == labels[b];
        sum += kd_nll(row[labels[b]]);
    }
    if (loss)
        *loss = sum / net->last_batch;
    if (correct)
        *correct = hits;
    if (!isfinite(sum))
        return kd_fail(KD_ERR_NUMERIC, "loss is not finite (NaN or Inf in the network's output)");
    return KD_OK;
}

kd_status kd_net_backward(kd_net *net, const int32_t *labels)
{
    if (!net || !net->last_batch)
        return kd_fail(KD_ERR_STATE, "kd_net_backward: no forward pass yet");
    KD_TRY(check_labels(net, labels));
    return net->backend->backward(net, labels);
}

kd_status kd_output_check(const float *p, int batch, int classes, int64_t first)
{
    for (size_t i = 0; i < (size_t)batch * (size_t)classes; i++)
        if (!isfinite(p[i]))
            return kd_fail(KD_ERR_NUMERIC, "sample %lld: the network's output is %s (its weights overflow: the "
                           "model's training diverged; train it again with a lower learning rate)",
                           (long long)(first + (int64_t)(i / (size_t)classes)), isnan(p[i]) ? "NaN" : "Inf");
    return KD_OK;
}

kd_status kd_net_predict_batched(kd_net *net, const float *x, int64_t n, int batch_size, float *probs_out)
{
    if (!net || (!x && n) || (!probs_out && n))
        return kd_fail(KD_ERR_INVALID, "kd_net_predict: NULL argument");
    if (n < 0)
        return kd_fail(KD_ERR_INVALID, "kd_net_predict: negative sample count %lld", (long long)n);
    if (batch_size < 1)
        return kd_fail(KD_ERR_INVALID, "kd_net_predict: batch size must be >= 1, got %d", batch_size);
    size_t in = kd_shape_size(&net->input), K = (size_t)net->num_classes;
    for (int64_t at = 0; at < n; at += batch_size) {
        int b = (int)(n - at < batch_size ? n - at : batch_size);
        KD_TRY(kd_net_forward(net, x + (size_t)at * in, b, 0));
        const float *p = kd_net_output(net);
        if (!p)
            return KD_ERR_DEVICE; /* the backend set the message */
        KD_TRY(kd_output_check(p, b, (int)K, at));
        memcpy(probs_out + (size_t)at * K, p, sizeof(float) * K * (size_t)b);
    }
    return KD_OK;
}

kd_status kd_net_predict(kd_net *net, const float *x, int64_t n, float *probs_out)
{
    return kd_net_predict_batched(net, x, n, KD_PREDICT_BATCH, probs_out);
}
