/* Fuzzes kd_checkpoint_load with structurally valid HDF5 files of hostile
 * content: the input is a recipe that this harness turns into a checkpoint
 * through the HDF5 API (every attribute and dataset present or missing,
 * of the right or a wrong type, class, rank, size or value; the stored spec
 * a real one or fuzzed text), so the loader's own checks are exercised
 * without handing HDF5 corrupt metadata. Corrupt files are
 * fuzz_checkpoint_raw's job (see fuzz/README.md for why it is kept apart).
 *
 * An all-zero recipe describes a complete, valid checkpoint (with an SGD
 * optimizer and a training group); every non-zero choice breaks or drops
 * something. Also checks that the loader closes every HDF5 object it opens. */
#include "fuzz_common.h"

#include <hdf5.h>
#include <math.h>

#include "net.h"

/* ------------------------------------------------- reading the recipe */
typedef struct recipe {
    const uint8_t *p;
    size_t n;
} recipe;

static unsigned take(recipe *r) /* one byte, 0 once the input is used up */
{
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->p++;
}

static uint64_t take64(recipe *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | take(r);
    return v;
}

/* Up to max bytes of text, length first. */
static size_t take_text(recipe *r, char *buf, size_t max)
{
    size_t len = take(r);
    if (len > max)
        len = max;
    if (len > r->n)
        len = r->n;
    memcpy(buf, r->p, len);
    buf[len] = '\0';
    r->p += len;
    r->n -= len;
    return len;
}

/* ----------------------------------------------- writing the checkpoint */
static void must(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "harness: HDF5 call failed: %s\n", what);
        abort();
    }
}

/* A string attribute in one of several encodings, or something that is not
 * a string at all, or nothing. The byte decides; 0 writes it properly. */
static void put_str_attr(recipe *r, hid_t loc, const char *name, const char *value)
{
    unsigned how = take(r) % 9;
    hid_t space = H5Screate(H5S_SCALAR), type = -1, attr;
    if (how == 8) { /* absent */
        H5Sclose(space);
        return;
    }
    if (how == 5) { /* an integer where a string belongs */
        int32_t v = 7;
        attr = H5Acreate2(loc, name, H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT);
        must(attr >= 0 && H5Awrite(attr, H5T_NATIVE_INT32, &v) >= 0, name);
        H5Aclose(attr);
        H5Sclose(space);
        return;
    }
    if (how == 6 || how == 7) { /* an array of two strings, or an empty dataspace */
        H5Sclose(space);
        hsize_t two = 2;
        space = how == 6 ? H5Screate_simple(1, &two, NULL) : H5Screate(H5S_NULL);
    }
    type = H5Tcopy(H5T_C_S1);
    size_t len = strlen(value);
    if (how <= 1 || how >= 6) {
        H5Tset_size(type, H5T_VARIABLE);
        H5Tset_cset(type, how == 1 ? H5T_CSET_ASCII : H5T_CSET_UTF8);
    } else {
        H5Tset_size(type, len > 0 ? len : 1);
        H5Tset_strpad(type, how == 2 ? H5T_STR_NULLTERM : how == 3 ? H5T_STR_SPACEPAD : H5T_STR_NULLPAD);
    }
    attr = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    must(attr >= 0, name);
    if (how == 6) {
        const char *two_values[2] = {value, value};
        must(H5Awrite(attr, type, two_values) >= 0, name);
    } else if (how <= 1) {
        must(H5Awrite(attr, type, &value) >= 0, name);
    } else if (how != 7) {
        char *fixed = calloc(1, len + 1);
        memcpy(fixed, value, len);
        must(H5Awrite(attr, type, fixed) >= 0, name);
        free(fixed);
    }
    H5Aclose(attr);
    H5Tclose(type);
    H5Sclose(space);
}

/* A number attribute: normally `good` in its usual file type; the recipe
 * may change the type, the value (raw bits) or leave it out. */
static void put_num_attr(recipe *r, hid_t loc, const char *name, hid_t usual, double good)
{
    unsigned how = take(r) % 12;
    if (how == 11)
        return;
    double v = good;
    int64_t iv = (int64_t)good;
    if (how >= 8) { /* a fuzzed value, kept in the usual type */
        uint64_t bits = take64(r);
        memcpy(&v, &bits, sizeof v);
        iv = (int64_t)bits;
        how = 0;
    }
    hid_t ftype = how == 1 ? H5T_IEEE_F64LE : how == 2 ? H5T_STD_U64LE : how == 3 ? H5T_STD_I8LE
                : how == 4 ? H5T_IEEE_F32LE : how == 5 ? H5T_STD_I64BE : usual;
    hsize_t two = 2;
    hid_t space = how == 6 ? H5Screate_simple(1, &two, NULL) : H5Screate(H5S_SCALAR);
    if (how == 7) { /* a string */
        put_str_attr(&(recipe){(const uint8_t *)"\0", 1}, loc, name, "12");
        H5Sclose(space);
        return;
    }
    hid_t attr = H5Acreate2(loc, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
    must(attr >= 0, name);
    /* Written from the memory type that matches the value's kind; HDF5
     * converts (clipping out-of-range values as it does for any writer). */
    if (H5Tget_class(ftype) == H5T_FLOAT) {
        double vals[2] = {v, v};
        H5Awrite(attr, H5T_NATIVE_DOUBLE, vals);
    } else {
        int64_t vals[2] = {iv, iv};
        H5Awrite(attr, H5T_NATIVE_INT64, vals);
    }
    H5Aclose(attr);
    H5Sclose(space);
}

/* A tensor dataset of the given shape, or a variation on it. */
static void put_tensor(recipe *r, hid_t loc, const char *name, int rank, const hsize_t *dims)
{
    unsigned how = take(r) % 10;
    if (how == 9)
        return; /* absent */
    hsize_t d[H5S_MAX_RANK];
    int rk = rank;
    memcpy(d, dims, sizeof *d * (size_t)rank);
    hid_t ftype = H5T_IEEE_F32LE;
    if (how == 1)
        ftype = H5T_IEEE_F64LE;
    else if (how == 2)
        ftype = H5T_STD_I16BE;
    else if (how == 3)
        d[take(r) % rank] += 1 + take(r) % 3; /* a wrong size */
    else if (how == 4 && rank > 1)
        rk = rank - 1; /* a wrong rank */
    else if (how == 5)
        d[rk++] = 1;
    else if (how == 6)
        d[0] = (hsize_t)1 << (20 + take(r) % 12); /* huge, never written (late allocation) */
    hid_t space = H5Screate_simple(rk, d, NULL);
    if (how == 7) { /* not numbers */
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, 4);
        hid_t ds = H5Dcreate2(loc, name, t, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        must(ds >= 0, name);
        H5Dclose(ds);
        H5Tclose(t);
        H5Sclose(space);
        return;
    }
    hid_t ds = H5Dcreate2(loc, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (ds < 0) { /* HDF5 may refuse a huge extent: then there is no dataset */
        H5Sclose(space);
        return;
    }
    hssize_t count = H5Sget_simple_extent_npoints(space);
    if (how != 6 && count > 0 && count < (1 << 20)) {
        double *v = malloc((size_t)count * sizeof *v);
        unsigned fill = take(r);
        for (hssize_t i = 0; i < count; i++)
            v[i] = fill == 255 ? NAN : (double)((i * 7 + fill) % 13) / 13.0;
        H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
        free(v);
    }
    H5Dclose(ds);
    H5Sclose(space);
}

/* Small real specs, so most recipes reach the tensors. */
static const char *const SPECS[] = {
    "{\"input\": [3], \"layers\": [{\"type\": \"dense\", \"units\": 2}, {\"type\": \"batchnorm\"}, "
    "{\"type\": \"softmax\"}]}",
    "{\"input\": [1, 4, 4], \"layers\": [{\"type\": \"conv2d\", \"filters\": 2, \"kernel\": 3, "
    "\"name\": \"c\"}, {\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 3, \"bias\": false}, "
    "{\"type\": \"softmax\"}]}",
    "{\"input\": [2], \"layers\": [{\"type\": \"softmax\"}]}",
};

static const char *const KINDS[] = {"sgd", "momentum", "adam", "adamw", "rmsprop", ""};
static const char *const SCHEDULES[] = {"constant", "step", "cosine", "linear"};

/* Writes the checkpoint the recipe describes to path. *expect_net is the
 * network of the stored spec when the harness could build it (a small one). */
static void write_checkpoint(recipe *r, const char *path, kd_net **expect_net)
{
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    must(file >= 0, "H5Fcreate");

    /* The spec: a real one, or fuzzed text when it builds a small network. */
    char text[256];
    const char *spec = SPECS[take(r) % 3];
    if (take(r) % 4 == 3) {
        take_text(r, text, sizeof text - 1);
        kd_shape in;
        kd_layer *layers = NULL;
        int n = 0;
        char *resolved = NULL;
        size_t params = 0;
        if (kd_spec_build(text, &in, &layers, &n, &resolved) == KD_OK) {
            for (int i = 0; i < n; i++)
                params += layers[i].weight_count + layers[i].bias_count + layers[i].state_count;
            /* The loader allocates and initialises the network before reading
             * any tensor: keep that quick. The limits themselves are fuzz_spec's. */
            if (params < 100000)
                spec = text;
        } else {
            spec = text; /* invalid spec: the loader must reject it */
        }
        free(layers);
        free(resolved);
    }
    kd_net *net = NULL;
    if (kd_net_create(spec, 1, &net) != KD_OK)
        net = NULL;
    *expect_net = net;

    put_str_attr(r, file, "format", take(r) % 8 == 7 ? "kindling-checkpoinT" : "kindling-checkpoint");
    put_num_attr(r, file, "format_version", H5T_STD_I32LE, 1);
    put_str_attr(r, file, "spec", spec);
    int32_t in_dims[KD_MAX_RANK] = {0};
    kd_shape in = net ? kd_net_input_shape(net) : (kd_shape){1, {3, 0, 0, 0}};
    for (int i = 0; i < in.rank; i++)
        in_dims[i] = in.dim[i];
    unsigned shape_how = take(r) % 6;
    if (shape_how < 5) {
        hsize_t rank = (hsize_t)in.rank + (shape_how == 1) - (shape_how == 2 && in.rank > 1);
        if (shape_how == 3)
            in_dims[0]++;
        if (shape_how == 4)
            rank = KD_MAX_RANK + 1; /* more than the loader's buffer holds */
        int32_t big[KD_MAX_RANK + 2] = {0};
        memcpy(big, in_dims, sizeof in_dims);
        hid_t space = H5Screate_simple(1, &rank, NULL);
        hid_t attr = H5Acreate2(file, "input_shape", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT);
        must(attr >= 0 && H5Awrite(attr, H5T_NATIVE_INT32, big) >= 0, "input_shape");
        H5Aclose(attr);
        H5Sclose(space);
    }
    put_num_attr(r, file, "num_classes", H5T_STD_I32LE, net ? kd_net_num_classes(net) : 2);

    if (take(r) % 8 != 7) {
        hid_t layers = H5Gcreate2(file, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        must(layers >= 0, "layers");
        for (int i = 0; net && i < kd_net_num_layers(net); i++) {
            kd_layer_info li;
            kd_net_layer_info(net, i, &li);
            if (!li.weight_count && !li.bias_count && !li.state_count)
                continue;
            if (take(r) % 16 == 15)
                continue; /* group missing */
            hid_t g = H5Gcreate2(layers, li.name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            must(g >= 0, li.name);
            put_num_attr(r, g, "index", H5T_STD_I32LE, li.index);
            put_str_attr(r, g, "type", take(r) % 8 == 7 ? "dense2" : li.type);
            hsize_t dims[KD_MAX_RANK];
            for (int d = 0; d < li.weight_rank; d++)
                dims[d] = (hsize_t)li.weight_dims[d];
            if (li.weight_count)
                put_tensor(r, g, "weight", li.weight_rank, dims);
            hsize_t b = li.bias_count, half = li.state_count / 2;
            if (li.bias_count)
                put_tensor(r, g, "bias", 1, &b);
            if (li.state_count) {
                put_tensor(r, g, "running_mean", 1, &half);
                put_tensor(r, g, "running_var", 1, &half);
            }
            H5Gclose(g);
        }
        H5Gclose(layers);
    }

    if (take(r) % 2 == 0) {
        hid_t g = H5Gcreate2(file, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        must(g >= 0, "optimizer");
        unsigned kind = take(r) % 6;
        put_str_attr(r, g, "kind", KINDS[kind]);
        put_str_attr(r, g, "schedule", SCHEDULES[take(r) % 4]);
        put_num_attr(r, g, "lr", H5T_IEEE_F64LE, 0.01);
        put_num_attr(r, g, "momentum", H5T_IEEE_F64LE, 0.9);
        put_num_attr(r, g, "nesterov", H5T_STD_I32LE, 0);
        put_num_attr(r, g, "beta1", H5T_IEEE_F64LE, 0.9);
        put_num_attr(r, g, "beta2", H5T_IEEE_F64LE, 0.999);
        put_num_attr(r, g, "eps", H5T_IEEE_F64LE, 1e-8);
        put_num_attr(r, g, "weight_decay", H5T_IEEE_F64LE, 0);
        put_num_attr(r, g, "step_size", H5T_STD_I64LE, 10);
        put_num_attr(r, g, "gamma", H5T_IEEE_F64LE, 0.1);
        put_num_attr(r, g, "total_steps", H5T_STD_I64LE, 100);
        put_num_attr(r, g, "lr_min", H5T_IEEE_F64LE, 0);
        put_num_attr(r, g, "steps", H5T_STD_I64LE, 5);
        if (take(r) % 2)
            put_num_attr(r, g, "warmup_steps", H5T_STD_I64LE, 3);
        hsize_t n = net ? kd_net_param_count(net) : 4;
        const char *slots[] = {"velocity", "m", "v"};
        for (int k = 0; k < 3; k++)
            if (take(r) % 4 != 3)
                put_tensor(r, g, slots[k], 1, &n);
        H5Gclose(g);
    }

    if (take(r) % 2 == 0) {
        hid_t g = H5Gcreate2(file, "training", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        must(g >= 0, "training");
        put_num_attr(r, g, "epoch", H5T_STD_I32LE, 2);
        put_num_attr(r, g, "step", H5T_STD_I64LE, 6);
        put_num_attr(r, g, "seed", H5T_STD_U64LE, 42);
        put_num_attr(r, g, "batch_size", H5T_STD_I32LE, 4);
        /* Version 1's 7 columns (found without a 'columns' attribute) or
         * version 2's 9, named in the attribute: in order, reordered,
         * one short, or garbage. */
        static const char *const COLUMNS[] = {
            "epoch,train_loss,train_accuracy,val_loss,val_accuracy,test_loss,test_accuracy,seconds,learning_rate",
            "learning_rate,epoch,seconds,val_loss,val_accuracy,train_loss,train_accuracy,test_loss,test_accuracy",
            "epoch,train_loss,train_accuracy,val_loss,val_accuracy,test_loss,test_accuracy,seconds",
            ",,,,,,,,", "epoch"};
        unsigned v2 = take(r) % 2;
        hsize_t hist[2] = {take(r) % 4, v2 ? 9 : 7};
        put_tensor(r, g, "history", 2, hist);
        if (v2) {
            hid_t ds = H5Dopen2(g, "history", H5P_DEFAULT);
            if (ds >= 0) {
                put_str_attr(r, ds, "columns", COLUMNS[take(r) % 5]);
                H5Dclose(ds);
            }
        }
        H5Gclose(g);
    }
    must(H5Fclose(file) >= 0, "H5Fclose");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setenv("HDF5_USE_FILE_LOCKING", "FALSE", 1); /* private temporary files */
    H5open();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* the harness's own writes may fail on purpose */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    recipe r = {data, size};
    fuzz_file f;
    fuzz_file_open_disk(&f, "", 0);
    kd_net *expect = NULL;
    write_checkpoint(&r, f.path, &expect);

    kd_net *net = NULL;
    kd_optim *opt = NULL;
    kd_train_state st;
    kd_clear_error();
    kd_status s = kd_checkpoint_load(f.path, &net, &opt, &st);
    fuzz_check_error(s);
    if (s == KD_OK) {
        if (!net || !expect || kd_net_param_count(net) != kd_net_param_count(expect) ||
            strcmp(kd_net_spec_json(net), kd_net_spec_json(expect)) != 0)
            abort(); /* loaded, but not the network that was stored */
        if (opt && kd_optim_param_count(opt) != kd_net_param_count(net))
            abort();
        if (st.history_len < 0 || (st.history_len > 0 && !st.history))
            abort();
        kd_train_state_clear(&st);
    } else if (net || opt) {
        abort(); /* a failed load must leave the outputs empty */
    }
    kd_net_free(net);
    kd_optim_free(opt);
    kd_net_free(expect);

    ssize_t open_objects = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (open_objects != 0) {
        fprintf(stderr, "kd_checkpoint_load left %zd HDF5 objects open (status %s: %s)\n",
                open_objects, kd_status_name(s), kd_last_error());
        abort();
    }
    fuzz_file_close(&f);
    return 0;
}
