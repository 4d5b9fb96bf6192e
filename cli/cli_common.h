/* Shared pieces of the `kindling` command-line tool: error reporting with
 * the tool's exit codes, flag value parsing, the data-set flags used by
 * train/eval/predict, and the progress printer. Built only on kindling.h. */
#ifndef KD_CLI_COMMON_H
#define KD_CLI_COMMON_H

#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "kindling.h"

/* Exit codes: 0 success, 1 runtime failure, 2 usage error. */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

#define CLI_DEFAULT_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

#if defined(__GNUC__)
#define CLI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CLI_PRINTF(a, b)
#endif

/* "kindling <cmd>: <problem>" and the --help hint on stderr; returns 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...) CLI_PRINTF(2, 3);
/* "kindling: <kd_last_error()>" on stderr; returns 1. */
int cli_library_error(void);
/* "kindling: <problem>" on stderr for failures found by the tool itself; returns 1. */
int cli_fail(const char *fmt, ...) CLI_PRINTF(1, 2);
int cli_vfail(const char *fmt, va_list ap); /* cli_fail for a variadic caller */

/* Write the file `path` whole or not at all: fill(f, ctx) (0 or an errno)
 * writes into the temporary name every Kindling save uses (a signal
 * mid-write removes it), which is synced, closed and renamed over `path`;
 * on any failure the temporary is removed. Prints the error; returns an
 * exit code. */
int cli_write_file(const char *path, int (*fill)(FILE *f, void *ctx), void *ctx);
/* Report getopt_long's '?' (unknown flag) or ':' (missing value); returns 2.
 * `c` is what getopt_long returned, argv/optind as after that call. */
int cli_getopt_error(const char *cmd, int c, char *const argv[]);

/* Number flags. On a bad value they print a usage error naming the flag
 * ("--batch-size: must be an integer >= 1, got '0'") and return 2. */
int cli_parse_int(const char *cmd, const char *flag, const char *text,
                  long long min, long long max, long long *out);
/* Accepts finite numbers in the range; lo/hi are open or closed as given. */
int cli_parse_double(const char *cmd, const char *flag, const char *text,
                     double lo, int lo_closed, double hi, int hi_closed, double *out);

/* --net NAME|FILE: an existing file is a JSON spec, anything else a preset
 * name (usage error naming `flag` when it is neither). Returns an exit code. */
int cli_create_net(const char *cmd, const char *flag, const char *name, uint64_t seed, kd_net **net);

/* --context cpu|gpu[:N]: parse the flag value (usage error naming the flag). */
int cli_parse_context(const char *cmd, const char *text, kd_context *out);
/* Move net to ctx (no-op for the CPU); "kindling: --context gpu: <reason>"
 * on failure and 2 when the device cannot be had (a build without CUDA, a
 * machine without a CUDA device: not worth a retry), 1 when a CUDA call failed. */
int cli_apply_context(kd_net *net, kd_context ctx);
#define CLI_CONTEXT_HELP \
    "  --context cpu|gpu[:N]  where to compute (default cpu); gpu without N takes the\n" \
    "                         MPI local rank modulo the number of GPUs\n"

/* ------------------------------------------------------------ data flags */
/* Option ids for the data flags (long-only options use ids above 255). */
enum {
    CLI_OPT_DATASET = 1000,
    CLI_OPT_TRAIN_IMAGES,
    CLI_OPT_TRAIN_LABELS,
    CLI_OPT_TEST_IMAGES,
    CLI_OPT_TEST_LABELS,
    CLI_OPT_TRAIN_CSV,
    CLI_OPT_TEST_CSV,
    CLI_OPT_TRAIN_LIBSVM,
    CLI_OPT_TEST_LIBSVM,
    CLI_OPT_LABEL_COL,
    CLI_OPT_HEADER,
    CLI_OPT_FEATURES,
    CLI_OPT_INPUT, /* predict: any one file, format judged by its content */
    CLI_OPT_TRAIN_SPOOL,
    CLI_OPT_TEST_SPOOL,
    CLI_OPT_MODEL,   /* eval, predict: the checkpoint */
    CLI_OPT_THREADS, /* eval, predict */
    CLI_OPT_CONTEXT, /* eval, predict */
    CLI_OPT_DELIMITER,
    CLI_OPT_VAL_IMAGES, /* train: validation data */
    CLI_OPT_VAL_LABELS,
    CLI_OPT_VAL_CSV,
    CLI_OPT_VAL_LIBSVM,
    CLI_OPT_VAL_SPOOL,
    CLI_OPT_VAL_SPLIT,
    CLI_OPT_FIRST_COMMAND_ID /* commands number their own flags from here */
};

/* Where the data comes from. eval and predict work on a single set, which
 * is stored in the test_* fields (their --images/--csv/--libsvm flags map
 * there), so one loader serves all three commands. */
typedef struct cli_data_opts {
    const char *dataset; /* "fashion-mnist" or NULL */
    const char *train_images, *train_labels, *test_images, *test_labels;
    const char *train_csv, *test_csv;
    const char *train_libsvm, *test_libsvm;
    const char *train_spool, *test_spool; /* binary spool files (io/spool.c) */
    const char *val_images, *val_labels, *val_csv, *val_libsvm, *val_spool; /* train: validation files */
    double val_split;    /* train: fraction of the training data held out for validation (0 = none) */
    const char *input;   /* predict --input: a file of any format, read as the single set */
    int label_col;       /* CSV label column; -1 = none */
    int header;          /* CSV has a header line */
    char delimiter;      /* CSV delimiter; 0 = detect */
    int features;        /* LibSVM width; 0 = the network's input size */
    int id_col;          /* predict: CSV column passed through as text (-1 = none) */
    char ***ids;         /* predict: where the single set's ids go (kd_dataset_load_csv_ids) */
} cli_data_opts;

void cli_data_opts_init(cli_data_opts *d);
/* Handle one data flag. Returns 0 if handled, 2 on a bad value, -1 if `opt`
 * is not a data flag. */
int cli_data_option(const char *cmd, cli_data_opts *d, int opt, const char *arg);
/* What to try after a CSV file failed to load or to fit the network (want
 * features; 0 = no network): "; line 1 looks like a header (...): use
 * --header" and the like, into buf, or "" when nothing stands out. Looks
 * at the file's first lines. */
const char *cli_csv_hint(const char *path, const cli_data_opts *d, size_t want, int need_labels, char *buf,
                         size_t len);
#define CLI_DELIMITER_HELP \
    "  --delimiter C          CSV column delimiter: one character, or 'tab' (default:\n" \
    "                         the most frequent of ',' ';' and tab on the first data line)\n"

/* Load the data the flags describe, reshape its features to the network's
 * input shape and validate labels against its class count.
 * want_train: load *train (train) or only the single evaluation set
 * (eval/predict, into *test). need_labels: reject sets without labels.
 * With no file flags the Fashion-MNIST set is used. *test may stay NULL
 * for training without a test set. Returns an exit code; on failure
 * nothing is left allocated. */
int cli_load_data(const char *cmd, const cli_data_opts *d, const kd_net *net,
                  int want_train, int need_labels, kd_dataset **train, kd_dataset **test);
/* train: the validation files (--val-images/--val-labels, --val-csv,
 * --val-libsvm or --val-spool) into *val, NULL when none is named. */
int cli_load_val(const char *cmd, const cli_data_opts *d, const kd_net *net, kd_dataset **val);
#define CLI_VAL_HELP \
    "  --val-split F          hold out this fraction (0 < F < 1) of the training data\n" \
    "                         for validation, chosen at random from --seed\n" \
    "  --val-images F --val-labels F | --val-csv F | --val-libsvm F | --val-spool F\n" \
    "                         validation data from files instead\n" \
    "  With validation data every epoch reports val_loss and val_acc, early stopping\n" \
    "  and --keep-best follow the validation loss, and the test set is scored only\n" \
    "  after the last epoch.\n"

/* ------------------------------------- a checkpoint and its data (eval, predict) */
typedef struct cli_model_opts {
    const char *model;  /* --model */
    long long threads;  /* --threads (default 1) */
    kd_context ctx;     /* --context (default cpu) */
    cli_data_opts data; /* the data flags */
} cli_model_opts;

void cli_model_opts_init(cli_model_opts *m);
/* Handle --model, --threads, --context or a data flag. Returns 0 if
 * handled, 2 on a bad value, -1 if `opt` is none of them. */
int cli_model_option(const char *cmd, cli_model_opts *m, int opt, const char *arg);
/* After parsing: --model must be given (usage error, 2), then set the
 * threads, load the checkpoint, move it to --context and load the data
 * (need_labels as for cli_load_data). Returns an exit code; on failure
 * nothing is left allocated. */
int cli_model_open(const char *cmd, const cli_model_opts *m, int need_labels, kd_net **net, kd_dataset **ds);

/* ------------------------------------------------------------- progress */
typedef struct cli_progress {
    int live;            /* stderr is a TTY: redraw a live line mid-epoch */
    int line_open;       /* a live line is on screen without its newline */
    /* Distributed runs: every worker's samples/s, printed next to this
     * worker's (NULL: a single process). */
    double (*global_rate)(const void *ctx);
    const void *global_ctx;
    double drawn_at;     /* kd_progress.seconds of the last live line (redrawn at most 4 times a second) */
} cli_progress;

/* kd_progress_fn that prints one line per epoch to stderr (and a live
 * line on a TTY); `user` is a cli_progress. */
int cli_progress_print(const kd_progress *p, void *user);

/* Seconds as "2.1s", "3m05s" or "1h02m". */
const char *cli_format_seconds(double s, char *buf, size_t len);

#endif
