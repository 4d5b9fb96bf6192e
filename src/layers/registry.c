/* The layer registry, the setup() helpers that read a layer's JSON keys,
 * and the shared weight initialisers. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "layer.h"

extern const kd_layer_ops kd_dense_ops, kd_conv2d_ops, kd_maxpool_ops, kd_avgpool_ops,
    kd_relu_ops, kd_tanh_ops, kd_sigmoid_ops, kd_flatten_ops, kd_dropout_ops,
    kd_batchnorm_ops, kd_softmax_ops;

/* The one table of layer kinds, indexed by kind (the test checks that each
 * entry's kind is its index). */
static const kd_layer_ops *const all_ops[KD_LAYER_KINDS] = {
    [KD_LAYER_DENSE] = &kd_dense_ops,         [KD_LAYER_CONV2D] = &kd_conv2d_ops,
    [KD_LAYER_MAXPOOL] = &kd_maxpool_ops,     [KD_LAYER_AVGPOOL] = &kd_avgpool_ops,
    [KD_LAYER_RELU] = &kd_relu_ops,           [KD_LAYER_TANH] = &kd_tanh_ops,
    [KD_LAYER_SIGMOID] = &kd_sigmoid_ops,     [KD_LAYER_FLATTEN] = &kd_flatten_ops,
    [KD_LAYER_DROPOUT] = &kd_dropout_ops,     [KD_LAYER_BATCHNORM] = &kd_batchnorm_ops,
    [KD_LAYER_SOFTMAX] = &kd_softmax_ops,
};

const kd_layer_ops *kd_layer_ops_find(const char *type)
{
    if (!type)
        return NULL;
    for (int k = 0; k < KD_LAYER_KINDS; k++)
        if (strcmp(all_ops[k]->type, type) == 0)
            return all_ops[k];
    return NULL;
}

const kd_layer_ops *kd_layer_ops_of(kd_layer_kind kind)
{
    return (unsigned)kind < KD_LAYER_KINDS ? all_ops[kind] : NULL;
}

const char *kd_layer_types(char *buf, size_t len)
{
    size_t used = 0;
    if (len)
        buf[0] = '\0';
    for (int k = 0; k < KD_LAYER_KINDS && used < len; k++) {
        int w = snprintf(buf + used, len - used, "%s%s", k ? ", " : "", all_ops[k]->type);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    return buf;
}

/* What the user wrote, for messages: a number, "text", true, an array... */
static const char *describe(const cJSON *item, char *buf, size_t len)
{
    if (cJSON_IsNumber(item))
        snprintf(buf, len, "%.10g", item->valuedouble);
    else if (cJSON_IsString(item))
        snprintf(buf, len, "\"%.40s\"", item->valuestring);
    else if (cJSON_IsBool(item))
        snprintf(buf, len, "%s", cJSON_IsTrue(item) ? "true" : "false");
    else if (cJSON_IsNull(item))
        snprintf(buf, len, "null");
    else if (cJSON_IsArray(item))
        snprintf(buf, len, "an array of %d items", cJSON_GetArraySize(item));
    else if (cJSON_IsObject(item))
        snprintf(buf, len, "an object");
    else
        snprintf(buf, len, "an invalid value");
    return buf;
}

static int is_int_at_least(const cJSON *item, int min)
{
    if (!cJSON_IsNumber(item))
        return 0;
    double v = item->valuedouble;
    return v == floor(v) && v >= (double)min && v <= (double)INT_MAX;
}

/* Integer keys (units, filters, kernel, stride, padding, pool size) are at
 * most this, like the input dimensions in spec.c, so the layers' int
 * arithmetic on them (twice the padding, kernel areas) cannot overflow.
 * The sizes built from them are bounded again by spec.c. */
#define KD_CFG_MAX_INT (1 << 24)

static kd_status too_large(const char *key, const cJSON *item)
{
    char buf[64];
    return kd_fail(KD_ERR_INVALID, "key '%s': %s is too large (at most %d)", key,
                   describe(item, buf, sizeof buf), KD_CFG_MAX_INT);
}

static int is_too_large(const cJSON *item)
{
    return cJSON_IsNumber(item) && item->valuedouble > (double)KD_CFG_MAX_INT;
}

static kd_status write_back_failed(const char *key)
{
    return kd_fail(KD_ERR_NOMEM, "out of memory writing the default of key '%s'", key);
}

kd_status kd_cfg_int(cJSON *cfg, const char *key, int def, int min, int *out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!item) {
        if (!cJSON_AddNumberToObject(cfg, key, def))
            return write_back_failed(key);
        *out = def;
        return KD_OK;
    }
    if (!is_int_at_least(item, min) && !is_too_large(item)) {
        char buf[64];
        return kd_fail(KD_ERR_INVALID, "key '%s': must be an integer >= %d, got %s", key, min,
                       describe(item, buf, sizeof buf));
    }
    if (is_too_large(item))
        return too_large(key, item);
    *out = (int)item->valuedouble;
    return KD_OK;
}

static kd_status cfg_num(cJSON *cfg, const char *key, double def, double min, double max, int max_open,
                         double *out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!item) {
        if (!cJSON_AddNumberToObject(cfg, key, def))
            return write_back_failed(key);
        *out = def;
        return KD_OK;
    }
    /* The negated comparisons also reject NaN. */
    double v = cJSON_IsNumber(item) ? item->valuedouble : NAN;
    if (!(v >= min && (max_open ? v < max : v <= max))) {
        char buf[64];
        return kd_fail(KD_ERR_INVALID, "key '%s': must be a number in [%g, %g%c, got %s", key, min, max,
                       max_open ? ')' : ']', describe(item, buf, sizeof buf));
    }
    *out = v;
    return KD_OK;
}

kd_status kd_cfg_num(cJSON *cfg, const char *key, double def, double min, double max, double *out)
{
    return cfg_num(cfg, key, def, min, max, 0, out);
}

kd_status kd_cfg_num_below(cJSON *cfg, const char *key, double def, double min, double max, double *out)
{
    return cfg_num(cfg, key, def, min, max, 1, out);
}

kd_status kd_cfg_pair(cJSON *cfg, const char *key, int def, int min, int *h, int *w)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!item) {
        if (!cJSON_AddNumberToObject(cfg, key, def))
            return write_back_failed(key);
        *h = *w = def;
        return KD_OK;
    }
    if (is_too_large(item))
        return too_large(key, item);
    if (is_int_at_least(item, min)) {
        *h = *w = (int)item->valuedouble;
        return KD_OK;
    }
    for (int i = 0; cJSON_IsArray(item) && cJSON_GetArraySize(item) == 2 && i < 2; i++)
        if (is_too_large(cJSON_GetArrayItem(item, i)))
            return too_large(key, cJSON_GetArrayItem(item, i));
    if (cJSON_IsArray(item) && cJSON_GetArraySize(item) == 2 &&
        is_int_at_least(cJSON_GetArrayItem(item, 0), min) &&
        is_int_at_least(cJSON_GetArrayItem(item, 1), min)) {
        *h = (int)cJSON_GetArrayItem(item, 0)->valuedouble;
        *w = (int)cJSON_GetArrayItem(item, 1)->valuedouble;
        return KD_OK;
    }
    char buf[64];
    return kd_fail(KD_ERR_INVALID,
                   "key '%s': must be an integer >= %d or a pair [height, width] of them, got %s",
                   key, min, describe(item, buf, sizeof buf));
}

kd_status kd_cfg_init(cJSON *cfg, kd_init_kind def, kd_init_kind *out)
{
    static const char *const names[] = {"xavier", "he"};
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(cfg, "init");
    if (!item) {
        if (!cJSON_AddStringToObject(cfg, "init", names[def]))
            return write_back_failed("init");
        *out = def;
        return KD_OK;
    }
    if (cJSON_IsString(item)) {
        if (strcmp(item->valuestring, "xavier") == 0) {
            *out = KD_INIT_XAVIER;
            return KD_OK;
        }
        if (strcmp(item->valuestring, "he") == 0) {
            *out = KD_INIT_HE;
            return KD_OK;
        }
    }
    char buf[64];
    return kd_fail(KD_ERR_INVALID, "key 'init': must be \"xavier\" or \"he\", got %s",
                   describe(item, buf, sizeof buf));
}

kd_status kd_cfg_bool(cJSON *cfg, const char *key, int def, int *out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!item) {
        if (!cJSON_AddBoolToObject(cfg, key, def))
            return write_back_failed(key);
        *out = def != 0;
        return KD_OK;
    }
    if (!cJSON_IsBool(item)) {
        char buf[64];
        return kd_fail(KD_ERR_INVALID, "key '%s': must be true or false, got %s", key,
                       describe(item, buf, sizeof buf));
    }
    *out = cJSON_IsTrue(item);
    return KD_OK;
}

kd_status kd_cfg_known_keys(const cJSON *cfg, const char *const *known)
{
    const cJSON *item;
    cJSON_ArrayForEach(item, cfg)
    {
        const char *k = item->string ? item->string : "";
        int ok = strcmp(k, "type") == 0 || strcmp(k, "name") == 0;
        for (const char *const *q = known; !ok && *q; q++)
            ok = strcmp(k, *q) == 0;
        if (ok)
            continue;
        char list[256] = "type, name";
        for (const char *const *q = known; *q; q++) {
            size_t n = strlen(list);
            snprintf(list + n, sizeof list - n, ", %s", *q);
        }
        return kd_fail(KD_ERR_INVALID, "unknown key '%.64s' (this layer takes: %s)", k, list);
    }
    return KD_OK;
}

void kd_init_weights(float *w, size_t n, int fan_in, int fan_out, kd_init_kind kind, kd_rng *rng)
{
    if (kind == KD_INIT_HE) {
        /* Kaiming normal for ReLU-like layers: std sqrt(2 / fan_in). */
        double std = sqrt(2.0 / (fan_in > 0 ? fan_in : 1));
        for (size_t i = 0; i < n; i++)
            w[i] = (float)(std * kd_rng_normal(rng));
    } else {
        /* Glorot uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)). */
        double a = sqrt(6.0 / (fan_in + fan_out > 0 ? fan_in + fan_out : 1));
        for (size_t i = 0; i < n; i++)
            w[i] = (float)(a * (2.0 * kd_rng_uniform(rng) - 1.0));
    }
}
