/* Network specs: JSON text -> validated layer list with inferred shapes.
 * The presets are JSON too, so every network takes the same path. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "net.h"

/* The MXNet-on-Spark example networks. The MLP's ReLU layers start from He
 * initialisation (Xavier under-scales ReLU layers); LeNet keeps Xavier for tanh. */
static const char PRESET_MLP[] =
    "{\"input\": [1, 28, 28], \"layers\": ["
    "{\"type\": \"flatten\"},"
    "{\"type\": \"dense\", \"units\": 128, \"init\": \"he\"}, {\"type\": \"relu\"},"
    "{\"type\": \"dense\", \"units\": 64, \"init\": \"he\"}, {\"type\": \"relu\"},"
    "{\"type\": \"dense\", \"units\": 10}, {\"type\": \"softmax\"}]}";

static const char PRESET_LENET[] =
    "{\"input\": [1, 28, 28], \"layers\": ["
    "{\"type\": \"conv2d\", \"filters\": 20, \"kernel\": 5}, {\"type\": \"tanh\"},"
    "{\"type\": \"maxpool\", \"size\": 2},"
    "{\"type\": \"conv2d\", \"filters\": 50, \"kernel\": 5}, {\"type\": \"tanh\"},"
    "{\"type\": \"maxpool\", \"size\": 2},"
    "{\"type\": \"flatten\"},"
    "{\"type\": \"dense\", \"units\": 500}, {\"type\": \"tanh\"},"
    "{\"type\": \"dense\", \"units\": 10}, {\"type\": \"softmax\"}]}";

const char *kd_preset_json(const char *name)
{
    if (!name)
        return NULL;
    if (strcmp(name, "mlp") == 0)
        return PRESET_MLP;
    if (strcmp(name, "lenet") == 0)
        return PRESET_LENET;
    return NULL;
}

/* What a spec may ask for. The bounds keep every size the layers and the
 * network compute (in size_t and int) far from overflow, and turn a typo
 * such as "units": 1e9, or a hostile spec inside a checkpoint, into a clear
 * error instead of an attempt to allocate tens of gigabytes. They are
 * generous for this engine: LeNet has 431k parameters; a VGG-style first
 * layer on 224x224 images outputs 3.2M values per sample. */
#define KD_SPEC_MAX_SAMPLE_VALUES ((size_t)1 << 28) /* per sample, any layer's input, output or scratch */
#define KD_SPEC_MAX_PARAMS ((size_t)1 << 30)        /* trainable parameters, and state, of the network */

static kd_status parse_input(const cJSON *root, kd_shape *input)
{
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(root, "input");
    if (!in)
        return kd_fail(KD_ERR_INVALID, "spec: missing \"input\" (the per-sample shape, e.g. [1, 28, 28] or [784])");
    if (cJSON_IsNumber(in)) {
        if (in->valuedouble != (double)in->valueint)
            return kd_fail(KD_ERR_INVALID, "spec: \"input\" %g must be a whole number of features (at most 16777216)", in->valuedouble);
        input->rank = 1;
        input->dim[0] = in->valueint;
    } else if (cJSON_IsArray(in)) {
        int n = cJSON_GetArraySize(in);
        if (n != 1 && n != 3)
            return kd_fail(KD_ERR_INVALID, "spec: \"input\" must have 1 (features) or 3 (channels, height, width) dimensions, got %d", n);
        input->rank = n;
        for (int i = 0; i < n; i++) {
            const cJSON *d = cJSON_GetArrayItem(in, i);
            if (!cJSON_IsNumber(d) || d->valuedouble != (double)d->valueint)
                return kd_fail(KD_ERR_INVALID, "spec: \"input\" dimension %d is not an integer", i);
            input->dim[i] = d->valueint;
        }
    } else {
        return kd_fail(KD_ERR_INVALID, "spec: \"input\" must be an array of integers");
    }
    for (int i = 0; i < input->rank; i++)
        if (input->dim[i] < 1 || input->dim[i] > (1 << 24))
            return kd_fail(KD_ERR_INVALID, "spec: \"input\" dimension %d must be in [1, 16777216], got %d", i, input->dim[i]);
    for (int i = input->rank; i < KD_MAX_RANK; i++)
        input->dim[i] = 0;
    size_t size = kd_shape_size(input);
    if (size == 0 || size > KD_SPEC_MAX_SAMPLE_VALUES) {
        char buf[64];
        return kd_fail(KD_ERR_INVALID, "spec: \"input\" %s is too large (at most %zu values per sample)",
                       kd_shape_str(input, buf, sizeof buf), KD_SPEC_MAX_SAMPLE_VALUES);
    }
    return KD_OK;
}

/* Checks one set-up layer against the limits above and adds its parameter
 * and state counts to the network's running totals. */
static kd_status check_layer_limits(const kd_layer *L, size_t *params, size_t *state)
{
    char buf[64];
    size_t out = kd_shape_size(&L->out);
    if (out == 0 || out > KD_SPEC_MAX_SAMPLE_VALUES)
        return kd_fail(KD_ERR_SHAPE, "output %s is too large (at most %zu values per sample)",
                       kd_shape_str(&L->out, buf, sizeof buf), KD_SPEC_MAX_SAMPLE_VALUES);
    size_t saved = L->ops->saved_floats ? L->ops->saved_floats(L, 1) : 0;
    size_t work = L->ops->work_floats ? L->ops->work_floats(L, 1) : 0;
    if (saved > KD_SPEC_MAX_SAMPLE_VALUES || work > KD_SPEC_MAX_SAMPLE_VALUES)
        return kd_fail(KD_ERR_SHAPE, "needs %zu values of scratch per sample (at most %zu)",
                       saved > work ? saved : work, KD_SPEC_MAX_SAMPLE_VALUES);
    /* Each count is checked before it is added, so the sums cannot wrap. */
    if (L->weight_count > KD_SPEC_MAX_PARAMS || L->bias_count > KD_SPEC_MAX_PARAMS ||
        L->weight_count + L->bias_count > KD_SPEC_MAX_PARAMS - *params)
        return kd_fail(KD_ERR_SHAPE, "%zu weights and %zu biases bring the network over %zu parameters",
                       L->weight_count, L->bias_count, KD_SPEC_MAX_PARAMS);
    if (L->state_count > KD_SPEC_MAX_PARAMS - *state)
        return kd_fail(KD_ERR_SHAPE, "%zu state values bring the network over %zu",
                       L->state_count, KD_SPEC_MAX_PARAMS);
    *params += L->weight_count + L->bias_count;
    *state += L->state_count;
    return KD_OK;
}

static int valid_name(const char *s)
{
    if (!*s || strlen(s) >= 64)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.')
            return 0;
    return 1;
}

/* Names default to <type>_<k>, k counting layers of that type from 1
 * (Keras style), so checkpoints have stable, readable group names. */
static kd_status assign_name(kd_layer *layers, int i, cJSON *cfg)
{
    kd_layer *L = &layers[i];
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(cfg, "name");
    if (name) {
        if (!cJSON_IsString(name) || !valid_name(name->valuestring))
            return kd_fail(KD_ERR_INVALID, "\"name\" must be 1-63 characters of letters, digits, '_', '-' or '.'");
        snprintf(L->name, sizeof L->name, "%s", name->valuestring);
    } else {
        int k = 1;
        for (int j = 0; j < i; j++)
            if (layers[j].ops == L->ops)
                k++;
        snprintf(L->name, sizeof L->name, "%s_%d", L->ops->type, k);
        if (!cJSON_AddStringToObject(cfg, "name", L->name))
            return kd_fail(KD_ERR_NOMEM, "out of memory");
    }
    for (int j = 0; j < i; j++)
        if (strcmp(layers[j].name, L->name) == 0)
            return kd_fail(KD_ERR_INVALID, "name '%s' is already used by layer %d", L->name, j);
    return KD_OK;
}

static kd_status build_layers(cJSON *root, const kd_shape *input, kd_layer **out, int *out_n)
{
    cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "layers");
    if (!cJSON_IsArray(list))
        return kd_fail(KD_ERR_INVALID, "spec: missing \"layers\" (an array of layer objects)");
    int n = cJSON_GetArraySize(list);
    if (n < 1)
        return kd_fail(KD_ERR_INVALID, "spec: \"layers\" is empty");
    kd_layer *layers = kd_calloc((size_t)n, sizeof *layers, "layers");
    if (!layers)
        return KD_ERR_NOMEM;

    kd_shape cur = *input;
    kd_status s = KD_OK;
    size_t params = 0, state = 0;
    for (int i = 0; i < n; i++) {
        cJSON *cfg = cJSON_GetArrayItem(list, i);
        kd_layer *L = &layers[i];
        L->index = i;
        L->in = cur;
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(cfg, "type");
        if (!cJSON_IsObject(cfg)) {
            s = kd_fail(KD_ERR_INVALID, "spec: layer %d is not a JSON object", i);
            break;
        }
        char known[256];
        if (!cJSON_IsString(type)) {
            s = kd_fail(KD_ERR_INVALID, "spec: layer %d has no \"type\" (one of %s)", i,
                        kd_layer_types(known, sizeof known));
            break;
        }
        L->ops = kd_layer_ops_find(type->valuestring);
        if (!L->ops) {
            s = kd_fail(KD_ERR_INVALID, "spec: layer %d: unknown layer type '%s' (known: %s)", i,
                        type->valuestring, kd_layer_types(known, sizeof known));
            break;
        }
        if ((s = assign_name(layers, i, cfg)) != KD_OK ||
            (s = L->ops->setup(L, cfg)) != KD_OK ||
            (s = check_layer_limits(L, &params, &state)) != KD_OK) {
            char buf[64];
            kd_fail_context(s, "spec: layer %d (%s '%s', input %s)", i, L->ops->type, L->name,
                            kd_shape_str(&cur, buf, sizeof buf));
            break;
        }
        if (L->ops->kind == KD_LAYER_SOFTMAX && i != n - 1) {
            s = kd_fail(KD_ERR_INVALID, "spec: layer %d (softmax '%s'): softmax must be the last layer", i, L->name);
            break;
        }
        cur = L->out;
    }
    if (s == KD_OK && layers[n - 1].ops->kind != KD_LAYER_SOFTMAX)
        s = kd_fail(KD_ERR_INVALID, "spec: the last layer must be \"softmax\" (classification with cross-entropy), got '%s'",
                    layers[n - 1].ops->type);
    if (s == KD_OK && (layers[n - 1].out.rank != 1 || layers[n - 1].out.dim[0] < 2))
        s = kd_fail(KD_ERR_SHAPE, "spec: the softmax layer needs at least 2 classes");
    if (s != KD_OK) {
        free(layers);
        return s;
    }
    *out = layers;
    *out_n = n;
    return KD_OK;
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A key that obj (an object) names twice, or NULL; sorted, so a hostile
 * spec with many keys costs n log n. *s is set when memory runs out. */
static const char *repeated_key(const cJSON *obj, kd_status *s)
{
    size_t n = 0, k = 0;
    for (const cJSON *c = obj->child; c; c = c->next)
        n++;
    if (n < 2)
        return NULL;
    const char **keys = kd_malloc(n * sizeof *keys, "spec keys");
    if (!keys) {
        *s = KD_ERR_NOMEM;
        return NULL;
    }
    for (const cJSON *c = obj->child; c; c = c->next)
        keys[k++] = c->string ? c->string : "";
    qsort(keys, n, sizeof *keys, cmp_key);
    const char *dup = NULL;
    for (size_t i = 1; i < n && !dup; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0)
            dup = keys[i];
    free(keys);
    return dup;
}

/* JSON leaves duplicate keys undefined: cJSON finds the first, Python's
 * json module the last, so the CLI and the Spark path would build
 * different networks from one text. Every object in the spec, at any depth,
 * must name each key once. `where` names the part in messages ("the top
 * level", "layer 2"); the layers of the top-level list get their own. */
static kd_status check_duplicate_keys(const cJSON *item, const char *where, int top)
{
    kd_status s = KD_OK;
    const char *dup = cJSON_IsObject(item) ? repeated_key(item, &s) : NULL;
    if (s != KD_OK)
        return s;
    if (dup)
        return kd_fail(KD_ERR_INVALID, "spec: key \"%.64s\" appears more than once in %s (give each key once)",
                       dup, where);
    for (const cJSON *c = item->child; c; c = c->next) {
        if (!cJSON_IsObject(c) && !cJSON_IsArray(c))
            continue;
        if (top && c->string && strcmp(c->string, "layers") == 0 && cJSON_IsArray(c)) {
            int i = 0;
            for (const cJSON *l = c->child; l; l = l->next, i++) {
                char name[32];
                snprintf(name, sizeof name, "layer %d", i);
                KD_TRY(check_duplicate_keys(l, name, 0));
            }
        } else {
            KD_TRY(check_duplicate_keys(c, where, 0));
        }
    }
    return KD_OK;
}

/* The top level holds the input shape and the layers, nothing else: a
 * misspelt or misplaced key ("layer", "optimizer") is an error, as it is
 * inside a layer. */
static kd_status check_top_level_keys(const cJSON *root)
{
    for (const cJSON *k = root->child; k; k = k->next)
        if (!k->string || (strcmp(k->string, "input") != 0 && strcmp(k->string, "layers") != 0))
            return kd_fail(KD_ERR_INVALID, "spec: unknown top-level key \"%.64s\" (a spec has only \"input\" and "
                           "\"layers\"; layer settings go inside a layer object)", k->string ? k->string : "");
    return KD_OK;
}

kd_status kd_spec_build(const char *json, kd_shape *input, kd_layer **layers,
                        int *num_layers, char **resolved_json)
{
    if (!json)
        return kd_fail(KD_ERR_INVALID, "spec: NULL text");
    cJSON *root = cJSON_Parse(json);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= json ? (long)(at - json) : -1;
        return kd_fail(KD_ERR_INVALID, "spec: invalid JSON near offset %ld", off);
    }
    kd_status s = KD_OK;
    if (!cJSON_IsObject(root))
        s = kd_fail(KD_ERR_INVALID, "spec: must be a JSON object with \"input\" and \"layers\"");
    if (s == KD_OK)
        s = check_duplicate_keys(root, "the top level", 1);
    if (s == KD_OK)
        s = check_top_level_keys(root);
    if (s == KD_OK)
        s = parse_input(root, input);
    if (s == KD_OK)
        s = build_layers(root, input, layers, num_layers);
    if (s == KD_OK) {
        *resolved_json = cJSON_PrintUnformatted(root);
        if (!*resolved_json) {
            free(*layers);
            *layers = NULL;
            s = kd_fail(KD_ERR_NOMEM, "out of memory printing the spec");
        }
    }
    cJSON_Delete(root);
    return s;
}
