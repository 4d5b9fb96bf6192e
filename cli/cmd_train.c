/* `kindling train`: build (or resume) a network, load the data, train it
 * with kd_train and report progress and the final accuracy. */
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_common.h"
#include "cli_signals.h"
#include "commands.h"
#include "train_watch.h"
#ifdef KD_HAVE_MPI
#include "kindling_mpi.h"
#endif

static const char *const CMD = "train";

static void train_help(void)
{
    printf(
        "usage: kindling train [options]\n"
        "\n"
        "Train a network and optionally save checkpoints.\n"
        "\n"
        "Network:\n"
        "  --net NAME|FILE        preset (mlp, lenet) or a JSON spec file (default mlp);\n"
        "                         an existing file is read, anything else is a preset name\n"
        "\n"
        "Data (default: Fashion-MNIST from $KD_FASHION_MNIST_DIR or\n"
        "      " CLI_DEFAULT_FASHION_MNIST_DIR ", with its t10k test set):\n"
        "  --dataset fashion-mnist\n"
        "  --train-images F --train-labels F   IDX files, plain or gzip\n"
        "  --test-images F --test-labels F\n"
        "  --train-csv F [--test-csv F]         one sample per line\n"
        "  --label-col N          CSV column with the class (default 0; -1 = none)\n"
        "  --header               CSV files start with a header line\n"
        CLI_DELIMITER_HELP
        "  --train-libsvm F [--test-libsvm F]\n"
        "  --features N           LibSVM feature count (default: the network's input size)\n"
        "  --train-spool F [--test-spool F]     binary spool files (format in io/spool.c)\n"
        "  Features are reshaped to the network's input shape when the sizes agree.\n"
        "  --max-samples N        train on N samples drawn at random (from --seed) from the\n"
        "                         training data (after --val-split took its share)\n"
        "\n"
        "Validation and early stopping:\n"
        CLI_VAL_HELP
        "  --patience N           stop when the validation loss (the training loss without\n"
        "                         validation data) has not improved for N epochs\n"
        "  --min-delta X          an improvement must be larger than X (default 0)\n"
        "\n"
        "Training:\n"
        "  --epochs N             total epochs (default 10)\n"
        "  --batch-size N         (default 64)\n"
        "  --seed N               initialisation, data order, dropout and the validation\n"
        "                         split (default 42)\n"
        "  --threads N            OpenBLAS threads for the matrix products (default 1, so\n"
        "                         runs are reproducible; 0 = OpenBLAS's default)\n"
        CLI_CONTEXT_HELP
        "                         (with --dist sync on GPUs gradients are averaged by NCCL\n"
        "                         when it was found at build time; --dist async copies them\n"
        "                         to the host for the parameter server)\n"
        "\n"
        "Optimizer:\n"
        "  --optimizer NAME       sgd, momentum, adam or adamw (default adam)\n"
        "  --lr X                 learning rate (default 0.01 for sgd/momentum, 0.002 for adam/adamw)\n"
        "  --momentum X           momentum only (default 0.9)\n"
        "  --nesterov             momentum only: Nesterov update\n"
        "  --beta1 X --beta2 X --eps X   adam/adamw only (defaults 0.9, 0.999, 1e-8)\n"
        "  --weight-decay X       (default 0)\n"
        "  --schedule NAME        constant, step or cosine (default cosine)\n"
        "  --step-size N          step: decay every N epochs\n"
        "  --gamma X              step: decay factor (default 0.1)\n"
        "  --lr-min X             cosine: final learning rate (default 0); the cosine\n"
        "                         runs over all --epochs (a resume re-plans it over its\n"
        "                         --epochs, so training to more epochs keeps learning)\n"
        "  --warmup-epochs N | --warmup-steps N\n"
        "                         ramp the learning rate up linearly over the first epochs\n"
        "                         or steps, then follow the schedule (the cosine spans the\n"
        "                         rest of the run)\n"
        "\n"
        "Checkpoints:\n"
        "  --checkpoint PATH      save network, optimizer and history (HDF5) after every\n"
        "                         epoch and at the end; a failed run leaves it untouched\n"
        "  --checkpoint-every N   also save every N optimizer steps\n"
        "  --keep-best PATH       also keep a copy of the checkpoint of the best epoch so far\n"
        "                         (lowest validation loss, else training loss; see --min-delta)\n"
        "  --keep-last N          also keep the last N epochs' checkpoints beside --checkpoint\n"
        "                         as <name>-epochNNN.h5 (older ones are removed)\n"
        "  --resume PATH          continue from a checkpoint up to --epochs in total. The\n"
        "                         network, optimizer settings, seed and batch size come from\n"
        "                         the checkpoint (--net, optimizer flags, --seed and\n"
        "                         --batch-size are ignored); saves go back to PATH unless\n"
        "                         --checkpoint names another file\n"
        "\n"
        "Distributed (run under mpirun; every rank gets the same flags):\n"
        "  --dist sync|async      sync: every rank is a worker and gradients are averaged\n"
        "                         by allreduce, so N workers with --batch-size b train like\n"
        "                         one process with batch N*b. async: the first --servers\n"
        "                         ranks are parameter servers, the rest workers that push\n"
        "                         gradients and pull parameters (MPI one-sided RMA)\n"
        "  --servers S            async: parameter-server ranks (default 1)\n"
        "  --max-staleness K      async: a worker runs at most K steps ahead of the slowest\n"
        "                         and reads parameters holding every push up to K back;\n"
        "                         0 = synchronous rounds, -1 = unbounded (default)\n"
        "  --ps-protocol P        async: auto (default: one-sided RMA when every rank is on\n"
        "                         one host, messages across hosts), rma or msg\n"
        "  --local-data           every worker loads only its own share: \"%%w\" in the data\n"
        "                         paths becomes the worker index (e.g. --train-spool\n"
        "                         part-%%w.spool); workers with fewer samples take empty steps\n"
        "  Worker 0 alone prints progress and writes checkpoints; a checkpoint records the\n"
        "  global batch, so --resume with another number of workers keeps the global batch.\n"
        "\n"
        "Output:\n"
        "  -q, --quiet            no per-epoch progress on stderr\n"
        "  --metrics FILE         one JSON line per epoch (event \"epoch\"): train_loss,\n"
        "                         train_accuracy, val_loss, val_accuracy, test_loss,\n"
        "                         test_accuracy, learning_rate, samples_per_sec, seconds,\n"
        "                         elapsed, time (null where not measured); appended to on\n"
        "                         --resume\n"
        "  --metrics-every N      also a line every N optimizer steps (running figures)\n"
        "  -h, --help             this help\n"
        "\n"
        "Progress goes to stderr (one line per epoch, plus a live line on a terminal);\n"
        "the final accuracy goes to stdout.\n");
}

enum {
    OPT_NET = CLI_OPT_FIRST_COMMAND_ID,
    OPT_EPOCHS,
    OPT_BATCH,
    OPT_OPTIMIZER,
    OPT_LR,
    OPT_MOMENTUM,
    OPT_NESTEROV,
    OPT_BETA1,
    OPT_BETA2,
    OPT_EPS,
    OPT_WEIGHT_DECAY,
    OPT_SCHEDULE,
    OPT_STEP_SIZE,
    OPT_GAMMA,
    OPT_LR_MIN,
    OPT_SEED,
    OPT_THREADS,
    OPT_CHECKPOINT,
    OPT_CHECKPOINT_EVERY,
    OPT_DIST,
    OPT_SERVERS,
    OPT_MAX_STALENESS,
    OPT_PS_PROTOCOL,
    OPT_LOCAL_DATA,
    OPT_CONTEXT,
    OPT_PATIENCE,
    OPT_MIN_DELTA,
    OPT_KEEP_BEST,
    OPT_KEEP_LAST,
    OPT_METRICS,
    OPT_METRICS_EVERY,
    OPT_MAX_SAMPLES,
    OPT_WARMUP_EPOCHS,
    OPT_WARMUP_STEPS,
    OPT_RESUME,
};

static const struct option TRAIN_OPTIONS[] = {
    {"net", required_argument, NULL, OPT_NET},
    {"epochs", required_argument, NULL, OPT_EPOCHS},
    {"batch-size", required_argument, NULL, OPT_BATCH},
    {"optimizer", required_argument, NULL, OPT_OPTIMIZER},
    {"lr", required_argument, NULL, OPT_LR},
    {"momentum", required_argument, NULL, OPT_MOMENTUM},
    {"nesterov", no_argument, NULL, OPT_NESTEROV},
    {"beta1", required_argument, NULL, OPT_BETA1},
    {"beta2", required_argument, NULL, OPT_BETA2},
    {"eps", required_argument, NULL, OPT_EPS},
    {"weight-decay", required_argument, NULL, OPT_WEIGHT_DECAY},
    {"schedule", required_argument, NULL, OPT_SCHEDULE},
    {"step-size", required_argument, NULL, OPT_STEP_SIZE},
    {"gamma", required_argument, NULL, OPT_GAMMA},
    {"lr-min", required_argument, NULL, OPT_LR_MIN},
    {"seed", required_argument, NULL, OPT_SEED},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"checkpoint", required_argument, NULL, OPT_CHECKPOINT},
    {"checkpoint-every", required_argument, NULL, OPT_CHECKPOINT_EVERY},
    {"resume", required_argument, NULL, OPT_RESUME},
    {"dist", required_argument, NULL, OPT_DIST},
    {"servers", required_argument, NULL, OPT_SERVERS},
    {"max-staleness", required_argument, NULL, OPT_MAX_STALENESS},
    {"ps-protocol", required_argument, NULL, OPT_PS_PROTOCOL},
    {"local-data", no_argument, NULL, OPT_LOCAL_DATA},
    {"context", required_argument, NULL, OPT_CONTEXT},
    {"patience", required_argument, NULL, OPT_PATIENCE},
    {"min-delta", required_argument, NULL, OPT_MIN_DELTA},
    {"keep-best", required_argument, NULL, OPT_KEEP_BEST},
    {"keep-last", required_argument, NULL, OPT_KEEP_LAST},
    {"metrics", required_argument, NULL, OPT_METRICS},
    {"metrics-every", required_argument, NULL, OPT_METRICS_EVERY},
    {"max-samples", required_argument, NULL, OPT_MAX_SAMPLES},
    {"warmup-epochs", required_argument, NULL, OPT_WARMUP_EPOCHS},
    {"warmup-steps", required_argument, NULL, OPT_WARMUP_STEPS},
    {"val-split", required_argument, NULL, CLI_OPT_VAL_SPLIT},
    {"val-images", required_argument, NULL, CLI_OPT_VAL_IMAGES},
    {"val-labels", required_argument, NULL, CLI_OPT_VAL_LABELS},
    {"val-csv", required_argument, NULL, CLI_OPT_VAL_CSV},
    {"val-libsvm", required_argument, NULL, CLI_OPT_VAL_LIBSVM},
    {"val-spool", required_argument, NULL, CLI_OPT_VAL_SPOOL},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {"dataset", required_argument, NULL, CLI_OPT_DATASET},
    {"train-images", required_argument, NULL, CLI_OPT_TRAIN_IMAGES},
    {"train-labels", required_argument, NULL, CLI_OPT_TRAIN_LABELS},
    {"test-images", required_argument, NULL, CLI_OPT_TEST_IMAGES},
    {"test-labels", required_argument, NULL, CLI_OPT_TEST_LABELS},
    {"train-csv", required_argument, NULL, CLI_OPT_TRAIN_CSV},
    {"test-csv", required_argument, NULL, CLI_OPT_TEST_CSV},
    {"train-libsvm", required_argument, NULL, CLI_OPT_TRAIN_LIBSVM},
    {"test-libsvm", required_argument, NULL, CLI_OPT_TEST_LIBSVM},
    {"train-spool", required_argument, NULL, CLI_OPT_TRAIN_SPOOL},
    {"test-spool", required_argument, NULL, CLI_OPT_TEST_SPOOL},
    {"label-col", required_argument, NULL, CLI_OPT_LABEL_COL},
    {"header", no_argument, NULL, CLI_OPT_HEADER},
    {"delimiter", required_argument, NULL, CLI_OPT_DELIMITER},
    {"features", required_argument, NULL, CLI_OPT_FEATURES},
    {NULL, 0, NULL, 0},
};

typedef struct train_args {
    const char *net;
    long long epochs, batch, seed, threads, step_size_epochs, checkpoint_every;
    long long patience, keep_last, metrics_every, max_samples, warmup_epochs, warmup_steps;
    double min_delta;
    const char *keep_best, *metrics;
    kd_optim_config opt;     /* step_size/total_steps filled once the data size is known */
    int quiet, local_data;
    int given[OPT_RESUME + 1 - OPT_NET]; /* which command flags appeared */
    const char *checkpoint, *resume;
    const char *dist;        /* NULL, "sync" or "async" */
    long long servers, max_staleness;
    const char *ps_protocol; /* --ps-protocol: auto, rma or msg */
    kd_context ctx;          /* --context */
    cli_data_opts data;
} train_args;

#define GIVEN(a, id) ((a)->given[(id) - OPT_NET])

/* "sgd, momentum, adam, adamw": the names come from the library so the list stays true. */
static void kind_list(char *buf, size_t len, int optimizers)
{
    int last = optimizers ? KD_OPT_ADAMW : KD_SCHED_COSINE;
    size_t used = 0;
    buf[0] = '\0';
    for (int k = 0; k <= last && used < len; k++) {
        const char *name = optimizers ? kd_optim_kind_name((kd_optim_kind)k) : kd_schedule_kind_name((kd_schedule_kind)k);
        used += (size_t)snprintf(buf + used, len - used, "%s%s", k ? ", " : "", name);
    }
}

/* The numeric flags: where each value goes and its range. An integer
 * flag lands in a long long field; a number in a double (the optimizer's). */
typedef struct num_flag {
    int id;
    const char *flag;
    size_t offset;             /* into train_args */
    int is_int;
    long long imin, imax;      /* integers */
    double lo, hi;             /* numbers: (lo, hi) open or closed as given */
    int lo_closed, hi_closed;
} num_flag;

#define INT_FLAG(id, flag, field, min, max) {id, flag, offsetof(train_args, field), 1, min, max, 0, 0, 0, 0}
#define NUM_FLAG(id, flag, field, lo, lo_closed, hi, hi_closed) \
    {id, flag, offsetof(train_args, field), 0, 0, 0, lo, hi, lo_closed, hi_closed}

static const num_flag NUM_FLAGS[] = {
    INT_FLAG(OPT_EPOCHS, "--epochs", epochs, 1, INT_MAX),
    INT_FLAG(OPT_BATCH, "--batch-size", batch, 1, INT_MAX),
    INT_FLAG(OPT_SEED, "--seed", seed, 0, LLONG_MAX),
    INT_FLAG(OPT_THREADS, "--threads", threads, 0, 1024),
    INT_FLAG(OPT_STEP_SIZE, "--step-size", step_size_epochs, 1, INT_MAX),
    INT_FLAG(OPT_CHECKPOINT_EVERY, "--checkpoint-every", checkpoint_every, 1, LLONG_MAX),
    INT_FLAG(OPT_SERVERS, "--servers", servers, 1, INT_MAX),
    INT_FLAG(OPT_MAX_STALENESS, "--max-staleness", max_staleness, -1, INT_MAX),
    INT_FLAG(OPT_PATIENCE, "--patience", patience, 1, INT_MAX),
    INT_FLAG(OPT_KEEP_LAST, "--keep-last", keep_last, 1, INT_MAX),
    INT_FLAG(OPT_METRICS_EVERY, "--metrics-every", metrics_every, 1, LLONG_MAX),
    INT_FLAG(OPT_MAX_SAMPLES, "--max-samples", max_samples, 1, LLONG_MAX),
    INT_FLAG(OPT_WARMUP_EPOCHS, "--warmup-epochs", warmup_epochs, 1, INT_MAX),
    INT_FLAG(OPT_WARMUP_STEPS, "--warmup-steps", warmup_steps, 1, LLONG_MAX),
    NUM_FLAG(OPT_MIN_DELTA, "--min-delta", min_delta, 0, 1, INFINITY, 0),
    NUM_FLAG(OPT_LR, "--lr", opt.lr, 0, 0, INFINITY, 0),
    NUM_FLAG(OPT_MOMENTUM, "--momentum", opt.momentum, 0, 1, 1, 0),
    NUM_FLAG(OPT_BETA1, "--beta1", opt.beta1, 0, 1, 1, 0),
    NUM_FLAG(OPT_BETA2, "--beta2", opt.beta2, 0, 1, 1, 0),
    NUM_FLAG(OPT_EPS, "--eps", opt.eps, 0, 0, INFINITY, 0),
    NUM_FLAG(OPT_WEIGHT_DECAY, "--weight-decay", opt.weight_decay, 0, 1, INFINITY, 0),
    NUM_FLAG(OPT_GAMMA, "--gamma", opt.gamma, 0, 0, 1, 1),
    NUM_FLAG(OPT_LR_MIN, "--lr-min", opt.lr_min, 0, 1, INFINITY, 0),
};

/* Parse `text` into the field of flag `id`; -1 when `id` is not numeric. */
static int parse_numeric(train_args *a, int id, const char *text)
{
    for (size_t i = 0; i < sizeof NUM_FLAGS / sizeof NUM_FLAGS[0]; i++) {
        const num_flag *f = &NUM_FLAGS[i];
        if (f->id != id)
            continue;
        char *field = (char *)a + f->offset;
        if (f->is_int)
            return cli_parse_int(CMD, f->flag, text, f->imin, f->imax, (long long *)(void *)field);
        return cli_parse_double(CMD, f->flag, text, f->lo, f->lo_closed, f->hi, f->hi_closed, (double *)(void *)field);
    }
    return -1;
}

static int parse_train_args(int argc, char **argv, train_args *a, int *help)
{
    int c, rc;
    char names[128];

    memset(a, 0, sizeof *a);
    /* The defaults (10 epochs, batch 64, Adam at 2e-3 (below) with a cosine
     * schedule) bring mlp to >= 0.885 and lenet to >= 0.91 on Fashion-MNIST's
     * test set (docs/benchmarks.md, "Defaults"); kindling_spark/params.py
     * mirrors epochs and batch, and its ranks take the learning rate from here. */
    a->net = "mlp";
    a->epochs = 10;
    a->batch = 64;
    a->seed = 42;
    a->threads = 1;
    a->servers = 1;
    a->max_staleness = -1;
    a->ps_protocol = "auto";
    a->opt = kd_optim_config_default();
    a->opt.kind = KD_OPT_ADAM;
    a->opt.schedule = KD_SCHED_COSINE;
    cli_data_opts_init(&a->data);
    *help = 0;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hq", TRAIN_OPTIONS, NULL)) != -1) {
        if (c >= OPT_NET && c <= OPT_RESUME)
            GIVEN(a, c) = 1;
        if ((rc = parse_numeric(a, c, optarg)) >= 0) {
            if (rc != CLI_OK)
                return rc;
            continue;
        }
        switch (c) {
        case 'h': *help = 1; return CLI_OK;
        case 'q': a->quiet = 1; break;
        case OPT_NET: a->net = optarg; break;
        case OPT_OPTIMIZER:
            if (kd_optim_kind_parse(optarg, &a->opt.kind) != KD_OK) {
                kind_list(names, sizeof names, 1);
                return cli_usage_error(CMD, "--optimizer: unknown optimizer '%s' (choose %s)", optarg, names);
            }
            break;
        case OPT_SCHEDULE:
            if (kd_schedule_kind_parse(optarg, &a->opt.schedule) != KD_OK) {
                kind_list(names, sizeof names, 0);
                return cli_usage_error(CMD, "--schedule: unknown schedule '%s' (choose %s)", optarg, names);
            }
            break;
        case OPT_NESTEROV: a->opt.nesterov = 1; break;
        case OPT_CHECKPOINT: a->checkpoint = optarg; break;
        case OPT_RESUME: a->resume = optarg; break;
        case OPT_KEEP_BEST: a->keep_best = optarg; break;
        case OPT_METRICS: a->metrics = optarg; break;
        case OPT_DIST:
            if (strcmp(optarg, "sync") != 0 && strcmp(optarg, "async") != 0)
                return cli_usage_error(CMD, "--dist: unknown mode '%s' (choose sync or async)", optarg);
            a->dist = optarg;
            break;
        case OPT_PS_PROTOCOL:
            if (strcmp(optarg, "auto") != 0 && strcmp(optarg, "rma") != 0 && strcmp(optarg, "msg") != 0)
                return cli_usage_error(CMD, "--ps-protocol: unknown protocol '%s' (choose auto, rma or msg)", optarg);
            a->ps_protocol = optarg;
            break;
        case OPT_LOCAL_DATA: a->local_data = 1; break;
        case OPT_CONTEXT:
            if ((rc = cli_parse_context(CMD, optarg, &a->ctx)) != CLI_OK)
                return rc;
            break;
        case '?':
        case ':': return cli_getopt_error(CMD, c, argv);
        default:
            if ((rc = cli_data_option(CMD, &a->data, c, optarg)) != CLI_OK)
                return rc < 0 ? cli_usage_error(CMD, "unhandled option") : rc;
        }
    }
    if (optind < argc)
        return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);

    /* Flag combinations that would silently do nothing. A resumed run takes
     * these settings from the checkpoint, so they are only noted there. */
    if (a->checkpoint_every && !a->checkpoint && !a->resume)
        return cli_usage_error(CMD, "--checkpoint-every needs --checkpoint");
    /* The copies are of the file every epoch saves. */
    if ((a->keep_best || a->keep_last) && !a->checkpoint && !a->resume)
        return cli_usage_error(CMD, "%s keeps copies of the checkpoint every epoch saves: give --checkpoint PATH too",
                               a->keep_best ? "--keep-best" : "--keep-last");
    const char *saved = a->checkpoint ? a->checkpoint : a->resume;
    if (a->keep_best && saved && strcmp(a->keep_best, saved) == 0)
        return cli_usage_error(CMD, "--keep-best: name another file than the checkpoint %s", saved);
    if (GIVEN(a, OPT_MIN_DELTA) && !a->patience && !a->keep_best)
        return cli_usage_error(CMD, "--min-delta: only applies with --patience or --keep-best");
    if (a->metrics_every && !a->metrics)
        return cli_usage_error(CMD, "--metrics-every needs --metrics FILE");
    if (a->warmup_epochs && a->warmup_steps)
        return cli_usage_error(CMD, "--warmup-epochs and --warmup-steps exclude each other: choose one");
    if (a->data.val_split > 0 && (a->data.val_images || a->data.val_labels || a->data.val_csv ||
                                  a->data.val_libsvm || a->data.val_spool))
        return cli_usage_error(CMD, "--val-split and validation files exclude each other: hold out part of the "
                                    "training data or name a validation set, not both");
    int async = a->dist && strcmp(a->dist, "async") == 0;
    if (a->local_data && !a->dist)
        return cli_usage_error(CMD, "--local-data: only applies with --dist");
    if (!async && (GIVEN(a, OPT_SERVERS) || GIVEN(a, OPT_MAX_STALENESS) || GIVEN(a, OPT_PS_PROTOCOL)))
        return cli_usage_error(CMD, "%s: only applies to --dist async",
                               GIVEN(a, OPT_SERVERS) ? "--servers"
                               : GIVEN(a, OPT_MAX_STALENESS) ? "--max-staleness" : "--ps-protocol");
    kd_optim_kind k = a->opt.kind;
    if (!GIVEN(a, OPT_LR))
        a->opt.lr = (k == KD_OPT_ADAM || k == KD_OPT_ADAMW) ? 0.002 : 0.01;
    if (a->resume)
        return CLI_OK;
    if (k != KD_OPT_MOMENTUM && (GIVEN(a, OPT_MOMENTUM) || GIVEN(a, OPT_NESTEROV)))
        return cli_usage_error(CMD, "%s: only applies to --optimizer momentum",
                               GIVEN(a, OPT_MOMENTUM) ? "--momentum" : "--nesterov");
    if (k != KD_OPT_ADAM && k != KD_OPT_ADAMW &&
        (GIVEN(a, OPT_BETA1) || GIVEN(a, OPT_BETA2) || GIVEN(a, OPT_EPS)))
        return cli_usage_error(CMD, "%s: only applies to --optimizer adam or adamw",
                               GIVEN(a, OPT_BETA1) ? "--beta1" : GIVEN(a, OPT_BETA2) ? "--beta2" : "--eps");
    if (a->opt.schedule != KD_SCHED_STEP && (GIVEN(a, OPT_STEP_SIZE) || GIVEN(a, OPT_GAMMA)))
        return cli_usage_error(CMD, "%s: only applies to --schedule step",
                               GIVEN(a, OPT_STEP_SIZE) ? "--step-size" : "--gamma");
    if (a->opt.schedule == KD_SCHED_STEP && !GIVEN(a, OPT_STEP_SIZE))
        return cli_usage_error(CMD, "--schedule step needs --step-size (in epochs)");
    if (a->opt.schedule != KD_SCHED_COSINE && GIVEN(a, OPT_LR_MIN))
        return cli_usage_error(CMD, "--lr-min: only applies to --schedule cosine");
    if (a->opt.schedule == KD_SCHED_COSINE && a->opt.lr_min > a->opt.lr)
        return cli_usage_error(CMD, "--lr-min: must be at most the learning rate %g, got '%g'", a->opt.lr,
                               a->opt.lr_min);
    return CLI_OK;
}

/* On resume, say which given flags the checkpoint overrides. */
static void note_ignored_on_resume(const train_args *a)
{
    static const struct { int id; const char *flag; } IGNORED[] = {
        {OPT_NET, "--net"}, {OPT_OPTIMIZER, "--optimizer"}, {OPT_LR, "--lr"},
        {OPT_MOMENTUM, "--momentum"}, {OPT_NESTEROV, "--nesterov"}, {OPT_BETA1, "--beta1"},
        {OPT_BETA2, "--beta2"}, {OPT_EPS, "--eps"}, {OPT_WEIGHT_DECAY, "--weight-decay"},
        {OPT_SCHEDULE, "--schedule"}, {OPT_STEP_SIZE, "--step-size"}, {OPT_GAMMA, "--gamma"},
        {OPT_LR_MIN, "--lr-min"}, {OPT_SEED, "--seed"}, {OPT_BATCH, "--batch-size"},
        {OPT_WARMUP_EPOCHS, "--warmup-epochs"}, {OPT_WARMUP_STEPS, "--warmup-steps"},
    };
    int any = 0;
    for (size_t i = 0; i < sizeof IGNORED / sizeof IGNORED[0]; i++) {
        if (!GIVEN(a, IGNORED[i].id))
            continue;
        fprintf(stderr, "%s%s", any ? ", " : "kindling train: note: --resume takes these from the checkpoint, ignoring ",
                IGNORED[i].flag);
        any = 1;
    }
    if (any)
        fputc('\n', stderr);
}

static int create_net(const train_args *a, kd_net **net)
{
    return cli_create_net(CMD, "--net", a->net, (uint64_t)a->seed, net);
}

/* Final accuracy on the test set (without one, the validation figure of
 * the last epoch, or the training set's): the last epoch's record when it
 * is current, else a fresh evaluation. */
static int print_summary(kd_net *net, const kd_dataset *train, const kd_dataset *test, const kd_train_state *st,
                         int batch)
{
    const kd_dataset *ds = test ? test : train;
    const char *which = test ? "test" : "train";
    const kd_epoch_record *final = st->history_len > 0 ? &st->history[st->history_len - 1] : NULL;
    /* Without a test set, the last epoch's validation figure (over every
     * worker's share under --dist) says more than the training set's. */
    if (!test && final && final->epoch == st->epoch && !isnan(final->val_accuracy)) {
        printf("final validation accuracy %.4f\n", final->val_accuracy);
        return CLI_OK;
    }
    if (ds->n == 0) { /* an empty local share (--local-data): nothing to report */
        printf("final %s accuracy n/a (0 samples)\n", which);
        return CLI_OK;
    }
    const kd_epoch_record *last = st->history_len > 0 ? &st->history[st->history_len - 1] : NULL;
    double acc;
    if (last && last->epoch == st->epoch && test && !isnan(last->test_accuracy)) {
        acc = last->test_accuracy;
    } else {
        kd_eval_result r;
        memset(&r, 0, sizeof r);
        if (kd_evaluate(net, ds, batch, &r) != KD_OK)
            return cli_library_error();
        acc = r.accuracy;
        kd_eval_result_clear(&r);
    }
    printf("final %s accuracy %.4f (%lld sample%s)\n", which, acc, (long long)ds->n, ds->n == 1 ? "" : "s");
    return CLI_OK;
}

/* "kindling train: peak RSS 245.1 MiB" on stderr: the most memory this
 * process had resident (getrusage ru_maxrss; includes the resident pages of
 * a memory-mapped spool). */
static void print_peak_rss(const char *who)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        fprintf(stderr, "kindling train: peak RSS %.1f MiB%s\n", (double)ru.ru_maxrss / 1024.0, who);
}

/* The optimizer the flags describe (unless resuming brought one): the CLI
 * speaks epochs, the schedule counts optimizer steps. KD_ERR_INVALID when
 * the settings are wrong (a usage error), another status when the library
 * failed; the message is in kd_last_error(). */
static kd_status create_optimizer(train_args *a, const kd_net *net, int64_t steps_per_epoch,
                                  const kd_train_state *st, kd_optim **opt)
{
    a->opt.step_size = a->step_size_epochs * steps_per_epoch;
    a->opt.total_steps = a->epochs * steps_per_epoch;
    a->opt.warmup_steps = a->warmup_steps ? a->warmup_steps : a->warmup_epochs * steps_per_epoch;
    kd_status s = kd_optim_config_validate(&a->opt);
    if (s != KD_OK)
        return KD_ERR_INVALID;
    s = kd_optim_create(&a->opt, kd_net_param_count(net), opt);
    if (s == KD_OK && a->resume) /* checkpoint without an optimizer: the schedule resumes at its step */
        kd_optim_set_steps(*opt, st->step);
    return s == KD_ERR_INVALID ? KD_ERR_STATE : s;
}

/* A resumed run's cosine schedule spans its --epochs: planned for the
 * checkpoint's run, it would hold the learning rate at lr_min (0 by
 * default) past that run's end, so a resume to more epochs would not train
 * at all. Re-planned over the new total, the rate follows the new curve
 * from the current step on (said when `speak`). An unchanged total (a
 * resume after a crash, a Spark retry) changes nothing, so such a resume
 * stays exact. */
static void replan_schedule(const train_args *a, kd_optim *opt, int64_t steps_per_epoch, int speak)
{
    const kd_optim_config *c = kd_optim_get_config(opt);
    int64_t total = a->epochs * steps_per_epoch, old = c->total_steps;
    if (!a->resume || c->schedule != KD_SCHED_COSINE || old == total || total < 1)
        return;
    double before = kd_optim_current_lr(opt);
    kd_optim_set_total_steps(opt, total);
    if (speak)
        fprintf(stderr,
                "kindling train: note: the cosine schedule was planned over %lld steps; it now spans --epochs %lld "
                "(%lld steps), so the learning rate at step %lld is %.4g (it was %.4g)\n",
                (long long)old, a->epochs, (long long)total, (long long)kd_optim_steps(opt),
                kd_optim_current_lr(opt), before);
}

/* A new run records its seed and (global) batch; a resumed one says when
 * there is nothing left to train (if `speak`). */
static void start_state(const train_args *a, kd_train_state *st, int64_t batch_recorded, int speak)
{
    if (!a->resume) {
        st->seed = (uint64_t)a->seed;
        st->batch_size = (int32_t)batch_recorded;
    } else if (st->epoch >= a->epochs && speak) {
        fprintf(stderr, "kindling train: note: the checkpoint already has %d epoch%s (--epochs %lld); nothing to train\n",
                st->epoch, st->epoch == 1 ? "" : "s", a->epochs);
    }
}

/* A signal stopped the run before its last epoch (see cli_signals.h):
 * where it stopped and what was saved (if `speak`); the exit status is
 * 128 + the signal, as if it had ended the program. */
static int report_stopped(const train_args *a, const kd_train_state *st, const char *save_path, int sig, int speak)
{
    if (speak) {
        const char *name = sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : sig == SIGHUP ? "SIGHUP" : "a signal";
        if (save_path)
            fprintf(stderr, "kindling train: stopped by %s at epoch %d of %lld, step %lld; %s holds this position "
                            "(continue with --resume %s)\n",
                    name, st->epoch, a->epochs, (long long)st->step, save_path, save_path);
        else
            fprintf(stderr, "kindling train: stopped by %s at epoch %d of %lld, step %lld (no --checkpoint: nothing "
                            "was saved)\n", name, st->epoch, a->epochs, (long long)st->step);
    }
    return 128 + sig;
}

/* --val-split and --max-samples, both drawn from the run's seed (a resumed
 * run holds out the same samples): the held-out part goes to *val, and
 * *train becomes the rest, or a random subset of it. With --local-data a
 * worker's share too small to split gets an empty validation part (the
 * workers' figures are added up). */
static int shape_training_data(const train_args *a, const kd_net *net, kd_dataset **train, kd_dataset **val)
{
    if (a->data.val_split > 0) {
        kd_dataset *rest = NULL, *held = NULL;
        if (a->local_data && (*train)->n < 2) {
            kd_shape in = kd_net_input_shape(net);
            if (kd_dataset_alloc(0, &in, val) != KD_OK)
                return cli_library_error();
        } else if (kd_dataset_split(*train, a->data.val_split, (uint64_t)a->seed, &rest, &held) != KD_OK) {
            return cli_fail("--val-split: %s", kd_last_error());
        } else {
            kd_dataset_free(*train);
            *train = rest;
            *val = held;
        }
    }
    if (a->max_samples && a->max_samples < (*train)->n) {
        kd_dataset *some = NULL;
        if (kd_dataset_sample(*train, a->max_samples, (uint64_t)a->seed, &some) != KD_OK)
            return cli_fail("--max-samples: %s", kd_last_error());
        kd_dataset_free(*train);
        *train = some;
    }
    return CLI_OK;
}

/* The progress calls' receiver on the rank that writes (see
 * train_watch.h): progress lines when `speak`, the metrics file, the
 * checkpoint copies. Returns an exit code. */
static int watch_start(const train_args *a, cli_train_watch *w, const kd_train_state *st, const char *save_path,
                       int speak)
{
    memset(w, 0, sizeof *w);
    w->speak = speak;
    w->print.live = isatty(fileno(stderr));
    w->st = st;
    w->metrics_every = a->metrics_every;
    w->checkpoint = save_path;
    w->keep_best = a->keep_best;
    w->keep_last = (int)a->keep_last;
    w->min_delta = a->min_delta;
    if (a->keep_best)
        cli_signals_protect_save(a->keep_best); /* a signal mid-copy removes the temporary */
    /* A resumed run continues the file; a new one starts it. */
    return cli_train_watch_open(w, a->metrics, a->resume != NULL);
}

/* kd_train's settings from the flags; `watch` (NULL on ranks that do not
 * write) receives the progress calls. */
static kd_train_config train_config(const train_args *a, const kd_dataset *test, const kd_dataset *val,
                                    const char *save_path, cli_train_watch *watch)
{
    kd_train_config cfg = kd_train_config_default();
    cfg.epochs = (int32_t)a->epochs;
    cfg.batch_size = (int32_t)a->batch;
    cfg.seed = (uint64_t)a->seed;
    cfg.shuffle = 1;
    cfg.test = test;
    cfg.val = val;
    cfg.patience = (int32_t)a->patience;
    cfg.min_delta = a->min_delta;
    cfg.checkpoint_path = save_path;
    cfg.checkpoint_every = a->checkpoint_every;
    cfg.stop = cli_signals_stop; /* SIGINT, SIGTERM, SIGHUP: stop at a step boundary and save there */
    if (watch && (watch->speak || watch->metrics || watch->keep_best || watch->keep_last)) {
        cfg.progress = cli_train_watch_progress;
        cfg.progress_user = watch;
        cfg.progress_interval = watch->speak && watch->print.live ? 0.5 : 0.0;
        cfg.progress_every = watch->metrics ? a->metrics_every : 0;
    }
    return cfg;
}

/* How early stopping went and which epoch was the best (with --patience or
 * --keep-best), on stderr unless --quiet. */
static void report_best(const train_args *a, const kd_train_state *st)
{
    kd_best_epoch b;
    if (a->quiet || (!a->patience && !a->keep_best) || kd_train_state_best(st, a->min_delta, &b) != KD_OK ||
        b.epoch == 0)
        return;
    const char *what = b.on_val ? "val_loss" : "loss";
    char delta[48] = "";
    if (a->min_delta > 0)
        snprintf(delta, sizeof delta, " by more than %g", a->min_delta);
    if (a->patience && st->epoch < a->epochs && b.since >= a->patience)
        fprintf(stderr, "kindling train: early stopping after epoch %d of %lld: %s has not improved%s for %d epoch%s\n",
                st->epoch, a->epochs, what, delta, b.since, b.since == 1 ? "" : "s");
    fprintf(stderr, "kindling train: best epoch %d (%s %.4f)\n", b.epoch, what, b.value);
}

/* After training: peak RSS, the summary lines and the checkpoint's name. */
static int finish_report(const train_args *a, kd_net *net, const kd_dataset *train, const kd_dataset *test,
                         const kd_train_state *st, const char *save_path, const char *who)
{
    if (!a->quiet)
        print_peak_rss(who);
    report_best(a, st);
    int rc = print_summary(net, train, test, st, (int)a->batch);
    if (rc == CLI_OK && save_path)
        printf("checkpoint %s\n", save_path);
    kd_best_epoch b;
    if (rc == CLI_OK && a->keep_best && kd_train_state_best(st, a->min_delta, &b) == KD_OK && b.epoch > 0)
        printf("best checkpoint %s (epoch %d)\n", a->keep_best, b.epoch);
    return rc;
}

#ifdef KD_HAVE_MPI
/* ------------------------------------------------------- distributed runs */

static void dist_print_error(const kd_dist *d)
{
    char role[64];
    fprintf(stderr, "kindling: %s: %s\n", kd_dist_role_str(d, role, sizeof role), kd_last_error());
}

/* A failure on this rank alone: say which rank, then end every rank (the
 * others may be waiting for this one inside MPI). */
static int dist_local_failure(const kd_dist *d, int rc, int print_library_error)
{
    if (print_library_error)
        dist_print_error(d);
    fflush(NULL);
    kd_mpi_abort(rc);
    return rc;
}

/* A failure every rank found together (same message): rank 0 reports it. */
static int dist_collective_failure(void)
{
    if (kd_mpi_world_rank() == 0)
        cli_library_error();
    return CLI_FAIL;
}

/* End of a set-up phase that every rank goes through: the worst exit code
 * of all ranks, so a failure anywhere (already reported by that rank) stops
 * every rank cleanly instead of leaving the others waiting in MPI. */
static int dist_setup_result(int rc)
{
    int worst = rc;
    MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return worst;
}

#define CLI_DATA_PATHS 15

/* --local-data: "%w" in each data path becomes this worker's index. New
 * strings go to paths[] (freed by the caller). */
static int expand_worker_paths(cli_data_opts *o, int worker, char **paths)
{
    const char **fields[CLI_DATA_PATHS] = {&o->train_images, &o->train_labels, &o->test_images, &o->test_labels,
                                           &o->train_csv, &o->test_csv, &o->train_libsvm, &o->test_libsvm,
                                           &o->train_spool, &o->test_spool, &o->val_images, &o->val_labels,
                                           &o->val_csv, &o->val_libsvm, &o->val_spool};
    for (int i = 0; i < CLI_DATA_PATHS; i++) {
        const char *p = *fields[i], *at = p ? strstr(p, "%w") : NULL;
        if (!at)
            continue;
        size_t len = strlen(p) + 16;
        if (!(paths[i] = malloc(len)))
            return cli_fail("out of memory");
        snprintf(paths[i], len, "%.*s%d%s", (int)(at - p), p, worker, at + 2);
        *fields[i] = paths[i];
    }
    return CLI_OK;
}

/* Every rank: the checkpoint to resume (its global batch kept across
 * worker counts) or a new network. Returns an exit code; this rank's
 * failure is already reported. */
static int dist_open_model(train_args *a, const kd_dist *d, kd_net **net, kd_optim **opt, kd_train_state *st)
{
    int workers = kd_dist_num_workers(d);
    if (!a->resume)
        return create_net(a, net);
    if (kd_dist_is_writer(d))
        note_ignored_on_resume(a);
    if (kd_checkpoint_load(a->resume, net, opt, st) != KD_OK) {
        dist_print_error(d);
        return CLI_FAIL;
    }
    if (st->batch_size > 0) {
        a->batch = st->batch_size / workers > 0 ? st->batch_size / workers : 1;
        if (kd_dist_is_writer(d) && a->batch * workers != st->batch_size)
            fprintf(stderr,
                    "kindling train: note: the checkpoint's global batch %d does not split over %d workers; "
                    "using %lld per worker (global %lld), so the interrupted epoch starts over\n",
                    st->batch_size, workers, a->batch, a->batch * workers);
    }
    a->seed = (long long)st->seed;
    return CLI_OK;
}

/* Workers: --context, then their data (their own share with --local-data).
 * Servers hold neither. Returns an exit code. */
static int dist_worker_setup(train_args *a, const kd_dist *d, kd_net *net, kd_dataset **train, kd_dataset **test,
                             kd_dataset **val)
{
    if (kd_dist_is_server(d))
        return CLI_OK;
    int rc = cli_apply_context(net, a->ctx);
    if (rc != CLI_OK) {
        char role[64];
        fprintf(stderr, "kindling: (on %s)\n", kd_dist_role_str(d, role, sizeof role));
        return rc;
    }
    cli_data_opts mine = a->data;
    char *paths[CLI_DATA_PATHS] = {0};
    if (a->local_data)
        rc = expand_worker_paths(&mine, kd_dist_worker_index(d), paths);
    if (rc == CLI_OK)
        rc = cli_load_data(CMD, &mine, net, 1, 1, train, test);
    if (rc == CLI_OK)
        rc = cli_load_val(CMD, &mine, net, val);
    for (int i = 0; i < CLI_DATA_PATHS; i++)
        free(paths[i]);
    if (rc == CLI_OK && (*train)->n == 0 && !a->local_data)
        rc = cli_fail("the training data has no samples");
    if (rc == CLI_OK)
        rc = shape_training_data(a, net, train, val);
    return rc;
}

/* The writer's line on how the run went: steps, time, exchange share. */
static void dist_print_stats(const train_args *a, const kd_dist *d)
{
    kd_dist_stats ds = kd_dist_get_stats(d);
    int workers = kd_dist_num_workers(d), servers = kd_dist_num_servers(d);
    char srv[32] = "";
    if (servers > 0)
        snprintf(srv, sizeof srv, ", %d server%s", servers, servers == 1 ? "" : "s");
    int ranks = workers + servers;
    fprintf(stderr,
            "kindling train: %s, %d worker%s%s: %lld steps in %.2f s (%.1f steps/s), exchange %.3f ms/step "
            "(%.1f%% of the time) by %s; %d rank%s on %d host%s (%d on this one)\n",
            a->dist, workers, workers == 1 ? "" : "s", srv, (long long)ds.steps, ds.train_seconds,
            ds.train_seconds > 0 ? (double)ds.steps / ds.train_seconds : 0.0,
            ds.steps ? 1e3 * ds.exchange_seconds / (double)ds.steps : 0.0,
            ds.train_seconds > 0 ? 100.0 * ds.exchange_seconds / ds.train_seconds : 0.0,
            ds.exchange ? ds.exchange : "?", ranks, ranks == 1 ? "" : "s", ds.hosts, ds.hosts == 1 ? "" : "s",
            ds.local_ranks);
}

/* The epoch line's global samples/s (cli_progress.global_rate). */
static double dist_global_rate(const void *d)
{
    return kd_dist_get_stats((const kd_dist *)d).global_samples_per_sec;
}

static int train_distributed(train_args *a)
{
    int rc = CLI_OK;
    kd_dist *d = NULL;
    kd_net *net = NULL;
    kd_optim *opt = NULL;
    kd_dataset *train = NULL, *test = NULL, *val = NULL;
    kd_train_state st;
    kd_train_state_init(&st);
    cli_train_watch watch;
    memset(&watch, 0, sizeof watch);
    const char *save_path = a->checkpoint ? a->checkpoint : a->resume;
    if (save_path)
        cli_signals_protect_save(save_path); /* a signal mid-save removes the temporary */

    if (kd_mpi_init(NULL, NULL) != KD_OK)
        return cli_library_error();
    kd_set_threads((int)a->threads);
    kd_dist_config dc = kd_dist_config_default();
    int async = strcmp(a->dist, "async") == 0;
    dc.mode = async ? KD_DIST_ASYNC : KD_DIST_SYNC;
    dc.servers = async ? (int)a->servers : 0;
    dc.max_staleness = (int)a->max_staleness;
    dc.ps_protocol = strcmp(a->ps_protocol, "rma") == 0   ? KD_PS_RMA
                     : strcmp(a->ps_protocol, "msg") == 0 ? KD_PS_MSG
                                                          : KD_PS_AUTO;
    dc.local_data = a->local_data;
    if (kd_dist_create(MPI_COMM_WORLD, &dc, &d) != KD_OK) {
        rc = dist_collective_failure();
        goto done;
    }
    int writer = kd_dist_is_writer(d);

    /* The writer checks the destination before anything is loaded. */
    if (writer && save_path && kd_save_check_path(save_path) != KD_OK) {
        dist_print_error(d);
        rc = CLI_FAIL;
    }
    if (rc == CLI_OK)
        rc = dist_open_model(a, d, &net, &opt, &st);
    if (rc == CLI_OK)
        rc = dist_worker_setup(a, d, net, &train, &test, &val);
    if (rc == CLI_OK && writer)
        rc = watch_start(a, &watch, &st, save_path, !a->quiet);
    if ((rc = dist_setup_result(rc)) != CLI_OK)
        goto done;
    /* The workers' training-set size sizes the schedule (one rule: kd_dist_steps_per_epoch). */
    int64_t n_train = train ? train->n : 0, steps_per_epoch;
    if (kd_dist_steps_per_epoch(d, n_train, (int)a->batch, &steps_per_epoch) != KD_OK) {
        rc = dist_collective_failure();
        goto done;
    }
    if (!opt) {
        kd_status os = create_optimizer(a, net, steps_per_epoch, &st, &opt);
        if (os == KD_ERR_INVALID)
            rc = kd_mpi_world_rank() == 0 ? cli_usage_error(CMD, "%s", kd_last_error()) : CLI_USAGE;
        else if (os != KD_OK) {
            dist_print_error(d);
            rc = CLI_FAIL;
        }
    }
    if ((rc = dist_setup_result(rc)) != CLI_OK)
        goto done;
    replan_schedule(a, opt, steps_per_epoch, writer);
    start_state(a, &st, a->batch * kd_dist_num_workers(d), writer);

    watch.print.global_rate = dist_global_rate; /* the epoch line gives every worker's rate too */
    watch.print.global_ctx = d;
    kd_train_config cfg = train_config(a, test, val, save_path, writer ? &watch : NULL);
    if (kd_dist_check_config(d, net, opt, &cfg, &st, n_train) != KD_OK) {
        rc = dist_collective_failure();
        goto done;
    }

    cli_signals_defer(1);
    kd_status s = kd_dist_train(d, net, opt, train, &cfg, &st);
    cli_signals_defer(0);
    if (watch.print.line_open)
        fputc('\n', stderr);
    cli_train_watch_close(&watch);
    if (s != KD_OK) {
        rc = dist_local_failure(d, CLI_FAIL, 1);
        goto done;
    }
    if (watch.failed) { /* a metrics line or a checkpoint copy could not be written (said) */
        rc = dist_local_failure(d, CLI_FAIL, 0);
        goto done;
    }
    /* Stopped by a signal: every rank ends with 128 + that signal (a worker
     * stopped by the others' agreement, or a server, got none itself). */
    int stopped = !kd_dist_is_server(d) && st.epoch < a->epochs ? cli_signals_caught() : 0, any = 0;
    if (!kd_dist_is_server(d) && st.epoch < a->epochs && !stopped)
        stopped = -1; /* stopped with the others */
    MPI_Allreduce(&stopped, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (any > 0) {
        rc = report_stopped(a, &st, save_path, any, writer);
        goto done;
    }
    if (writer) {
        if (!a->quiet)
            dist_print_stats(a, d);
        if ((rc = finish_report(a, net, train, test, &st, save_path, " (this rank)")) != CLI_OK) {
            rc = dist_local_failure(d, rc, 0);
            goto done;
        }
    }

done:
    cli_train_watch_close(&watch);
    kd_train_state_clear(&st);
    kd_dataset_free(train);
    kd_dataset_free(test);
    kd_dataset_free(val);
    kd_optim_free(opt);
    kd_net_free(net);
    kd_dist_free(d);
    kd_mpi_finalize();
    return rc;
}
#endif /* KD_HAVE_MPI */

int cmd_train(int argc, char **argv)
{
    train_args a;
    int help = 0;
    int rc = parse_train_args(argc, argv, &a, &help);
    if (rc != CLI_OK)
        return rc;
    if (help) {
        train_help();
        return CLI_OK;
    }
    if (a.dist) {
#ifdef KD_HAVE_MPI
        return train_distributed(&a);
#else
        return cli_fail("--dist: this kindling was built without MPI; rebuild it with an MPI library installed "
                        "(Debian: apt-get install libopenmpi-dev) to train across processes");
#endif
    }

    kd_net *net = NULL;
    kd_optim *opt = NULL;
    kd_dataset *train = NULL, *test = NULL, *val = NULL;
    kd_train_state st;
    kd_train_state_init(&st);
    cli_train_watch watch;
    memset(&watch, 0, sizeof watch);
    const char *save_path = a.checkpoint ? a.checkpoint : a.resume;
    if (save_path)
        cli_signals_protect_save(save_path); /* a signal mid-save removes the temporary */
    /* Before anything is loaded: a missing or read-only directory, or a
     * directory given as the file, fails now rather than at the first save. */
    if (save_path && kd_save_check_path(save_path) != KD_OK)
        return cli_fail("%s: %s", a.checkpoint ? "--checkpoint" : "--resume (saves go back to it)", kd_last_error());

    kd_set_threads((int)a.threads);

    if (a.resume) {
        note_ignored_on_resume(&a);
        if (kd_checkpoint_load(a.resume, &net, &opt, &st) != KD_OK) {
            rc = cli_library_error();
            goto done;
        }
        if (st.batch_size > 0)
            a.batch = st.batch_size;
        a.seed = (long long)st.seed;
    } else if ((rc = create_net(&a, &net)) != CLI_OK) {
        goto done;
    }
    if ((rc = cli_apply_context(net, a.ctx)) != CLI_OK)
        goto done;

    if ((rc = cli_load_data(CMD, &a.data, net, 1, 1, &train, &test)) != CLI_OK)
        goto done;
    if (train->n == 0) {
        rc = cli_fail("the training data has no samples");
        goto done;
    }
    if ((rc = cli_load_val(CMD, &a.data, net, &val)) != CLI_OK || (rc = shape_training_data(&a, net, &train, &val)) != CLI_OK)
        goto done;

    int64_t steps_per_epoch = kd_steps_per_epoch(train->n, a.batch);
    if (!opt) {
        kd_status os = create_optimizer(&a, net, steps_per_epoch, &st, &opt);
        if (os != KD_OK) {
            rc = os == KD_ERR_INVALID ? cli_usage_error(CMD, "%s", kd_last_error()) : cli_library_error();
            goto done;
        }
    }
    replan_schedule(&a, opt, steps_per_epoch, 1);
    start_state(&a, &st, a.batch, 1);

    if ((rc = watch_start(&a, &watch, &st, save_path, !a.quiet)) != CLI_OK)
        goto done;
    kd_train_config cfg = train_config(&a, test, val, save_path, &watch);

    cli_signals_defer(1);
    kd_status s = kd_train(net, opt, train, &cfg, &st);
    cli_signals_defer(0);
    if (watch.print.line_open)
        fputc('\n', stderr);
    cli_train_watch_close(&watch);
    if (s != KD_OK) {
        rc = cli_library_error();
        goto done;
    }
    if (watch.failed) { /* a metrics line or a checkpoint copy could not be written (said) */
        rc = CLI_FAIL;
        goto done;
    }
    if (cli_signals_caught() && st.epoch < a.epochs) { /* kd_train saved the position */
        rc = report_stopped(&a, &st, save_path, cli_signals_caught(), 1);
        goto done;
    }
    /* kd_train saves at epoch ends; this final save also covers a run that
     * had no epoch left to do and records the final state in any case. */
    if (save_path && kd_checkpoint_save(save_path, net, opt, &st) != KD_OK) {
        rc = cli_library_error();
        goto done;
    }
    rc = finish_report(&a, net, train, test, &st, save_path, "");

done:
    cli_train_watch_close(&watch);
    kd_train_state_clear(&st);
    kd_dataset_free(train);
    kd_dataset_free(test);
    kd_dataset_free(val);
    kd_optim_free(opt);
    kd_net_free(net);
    return rc;
}
