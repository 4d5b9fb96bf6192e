/* HDF5 checkpoints: the only code in Kindling that touches HDF5.
 *
 * Layout (self-describing, readable with h5dump / h5py / any HDF5 tool):
 *
 *   /                      attributes:
 *       format           = "kindling-checkpoint"          (string)
 *       format_version   = 2                              (int32)
 *       kindling_version = kd_version()                   (string)
 *       spec             = resolved spec JSON             (string)
 *       input_shape      = per-sample input dims          (int32[rank])
 *       num_classes                                        (int32)
 *   /layers                attribute order = names of the groups below, in
 *                          network order (string[])
 *   /layers/<layer name>   one group per layer with parameters or state;
 *                          attributes index (int32, position in the spec's
 *                          "layers" array) and type (string); datasets
 *       weight        float32, the layer's weight dims (PyTorch layout)
 *       bias          float32 [bias_count]
 *       running_mean  float32 [state_count / 2]   (batchnorm)
 *       running_var   float32 [state_count / 2]   (batchnorm)
 *   /optimizer             only when saved with an optimizer; attributes
 *                          kind, schedule (strings); lr, momentum, beta1,
 *                          beta2, eps, weight_decay, gamma, lr_min (float64);
 *                          nesterov (int32); step_size, total_steps, steps,
 *                          warmup_steps (int64); one float32 [param_count] dataset per
 *                          state slot ("velocity", "m", "v"), indexed like
 *                          the flat parameter vector.
 *   /training              only when saved with a train state; attributes
 *                          epoch (int32), step (int64), seed (uint64),
 *                          batch_size (int32); dataset history float64
 *                          [history_len, 9] with attribute columns =
 *                          "epoch,train_loss,train_accuracy,val_loss,
 *                          val_accuracy,test_loss,test_accuracy,seconds,
 *                          learning_rate" (NaN where not measured).
 *
 * Older files: version 1 had no warmup_steps (read as 0) and a history of
 * 7 columns without val_loss and val_accuracy (read as NaN). The reader
 * finds history columns by the names in `columns`, so either loads.
 *
 * Strings are written as variable-length UTF-8; the reader also accepts
 * fixed-length strings (what other tools often write).
 *
 * Saving builds the file in memory, writes it to "<path>.tmp-<host>-<pid>",
 * fsyncs it, renames it over path and fsyncs the directory, so a crash or
 * error at any point (a full disk included) leaves either the old or the
 * new checkpoint, never a mix.
 *
 * HDF5 prints its error stack to stderr by default; every entry point
 * silences that for the duration of the call (restoring the caller's
 * handler afterwards) and turns the innermost HDF5 error into the message.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "error.h"
#include "kindling.h"
#include "safe_file.h"

#define CKPT_FORMAT "kindling-checkpoint"
#define CKPT_FORMAT_VERSION 2
#define HISTORY_MAX_ROWS (1 << 20)

/* The history's columns as written: name and where the record keeps it. */
typedef struct history_column {
    const char *name;
    size_t offset;   /* of a double in kd_epoch_record; the epoch (int32) is column 0 */
    int required;    /* a version 1 file has every required column */
} history_column;

#define HCOL(field, req) {#field, offsetof(kd_epoch_record, field), req}
static const history_column HISTORY[] = {
    {"epoch", 0, 1},
    HCOL(train_loss, 1), HCOL(train_accuracy, 1),
    HCOL(val_loss, 0), HCOL(val_accuracy, 0),
    HCOL(test_loss, 1), HCOL(test_accuracy, 1),
    HCOL(seconds, 1), HCOL(learning_rate, 1),
};
#define HISTORY_COLUMNS ((int)(sizeof HISTORY / sizeof HISTORY[0]))
#define HISTORY_MAX_STORED_COLUMNS 64

/* ------------------------------------------------------------ HDF5 errors */

typedef struct h5_err_walk {
    char desc[256];
} h5_err_walk;

static herr_t h5_err_walk_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    h5_err_walk *w = data;
    /* Walking downward the last entry seen is the innermost, most specific one. */
    if (e->desc && e->desc[0])
        snprintf(w->desc, sizeof w->desc, "%s", e->desc);
    return 0;
}

/* The innermost message on HDF5's error stack. For an operating-system
 * failure HDF5 embeds "error message = '<strerror>'": keep only that. */
static void h5_reason(char *buf, size_t len)
{
    h5_err_walk w;
    w.desc[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, h5_err_walk_cb, &w);
    const char *os = strstr(w.desc, "error message = '");
    if (os) {
        os += strlen("error message = '");
        const char *end = strchr(os, '\'');
        int n = end ? (int)(end - os) : (int)strlen(os);
        snprintf(buf, len, "%.*s", n, os);
    } else {
        snprintf(buf, len, "%s", w.desc[0] ? w.desc : "unknown HDF5 error");
    }
}

/* Call right after the failing HDF5 call (any later HDF5 call clears the stack). */
static kd_status h5_fail(kd_status s, const char *path, const char *what)
{
    char reason[256];
    h5_reason(reason, sizeof reason);
    return kd_fail(s, "%s: %s (%s)", path, what, reason);
}

/* Silences HDF5's automatic error printing for one API call of ours. */
typedef struct h5_quiet {
    H5E_auto2_t func;
    void *data;
} h5_quiet;

static void h5_quiet_begin(h5_quiet *q)
{
    q->func = NULL;
    q->data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void h5_quiet_end(const h5_quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->func, q->data); }

static void close_attr(hid_t *id) { if (*id >= 0) H5Aclose(*id); *id = H5I_INVALID_HID; }
static void close_space(hid_t *id) { if (*id >= 0) H5Sclose(*id); *id = H5I_INVALID_HID; }
static void close_type(hid_t *id) { if (*id >= 0) H5Tclose(*id); *id = H5I_INVALID_HID; }
static void close_dset(hid_t *id) { if (*id >= 0) H5Dclose(*id); *id = H5I_INVALID_HID; }
static void close_plist(hid_t *id) { if (*id >= 0) H5Pclose(*id); *id = H5I_INVALID_HID; }

/* "128x784" ("scalar" for rank 0). */
static const char *dims_str(int rank, const hsize_t *dims, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    if (rank == 0) {
        snprintf(buf, len, "scalar");
        return buf;
    }
    for (int i = 0; i < rank && used < len; i++) {
        int n = snprintf(buf + used, len - used, i ? "x%llu" : "%llu", (unsigned long long)dims[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    return buf;
}

/* ------------------------------------------------------------------ writing */

static hid_t vlen_str_type(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0)
        return t;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return H5I_INVALID_HID;
    }
    return t;
}

/* Writes attribute `name` on obj from `count` elements (count < 0: scalar). */
static kd_status write_attr(const char *path, hid_t obj, const char *name, hid_t file_type,
                            hid_t mem_type, long long count, const void *data)
{
    char what[128];
    hid_t space = H5I_INVALID_HID, attr = H5I_INVALID_HID;
    kd_status s = KD_OK;
    snprintf(what, sizeof what, "writing attribute '%s'", name);
    if (count < 0) {
        space = H5Screate(H5S_SCALAR);
    } else {
        hsize_t dim = (hsize_t)count;
        space = H5Screate_simple(1, &dim, NULL);
    }
    if (space < 0)
        return h5_fail(KD_ERR_IO, path, what);
    attr = H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0 || H5Awrite(attr, mem_type, data) < 0)
        s = h5_fail(KD_ERR_IO, path, what);
    close_attr(&attr);
    close_space(&space);
    return s;
}

static kd_status write_attr_str(const char *path, hid_t obj, const char *name, const char *value)
{
    hid_t t = vlen_str_type();
    if (t < 0)
        return h5_fail(KD_ERR_IO, path, "creating a string type");
    kd_status s = write_attr(path, obj, name, t, t, -1, &value);
    H5Tclose(t);
    return s;
}

static kd_status write_attr_strs(const char *path, hid_t obj, const char *name,
                                 const char *const *values, int count)
{
    hid_t t = vlen_str_type();
    if (t < 0)
        return h5_fail(KD_ERR_IO, path, "creating a string type");
    kd_status s = write_attr(path, obj, name, t, t, count, values);
    H5Tclose(t);
    return s;
}

static kd_status write_attr_i32(const char *path, hid_t obj, const char *name, int32_t v)
{
    return write_attr(path, obj, name, H5T_STD_I32LE, H5T_NATIVE_INT32, -1, &v);
}

static kd_status write_attr_i64(const char *path, hid_t obj, const char *name, int64_t v)
{
    return write_attr(path, obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, -1, &v);
}

static kd_status write_attr_f64(const char *path, hid_t obj, const char *name, double v)
{
    return write_attr(path, obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, -1, &v);
}

/* A contiguous dataset of `rank` dims (file type float32 or float64). */
static kd_status write_dataset(const char *path, hid_t loc, const char *name, int rank,
                               const hsize_t *dims, hid_t file_type, hid_t mem_type,
                               const void *data)
{
    char what[160];
    hid_t space = H5I_INVALID_HID, ds = H5I_INVALID_HID;
    kd_status s = KD_OK;
    snprintf(what, sizeof what, "writing dataset '%s'", name);
    space = H5Screate_simple(rank, dims, NULL);
    if (space < 0)
        return h5_fail(KD_ERR_IO, path, what);
    ds = H5Dcreate2(loc, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (ds < 0)
        s = h5_fail(KD_ERR_IO, path, what);
    /* An empty dataset has nothing to write (and data may be NULL). */
    else if (H5Sget_simple_extent_npoints(space) > 0 &&
             H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        s = h5_fail(KD_ERR_IO, path, what);
    close_dset(&ds);
    close_space(&space);
    return s;
}

static kd_status write_f32(const char *path, hid_t loc, const char *name, int rank,
                           const hsize_t *dims, const float *data)
{
    return write_dataset(path, loc, name, rank, dims, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, data);
}

static int layer_has_tensors(const kd_layer_info *li)
{
    return li->weight_count > 0 || li->bias_count > 0 || li->state_count > 0;
}

/* A layer name becomes a group name: it must be one path component. */
static kd_status check_group_name(const char *path, const kd_layer_info *li)
{
    if (!li->name || !li->name[0] || strchr(li->name, '/') || strcmp(li->name, ".") == 0)
        return kd_fail(KD_ERR_INVALID, "%s: layer %d name '%s' cannot be an HDF5 group name",
                       path, li->index, li->name ? li->name : "");
    return KD_OK;
}

static kd_status write_layer(const char *path, hid_t layers, const kd_layer_info *li,
                             const float *params, const float *state)
{
    char what[160];
    hid_t g;
    kd_status s;
    snprintf(what, sizeof what, "creating group /layers/%s", li->name);
    g = H5Gcreate2(layers, li->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0)
        return h5_fail(KD_ERR_IO, path, what);
    s = write_attr_i32(path, g, "index", li->index);
    if (s == KD_OK)
        s = write_attr_str(path, g, "type", li->type);
    if (s == KD_OK && li->weight_count > 0) {
        hsize_t dims[KD_MAX_RANK];
        int rank = li->weight_rank;
        size_t product = 1;
        for (int d = 0; d < rank && d < KD_MAX_RANK; d++) {
            dims[d] = (hsize_t)li->weight_dims[d];
            product *= (size_t)li->weight_dims[d];
        }
        if (rank < 1 || rank > KD_MAX_RANK || product != li->weight_count)
            s = kd_fail(KD_ERR_STATE, "%s: layer '%s' weight dims (rank %d) do not match its %zu weights",
                        path, li->name, rank, li->weight_count);
        else
            s = write_f32(path, g, "weight", rank, dims, params + li->weight_offset);
    }
    if (s == KD_OK && li->bias_count > 0) {
        hsize_t dim = li->bias_count;
        s = write_f32(path, g, "bias", 1, &dim, params + li->bias_offset);
    }
    if (s == KD_OK && li->state_count > 0) {
        /* Batch norm: running mean then running variance, halves of the state. */
        hsize_t half = li->state_count / 2;
        if (li->state_count % 2)
            s = kd_fail(KD_ERR_STATE, "%s: layer '%s' has an odd state count %zu",
                        path, li->name, li->state_count);
        if (s == KD_OK)
            s = write_f32(path, g, "running_mean", 1, &half, state + li->state_offset);
        if (s == KD_OK)
            s = write_f32(path, g, "running_var", 1, &half, state + li->state_offset + half);
    }
    if (s != KD_OK)
        kd_fail_context(s, "layer '%s'", li->name);
    H5Gclose(g);
    return s;
}

static kd_status write_layers(const char *path, hid_t file, kd_net *net)
{
    int n = kd_net_num_layers(net);
    const char **order = kd_calloc((size_t)(n > 0 ? n : 1), sizeof *order, "layer order");
    const float *params = kd_net_params(net);
    const float *state = kd_net_state(net);
    int with_tensors = 0;
    kd_status s = KD_OK;
    hid_t layers;
    if (!order)
        return KD_ERR_NOMEM;
    layers = H5Gcreate2(file, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (layers < 0) {
        free(order);
        return h5_fail(KD_ERR_IO, path, "creating group /layers");
    }
    for (int i = 0; i < n && s == KD_OK; i++) {
        kd_layer_info li;
        s = kd_net_layer_info(net, i, &li);
        if (s != KD_OK || !layer_has_tensors(&li))
            continue;
        s = check_group_name(path, &li);
        if (s == KD_OK)
            s = write_layer(path, layers, &li, params, state);
        order[with_tensors++] = li.name;
    }
    if (s == KD_OK)
        s = write_attr_strs(path, layers, "order", order, with_tensors);
    H5Gclose(layers);
    free(order);
    return s;
}

static kd_status write_optimizer(const char *path, hid_t file, kd_optim *opt, size_t param_count)
{
    const kd_optim_config *cfg = kd_optim_get_config(opt);
    size_t n = kd_optim_param_count(opt), total = 0;
    const float *st = kd_optim_state(opt, &total);
    int slots = kd_optim_state_slots(opt);
    kd_status s = KD_OK;
    hid_t g;

    if (n != param_count)
        return kd_fail(KD_ERR_SHAPE, "%s: the optimizer covers %zu parameters, the network has %zu",
                       path, n, param_count);
    if (total != (size_t)slots * n || (total > 0 && !st))
        return kd_fail(KD_ERR_STATE, "%s: optimizer state holds %zu floats, expected %d slots x %zu",
                       path, total, slots, n);
    g = H5Gcreate2(file, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0)
        return h5_fail(KD_ERR_IO, path, "creating group /optimizer");
    s = write_attr_str(path, g, "kind", kd_optim_kind_name(cfg->kind));
    if (s == KD_OK) s = write_attr_f64(path, g, "lr", cfg->lr);
    if (s == KD_OK) s = write_attr_f64(path, g, "momentum", cfg->momentum);
    if (s == KD_OK) s = write_attr_i32(path, g, "nesterov", cfg->nesterov);
    if (s == KD_OK) s = write_attr_f64(path, g, "beta1", cfg->beta1);
    if (s == KD_OK) s = write_attr_f64(path, g, "beta2", cfg->beta2);
    if (s == KD_OK) s = write_attr_f64(path, g, "eps", cfg->eps);
    if (s == KD_OK) s = write_attr_f64(path, g, "weight_decay", cfg->weight_decay);
    if (s == KD_OK) s = write_attr_str(path, g, "schedule", kd_schedule_kind_name(cfg->schedule));
    if (s == KD_OK) s = write_attr_i64(path, g, "step_size", cfg->step_size);
    if (s == KD_OK) s = write_attr_f64(path, g, "gamma", cfg->gamma);
    if (s == KD_OK) s = write_attr_i64(path, g, "total_steps", cfg->total_steps);
    if (s == KD_OK) s = write_attr_f64(path, g, "lr_min", cfg->lr_min);
    if (s == KD_OK) s = write_attr_i64(path, g, "steps", kd_optim_steps(opt));
    if (s == KD_OK) s = write_attr_i64(path, g, "warmup_steps", cfg->warmup_steps);
    for (int k = 0; k < slots && s == KD_OK; k++) {
        const char *name = kd_optim_state_slot_name(opt, k);
        hsize_t dim = n;
        if (!name || !name[0] || strchr(name, '/'))
            s = kd_fail(KD_ERR_STATE, "%s: optimizer state slot %d has no usable name", path, k);
        else
            s = write_f32(path, g, name, 1, &dim, st + (size_t)k * n);
    }
    H5Gclose(g);
    return s;
}

static kd_status write_training(const char *path, hid_t file, const kd_train_state *st)
{
    kd_status s;
    hid_t g;
    double *rows = NULL;
    size_t len = st->history_len > 0 ? (size_t)st->history_len : 0;
    hsize_t dims[2] = {len, HISTORY_COLUMNS};

    if (len > 0 && !st->history)
        return kd_fail(KD_ERR_INVALID, "%s: train state has history_len %d but no history",
                       path, (int)st->history_len);
    rows = kd_malloc(len * HISTORY_COLUMNS * sizeof *rows, "checkpoint history");
    if (!rows)
        return KD_ERR_NOMEM;
    for (size_t i = 0; i < len; i++) {
        const kd_epoch_record *r = &st->history[i];
        double *row = rows + i * HISTORY_COLUMNS;
        row[0] = r->epoch;
        for (int c = 1; c < HISTORY_COLUMNS; c++)
            row[c] = *(const double *)(const void *)((const char *)r + HISTORY[c].offset);
    }
    g = H5Gcreate2(file, "training", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) {
        free(rows);
        return h5_fail(KD_ERR_IO, path, "creating group /training");
    }
    s = write_attr_i32(path, g, "epoch", st->epoch);
    if (s == KD_OK) s = write_attr_i64(path, g, "step", st->step);
    if (s == KD_OK)
        s = write_attr(path, g, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, -1, &st->seed);
    if (s == KD_OK) s = write_attr_i32(path, g, "batch_size", st->batch_size);
    if (s == KD_OK)
        s = write_dataset(path, g, "history", 2, dims, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, rows);
    if (s == KD_OK) {
        hid_t ds = H5Dopen2(g, "history", H5P_DEFAULT);
        if (ds < 0)
            s = h5_fail(KD_ERR_IO, path, "reopening dataset 'history'");
        else {
            char names[256];
            size_t used = 0;
            for (int c = 0; c < HISTORY_COLUMNS; c++)
                used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", c ? "," : "", HISTORY[c].name);
            s = write_attr_str(path, ds, "columns", names);
            H5Dclose(ds);
        }
    }
    H5Gclose(g);
    free(rows);
    return s;
}

/* "NaN at element 17" of v[0..n) into buf; 0 when every value is finite. */
static int first_non_finite(const float *v, size_t n, char *buf, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            snprintf(buf, len, "%s (element %zu)", isnan(v[i]) ? "NaN" : "Inf", i);
            return 1;
        }
    return 0;
}

/* A checkpoint holds only finite numbers: a network or optimizer state
 * with NaN or Inf (training diverged) is refused before anything is
 * written, so the previous checkpoint stays. */
static kd_status check_finite(const char *path, kd_net *net, kd_optim *opt)
{
    const float *params = kd_net_params(net), *state = kd_net_state(net);
    char at[64];
    for (int i = 0; i < kd_net_num_layers(net); i++) {
        kd_layer_info li;
        KD_TRY(kd_net_layer_info(net, i, &li));
        const char *what = first_non_finite(params + li.weight_offset, li.weight_count, at, sizeof at) ? "weight"
                           : first_non_finite(params + li.bias_offset, li.bias_count, at, sizeof at)   ? "bias"
                           : first_non_finite(state + li.state_offset, li.state_count, at, sizeof at) ? "state"
                                                                                                       : NULL;
        if (what)
            return kd_fail(KD_ERR_NUMERIC, "%s: not saved: layer '%s' %s holds %s (training diverged: try a "
                           "lower learning rate)", path, li.name, what, at);
    }
    size_t total = 0;
    const float *st = opt ? kd_optim_state(opt, &total) : NULL;
    if (st && first_non_finite(st, total, at, sizeof at))
        return kd_fail(KD_ERR_NUMERIC, "%s: not saved: the optimizer state holds %s (training diverged: try a lower "
                       "learning rate)", path, at);
    return KD_OK;
}

/* Everything inside the (temporary) file. */
static kd_status write_contents(const char *path, hid_t file, kd_net *net, kd_optim *opt,
                                const kd_train_state *state)
{
    kd_shape in = kd_net_input_shape(net);
    int32_t dims[KD_MAX_RANK];
    const char *spec = kd_net_spec_json(net);

    if (!spec)
        return kd_fail(KD_ERR_STATE, "%s: the network has no resolved spec", path);
    if (in.rank < 1 || in.rank > KD_MAX_RANK)
        return kd_fail(KD_ERR_STATE, "%s: the network's input rank %d is invalid", path, in.rank);
    for (int i = 0; i < in.rank; i++)
        dims[i] = in.dim[i];
    KD_TRY(write_attr_str(path, file, "format", CKPT_FORMAT));
    KD_TRY(write_attr_i32(path, file, "format_version", CKPT_FORMAT_VERSION));
    KD_TRY(write_attr_str(path, file, "kindling_version", kd_version()));
    KD_TRY(write_attr_str(path, file, "spec", spec));
    KD_TRY(write_attr(path, file, "input_shape", H5T_STD_I32LE, H5T_NATIVE_INT32, in.rank, dims));
    KD_TRY(write_attr_i32(path, file, "num_classes", kd_net_num_classes(net)));
    KD_TRY(write_layers(path, file, net));
    if (opt)
        KD_TRY(write_optimizer(path, file, opt, kd_net_param_count(net)));
    if (state)
        KD_TRY(write_training(path, file, state));
    return KD_OK;
}

/* Writes the finished file image to the temporary and commits it. The
 * image is written with plain write(2) so that every failure (a full disk,
 * a quota, EIO) is an error of ours: no HDF5 file is ever open on disk,
 * so nothing is left for HDF5 to flush or close at exit. */
static kd_status write_image(kd_safe_file *sf, const void *image, size_t len)
{
    const char *path = sf->path;
    int fd = open(sf->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        kd_status s = kd_fail(KD_ERR_IO, "%s: cannot create temporary file %s (%s)", path, sf->tmp, strerror(errno));
        kd_safe_file_abort(sf);
        return s;
    }
    const char *p = image;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            close(fd);
            kd_status s = kd_fail(KD_ERR_IO, "%s: writing %zu bytes to the temporary file failed after %zu (%s)%s",
                                  path, len, len - left, strerror(e),
                                  e == ENOSPC || e == EDQUOT ? "; free some space or save elsewhere, the previous "
                                                               "checkpoint (if any) is unchanged" : "");
            kd_safe_file_abort(sf);
            return s;
        }
        p += n;
        left -= (size_t)n;
    }
    if (close(fd) != 0) { /* NFS and quotas may report a failed write only here */
        kd_status s = kd_fail(KD_ERR_IO, "%s: closing the temporary file failed (%s)", path, strerror(errno));
        kd_safe_file_abort(sf);
        return s;
    }
    return kd_safe_file_commit(sf);
}

/* The checkpoint is built in memory (HDF5's core driver, no backing store)
 * and then written out by write_image. HDF5 writing to disk itself cannot
 * fail cleanly: after a failed write (ENOSPC) its H5Fclose fails too, the
 * file stays half-open in the library and HDF5 crashes at exit while
 * closing it again. The price is one image of the checkpoint in memory
 * (twice its size while copying it out), small next to the network and
 * optimizer state it holds. */
static kd_status save_quiet(const char *path, const kd_net *cnet, const kd_optim *copt,
                            const kd_train_state *state)
{
    /* The accessors take non-const objects because they also serve writers;
     * saving only reads through them. */
    kd_net *net = (kd_net *)cnet;
    kd_optim *opt = (kd_optim *)copt;
    kd_safe_file sf;
    hid_t fapl = H5I_INVALID_HID, file = H5I_INVALID_HID;
    void *image = NULL;
    size_t image_len = 0;
    kd_status s = KD_OK;

    s = check_finite(path, net, opt);
    if (s != KD_OK)
        return s;
    /* STRONG: closing the file closes anything an error path left open. */
    fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0 ||
        H5Pset_fapl_core(fapl, (size_t)1 << 20, 0) < 0) {
        s = h5_fail(KD_ERR_IO, path, "creating file access properties");
        goto done;
    }
    s = kd_safe_file_begin(&sf, path, "checkpoint temporary name");
    if (s != KD_OK)
        goto done;
    /* The name only identifies the in-memory file inside HDF5. */
    file = H5Fcreate(sf.tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (file < 0) {
        s = h5_fail(KD_ERR_IO, path, "creating the file in memory");
        kd_safe_file_abort(&sf);
        goto done;
    }
    s = write_contents(path, file, net, opt, state);
    if (s == KD_OK && H5Fflush(file, H5F_SCOPE_GLOBAL) < 0)
        s = h5_fail(KD_ERR_IO, path, "flushing the file");
    if (s == KD_OK) {
        ssize_t len = H5Fget_file_image(file, NULL, 0);
        if (len <= 0) {
            s = h5_fail(KD_ERR_IO, path, "sizing the file image");
        } else if (!(image = kd_malloc((size_t)len, "checkpoint file image"))) {
            s = KD_ERR_NOMEM;
        } else if (H5Fget_file_image(file, image, (size_t)len) != len) {
            s = h5_fail(KD_ERR_IO, path, "copying the file image");
        } else {
            image_len = (size_t)len;
        }
    }
    /* In memory: closing writes nothing and frees the driver's buffer. */
    if (H5Fclose(file) < 0 && s == KD_OK)
        s = h5_fail(KD_ERR_IO, path, "closing the file in memory");
    file = H5I_INVALID_HID;
    if (s == KD_OK)
        s = write_image(&sf, image, image_len);
    else
        kd_safe_file_abort(&sf);

done:
    free(image);
    close_plist(&fapl);
    return s;
}

kd_status kd_checkpoint_save(const char *path, const kd_net *net, const kd_optim *opt,
                             const kd_train_state *state)
{
    h5_quiet q;
    kd_status s;
    if (!path || !path[0] || !net)
        return kd_fail(KD_ERR_INVALID, "kd_checkpoint_save: path and net are required");
    /* A device's values (and the optimizer state it keeps) come back first. */
    s = kd_net_sync((kd_net *)net, (kd_optim *)opt);
    if (s != KD_OK)
        return kd_fail_context(s, "%s: copying the network to the host", path);
    h5_quiet_begin(&q);
    s = save_quiet(path, net, opt, state);
    h5_quiet_end(&q);
    return s;
}

/* ------------------------------------------------------------------ reading */

typedef struct reader {
    const char *path;
    hid_t file;
} reader;

/* 1 if obj has a link `name`, 0 if not, an error status (negative-free) via *s. */
static int has_link(const reader *r, hid_t obj, const char *name, kd_status *s)
{
    htri_t e = H5Lexists(obj, name, H5P_DEFAULT);
    if (e < 0) {
        char what[160];
        snprintf(what, sizeof what, "looking up '%s'", name);
        *s = h5_fail(KD_ERR_FORMAT, r->path, what);
        return 0;
    }
    return e > 0;
}

/* Opens attribute `name` of obj (labelled `where` in messages), requiring
 * its class to be one of the two given and exactly `count` elements
 * (count < 0: any count up to -count, returned in *got). */
static kd_status open_attr(const reader *r, hid_t obj, const char *where, const char *name,
                           H5T_class_t c1, H5T_class_t c2, long long count, hid_t *attr_out,
                           long long *got)
{
    hid_t attr, type, space;
    htri_t exists = H5Aexists(obj, name);
    H5T_class_t cls;
    hssize_t npoints;

    *attr_out = H5I_INVALID_HID;
    if (exists < 0)
        return h5_fail(KD_ERR_FORMAT, r->path, "reading attributes");
    if (!exists)
        return kd_fail(KD_ERR_FORMAT, "%s: %s has no '%s' attribute", r->path, where, name);
    attr = H5Aopen(obj, name, H5P_DEFAULT);
    if (attr < 0)
        return h5_fail(KD_ERR_FORMAT, r->path, "opening an attribute");
    type = H5Aget_type(attr);
    cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    close_type(&type);
    space = H5Aget_space(attr);
    npoints = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    close_space(&space);
    if (cls != c1 && cls != c2) {
        H5Aclose(attr);
        return kd_fail(KD_ERR_FORMAT, "%s: %s attribute '%s' has the wrong type (HDF5 class %d)",
                       r->path, where, name, (int)cls);
    }
    if ((count >= 0 && npoints != count) || (count < 0 && (npoints < 0 || npoints > -count))) {
        H5Aclose(attr);
        return kd_fail(KD_ERR_FORMAT, "%s: %s attribute '%s' has %lld elements, expected %s%lld",
                       r->path, where, name, (long long)npoints, count < 0 ? "at most " : "",
                       count < 0 ? -count : count);
    }
    if (got)
        *got = npoints;
    *attr_out = attr;
    return KD_OK;
}

/* A number attribute converted to mem_type (an integer type accepts only
 * integers; a float type accepts both). */
static kd_status read_attr_num(const reader *r, hid_t obj, const char *where, const char *name,
                               hid_t mem_type, void *out)
{
    hid_t attr;
    int want_float = H5Tget_class(mem_type) == H5T_FLOAT;
    kd_status s = open_attr(r, obj, where, name, H5T_INTEGER, want_float ? H5T_FLOAT : H5T_INTEGER,
                            1, &attr, NULL);
    if (s != KD_OK)
        return s;
    if (H5Aread(attr, mem_type, out) < 0) {
        char what[160];
        snprintf(what, sizeof what, "reading %s attribute '%s'", where, name);
        s = h5_fail(KD_ERR_FORMAT, r->path, what);
    }
    H5Aclose(attr);
    return s;
}

static kd_status read_attr_i64(const reader *r, hid_t obj, const char *where, const char *name,
                               int64_t *out)
{
    return read_attr_num(r, obj, where, name, H5T_NATIVE_INT64, out);
}

static kd_status read_attr_f64(const reader *r, hid_t obj, const char *where, const char *name,
                               double *out)
{
    return read_attr_num(r, obj, where, name, H5T_NATIVE_DOUBLE, out);
}

/* An int64 attribute that must fit an int. */
static kd_status read_attr_int(const reader *r, hid_t obj, const char *where, const char *name,
                               int *out)
{
    int64_t v;
    KD_TRY(read_attr_i64(r, obj, where, name, &v));
    if (v < INT_MIN || v > INT_MAX)
        return kd_fail(KD_ERR_FORMAT, "%s: %s attribute '%s' = %lld is out of range",
                       r->path, where, name, (long long)v);
    *out = (int)v;
    return KD_OK;
}

/* A scalar string attribute, variable- or fixed-length, as a malloc'd C string. */
static kd_status read_attr_str(const reader *r, hid_t obj, const char *where, const char *name,
                               char **out)
{
    hid_t attr, ftype = H5I_INVALID_HID, mtype = H5I_INVALID_HID;
    char what[160];
    char *buf = NULL;
    kd_status s;

    *out = NULL;
    s = open_attr(r, obj, where, name, H5T_STRING, H5T_STRING, 1, &attr, NULL);
    if (s != KD_OK)
        return s;
    snprintf(what, sizeof what, "reading %s attribute '%s'", where, name);
    ftype = H5Aget_type(attr);
    htri_t vlen = ftype >= 0 ? H5Tis_variable_str(ftype) : -1;
    if (vlen < 0) {
        s = h5_fail(KD_ERR_FORMAT, r->path, what);
    } else if (vlen) {
        char *v = NULL;
        mtype = vlen_str_type();
        if (mtype < 0 || H5Tset_cset(mtype, H5Tget_cset(ftype)) < 0 || H5Aread(attr, mtype, &v) < 0) {
            s = h5_fail(KD_ERR_FORMAT, r->path, what);
        } else {
            size_t n = v ? strlen(v) : 0;
            buf = kd_malloc(n + 1, "checkpoint string attribute");
            if (!buf)
                s = KD_ERR_NOMEM;
            else {
                if (n)
                    memcpy(buf, v, n);
                buf[n] = '\0';
            }
            H5free_memory(v); /* allocated by HDF5's allocator */
        }
    } else {
        /* Fixed length: read the bytes as stored, then cut padding. */
        size_t size = H5Tget_size(ftype);
        H5T_str_t pad = H5Tget_strpad(ftype);
        buf = kd_malloc(size + 1, "checkpoint string attribute");
        if (!buf)
            s = KD_ERR_NOMEM;
        else if (H5Aread(attr, ftype, buf) < 0)
            s = h5_fail(KD_ERR_FORMAT, r->path, what);
        else {
            buf[size] = '\0';
            size_t n = strlen(buf);
            while (pad == H5T_STR_SPACEPAD && n > 0 && buf[n - 1] == ' ')
                buf[--n] = '\0';
        }
    }
    close_type(&mtype);
    close_type(&ftype);
    H5Aclose(attr);
    if (s != KD_OK) {
        free(buf);
        return s;
    }
    *out = buf;
    return KD_OK;
}

/* Reads dataset `name` of loc into dst as float32 after checking that it
 * has exactly `rank` dims `want`. `label` names it in messages
 * ("layer 'dense_1' weight"). */
static kd_status read_f32(const reader *r, hid_t loc, const char *name, const char *label,
                          int rank, const hsize_t *want, float *dst)
{
    hid_t ds = H5I_INVALID_HID, type = H5I_INVALID_HID, space = H5I_INVALID_HID;
    hsize_t dims[H5S_MAX_RANK];
    char have_s[96], want_s[96], what[192];
    kd_status s = KD_OK;
    int have_rank;
    H5T_class_t cls;

    if (!has_link(r, loc, name, &s))
        return s != KD_OK ? s : kd_fail(KD_ERR_FORMAT, "%s: %s is missing", r->path, label);
    snprintf(what, sizeof what, "reading %s", label);
    ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0)
        return h5_fail(KD_ERR_FORMAT, r->path, what);
    type = H5Dget_type(ds);
    cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    if (cls != H5T_FLOAT && cls != H5T_INTEGER) {
        s = kd_fail(KD_ERR_FORMAT, "%s: %s is not numeric (HDF5 class %d), expected float32",
                    r->path, label, (int)cls);
        goto out;
    }
    space = H5Dget_space(ds);
    have_rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    if (have_rank < 0 || have_rank > H5S_MAX_RANK) {
        s = h5_fail(KD_ERR_FORMAT, r->path, what);
        goto out;
    }
    H5Sget_simple_extent_dims(space, dims, NULL);
    int same = have_rank == rank;
    for (int i = 0; same && i < rank; i++)
        same = dims[i] == want[i];
    if (!same) {
        s = kd_fail(KD_ERR_SHAPE, "%s: %s has shape %s, the spec expects %s", r->path, label,
                    dims_str(have_rank, dims, have_s, sizeof have_s),
                    dims_str(rank, want, want_s, sizeof want_s));
        goto out;
    }
    hssize_t count = H5Sget_simple_extent_npoints(space);
    if (count > 0 && H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0) {
        s = h5_fail(KD_ERR_FORMAT, r->path, what);
        goto out;
    }
    /* A model that holds NaN or Inf only gives NaN: refuse it here, for
     * eval, predict, resume and Python alike. */
    for (hssize_t i = 0; i < count; i++)
        if (!isfinite(dst[i])) {
            s = kd_fail(KD_ERR_NUMERIC, "%s: %s holds %s (element %lld): the checkpoint is unusable (it was saved "
                        "after training diverged)", r->path, label, isnan(dst[i]) ? "NaN" : "Inf", (long long)i);
            break;
        }
out:
    close_space(&space);
    close_type(&type);
    close_dset(&ds);
    return s;
}

/* Root attributes: is this one of ours, and which version. */
static kd_status check_format(const reader *r)
{
    char *format = NULL;
    int64_t version = 0;
    kd_status s;
    htri_t exists = H5Aexists(r->file, "format");
    if (exists < 0)
        return h5_fail(KD_ERR_FORMAT, r->path, "reading root attributes");
    if (!exists)
        return kd_fail(KD_ERR_FORMAT, "%s: not a Kindling checkpoint (no 'format' attribute)", r->path);
    s = read_attr_str(r, r->file, "the root group", "format", &format);
    if (s != KD_OK)
        return kd_fail_context(KD_ERR_FORMAT, "%s: not a Kindling checkpoint", r->path);
    if (strcmp(format, CKPT_FORMAT) != 0) {
        s = kd_fail(KD_ERR_FORMAT, "%s: not a Kindling checkpoint (format is '%.100s', expected '%s')",
                    r->path, format, CKPT_FORMAT);
        free(format);
        return s;
    }
    free(format);
    KD_TRY(read_attr_i64(r, r->file, "the root group", "format_version", &version));
    if (version > CKPT_FORMAT_VERSION)
        return kd_fail(KD_ERR_UNSUPPORTED,
                       "%s: checkpoint format version %lld is newer than this Kindling %s supports (%d)",
                       r->path, (long long)version, kd_version(), CKPT_FORMAT_VERSION);
    if (version < 1)
        return kd_fail(KD_ERR_FORMAT, "%s: invalid checkpoint format version %lld", r->path,
                       (long long)version);
    return KD_OK;
}

/* The network from the stored spec, checked against the stored shape attributes. */
static kd_status build_net(const reader *r, kd_net **out)
{
    char *spec = NULL;
    kd_net *net = NULL;
    int32_t dims[KD_MAX_RANK];
    long long rank = 0;
    int64_t classes = 0;
    hid_t attr;
    kd_status s;

    KD_TRY(read_attr_str(r, r->file, "the root group", "spec", &spec));
    s = kd_net_create(spec, 0, &net); /* any seed: every tensor is overwritten */
    free(spec);
    if (s != KD_OK)
        return kd_fail_context(s, "%s: the stored spec", r->path);

    s = open_attr(r, r->file, "the root group", "input_shape", H5T_INTEGER, H5T_INTEGER,
                  -KD_MAX_RANK, &attr, &rank);
    if (s == KD_OK) {
        if (H5Aread(attr, H5T_NATIVE_INT32, dims) < 0)
            s = h5_fail(KD_ERR_FORMAT, r->path, "reading attribute 'input_shape'");
        H5Aclose(attr);
    }
    if (s == KD_OK)
        s = read_attr_i64(r, r->file, "the root group", "num_classes", &classes);
    if (s == KD_OK) {
        kd_shape in = kd_net_input_shape(net);
        int same = rank == in.rank;
        for (int i = 0; same && i < in.rank; i++)
            same = dims[i] == in.dim[i];
        if (!same) {
            char want[64];
            s = kd_fail(KD_ERR_SHAPE, "%s: attribute input_shape disagrees with the stored spec (%s)",
                        r->path, kd_shape_str(&in, want, sizeof want));
        } else if (classes != kd_net_num_classes(net)) {
            s = kd_fail(KD_ERR_SHAPE, "%s: attribute num_classes = %lld, the stored spec has %d",
                        r->path, (long long)classes, kd_net_num_classes(net));
        }
    }
    if (s != KD_OK) {
        kd_net_free(net);
        return s;
    }
    *out = net;
    return KD_OK;
}

static kd_status read_layer(const reader *r, hid_t layers, const kd_layer_info *li, float *params,
                            float *state)
{
    char label[160], where[160], *type = NULL;
    kd_status s = KD_OK;
    hid_t g;

    snprintf(where, sizeof where, "layer '%s'", li->name);
    if (!has_link(r, layers, li->name, &s))
        return s != KD_OK ? s
                          : kd_fail(KD_ERR_FORMAT, "%s: layer '%s' has no group /layers/%s",
                                    r->path, li->name, li->name);
    g = H5Gopen2(layers, li->name, H5P_DEFAULT);
    if (g < 0) {
        snprintf(label, sizeof label, "opening group /layers/%s", li->name);
        return h5_fail(KD_ERR_FORMAT, r->path, label);
    }
    /* The stored type guards against a spec and tensors from different models. */
    s = read_attr_str(r, g, where, "type", &type);
    if (s == KD_OK && strcmp(type, li->type) != 0)
        s = kd_fail(KD_ERR_FORMAT, "%s: layer '%s' is stored as type '%s', the spec says '%s'",
                    r->path, li->name, type, li->type);
    free(type);
    if (s == KD_OK && li->weight_count > 0) {
        hsize_t dims[KD_MAX_RANK];
        for (int d = 0; d < li->weight_rank && d < KD_MAX_RANK; d++)
            dims[d] = (hsize_t)li->weight_dims[d];
        snprintf(label, sizeof label, "layer '%s' weight", li->name);
        s = read_f32(r, g, "weight", label, li->weight_rank, dims, params + li->weight_offset);
    }
    if (s == KD_OK && li->bias_count > 0) {
        hsize_t dim = li->bias_count;
        snprintf(label, sizeof label, "layer '%s' bias", li->name);
        s = read_f32(r, g, "bias", label, 1, &dim, params + li->bias_offset);
    }
    if (s == KD_OK && li->state_count > 0) {
        hsize_t half = li->state_count / 2;
        snprintf(label, sizeof label, "layer '%s' running_mean", li->name);
        s = read_f32(r, g, "running_mean", label, 1, &half, state + li->state_offset);
        if (s == KD_OK) {
            snprintf(label, sizeof label, "layer '%s' running_var", li->name);
            s = read_f32(r, g, "running_var", label, 1, &half, state + li->state_offset + half);
        }
    }
    H5Gclose(g);
    return s;
}

static kd_status read_layers(const reader *r, kd_net *net)
{
    float *params = kd_net_params(net), *state = kd_net_state(net);
    int n = kd_net_num_layers(net);
    kd_status s = KD_OK;
    hid_t layers;

    if (!has_link(r, r->file, "layers", &s))
        return s != KD_OK ? s : kd_fail(KD_ERR_FORMAT, "%s: no /layers group", r->path);
    layers = H5Gopen2(r->file, "layers", H5P_DEFAULT);
    if (layers < 0)
        return h5_fail(KD_ERR_FORMAT, r->path, "opening group /layers");
    for (int i = 0; i < n && s == KD_OK; i++) {
        kd_layer_info li;
        s = kd_net_layer_info(net, i, &li);
        if (s == KD_OK && layer_has_tensors(&li))
            s = read_layer(r, layers, &li, params, state);
    }
    H5Gclose(layers);
    return s;
}

static kd_status read_optim_config(const reader *r, hid_t g, kd_optim_config *cfg)
{
    const char *w = "/optimizer";
    char *str = NULL;
    kd_status s;

    *cfg = kd_optim_config_default();
    KD_TRY(read_attr_str(r, g, w, "kind", &str));
    s = kd_optim_kind_parse(str, &cfg->kind);
    free(str);
    if (s != KD_OK)
        return kd_fail_context(KD_ERR_FORMAT, "%s: /optimizer kind", r->path);
    KD_TRY(read_attr_str(r, g, w, "schedule", &str));
    s = kd_schedule_kind_parse(str, &cfg->schedule);
    free(str);
    if (s != KD_OK)
        return kd_fail_context(KD_ERR_FORMAT, "%s: /optimizer schedule", r->path);
    KD_TRY(read_attr_f64(r, g, w, "lr", &cfg->lr));
    KD_TRY(read_attr_f64(r, g, w, "momentum", &cfg->momentum));
    KD_TRY(read_attr_int(r, g, w, "nesterov", &cfg->nesterov));
    KD_TRY(read_attr_f64(r, g, w, "beta1", &cfg->beta1));
    KD_TRY(read_attr_f64(r, g, w, "beta2", &cfg->beta2));
    KD_TRY(read_attr_f64(r, g, w, "eps", &cfg->eps));
    KD_TRY(read_attr_f64(r, g, w, "weight_decay", &cfg->weight_decay));
    KD_TRY(read_attr_i64(r, g, w, "step_size", &cfg->step_size));
    KD_TRY(read_attr_f64(r, g, w, "gamma", &cfg->gamma));
    KD_TRY(read_attr_i64(r, g, w, "total_steps", &cfg->total_steps));
    KD_TRY(read_attr_f64(r, g, w, "lr_min", &cfg->lr_min));
    /* Since format version 2; older files had no warmup. */
    htri_t has_warmup = H5Aexists(g, "warmup_steps");
    if (has_warmup < 0)
        return h5_fail(KD_ERR_FORMAT, r->path, "reading /optimizer attributes");
    if (has_warmup)
        KD_TRY(read_attr_i64(r, g, w, "warmup_steps", &cfg->warmup_steps));
    return KD_OK;
}

/* *out stays NULL when the file holds no optimizer. */
static kd_status read_optimizer(const reader *r, size_t param_count, kd_optim **out)
{
    kd_optim_config cfg;
    kd_optim *opt = NULL;
    kd_status s = KD_OK;
    int64_t steps = 0;
    hid_t g;

    if (!has_link(r, r->file, "optimizer", &s))
        return s;
    g = H5Gopen2(r->file, "optimizer", H5P_DEFAULT);
    if (g < 0)
        return h5_fail(KD_ERR_FORMAT, r->path, "opening group /optimizer");
    s = read_optim_config(r, g, &cfg);
    if (s == KD_OK)
        s = read_attr_i64(r, g, "/optimizer", "steps", &steps);
    if (s == KD_OK && steps < 0)
        s = kd_fail(KD_ERR_FORMAT, "%s: /optimizer steps = %lld is negative", r->path, (long long)steps);
    if (s == KD_OK) {
        s = kd_optim_create(&cfg, param_count, &opt);
        if (s != KD_OK)
            kd_fail_context(s, "%s: the stored optimizer", r->path);
    }
    if (s == KD_OK) {
        size_t total = 0;
        float *st = kd_optim_state(opt, &total);
        int slots = kd_optim_state_slots(opt);
        hsize_t dim = param_count;
        for (int k = 0; k < slots && s == KD_OK; k++) {
            const char *name = kd_optim_state_slot_name(opt, k);
            char label[128];
            snprintf(label, sizeof label, "optimizer state '%s'", name);
            s = read_f32(r, g, name, label, 1, &dim, st + (size_t)k * param_count);
        }
    }
    H5Gclose(g);
    if (s != KD_OK) {
        kd_optim_free(opt);
        return s;
    }
    kd_optim_set_steps(opt, steps);
    *out = opt;
    return KD_OK;
}

/* Where each of HISTORY's columns is stored in the file's history (-1:
 * absent, an optional column of an older file), from the dataset's
 * `columns` attribute; a file without it must be version 1's 7 columns. */
static kd_status history_layout(const reader *r, hid_t ds, int stored, int *where)
{
    static const char *const V1[] = {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                                     "seconds", "learning_rate"};
    char *names = NULL, *cut[HISTORY_MAX_STORED_COLUMNS];
    int n = 0;
    kd_status s = KD_OK;
    htri_t has = H5Aexists(ds, "columns");
    if (has < 0)
        return h5_fail(KD_ERR_FORMAT, r->path, "reading /training/history attributes");
    if (has) {
        KD_TRY(read_attr_str(r, ds, "/training/history", "columns", &names));
        for (char *p = names, *end; p && n < HISTORY_MAX_STORED_COLUMNS; p = end ? end + 1 : NULL) {
            end = strchr(p, ',');
            if (end)
                *end = '\0';
            cut[n++] = p;
        }
    } else if (stored == (int)(sizeof V1 / sizeof V1[0])) {
        for (; n < stored; n++)
            cut[n] = (char *)V1[n];
    }
    if (n != stored) {
        s = kd_fail(KD_ERR_FORMAT, "%s: /training/history has %d columns but its 'columns' attribute names %d",
                    r->path, stored, n);
        goto out;
    }
    for (int c = 0; c < HISTORY_COLUMNS && s == KD_OK; c++) {
        where[c] = -1;
        for (int k = 0; k < n; k++)
            if (strcmp(cut[k], HISTORY[c].name) == 0) {
                where[c] = k;
                break;
            }
        if (where[c] < 0 && HISTORY[c].required)
            s = kd_fail(KD_ERR_FORMAT, "%s: /training/history has no '%s' column", r->path, HISTORY[c].name);
    }
out:
    free(names);
    return s;
}

static kd_status read_history(const reader *r, hid_t g, kd_train_state *st)
{
    hid_t ds, space = H5I_INVALID_HID;
    hsize_t dims[2] = {0, 0};
    double *rows = NULL;
    int where[HISTORY_COLUMNS];
    kd_status s = KD_OK;

    if (!has_link(r, g, "history", &s))
        return s != KD_OK ? s : kd_fail(KD_ERR_FORMAT, "%s: /training has no 'history' dataset", r->path);
    ds = H5Dopen2(g, "history", H5P_DEFAULT);
    if (ds < 0)
        return h5_fail(KD_ERR_FORMAT, r->path, "opening /training/history");
    space = H5Dget_space(ds);
    if (space < 0 || H5Sget_simple_extent_ndims(space) != 2 ||
        H5Sget_simple_extent_dims(space, dims, NULL) < 0 || dims[1] < 1 ||
        dims[1] > HISTORY_MAX_STORED_COLUMNS || dims[0] > INT32_MAX) {
        s = kd_fail(KD_ERR_SHAPE, "%s: /training/history must have shape [epochs, columns] with 1 to %d columns",
                    r->path, HISTORY_MAX_STORED_COLUMNS);
        goto out;
    }
    /* HDF5 allocates a dataset's storage lazily, so a file of a few KB can
     * declare billions of rows: bound them before allocating. */
    if (dims[0] > HISTORY_MAX_ROWS) {
        s = kd_fail(KD_ERR_FORMAT, "%s: /training/history has %llu rows, more than the %d epochs "
                    "a checkpoint may record", r->path, (unsigned long long)dims[0], HISTORY_MAX_ROWS);
        goto out;
    }
    int stored = (int)dims[1];
    s = history_layout(r, ds, stored, where);
    if (s != KD_OK || dims[0] == 0)
        goto out;
    rows = kd_malloc((size_t)dims[0] * (size_t)stored * sizeof *rows, "checkpoint history");
    if (!rows) {
        s = KD_ERR_NOMEM;
        goto out;
    }
    if (H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows) < 0) {
        s = h5_fail(KD_ERR_FORMAT, r->path, "reading /training/history");
        goto out;
    }
    /* The epoch column becomes an int32: NaN or out of range would make
     * that conversion undefined. */
    for (hsize_t i = 0; i < dims[0]; i++) {
        double e = rows[i * (size_t)stored + (size_t)where[0]];
        if (!(e >= 0 && e <= INT32_MAX)) {
            s = kd_fail(KD_ERR_FORMAT, "%s: /training/history row %llu: epoch %g is not a valid "
                        "epoch number", r->path, (unsigned long long)i, e);
            goto out;
        }
    }
    /* One allocation for the whole history (st is still empty here):
     * appending row by row reallocates once per row. */
    st->history = kd_calloc((size_t)dims[0], sizeof *st->history, "checkpoint history");
    if (!st->history) {
        s = KD_ERR_NOMEM;
        goto out;
    }
    for (hsize_t i = 0; i < dims[0]; i++) {
        const double *row = rows + i * (size_t)stored;
        kd_epoch_record *rec = &st->history[i];
        rec->epoch = (int32_t)row[where[0]];
        for (int c = 1; c < HISTORY_COLUMNS; c++)
            *(double *)(void *)((char *)rec + HISTORY[c].offset) = where[c] >= 0 ? row[where[c]] : NAN;
    }
    st->history_len = (int32_t)dims[0];
out:
    free(rows);
    close_space(&space);
    H5Dclose(ds);
    return s;
}

/* st is initialised by the caller; history records are appended to it. */
static kd_status read_training(const reader *r, kd_train_state *st)
{
    const char *w = "/training";
    kd_status s = KD_OK;
    int64_t v;
    hid_t g;

    if (!has_link(r, r->file, "training", &s))
        return s;
    g = H5Gopen2(r->file, "training", H5P_DEFAULT);
    if (g < 0)
        return h5_fail(KD_ERR_FORMAT, r->path, "opening group /training");
    s = read_attr_i64(r, g, w, "epoch", &v);
    if (s == KD_OK && (v < 0 || v > INT32_MAX))
        s = kd_fail(KD_ERR_FORMAT, "%s: /training epoch = %lld is out of range", r->path, (long long)v);
    st->epoch = (int32_t)v;
    if (s == KD_OK)
        s = read_attr_i64(r, g, w, "step", &st->step);
    if (s == KD_OK)
        s = read_attr_num(r, g, w, "seed", H5T_NATIVE_UINT64, &st->seed);
    if (s == KD_OK)
        s = read_attr_i64(r, g, w, "batch_size", &v);
    if (s == KD_OK && (v < 0 || v > INT32_MAX))
        s = kd_fail(KD_ERR_FORMAT, "%s: /training batch_size = %lld is out of range", r->path,
                    (long long)v);
    st->batch_size = (int32_t)v;
    if (s == KD_OK)
        s = read_history(r, g, st);
    H5Gclose(g);
    return s;
}

static kd_status load_quiet(const char *path, kd_net **net_out, kd_optim **opt_out,
                            kd_train_state *state_out)
{
    reader r = {path, H5I_INVALID_HID};
    kd_net *net = NULL;
    kd_optim *opt = NULL;
    kd_train_state st;
    hid_t fapl = H5I_INVALID_HID;
    kd_status s = KD_OK;
    htri_t is_h5;

    kd_train_state_init(&st);
    /* Missing or unreadable is an I/O error; present but not HDF5 is a format one. */
    FILE *probe = fopen(path, "rb");
    if (!probe)
        return kd_fail(KD_ERR_IO, "%s: cannot open checkpoint: %s", path, strerror(errno));
    fclose(probe);
    is_h5 = H5Fis_hdf5(path);
    if (is_h5 < 0)
        return h5_fail(KD_ERR_IO, path, "cannot read checkpoint");
    if (is_h5 == 0)
        return kd_fail(KD_ERR_FORMAT, "%s: not an HDF5 file", path);

    fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        s = h5_fail(KD_ERR_IO, path, "creating file access properties");
        goto out;
    }
    r.file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (r.file < 0) {
        /* The signature is there but the file cannot be opened: typically truncated. */
        s = h5_fail(KD_ERR_FORMAT, path, "damaged HDF5 file");
        goto out;
    }
    s = check_format(&r);
    if (s == KD_OK)
        s = build_net(&r, &net);
    if (s == KD_OK)
        s = read_layers(&r, net);
    if (s == KD_OK && opt_out)
        s = read_optimizer(&r, kd_net_param_count(net), &opt);
    if (s == KD_OK && state_out)
        s = read_training(&r, &st);
out:
    if (r.file >= 0)
        H5Fclose(r.file);
    close_plist(&fapl);
    if (s != KD_OK) {
        kd_net_free(net);
        kd_optim_free(opt);
        kd_train_state_clear(&st);
        return s;
    }
    *net_out = net;
    if (opt_out)
        *opt_out = opt;
    if (state_out)
        *state_out = st;
    return KD_OK;
}

kd_status kd_checkpoint_load(const char *path, kd_net **net_out, kd_optim **opt_out,
                             kd_train_state *state_out)
{
    h5_quiet q;
    kd_status s;
    /* Outputs are cleared first so every failure leaves them empty. state_out
     * is overwritten, not freed: the caller clears any history it held. */
    if (net_out)
        *net_out = NULL;
    if (opt_out)
        *opt_out = NULL;
    if (state_out)
        kd_train_state_init(state_out);
    if (!path || !path[0] || !net_out)
        return kd_fail(KD_ERR_INVALID, "kd_checkpoint_load: path and net_out are required");
    h5_quiet_begin(&q);
    s = load_quiet(path, net_out, opt_out, state_out);
    h5_quiet_end(&q);
    return s;
}
