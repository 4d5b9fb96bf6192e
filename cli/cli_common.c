/* Shared helpers of the command-line tool; see cli_common.h. */
#include "cli_common.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_signals.h"

/* ----------------------------------------------------------------- errors */
int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "kindling %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\ntry 'kindling %s --help'\n", cmd);
    return CLI_USAGE;
}

int cli_library_error(void)
{
    const char *msg = kd_last_error();
    fprintf(stderr, "kindling: %s\n", msg[0] ? msg : "unknown error");
    return CLI_FAIL;
}

int cli_vfail(const char *fmt, va_list ap)
{
    fputs("kindling: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    return CLI_FAIL;
}

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cli_vfail(fmt, ap);
    va_end(ap);
    return rc;
}

int cli_write_file(const char *path, int (*fill)(FILE *f, void *ctx), void *ctx)
{
    size_t len = strlen(path) + 100;
    char *tmp = malloc(len);
    if (!tmp)
        return cli_fail("out of memory");
    if (kd_save_temp_path(path, tmp, len) != KD_OK) {
        free(tmp);
        return cli_library_error();
    }
    cli_signals_remove_on_exit(tmp);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        int rc = cli_fail("%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    int err = fill(f, ctx);
    if (!err && fsync(fileno(f)) != 0)
        err = errno;
    if (fclose(f) != 0 && !err)
        err = errno ? errno : EIO;
    if (!err && rename(tmp, path) != 0)
        err = errno;
    int rc = CLI_OK;
    if (err) {
        rc = cli_fail("writing %s: %s", path, strerror(err));
        remove(tmp);
    }
    free(tmp);
    return rc;
}

int cli_getopt_error(const char *cmd, int c, char *const argv[])
{
    const char *arg = optind > 0 ? argv[optind - 1] : "";
    if (c == ':')
        return cli_usage_error(cmd, "%s: missing value", arg);
    if (strncmp(arg, "--", 2) != 0 && optopt > 0 && optopt < 256)
        return cli_usage_error(cmd, "unknown option '-%c'", optopt);
    /* A flag that takes no value was given one ("--header=1"): getopt
     * reports it as '?' with optopt set to the flag's id. */
    const char *eq = strchr(arg, '=');
    if (optopt != 0 && eq)
        return cli_usage_error(cmd, "%.*s: takes no value", (int)(eq - arg), arg);
    return cli_usage_error(cmd, "unknown option '%.*s'", eq ? (int)(eq - arg) : (int)strlen(arg), arg);
}

/* ---------------------------------------------------------------- numbers */
int cli_parse_int(const char *cmd, const char *flag, const char *text,
                  long long min, long long max, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long v = 0;
    int ok = text[0] != '\0' && !isspace((unsigned char)text[0]);
    if (ok) {
        v = strtoll(text, &end, 10);
        ok = errno == 0 && *end == '\0' && v >= min && v <= max;
    }
    if (!ok) {
        /* A huge maximum is only a type limit: name it only to a value above it. */
        int above_max = errno == ERANGE || (end && *end == '\0' && v > max);
        if (max >= INT_MAX && !above_max)
            return cli_usage_error(cmd, "%s: must be an integer >= %lld, got '%s'", flag, min, text);
        return cli_usage_error(cmd, "%s: must be an integer in [%lld, %lld], got '%s'", flag, min, max, text);
    }
    *out = v;
    return CLI_OK;
}

int cli_parse_double(const char *cmd, const char *flag, const char *text,
                     double lo, int lo_closed, double hi, int hi_closed, double *out)
{
    char *end = NULL;
    double v = 0;
    int ok = text[0] != '\0' && !isspace((unsigned char)text[0]);
    if (ok) {
        errno = 0;
        v = strtod(text, &end);
        ok = *end == '\0' && isfinite(v) && errno == 0;
        ok = ok && (lo_closed ? v >= lo : v > lo) && (hi_closed ? v <= hi : v < hi);
    }
    if (ok) {
        *out = v;
        return CLI_OK;
    }
    char range[96];
    if (isinf(lo) && isinf(hi))
        snprintf(range, sizeof range, "a number");
    else if (isinf(hi))
        snprintf(range, sizeof range, "a number %s %g", lo_closed ? ">=" : ">", lo);
    else if (isinf(lo))
        snprintf(range, sizeof range, "a number %s %g", hi_closed ? "<=" : "<", hi);
    else
        snprintf(range, sizeof range, "a number in %c%g, %g%c", lo_closed ? '[' : '(', lo, hi,
                 hi_closed ? ']' : ')');
    return cli_usage_error(cmd, "%s: must be %s, got '%s'", flag, range, text);
}

/* ---------------------------------------------------------------- networks */
int cli_create_net(const char *cmd, const char *flag, const char *name, uint64_t seed, kd_net **net)
{
    struct stat st;
    *net = NULL;
    if (stat(name, &st) == 0 && S_ISREG(st.st_mode))
        return kd_net_create_from_file(name, seed, net) == KD_OK ? CLI_OK : cli_library_error();
    if (!kd_preset_json(name))
        return cli_usage_error(cmd, "%s: '%s' is neither a spec file nor a preset (presets: mlp, lenet)", flag, name);
    return kd_net_create(name, seed, net) == KD_OK ? CLI_OK : cli_library_error();
}

/* ------------------------------------------------------------ data flags */
void cli_data_opts_init(cli_data_opts *d)
{
    memset(d, 0, sizeof *d);
    d->label_col = 0;
    d->id_col = -1;
}

int cli_data_option(const char *cmd, cli_data_opts *d, int opt, const char *arg)
{
    long long v = 0;
    int rc;
    switch (opt) {
    case CLI_OPT_DATASET:
        if (strcmp(arg, "fashion-mnist") != 0)
            return cli_usage_error(cmd, "--dataset: unknown data set '%s' (known: fashion-mnist)", arg);
        d->dataset = arg;
        return CLI_OK;
    case CLI_OPT_TRAIN_IMAGES: d->train_images = arg; return CLI_OK;
    case CLI_OPT_TRAIN_LABELS: d->train_labels = arg; return CLI_OK;
    case CLI_OPT_TEST_IMAGES: d->test_images = arg; return CLI_OK;
    case CLI_OPT_TEST_LABELS: d->test_labels = arg; return CLI_OK;
    case CLI_OPT_TRAIN_CSV: d->train_csv = arg; return CLI_OK;
    case CLI_OPT_TEST_CSV: d->test_csv = arg; return CLI_OK;
    case CLI_OPT_TRAIN_LIBSVM: d->train_libsvm = arg; return CLI_OK;
    case CLI_OPT_TEST_LIBSVM: d->test_libsvm = arg; return CLI_OK;
    case CLI_OPT_TRAIN_SPOOL: d->train_spool = arg; return CLI_OK;
    case CLI_OPT_TEST_SPOOL: d->test_spool = arg; return CLI_OK;
    case CLI_OPT_VAL_IMAGES: d->val_images = arg; return CLI_OK;
    case CLI_OPT_VAL_LABELS: d->val_labels = arg; return CLI_OK;
    case CLI_OPT_VAL_CSV: d->val_csv = arg; return CLI_OK;
    case CLI_OPT_VAL_LIBSVM: d->val_libsvm = arg; return CLI_OK;
    case CLI_OPT_VAL_SPOOL: d->val_spool = arg; return CLI_OK;
    case CLI_OPT_VAL_SPLIT:
        return cli_parse_double(cmd, "--val-split", arg, 0, 0, 1, 0, &d->val_split);
    case CLI_OPT_HEADER: d->header = 1; return CLI_OK;
    case CLI_OPT_DELIMITER:
        if (strcmp(arg, "tab") == 0 || strcmp(arg, "\\t") == 0 || strcmp(arg, "\t") == 0)
            d->delimiter = '\t';
        else if (strlen(arg) == 1 && !strchr("0123456789.+-\"eE\r\n", arg[0]))
            d->delimiter = arg[0];
        else
            return cli_usage_error(cmd, "--delimiter: expected one character (e.g. ';') or 'tab', not a digit, sign, "
                                        "'.', 'e' or quote; got '%s'", arg);
        return CLI_OK;
    case CLI_OPT_LABEL_COL:
        if ((rc = cli_parse_int(cmd, "--label-col", arg, -1, INT_MAX, &v)) != CLI_OK)
            return rc;
        d->label_col = (int)v;
        return CLI_OK;
    case CLI_OPT_FEATURES:
        if ((rc = cli_parse_int(cmd, "--features", arg, 1, INT_MAX, &v)) != CLI_OK)
            return rc;
        d->features = (int)v;
        return CLI_OK;
    case CLI_OPT_INPUT: d->input = arg; return CLI_OK;
    default:
        return -1;
    }
}

/* One set's sources, with the flag names used to talk about them. */
typedef struct set_source {
    const char *images, *labels, *csv, *libsvm, *spool;
    const char *flag_prefix; /* "--train-", "--test-" or "--" */
} set_source;

static int source_count(const set_source *s)
{
    return (s->images || s->labels) + (s->csv != NULL) + (s->libsvm != NULL) + (s->spool != NULL);
}

const char *cli_csv_hint(const char *path, const cli_data_opts *d, size_t want, int need_labels, char *buf,
                            size_t len)
{
    kd_csv_options o = {d->label_col, d->header, d->delimiter};
    kd_csv_layout l;
    buf[0] = '\0';
    if (kd_csv_sniff(path, &o, &l) != KD_OK)
        return buf;
    if (l.columns == 1 && want != 1)
        snprintf(buf, len, "; the first line has a single column: if its values are separated by something other "
                           "than ',', ';' or a tab, name it with --delimiter");
    else if (l.header_likely)
        snprintf(buf, len, "; line 1 looks like a header (not numbers, while line 2 is): use --header");
    else if (want && d->label_col >= 0 && (size_t)l.columns == want)
        snprintf(buf, len, need_labels ? "; the rows have %d columns, as many as the network's inputs, so no room for "
                                         "a label column"
                                       : "; the rows have %d columns, as many as the network's inputs: if they hold "
                                         "no label, use --label-col -1",
                 l.columns);
    else if (want && d->label_col < 0 && (size_t)l.columns == want + 1)
        snprintf(buf, len, "; the rows have one column more than the network's %zu inputs: name the label column "
                           "with --label-col N", want);
    return buf;
}

/* "; the file holds LibSVM data: use --train-libsvm" when the content of a
 * file that failed to load is another format than its flag's; else "". */
static const char *format_hint(const char *path, kd_data_format flag_format, const char *prefix, char *buf,
                               size_t len)
{
    static const char *const NAMES[] = {"", "IDX", "CSV", "LibSVM", "spool"};
    static const char *const FLAGS[] = {"", "images", "csv", "libsvm", "spool"};
    kd_data_format f;
    buf[0] = '\0';
    if (kd_data_format_detect(path, &f) == KD_OK && f != flag_format && f >= KD_DATA_IDX && f <= KD_DATA_SPOOL)
        snprintf(buf, len, "; the file holds %s data: use %s%s", NAMES[f], prefix, FLAGS[f]);
    return buf;
}

/* Load one set from its single source, fit it to the network's input and
 * check it. Flag names in messages use the set's prefix. */
static int load_set(const char *cmd, const set_source *s, const cli_data_opts *d, const kd_net *net,
                    int need_labels, kd_dataset **out)
{
    const char *p = s->flag_prefix;
    const char *path = NULL;
    kd_dataset *ds = NULL;
    kd_shape in = kd_net_input_shape(net);
    size_t want = kd_shape_size(&in);
    int is_csv = 0;

    *out = NULL;
    kd_status st;
    kd_data_format format;
    if (s->images || s->labels) {
        if (!s->images)
            return cli_usage_error(cmd, "%slabels needs %simages", p, p);
        if (!s->labels && need_labels)
            return cli_usage_error(cmd, "%simages needs %slabels", p, p);
        path = s->images;
        format = KD_DATA_IDX;
        st = kd_dataset_load_idx(s->images, s->labels, &ds);
    } else if (s->csv) {
        path = s->csv;
        is_csv = 1;
        format = KD_DATA_CSV;
        kd_csv_options o = {d->label_col, d->header, d->delimiter};
        if (d->id_col >= 0 && d->ids && d->id_col == d->label_col)
            return cli_usage_error(cmd, "--id-col %d is the label column (--label-col): name another", d->id_col);
        st = d->id_col >= 0 && d->ids ? kd_dataset_load_csv_ids(s->csv, &o, d->id_col, NULL, &ds, d->ids)
                                      : kd_dataset_load_csv_opts(s->csv, &o, NULL, &ds);
    } else if (d->id_col >= 0 && d->ids) {
        return cli_usage_error(cmd, "--id-col: only CSV data has an id column (%s is %s data)",
                               s->spool ? s->spool : s->libsvm ? s->libsvm : s->images,
                               s->spool ? "spool" : s->libsvm ? "LibSVM" : "IDX");
    } else if (s->spool) {
        path = s->spool;
        format = KD_DATA_SPOOL;
        st = kd_dataset_load_spool(s->spool, &ds);
    } else {
        path = s->libsvm;
        format = KD_DATA_LIBSVM;
        /* Default width is the network's input, so a file whose last
         * features are all zero still lines up with it. */
        int features = d->features ? d->features : (int)want;
        st = kd_dataset_load_libsvm(s->libsvm, features, &ds);
    }
    if (st != KD_OK) {
        char msg[1024], hint[512];
        snprintf(msg, sizeof msg, "%s", kd_last_error());
        /* The file given to the wrong reader says which one it needs. */
        if (!format_hint(path, format, p, hint, sizeof hint)[0] && is_csv)
            cli_csv_hint(path, d, want, need_labels, hint, sizeof hint);
        return cli_fail("%s%s", msg, hint);
    }

    size_t have = kd_shape_size(&ds->shape);
    if (have != want) {
        char shape[64];
        kd_shape_str(&in, shape, sizeof shape);
        kd_dataset_free(ds);
        char hint[512] = "";
        if (is_csv && !cli_csv_hint(path, d, want, need_labels, hint, sizeof hint)[0])
            snprintf(hint, sizeof hint, "; check --label-col%s", d->ids ? " and --id-col" : "");
        if (d->ids) {
            free(*d->ids);
            *d->ids = NULL;
        }
        return cli_fail("%s: samples have %zu features but the network expects %zu (%s)%s", path, have, want,
                        shape, hint);
    }
    ds->shape = in; /* same row-major floats, seen with the network's shape */

    /* Labels are checked only where they are used; num_classes 0 makes
     * validate check just that every feature is finite. */
    if (kd_dataset_validate(ds, need_labels ? kd_net_num_classes(net) : 0) != KD_OK) {
        kd_dataset_free(ds);
        if (d->ids) {
            free(*d->ids);
            *d->ids = NULL;
        }
        return cli_fail("%s: %s", path, kd_last_error());
    }
    *out = ds;
    return CLI_OK;
}

int cli_load_data(const char *cmd, const cli_data_opts *d, const kd_net *net,
                  int want_train, int need_labels, kd_dataset **train, kd_dataset **test)
{
    set_source tr = {d->train_images, d->train_labels, d->train_csv, d->train_libsvm, d->train_spool, "--train-"};
    set_source te = {d->test_images, d->test_labels, d->test_csv, d->test_libsvm, d->test_spool,
                     want_train ? "--test-" : "--"};
    char fm_dir[4096], tr_img[4400], tr_lab[4400], te_img[4400], te_lab[4400];
    int rc;

    if (train)
        *train = NULL;
    *test = NULL;

    /* --input: the reader follows the content, whatever the name says. */
    if (d->input) {
        if (source_count(&te) > 0)
            return cli_usage_error(cmd, "--input cannot be combined with another data file");
        kd_data_format f;
        if (kd_data_format_detect(d->input, &f) != KD_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", kd_last_error());
            return cli_fail("--input %s (or name the format with --csv, --libsvm, --images or --spool)", msg);
        }
        switch (f) {
        case KD_DATA_CSV: te.csv = d->input; break;
        case KD_DATA_LIBSVM: te.libsvm = d->input; break;
        case KD_DATA_SPOOL: te.spool = d->input; break;
        case KD_DATA_IDX: te.images = d->input; break;
        }
    }

    /* Which sets come from Fashion-MNIST: the one(s) no file flag names. */
    int fm_train = want_train && source_count(&tr) == 0;
    int fm_test = source_count(&te) == 0 && (!want_train || fm_train || d->dataset);
    if (d->dataset && ((want_train && source_count(&tr)) || (!want_train && source_count(&te))))
        return cli_usage_error(cmd, "--dataset cannot be combined with %s files", want_train ? "training" : "data");
    if (source_count(&tr) > 1)
        return cli_usage_error(cmd, "choose one source for the training data (--train-images, --train-csv, "
                                    "--train-libsvm or --train-spool)");
    if (source_count(&te) > 1)
        return cli_usage_error(cmd, "choose one source for the %s data (%simages, %scsv, %slibsvm or %sspool)",
                               want_train ? "test" : "input", te.flag_prefix, te.flag_prefix, te.flag_prefix,
                               te.flag_prefix);
    if (!want_train && (tr.images || tr.labels || tr.csv || tr.libsvm || tr.spool))
        return cli_usage_error(cmd, "training-data flags do not apply here");

    if (fm_train || fm_test) {
        const char *dir = getenv("KD_FASHION_MNIST_DIR");
        if (!dir || !dir[0])
            dir = CLI_DEFAULT_FASHION_MNIST_DIR;
        snprintf(fm_dir, sizeof fm_dir, "%s", dir);
        snprintf(tr_img, sizeof tr_img, "%s/train-images-idx3-ubyte.gz", fm_dir);
        snprintf(tr_lab, sizeof tr_lab, "%s/train-labels-idx1-ubyte.gz", fm_dir);
        snprintf(te_img, sizeof te_img, "%s/t10k-images-idx3-ubyte.gz", fm_dir);
        snprintf(te_lab, sizeof te_lab, "%s/t10k-labels-idx1-ubyte.gz", fm_dir);
        if (fm_train) {
            tr.images = tr_img;
            tr.labels = tr_lab;
        }
        if (fm_test) {
            te.images = te_img;
            te.labels = te_lab;
        }
    }

    if (want_train) {
        if ((rc = load_set(cmd, &tr, d, net, need_labels, train)) != CLI_OK)
            return rc;
    }
    if (source_count(&te) == 1) {
        if ((rc = load_set(cmd, &te, d, net, need_labels, test)) != CLI_OK) {
            if (train) {
                kd_dataset_free(*train);
                *train = NULL;
            }
            return rc;
        }
    }
    return CLI_OK;
}

int cli_load_val(const char *cmd, const cli_data_opts *d, const kd_net *net, kd_dataset **val)
{
    set_source v = {d->val_images, d->val_labels, d->val_csv, d->val_libsvm, d->val_spool, "--val-"};
    *val = NULL;
    if (source_count(&v) == 0)
        return CLI_OK;
    if (source_count(&v) > 1)
        return cli_usage_error(cmd, "choose one source for the validation data (--val-images, --val-csv, "
                                    "--val-libsvm or --val-spool)");
    if (d->val_split > 0)
        return cli_usage_error(cmd, "--val-split and validation files exclude each other: hold out part of the "
                                    "training data or name a validation set, not both");
    return load_set(cmd, &v, d, net, 1, val);
}

/* ------------------------------------------------------------- progress */
const char *cli_format_seconds(double s, char *buf, size_t len)
{
    if (!isfinite(s) || s < 0)
        snprintf(buf, len, "?");
    else if (s < 60)
        snprintf(buf, len, "%.1fs", s);
    else if (s < 3600)
        snprintf(buf, len, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else
        snprintf(buf, len, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    return buf;
}

/* "12345 samples/s", or for a distributed run "12345 samples/s per worker,
 * 24690 global" (every worker's, as the exchange counts them). */
static const char *rate_text(const cli_progress *pr, const kd_progress *p, char *buf, size_t len)
{
    if (pr->global_rate)
        snprintf(buf, len, "%.0f samples/s per worker, %.0f global", p->samples_per_sec,
                 pr->global_rate(pr->global_ctx));
    else
        snprintf(buf, len, "%.0f samples/s", p->samples_per_sec);
    return buf;
}

/* printf onto the end of line[cap] (its length in *n), truncating. */
static void line_add(char *line, size_t cap, size_t *n, const char *fmt, ...)
{
    if (*n + 1 >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(line + *n, cap - *n, fmt, ap);
    va_end(ap);
    if (w > 0)
        *n = *n + (size_t)w < cap ? *n + (size_t)w : cap - 1;
}

int cli_progress_print(const kd_progress *p, void *user)
{
    cli_progress *pr = user;
    char eta[32], took[32], rate[96];

    if (!p->epoch_done) {
        if (!pr->live || (pr->line_open && p->seconds - pr->drawn_at < 0.25))
            return 0;
        pr->drawn_at = p->seconds;
        /* \033[K clears what a longer previous line left behind. */
        fprintf(stderr, "\repoch %d/%d  %lld/%lld  loss %.4f  acc %.4f  %s  eta %s\033[K", p->epoch, p->epochs,
                (long long)p->samples_done, (long long)p->samples_per_epoch, p->loss, p->accuracy,
                rate_text(pr, p, rate, sizeof rate), cli_format_seconds(p->seconds_left, eta, sizeof eta));
        fflush(stderr);
        pr->line_open = 1;
        return 0;
    }

    if (pr->line_open) {
        fputs("\r\033[K", stderr);
        pr->line_open = 0;
    }
    /* The line is built first and written in one call: stderr is
     * unbuffered, and under mpirun pieces written one by one can be split
     * by another rank's output (a Spark driver then misses the line). */
    const kd_epoch_record *r = p->record;
    char line[512] = "";
    size_t n = 0;
#define LINE_ADD(...) line_add(line, sizeof line, &n, __VA_ARGS__)
    LINE_ADD("epoch %d/%d  loss %.4f  acc %.4f", p->epoch, p->epochs, r ? r->train_loss : p->loss,
             r ? r->train_accuracy : p->accuracy);
    if (r && !isnan(r->val_loss))
        LINE_ADD("  val_loss %.4f  val_acc %.4f", r->val_loss, r->val_accuracy);
    if (r && !isnan(r->test_loss))
        LINE_ADD("  test_loss %.4f  test_acc %.4f", r->test_loss, r->test_accuracy);
    LINE_ADD("  %s", rate_text(pr, p, rate, sizeof rate));
    if (r)
        LINE_ADD("  %s", cli_format_seconds(r->seconds, took, sizeof took));
    LINE_ADD("  eta %s\n", cli_format_seconds(p->seconds_left, eta, sizeof eta));
#undef LINE_ADD
    fputs(line, stderr);
    fflush(stderr);
    return 0;
}

int cli_parse_context(const char *cmd, const char *text, kd_context *out)
{
    if (kd_context_parse(text, out) != KD_OK)
        return cli_usage_error(cmd, "--context: unknown context '%s' (choose cpu, gpu or gpu:N)", text);
    return CLI_OK;
}

int cli_apply_context(kd_net *net, kd_context ctx)
{
    if (ctx.kind == KD_DEVICE_CPU)
        return CLI_OK;
    kd_status s = kd_net_set_context(net, ctx);
    if (s != KD_OK) {
        char buf[32];
        cli_fail("--context %s: %s", kd_context_str(ctx, buf, sizeof buf), kd_last_error());
        /* No CUDA device, or no CUDA in this build: the command asks for what
         * this machine cannot do, which no retry changes (exit 2, like a
         * usage error; a failing CUDA call stays a runtime failure). */
        return s == KD_ERR_UNSUPPORTED ? CLI_USAGE : CLI_FAIL;
    }
    return CLI_OK;
}

void cli_model_opts_init(cli_model_opts *m)
{
    memset(m, 0, sizeof *m);
    m->threads = 1;
    m->ctx.kind = KD_DEVICE_CPU;
    cli_data_opts_init(&m->data);
}

int cli_model_option(const char *cmd, cli_model_opts *m, int opt, const char *arg)
{
    switch (opt) {
    case CLI_OPT_MODEL: m->model = arg; return CLI_OK;
    case CLI_OPT_THREADS: return cli_parse_int(cmd, "--threads", arg, 0, 1024, &m->threads);
    case CLI_OPT_CONTEXT: return cli_parse_context(cmd, arg, &m->ctx);
    default: return cli_data_option(cmd, &m->data, opt, arg);
    }
}

int cli_model_open(const char *cmd, const cli_model_opts *m, int need_labels, kd_net **net, kd_dataset **ds)
{
    *net = NULL;
    *ds = NULL;
    if (!m->model)
        return cli_usage_error(cmd, "--model is required");
    kd_set_threads((int)m->threads);
    if (kd_checkpoint_load(m->model, net, NULL, NULL) != KD_OK)
        return cli_library_error();
    int rc = cli_apply_context(*net, m->ctx);
    if (rc == CLI_OK)
        rc = cli_load_data(cmd, &m->data, *net, 0, need_labels, NULL, ds);
    if (rc != CLI_OK) {
        kd_net_free(*net);
        *net = NULL;
    }
    return rc;
}
