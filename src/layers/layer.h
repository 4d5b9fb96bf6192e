/* The layer table: every layer kind is one kd_layer_ops (like KANN's
 * operator table / a ggml backend op), implemented in one file under
 * src/layers/. The network (src/net.c) owns all buffers; a layer only sees
 * slices of them through kd_pass. */
#ifndef KD_LAYER_H
#define KD_LAYER_H

#include <cjson/cJSON.h>

#include "kindling.h"
#include "rng.h"

typedef enum kd_init_kind { KD_INIT_XAVIER = 0, KD_INIT_HE = 1 } kd_init_kind;

typedef struct kd_layer kd_layer;

/* Every layer kind, in the order of the registry (src/layers/registry.c).
 * Backends switch on it (gpu/layers_gpu.c) instead of comparing names. */
typedef enum kd_layer_kind {
    KD_LAYER_DENSE,
    KD_LAYER_CONV2D,
    KD_LAYER_MAXPOOL,
    KD_LAYER_AVGPOOL,
    KD_LAYER_RELU,
    KD_LAYER_TANH,
    KD_LAYER_SIGMOID,
    KD_LAYER_FLATTEN,
    KD_LAYER_DROPOUT,
    KD_LAYER_BATCHNORM,
    KD_LAYER_SOFTMAX,
    KD_LAYER_KINDS /* how many */
} kd_layer_kind;

/* What one forward or backward call of one layer sees. */
typedef struct kd_pass {
    int batch;
    int training;       /* dropout active, batch norm uses batch statistics */
    const float *W, *B; /* this layer's weight and bias (NULL if none) */
    float *dW, *dB;     /* their gradients: backward WRITES them (no accumulate) */
    float *state;       /* non-trainable state (bn: running mean then var) */
    float *saved;       /* this layer's scratch kept from forward to backward */
    float *work;        /* shared scratch, valid only during one call */
    kd_rng *rng;        /* for dropout; seeded per step by the network */
} kd_pass;

typedef struct kd_layer_ops {
    kd_layer_kind kind;
    const char *type; /* the spec's "type" */
    /* Read this type's keys from cfg (and write back defaults so the
     * resolved spec is complete), check them, infer L->out from L->in and
     * fill weight/bias/state counts and L->weight_dims. On error return a
     * status with a message about the problem; the network prefixes the
     * layer's index and name. */
    kd_status (*setup)(kd_layer *L, cJSON *cfg);
    /* Initialise W and B (may be NULL when counts are 0) and state. */
    void (*init)(kd_layer *L, float *W, float *B, float *state, kd_rng *rng);
    /* Floats of per-layer scratch kept from forward to backward. May be NULL (0). */
    size_t (*saved_floats)(const kd_layer *L, int batch);
    /* Floats of shared scratch needed during forward/backward. May be NULL (0). */
    size_t (*work_floats)(const kd_layer *L, int batch);
    /* y = f(x): x is batch * size(in), y is batch * size(out). */
    void (*forward)(kd_layer *L, const kd_pass *p, const float *x, float *y);
    /* Given dy (batch * size(out)), write dW/dB (if any) and dx (batch *
     * size(in)); dx is NULL when no one needs it (first layer). */
    void (*backward)(kd_layer *L, const kd_pass *p, const float *x, const float *y,
                     const float *dy, float *dx);
} kd_layer_ops;

struct kd_layer {
    const kd_layer_ops *ops;
    int index;
    char name[64];
    kd_shape in, out;

    /* Hyper-parameters; each type uses its own. */
    int units;                 /* dense */
    int filters;               /* conv2d */
    int kernel_h, kernel_w;    /* conv2d, pools */
    int stride_h, stride_w;    /* conv2d, pools */
    int pad_h, pad_w;          /* conv2d, pools */
    int use_bias;              /* dense, conv2d */
    float rate;                /* dropout: probability of dropping */
    float eps, momentum;       /* batchnorm (PyTorch convention: momentum 0.1) */
    kd_init_kind init;         /* dense, conv2d */

    /* Parameters: weight then bias, contiguous in the net's flat buffer. */
    size_t weight_count, bias_count, state_count;
    int weight_rank;
    int weight_dims[KD_MAX_RANK];
    size_t weight_offset, bias_offset, state_offset; /* set by the network */
};

/* The registry: NULL if no such type. */
const kd_layer_ops *kd_layer_ops_find(const char *type);
/* The ops of a kind; NULL outside [0, KD_LAYER_KINDS). */
const kd_layer_ops *kd_layer_ops_of(kd_layer_kind kind);
/* "dense, conv2d, ...": every type in the registry's order, into buf (for
 * error messages); returns buf. */
const char *kd_layer_types(char *buf, size_t len);

/* Helpers for setup(): read an optional integer / number / string key,
 * writing the default back when absent; fail with a message naming the key. */
kd_status kd_cfg_int(cJSON *cfg, const char *key, int def, int min, int *out);
kd_status kd_cfg_num(cJSON *cfg, const char *key, double def, double min, double max, double *out);
/* The same in [min, max): max itself is refused, with the same message form. */
kd_status kd_cfg_num_below(cJSON *cfg, const char *key, double def, double min, double max, double *out);
/* Accepts an int or a [h, w] pair. */
kd_status kd_cfg_pair(cJSON *cfg, const char *key, int def, int min, int *h, int *w);
kd_status kd_cfg_init(cJSON *cfg, kd_init_kind def, kd_init_kind *out);
/* An optional true/false key. */
kd_status kd_cfg_bool(cJSON *cfg, const char *key, int def, int *out);
/* Reject any key other than "type", "name" and the NULL-terminated list
 * `known`, so a misspelt option is an error instead of being ignored. */
kd_status kd_cfg_known_keys(const cJSON *cfg, const char *const *known);

/* Shared initialisers: uniform Xavier (Glorot) or He (Kaiming normal). */
void kd_init_weights(float *w, size_t n, int fan_in, int fan_out, kd_init_kind kind, kd_rng *rng);

#endif
