/* Kindling: a C engine that trains neural networks, alone or across a cluster.
 *
 * The one public header. Everything (the CLI, the MPI ranks, the Python
 * package) goes through it. Conventions:
 *   - every fallible call returns kd_status; KD_OK is 0. On failure the
 *     calling thread's message is in kd_last_error().
 *   - every object has one owner and one *_free (NULL is accepted).
 *   - a network keeps ALL its trainable parameters in one flat float32
 *     buffer and all gradients in a second buffer of the same length, so a
 *     whole model travels as one vector (parameter server shards, allreduce).
 *   - weight layouts match PyTorch: dense [out, in], conv2d [out_c, in_c, kh, kw].
 */
#ifndef KINDLING_H
#define KINDLING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KD_VERSION_MAJOR 0
#define KD_VERSION_MINOR 1
#define KD_VERSION_PATCH 0
#define KD_VERSION_STRING "0.1.0"

#define KD_MAX_RANK 4 /* per-sample shapes have at most 3 dims; weights at most 4 */

typedef enum kd_status {
    KD_OK = 0,
    KD_ERR_INVALID = 1,  /* bad argument, flag, spec or setting */
    KD_ERR_IO = 2,       /* file missing, unreadable, write failed */
    KD_ERR_FORMAT = 3,   /* file present but malformed / truncated / not ours */
    KD_ERR_SHAPE = 4,    /* shapes do not fit */
    KD_ERR_NOMEM = 5,    /* allocation failed */
    KD_ERR_NUMERIC = 6,  /* NaN / Inf where a number was needed */
    KD_ERR_STATE = 7,    /* call out of order (e.g. backward before forward) */
    KD_ERR_UNSUPPORTED = 8, /* also: no GPU support built, or no CUDA device */
    KD_ERR_DEVICE = 9       /* a CUDA / cuBLAS / cuDNN / NCCL call failed */
} kd_status;

/* Message of the last failure on this thread ("" if none). Never NULL. */
const char *kd_last_error(void);
const char *kd_status_name(kd_status s);
const char *kd_version(void);

/* Threads OpenBLAS uses for the matrix products (Kindling's own loops run
 * on the calling thread). n <= 0 leaves OpenBLAS's setting as it is
 * (OPENBLAS_NUM_THREADS, else one per core). Process-wide, like OpenBLAS's. */
void kd_set_threads(int n);
/* The OpenBLAS kernel family in use ("SkylakeX", "Haswell", "Prescott", ...). */
const char *kd_blas_corename(void);
/* When OpenBLAS fell back to its generic kernels on a CPU that supports
 * better ones: the OPENBLAS_CORETYPE value to use (it is read only when
 * OpenBLAS loads, so a program sets it and restarts); otherwise NULL. */
const char *kd_blas_better_coretype(void);

/* ------------------------------------------------------------------ shapes */
typedef struct kd_shape {
    int rank;               /* 1 (features) or 3 (channels, height, width) */
    int dim[KD_MAX_RANK];
} kd_shape;

size_t kd_shape_size(const kd_shape *s);
/* "1x28x28" into buf; returns buf. */
const char *kd_shape_str(const kd_shape *s, char *buf, size_t len);

/* ----------------------------------------------------------------- devices */
/* Where a network computes. A network starts on the CPU; kd_net_set_context
 * moves it to a GPU (the CUDA backend in gpu/, when built). Every call
 * works the same on both; the flat buffers keep their layout and offsets.
 *
 * On a GPU the parameters, gradients, state and (inside kd_train) the
 * optimizer state live on the device, and the host buffers that
 * kd_net_params / kd_net_grads / kd_net_state return are copies. Copies
 * between them are explicit calls that can fail (a failed copy is
 * KD_ERR_DEVICE with the CUDA message):
 *   - kd_net_to_host(net, KD_NET_GRADS ...) before using host buffers: it
 *     copies the device values back and hands the host copies over for
 *     reading and writing, so the next device operation uploads them (the
 *     parameter server and MPI allreduce work this way);
 *   - kd_net_sync(net, opt) for a read-only snapshot of everything,
 *     including the optimizer's state (kd_optim_state); kd_checkpoint_save
 *     and kd_train call it, kd_train before every checkpoint and on return.
 * On the CPU the host buffers are the network's own, so both calls succeed
 * at once.
 *
 * Built without CUDA, asking for a GPU fails with KD_ERR_UNSUPPORTED and
 * "Kindling was built without CUDA"; with CUDA but no usable device, with
 * KD_ERR_UNSUPPORTED and "no CUDA device: <reason>". */
typedef enum kd_device_kind { KD_DEVICE_CPU = 0, KD_DEVICE_GPU = 1 } kd_device_kind;

typedef struct kd_context {
    kd_device_kind kind;
    int device_id; /* GPU ordinal; -1 = pick: the local MPI rank (OMPI_COMM_WORLD_LOCAL_RANK,
                      MPI_LOCALRANKID, SLURM_LOCALID; else 0) modulo the device count */
} kd_context;

/* "cpu", "gpu" (device -1) or "gpu:N". */
kd_status kd_context_parse(const char *text, kd_context *out);
/* "cpu", "gpu:N" or "gpu" into buf; returns buf. */
const char *kd_context_str(kd_context ctx, char *buf, size_t len);
/* 1 if this library was built with the CUDA backend, else 0. */
int kd_gpu_built(void);
/* Number of usable CUDA devices (fails as described above when none). */
kd_status kd_gpu_device_count(int *count);

/* ---------------------------------------------------------------- datasets */
/* An in-memory labelled data set: n samples of `shape` float32 features
 * (row-major, sample after sample) and int32 labels. */
typedef struct kd_dataset {
    int64_t n;
    kd_shape shape;
    float *x;        /* n * kd_shape_size(&shape) */
    int32_t *y;      /* n labels; -1 where the source had no label */
    int num_classes; /* 1 + max label seen (0 if unlabelled) */
    /* How x and y are held; set by the library, read by kd_dataset_free.
     * NULL (what kd_dataset_alloc and a zeroed struct give): x and y are
     * malloc'd. Otherwise x (and y when the file has labels) point into a
     * READ-ONLY memory mapping of a spool file: writing into them faults;
     * copy the data first to change it. */
    struct kd_dataset_mapping *mapping;
} kd_dataset;

kd_status kd_dataset_alloc(int64_t n, const kd_shape *shape, kd_dataset **out);
void kd_dataset_free(kd_dataset *ds);

/* IDX (MNIST format), plain or gzip (detected by magic bytes, not name).
 * uint8 images are scaled to [0,1]. labels_path may be NULL. */
kd_status kd_dataset_load_idx(const char *images_path, const char *labels_path,
                              kd_dataset **out);
/* CSV: one sample per line, `label_col` (0-based; -1 = no label) holds the
 * class, every other column a feature. has_header skips the first line.
 * shape may be NULL (then rank-1 of the column count). Plain or gzip; a
 * UTF-8 byte order mark is skipped. The delimiter is detected from the
 * first data line (see kd_csv_options). */
kd_status kd_dataset_load_csv(const char *path, int label_col, int has_header,
                              const kd_shape *shape, kd_dataset **out);
typedef struct kd_csv_options {
    int label_col;  /* 0-based column of the class; -1 = no labels */
    int has_header; /* skip the first line */
    /* The byte between columns. 0 = detect from the first data line: the
     * most frequent of ',', ';' and tab (ties: ';', then tab, then ','),
     * ',' when it holds none of them (one column). */
    char delimiter;
} kd_csv_options;
/* label_col 0, no header, delimiter detected. */
kd_csv_options kd_csv_options_default(void);
kd_status kd_dataset_load_csv_opts(const char *path, const kd_csv_options *opts,
                                   const kd_shape *shape, kd_dataset **out);
/* The same with column id_col (0-based; not the label column) read as text
 * instead of a feature: *ids receives one string per sample, the cell as
 * written without surrounding blanks, all in one allocation (free(*ids)
 * releases it). To pass an id column through prediction. */
kd_status kd_dataset_load_csv_ids(const char *path, const kd_csv_options *opts, int id_col,
                                  const kd_shape *shape, kd_dataset **out, char ***ids);
/* What the first lines of a CSV file look like, for hints after a failed
 * load: the delimiter the reader uses with `opts`, the columns of the
 * first data line, and whether line 1 looks like a header (without
 * has_header: some cell of it is not a number while the next line's are). */
typedef struct kd_csv_layout {
    char delimiter;
    int columns;
    int header_likely;
} kd_csv_layout;
kd_status kd_csv_sniff(const char *path, const kd_csv_options *opts, kd_csv_layout *out);

/* A data file's format judged by its content (gzip looked through), not by
 * its name: a spool's magic, an IDX magic number, or text that is LibSVM
 * ("label index:value ...") or else CSV. KD_ERR_FORMAT naming the file
 * when it is none of them (e.g. binary data, or an HDF5 checkpoint). */
typedef enum kd_data_format {
    KD_DATA_IDX = 1,
    KD_DATA_CSV = 2,
    KD_DATA_LIBSVM = 3,
    KD_DATA_SPOOL = 4
} kd_data_format;
kd_status kd_data_format_detect(const char *path, kd_data_format *out);
/* LibSVM: "label idx:val idx:val ..." with 1-based ascending indices.
 * num_features 0 = infer from the largest index. */
kd_status kd_dataset_load_libsvm(const char *path, int num_features,
                                 kd_dataset **out);
/* Spool: the binary row format a Spark task hands to its rank (layout in
 * io/spool.c: 64-byte header with magic "KDSPOOL1", shape, count and a
 * CRC32 of the payload, then float32 features and optional int32 labels).
 * Loading checks every header field, the exact size and the CRC; a file
 * without labels gives labels -1. count 0 is a valid (empty) file. */
kd_status kd_dataset_load_spool(const char *path, kd_dataset **out);
/* (The spool loader memory-maps the file read-only instead of copying it:
 * the kernel pages it in and out, so a spool larger than this process's
 * share of RAM still trains. The file must not be truncated or rewritten
 * in place while the data set is alive; replacing it by rename, as every
 * Kindling writer does, is safe.) */
/* Labels are written when every sample has one (>= 0), omitted when all are
 * -1; a mix is KD_ERR_INVALID. Crash-safe: temporary file, fsync, rename. */
kd_status kd_dataset_save_spool(const char *path, const kd_dataset *ds);
/* Reject NaN/Inf features and labels outside [0, num_classes). The
 * message names the first bad sample. */
kd_status kd_dataset_validate(const kd_dataset *ds, int num_classes);

/* Subsets, seeded (the same seed and data always give the same samples),
 * each kept in the original order. They copy the chosen samples into
 * memory (a spool's mapping is not kept), checked against the memory
 * available like the readers. */
/* Hold out `fraction` (0 < fraction < 1) of the samples, rounded, at least
 * one and at most n - 1 (n >= 2): *held_out gets them, *rest the others. */
kd_status kd_dataset_split(const kd_dataset *ds, double fraction, uint64_t seed, kd_dataset **rest,
                           kd_dataset **held_out);
/* n (>= 1) samples drawn without replacement; all of them when n >= ds->n. */
kd_status kd_dataset_sample(const kd_dataset *ds, int64_t n, uint64_t seed, kd_dataset **out);

/* Memory limits. The readers that convert (IDX, CSV, LibSVM, gzip) check
 * the bytes they are about to allocate against the memory available and
 * refuse with KD_ERR_NOMEM and a message naming the file, the size needed
 * and the limit (and suggesting a conversion to a spool file), instead of
 * failing in malloc or being killed by the OOM killer. Available = the
 * smallest of /proc/meminfo MemAvailable, the cgroup's memory limit minus
 * its unreclaimable usage (v2 memory.max or v1 memory.limit_in_bytes), and
 * the headroom under RLIMIT_AS and RLIMIT_DATA. Spool files are mapped, so
 * only RLIMIT_AS applies to them.
 * kd_set_memory_limit(bytes > 0) replaces the detection with a fixed budget
 * per data set (for tests, or to allow using swap); 0 restores detection.
 * Process-wide, like kd_set_threads. */
void kd_set_memory_limit(uint64_t bytes);
/* Bytes available for a data set now (UINT64_MAX when nothing can be
 * measured). `source` (may be NULL) receives which limit binds, e.g.
 * "MemAvailable", "RLIMIT_AS (ulimit -v)", "kd_set_memory_limit". */
uint64_t kd_memory_available(char *source, size_t len);

/* Streamed conversion to a spool file (crash-safe, like
 * kd_dataset_save_spool) in bounded memory, whatever the size of the input:
 * a few MiB of buffers, never the data set. Arguments as for the loaders;
 * LibSVM with num_features 0 reads the file twice (the first pass finds the
 * width). On success *count (may be NULL) is the number of samples. */
kd_status kd_convert_idx_to_spool(const char *images_path, const char *labels_path,
                                  const char *spool_path, int64_t *count);
kd_status kd_convert_csv_to_spool(const char *path, int label_col, int has_header,
                                  const kd_shape *shape, const char *spool_path, int64_t *count);
kd_status kd_convert_csv_to_spool_opts(const char *path, const kd_csv_options *opts, const kd_shape *shape,
                                       const char *spool_path, int64_t *count);
kd_status kd_convert_libsvm_to_spool(const char *path, int num_features,
                                     const char *spool_path, int64_t *count);

/* --------------------------------------------------------------- networks */
typedef struct kd_net kd_net;

/* `spec` is either a preset name ("mlp", "lenet") or JSON text:
 *   {"input": [1,28,28], "layers": [{"type": "conv2d", "filters": 20,
 *    "kernel": 5}, {"type": "tanh"}, ..., {"type": "softmax"}]}
 * Shapes are inferred; an error names the layer at fault. The network is
 * created with parameters initialised from `seed`. */
kd_status kd_net_create(const char *spec, uint64_t seed, kd_net **out);
kd_status kd_net_create_from_file(const char *spec_path, uint64_t seed, kd_net **out);
void kd_net_free(kd_net *net);
/* JSON text of the fully resolved spec (every default filled in). Owned by net. */
const char *kd_net_spec_json(const kd_net *net);
/* The preset's JSON text, or NULL if no such preset. */
const char *kd_preset_json(const char *name);

kd_shape kd_net_input_shape(const kd_net *net);
int kd_net_num_classes(const kd_net *net);
/* Re-initialise every parameter (Xavier/He per layer) from seed. */
kd_status kd_net_init_params(kd_net *net, uint64_t seed);

/* The flat host buffers. Length kd_net_param_count(). Writable: the
 * parameter server and allreduce write into them directly. On a GPU call
 * kd_net_to_host first (see "devices" above); these calls copy nothing. */
size_t kd_net_param_count(const kd_net *net);
float *kd_net_params(kd_net *net);
float *kd_net_grads(kd_net *net);
/* Non-trainable state (batch-norm running mean/var), also one flat buffer. */
size_t kd_net_state_count(const kd_net *net);
float *kd_net_state(kd_net *net);

/* Which flat buffers kd_net_to_host is about (a bit set). */
enum { KD_NET_PARAMS = 1, KD_NET_GRADS = 2, KD_NET_STATE = 4, KD_NET_BUFFERS = 7 };
/* Make the host buffers in `buffers` current and hand them to the caller:
 * device values newer than the host copy are copied back, and the host
 * copies then count as the newer ones, so what the caller writes reaches
 * the device before its next use. A failed copy returns KD_ERR_DEVICE and
 * changes nothing. Immediate on the CPU. */
kd_status kd_net_to_host(kd_net *net, unsigned buffers);

typedef struct kd_layer_info {
    int index;
    const char *name;          /* unique, e.g. "conv1" or "dense_2" */
    const char *type;          /* "dense", "conv2d", ... */
    kd_shape in, out;          /* per-sample shapes */
    size_t weight_offset, weight_count; /* into kd_net_params */
    int weight_rank;
    int weight_dims[KD_MAX_RANK];
    size_t bias_offset, bias_count;
    size_t state_offset, state_count;   /* into kd_net_state: running mean, then var */
} kd_layer_info;

int kd_net_num_layers(const kd_net *net);
kd_status kd_net_layer_info(const kd_net *net, int i, kd_layer_info *out);

/* Forward a batch of `batch` samples (x is batch * input size floats).
 * training != 0 enables dropout and batch statistics. Afterwards the class
 * probabilities (batch * classes) are at kd_net_output().
 * The network keeps the pointer x, not a copy: kd_net_backward reads it
 * again (the first layer's weight gradient), so x must stay valid and
 * unchanged until the backward pass of this batch (or the next forward). */
kd_status kd_net_forward(kd_net *net, const float *x, int batch, int training);
const float *kd_net_output(const kd_net *net);
/* Softmax cross-entropy of the last forward against labels; mean over the
 * batch. Writes loss and the number of correct argmax predictions. */
kd_status kd_net_loss(kd_net *net, const int32_t *labels, double *loss, int *correct);
/* Backward from the loss of the last forward: gradients (mean over the
 * batch) are WRITTEN (not accumulated) into kd_net_grads(). */
kd_status kd_net_backward(kd_net *net, const int32_t *labels);
/* Dropout and other random layers draw from this seed + the given step
 * (so a run is reproducible and a resumed run continues identically). */
void kd_net_set_noise_seed(kd_net *net, uint64_t seed, int64_t step);

/* Probabilities for n samples (inference mode), in batches (of 256, or
 * batch_size). An output that is NaN or Inf (weights that overflow: a model
 * whose training diverged) is KD_ERR_NUMERIC naming the sample; so it is in
 * kd_evaluate. */
kd_status kd_net_predict(kd_net *net, const float *x, int64_t n, float *probs_out);
kd_status kd_net_predict_batched(kd_net *net, const float *x, int64_t n, int batch_size, float *probs_out);

/* Move the network to `ctx` (see "devices" above). To a GPU: allocates the
 * device buffers and uploads parameters and state. Back to the CPU: copies
 * them down and frees the device (an optimizer stepped with
 * kd_net_optim_step outside kd_train needs kd_net_sync(net, opt) first, or
 * its device state is lost). Setting the current context again is a no-op. */
kd_status kd_net_set_context(kd_net *net, kd_context ctx);
/* The network's context; a GPU context names the device actually used. */
kd_context kd_net_get_context(const kd_net *net);

/* -------------------------------------------------------------- optimizers */
typedef enum kd_optim_kind {
    KD_OPT_SGD = 0,      /* momentum 0 */
    KD_OPT_MOMENTUM = 1, /* heavy ball, PyTorch convention; nesterov flag */
    KD_OPT_ADAM = 2,     /* L2 weight decay added to the gradient (PyTorch Adam) */
    KD_OPT_ADAMW = 3     /* decoupled weight decay */
} kd_optim_kind;

/* Schedules, at optimizer step t (from 0). With warmup_steps w > 0 the
 * first w steps ramp up linearly, lr * (t + 1) / w (PyTorch's LinearLR with
 * start_factor 1/w over w - 1 steps), and the schedule below then runs on
 * t - w, the cosine over total_steps - w steps. */
typedef enum kd_schedule_kind {
    KD_SCHED_CONSTANT = 0,
    KD_SCHED_STEP = 1,   /* lr * gamma^(floor(step / step_size)) */
    KD_SCHED_COSINE = 2  /* lr_min + (lr-lr_min)(1+cos(pi*min(step,total)/total))/2 */
} kd_schedule_kind;

typedef struct kd_optim_config {
    kd_optim_kind kind;
    double lr;
    double momentum;      /* MOMENTUM */
    int nesterov;         /* MOMENTUM */
    double beta1, beta2, eps; /* ADAM / ADAMW */
    double weight_decay;
    kd_schedule_kind schedule;
    int64_t step_size;    /* STEP: in optimizer steps */
    double gamma;         /* STEP */
    int64_t total_steps;  /* COSINE: the whole run, warmup included */
    double lr_min;        /* COSINE */
    int64_t warmup_steps; /* any schedule: linear warmup over the first steps (0 = none) */
} kd_optim_config;

/* Defaults: SGD lr 0.01, momentum 0.9, beta1 0.9, beta2 0.999, eps 1e-8,
 * constant schedule, gamma 0.1, no warmup. */
kd_optim_config kd_optim_config_default(void);
kd_status kd_optim_config_validate(const kd_optim_config *cfg);
const char *kd_optim_kind_name(kd_optim_kind k);
kd_status kd_optim_kind_parse(const char *name, kd_optim_kind *out);
const char *kd_schedule_kind_name(kd_schedule_kind k);
kd_status kd_schedule_kind_parse(const char *name, kd_schedule_kind *out);

/* An optimizer for a vector of n parameters: owns its state (0, n or 2n
 * floats). It does not know the network, so a parameter-server rank can run
 * one on its shard of the flat vector. */
typedef struct kd_optim kd_optim;
kd_status kd_optim_create(const kd_optim_config *cfg, size_t n, kd_optim **out);
void kd_optim_free(kd_optim *opt);
const kd_optim_config *kd_optim_get_config(const kd_optim *opt);
/* One update: params -= f(grads). Increments the step counter. */
kd_status kd_optim_step(kd_optim *opt, float *params, const float *grads);
/* One update of the network's parameters from its gradients, where the
 * network lives: kd_optim_step on the CPU, the same rule in device kernels
 * on a GPU (the optimizer state is then kept on the device until
 * kd_net_sync). The local exchange of kd_train uses this. */
kd_status kd_net_optim_step(kd_net *net, kd_optim *opt);
/* Bring the host copies up to date for reading: parameters, gradients and
 * state, and, when opt is not NULL, the optimizer state a GPU step keeps on
 * the device (the device copies stay current too). A no-op on the CPU. */
kd_status kd_net_sync(kd_net *net, kd_optim *opt);
/* Learning rate the next step will use. */
double kd_optim_current_lr(const kd_optim *opt);
int64_t kd_optim_steps(const kd_optim *opt);
void kd_optim_set_steps(kd_optim *opt, int64_t steps);
/* Re-plan a cosine schedule over total_steps (a resumed run trained to more,
 * or fewer, epochs than first planned): from the current step on the
 * learning rate follows the new curve instead of staying at lr_min past the
 * old end. Other schedules have no end and are left as they are.
 * KD_ERR_INVALID for total_steps < 1. */
kd_status kd_optim_set_total_steps(kd_optim *opt, int64_t total_steps);
size_t kd_optim_param_count(const kd_optim *opt);
/* State buffer (for checkpoints): slots * n floats, slot-major. */
float *kd_optim_state(kd_optim *opt, size_t *count);
int kd_optim_state_slots(const kd_optim *opt);
const char *kd_optim_state_slot_name(const kd_optim *opt, int slot); /* "velocity", "m", "v" */

/* ------------------------------------------------------------- evaluation */
typedef struct kd_eval_result {
    int64_t count;
    double loss;
    double accuracy;
    int num_classes;
    double *per_class_accuracy; /* num_classes entries, owned by the result (= recall) */
    int64_t *per_class_count;
    /* num_classes x num_classes counts, row = true class, column = predicted
     * class: confusion[t * num_classes + p]. Owned by the result. A class's
     * precision is its diagonal entry over its column's sum. */
    int64_t *confusion;
} kd_eval_result;

kd_status kd_evaluate(kd_net *net, const kd_dataset *ds, int batch_size, kd_eval_result *out);
void kd_eval_result_clear(kd_eval_result *r);

/* ------------------------------------------------------------- training */
typedef struct kd_epoch_record {
    int32_t epoch;       /* 1-based */
    double train_loss, train_accuracy;
    double test_loss, test_accuracy;  /* NaN when not scored after this epoch */
    double seconds;
    double learning_rate;              /* at the end of the epoch */
    double val_loss, val_accuracy;     /* NaN without validation data */
} kd_epoch_record;

typedef struct kd_train_state {
    int32_t epoch;        /* completed epochs */
    int64_t step;         /* completed optimizer steps */
    uint64_t seed;        /* data order and dropout derive from (seed, epoch, step) */
    int32_t batch_size;
    int32_t history_len;
    kd_epoch_record *history; /* owned; use kd_train_state_clear */
} kd_train_state;

void kd_train_state_init(kd_train_state *st);
void kd_train_state_clear(kd_train_state *st);
kd_status kd_train_state_append(kd_train_state *st, const kd_epoch_record *rec);

/* The best epoch of a history as early stopping sees it. The monitored
 * figure is an epoch's validation loss, or its training loss when the
 * last epoch has no validation figures (epochs of the other kind are then
 * skipped). Going through the epochs in order, one improves when its
 * figure is below the best so far by more than min_delta (Keras's
 * EarlyStopping rule); `since` counts the epochs after the best. */
typedef struct kd_best_epoch {
    int32_t epoch;  /* 1-based; 0 when no epoch has the monitored figure */
    double value;   /* its monitored figure (NaN when epoch is 0) */
    int32_t since;  /* epochs with the monitored figure after it */
    int on_val;     /* 1: validation loss, 0: training loss */
} kd_best_epoch;
kd_status kd_train_state_best(const kd_train_state *st, double min_delta, kd_best_epoch *out);

typedef struct kd_progress {
    int32_t epoch, epochs;
    int64_t step, steps_per_epoch;
    int64_t samples_done, samples_per_epoch;
    double loss, accuracy;      /* running mean over this epoch */
    double samples_per_sec;
    double seconds_left;        /* estimate for the whole run */
    int epoch_done;             /* 1 on the end-of-epoch call */
    const kd_epoch_record *record; /* on the end-of-epoch call */
    double learning_rate;       /* the next step's */
    double seconds;             /* since this kd_train call started */
} kd_progress;
/* Return non-zero to stop training (it stops cleanly, KD_OK). */
typedef int (*kd_progress_fn)(const kd_progress *p, void *user);

/* ---------------------------------------------------------------- batching
 * An epoch's sample order (shuffled from (seed, epoch)) is cut into global
 * batches of batch_size * part_count samples, and each global batch into
 * part_count near-equal contiguous parts, one per worker: W workers with
 * batch b train on exactly what one process with batch W*b sees. With
 * local data (one file per worker) each worker's part of a step is the
 * next batch_size samples of its own data. Implemented in src/batch.c. */

/* Steps that cover `samples` in batches of `global_batch`: ceil(samples /
 * global_batch), 0 for no samples (global_batch < 1 gives 0 too). The one
 * rule for steps per epoch: kd_train, the MPI driver and the CLI's
 * learning-rate schedules all use it. */
int64_t kd_steps_per_epoch(int64_t samples, int64_t global_batch);

/* One training step as the exchange sees it. */
typedef struct kd_step {
    int64_t index;          /* step within the epoch, from 0 */
    int32_t samples;        /* this worker's samples; 0: an empty step (zero gradients) */
    int64_t global_samples; /* every worker's samples in this step; -1 when only the
                               exchange can know (local data: it sums `samples`) */
} kd_step;

/* How gradients become new parameters. "local" runs the optimizer in this
 * process; the MPI parameter server and allreduce provide their own. */
typedef struct kd_exchange {
    const char *name;
    void *ctx;
    /* Called after backward with the step's gradients (the mean over this
     * worker's step->samples) in kd_net_grads(); must leave updated
     * parameters in kd_net_params(). */
    kd_status (*step)(void *ctx, kd_net *net, kd_optim *opt, const kd_step *step);
} kd_exchange;

/* Where checkpoints go. kd_train calls it every checkpoint_every steps,
 * after each epoch and when a progress callback stops the run, with the
 * state to record (the network and optimizer as they are on their device:
 * the hook syncs what it saves, e.g. with kd_net_sync). */
typedef kd_status (*kd_save_fn)(void *user, kd_net *net, kd_optim *opt, const kd_train_state *st);

/* Asked after every step: non-zero stops the run at that step boundary
 * (a program's signal handler set a flag, a time limit passed). The
 * position is saved as when a progress callback stops the run, and
 * kd_train returns KD_OK with the state where it stopped; resuming from
 * the checkpoint continues exactly there. The library itself never
 * handles signals. Under kd_dist_train every worker is asked and the sync
 * workers stop together, at the boundary after the first one said so. */
typedef int (*kd_stop_fn)(void *user);

typedef struct kd_train_config {
    int32_t epochs;            /* total epochs (a resumed run continues to this) */
    int32_t batch_size;        /* samples per worker per step */
    uint64_t seed;
    int shuffle;               /* 1 = reshuffle every epoch from (seed, epoch) */
    const kd_dataset *test;    /* optional, evaluated after each epoch */
    const char *checkpoint_path; /* optional: where the default save hook writes */
    int64_t checkpoint_every;  /* steps; 0 = only at epoch ends */
    kd_progress_fn progress;   /* optional */
    void *progress_user;
    double progress_interval;  /* seconds between mid-epoch calls; 0 = epoch ends only */
    const kd_exchange *exchange; /* NULL = local */
    /* Which samples this process trains on: part part_index of part_count
     * of every global batch (see batching above). 0/1 = all. */
    int32_t part_index, part_count;
    /* Steps per epoch when more than the data needs (0 = from the data):
     * the extra steps have no samples but still call the exchange, so
     * workers holding uneven local data stay in step with each other. */
    int64_t steps_per_epoch;
    /* 1: the training set holds only this part's own samples (local data). */
    int local_data;
    /* NULL: save to checkpoint_path (if set) with kd_checkpoint_save. */
    kd_save_fn save;
    void *save_user;
    /* Optional: asked after every step whether to stop there (see kd_stop_fn). */
    kd_stop_fn stop;
    void *stop_user;
    /* Optional validation set, scored after every epoch (the record's
     * val_loss and val_accuracy). With one, the test set is scored only
     * after the run's last epoch, so the figure to choose settings by is
     * the validation one and the test set stays held out. */
    const kd_dataset *val;
    /* Early stopping: after an epoch, stop when the monitored figure (see
     * kd_train_state_best) has not improved by more than min_delta for
     * `patience` epochs; the run then ends as if that epoch were the last
     * (kd_train returns KD_OK). A resumed run whose history already says so
     * trains no further. 0 = off. */
    int32_t patience;
    double min_delta;
    /* Mid-epoch progress calls also every this many steps (0 = only by
     * progress_interval). */
    int64_t progress_every;
} kd_train_config;

kd_train_config kd_train_config_default(void);
/* Train until cfg->epochs are done, starting from state (epoch/step of a
 * resumed run). state->history gains one record per epoch, and
 * state->batch_size records the global batch (batch_size * part_count): a
 * run with the same global batch continues a resumed epoch where it
 * stopped, one with another starts the interrupted epoch over. */
kd_status kd_train(kd_net *net, kd_optim *opt, const kd_dataset *train,
                   const kd_train_config *cfg, kd_train_state *state);

/* ------------------------------------------------------------- checkpoints */
/* HDF5, self-describing (see io/checkpoint.c for the layout). Written to a
 * temporary file beside `path`, closed, fsynced and renamed, so a failed
 * save leaves any previous checkpoint intact. opt and state may be NULL. */
kd_status kd_checkpoint_save(const char *path, const kd_net *net,
                             const kd_optim *opt, const kd_train_state *state);
/* Rebuilds the network from the spec stored in the file and loads every
 * tensor, validating its shape. opt_out/state_out may be NULL; *opt_out is
 * NULL if the file holds no optimizer. */
kd_status kd_checkpoint_load(const char *path, kd_net **net_out,
                             kd_optim **opt_out, kd_train_state *state_out);
/* The temporary name every save of `path` by this process writes before
 * renaming it over path (checkpoints and spool files alike):
 * "<path>.tmp-<host>-<pid>". A program that must end in the middle of a
 * save (a signal handler) removes it, so nothing is left behind; the next
 * save of path would also remove it once this process is gone. */
kd_status kd_save_temp_path(const char *path, char *buf, size_t len);
/* Whether a checkpoint (or any Kindling save) can be written at path, so a
 * run fails before its first step rather than at its first save: path is
 * not a directory, its directory exists, and the temporary can be created
 * there (it is created and removed again). KD_ERR_IO naming the problem. */
kd_status kd_save_check_path(const char *path);
/* Copy a file the way every Kindling save writes one: into the temporary
 * beside `to` (kd_save_temp_path), fsync, rename over `to`, so `to` is the
 * old file or a whole copy. For keeping copies of a checkpoint (the best
 * epoch's, the last N epochs'). KD_ERR_IO naming the file and the reason. */
kd_status kd_file_copy(const char *from, const char *to);

#ifdef __cplusplus
}
#endif
#endif /* KINDLING_H */
