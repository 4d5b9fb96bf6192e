/* `kindling eval`: loss, accuracy, per-class precision and recall and the
 * confusion matrix of a saved model, as text or JSON (--json). */
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "cli_json.h"
#include "commands.h"

static const char *const CMD = "eval";

static void eval_help(void)
{
    printf(
        "usage: kindling eval --model M.h5 [data options] [--batch-size N] [--json]\n"
        "\n"
        "Evaluate a checkpoint on stdout: loss, accuracy, per-class precision, recall\n"
        "and F1 (with their macro averages), and the confusion matrix (rows: true\n"
        "class, columns: predicted class).\n"
        "\n"
        "  --model PATH           checkpoint written by 'kindling train' (required)\n"
        "  --batch-size N         samples per forward pass (default 256)\n"
        "  --json                 one JSON object instead: model, samples, loss, accuracy,\n"
        "                         classes (class, samples, predicted, precision, recall,\n"
        "                         f1; null where undefined), macro, confusion\n"
        "  --threads N            OpenBLAS threads (default 1; 0 = OpenBLAS's default)\n"
        CLI_CONTEXT_HELP
        "\n"
        "Data (default: the Fashion-MNIST t10k test set from $KD_FASHION_MNIST_DIR or\n"
        "      " CLI_DEFAULT_FASHION_MNIST_DIR "):\n"
        "  --dataset fashion-mnist\n"
        "  --images F --labels F  IDX files, plain or gzip\n"
        "  --csv F                one sample per line\n"
        "  --spool F              a binary spool file (format in io/spool.c)\n"
        "  --label-col N          CSV column with the class (default 0)\n"
        "  --header               the CSV file starts with a header line\n"
        CLI_DELIMITER_HELP
        "  --libsvm F\n"
        "  --features N           LibSVM feature count (default: the network's input size)\n"
        "  (--test-images, --test-labels, --test-csv and --test-libsvm are accepted too)\n"
        "  -h, --help             this help\n");
}

enum { OPT_BATCH = CLI_OPT_FIRST_COMMAND_ID, OPT_JSON };

static const struct option EVAL_OPTIONS[] = {
    {"model", required_argument, NULL, CLI_OPT_MODEL},
    {"json", no_argument, NULL, OPT_JSON},
    {"batch-size", required_argument, NULL, OPT_BATCH},
    {"threads", required_argument, NULL, CLI_OPT_THREADS},
    {"context", required_argument, NULL, CLI_OPT_CONTEXT},
    {"help", no_argument, NULL, 'h'},
    {"dataset", required_argument, NULL, CLI_OPT_DATASET},
    {"images", required_argument, NULL, CLI_OPT_TEST_IMAGES},
    {"labels", required_argument, NULL, CLI_OPT_TEST_LABELS},
    {"csv", required_argument, NULL, CLI_OPT_TEST_CSV},
    {"libsvm", required_argument, NULL, CLI_OPT_TEST_LIBSVM},
    {"spool", required_argument, NULL, CLI_OPT_TEST_SPOOL},
    {"test-spool", required_argument, NULL, CLI_OPT_TEST_SPOOL},
    {"test-images", required_argument, NULL, CLI_OPT_TEST_IMAGES},
    {"test-labels", required_argument, NULL, CLI_OPT_TEST_LABELS},
    {"test-csv", required_argument, NULL, CLI_OPT_TEST_CSV},
    {"test-libsvm", required_argument, NULL, CLI_OPT_TEST_LIBSVM},
    {"label-col", required_argument, NULL, CLI_OPT_LABEL_COL},
    {"header", no_argument, NULL, CLI_OPT_HEADER},
    {"delimiter", required_argument, NULL, CLI_OPT_DELIMITER},
    {"features", required_argument, NULL, CLI_OPT_FEATURES},
    {NULL, 0, NULL, 0},
};

/* One class's figures from the confusion matrix. Precision is undefined
 * (NaN) for a class never predicted, recall for one absent from the data. */
typedef struct class_scores {
    int64_t samples, predicted;
    double precision, recall, f1;
} class_scores;

static class_scores scores_of(const kd_eval_result *r, int k)
{
    int K = r->num_classes;
    class_scores c = {r->per_class_count[k], 0, NAN, NAN, NAN};
    for (int t = 0; t < K; t++)
        c.predicted += r->confusion[(size_t)t * K + k];
    int64_t hits = r->confusion[(size_t)k * K + k];
    if (c.predicted > 0)
        c.precision = (double)hits / (double)c.predicted;
    if (c.samples > 0)
        c.recall = (double)hits / (double)c.samples;
    if (c.predicted > 0 && c.samples > 0)
        c.f1 = c.precision + c.recall > 0 ? 2 * c.precision * c.recall / (c.precision + c.recall) : 0;
    return c;
}

/* Macro averages over the classes where each figure is defined (as
 * scikit-learn's classification_report, without its zero_division). */
static void macro_of(const kd_eval_result *r, double *precision, double *recall, double *f1)
{
    double sp = 0, sr = 0, sf = 0;
    int np = 0, nr = 0, nf = 0;
    for (int k = 0; k < r->num_classes; k++) {
        class_scores c = scores_of(r, k);
        if (!isnan(c.precision))
            sp += c.precision, np++;
        if (!isnan(c.recall))
            sr += c.recall, nr++;
        if (!isnan(c.f1))
            sf += c.f1, nf++;
    }
    *precision = np ? sp / np : NAN;
    *recall = nr ? sr / nr : NAN;
    *f1 = nf ? sf / nf : NAN;
}

/* "0.9312", or "-" where undefined, right-aligned in `width`. */
static void print_figure(double v, int width)
{
    if (isnan(v))
        printf("  %*s", width, "-");
    else
        printf("  %*.4f", width, v);
}

static void print_result(const char *model, const kd_eval_result *r)
{
    int K = r->num_classes;
    printf("model     %s\n", model);
    printf("samples   %lld\n", (long long)r->count);
    printf("loss      %.4f\n", r->loss);
    printf("accuracy  %.4f\n", r->accuracy);
    printf("\n%5s  %8s  %9s  %9s  %9s  %9s\n", "class", "samples", "predicted", "precision", "recall", "f1");
    for (int k = 0; k < K; k++) {
        class_scores c = scores_of(r, k);
        printf("%5d  %8lld  %9lld", k, (long long)c.samples, (long long)c.predicted);
        print_figure(c.precision, 9);
        print_figure(c.recall, 9);
        print_figure(c.f1, 9);
        printf("\n");
    }
    double mp, mr, mf;
    macro_of(r, &mp, &mr, &mf);
    printf("%5s  %8lld  %9lld", "macro", (long long)r->count, (long long)r->count);
    print_figure(mp, 9);
    print_figure(mr, 9);
    print_figure(mf, 9);
    printf("\n\nconfusion matrix (rows: true class, columns: predicted class)\n");
    /* Columns as wide as the largest count needs. */
    int64_t most = 0;
    for (size_t i = 0; i < (size_t)K * (size_t)K; i++)
        most = r->confusion[i] > most ? r->confusion[i] : most;
    int w = snprintf(NULL, 0, "%lld", (long long)most);
    w = w < 4 ? 4 : w;
    printf("%9s", "true\\pred");
    for (int p = 0; p < K; p++)
        printf(" %*d", w, p);
    printf("\n");
    for (int t = 0; t < K; t++) {
        printf("%9d", t);
        for (int p = 0; p < K; p++)
            printf(" %*lld", w, (long long)r->confusion[(size_t)t * K + p]);
        printf("\n");
    }
}

static int print_json(const char *model, const kd_eval_result *r)
{
    int K = r->num_classes;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return cli_fail("out of memory");
    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddNumberToObject(o, "samples", (double)r->count);
    cJSON_AddItemToObject(o, "loss", cli_json_number(r->loss));
    cJSON_AddItemToObject(o, "accuracy", cli_json_number(r->accuracy));
    cJSON *classes = cJSON_AddArrayToObject(o, "classes");
    for (int k = 0; classes && k < K; k++) {
        class_scores c = scores_of(r, k);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddItemToArray(classes, e);
        cJSON_AddNumberToObject(e, "class", k);
        cJSON_AddNumberToObject(e, "samples", (double)c.samples);
        cJSON_AddNumberToObject(e, "predicted", (double)c.predicted);
        cJSON_AddItemToObject(e, "precision", cli_json_number(c.precision));
        cJSON_AddItemToObject(e, "recall", cli_json_number(c.recall));
        cJSON_AddItemToObject(e, "f1", cli_json_number(c.f1));
    }
    double mp, mr, mf;
    macro_of(r, &mp, &mr, &mf);
    cJSON *macro = cJSON_AddObjectToObject(o, "macro");
    cJSON_AddItemToObject(macro, "precision", cli_json_number(mp));
    cJSON_AddItemToObject(macro, "recall", cli_json_number(mr));
    cJSON_AddItemToObject(macro, "f1", cli_json_number(mf));
    cJSON *m = cJSON_AddArrayToObject(o, "confusion");
    for (int t = 0; m && t < K; t++) {
        cJSON *row = cJSON_CreateArray();
        cJSON_AddItemToArray(m, row);
        for (int p = 0; row && p < K; p++)
            cJSON_AddItemToArray(row, cJSON_CreateNumber((double)r->confusion[(size_t)t * K + p]));
    }
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text)
        return cli_fail("out of memory");
    printf("%s\n", text);
    cJSON_free(text);
    return CLI_OK;
}

int cmd_eval(int argc, char **argv)
{
    long long batch = 256;
    cli_model_opts m;
    int c, rc, json = 0;

    cli_model_opts_init(&m);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", EVAL_OPTIONS, NULL)) != -1) {
        switch (c) {
        case 'h': eval_help(); return CLI_OK;
        case OPT_BATCH:
            if ((rc = cli_parse_int(CMD, "--batch-size", optarg, 1, INT_MAX, &batch)) != CLI_OK)
                return rc;
            break;
        case OPT_JSON: json = 1; break;
        case '?':
        case ':': return cli_getopt_error(CMD, c, argv);
        default:
            if ((rc = cli_model_option(CMD, &m, c, optarg)) != CLI_OK)
                return rc < 0 ? cli_usage_error(CMD, "unhandled option") : rc;
        }
    }
    if (optind < argc)
        return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);

    kd_net *net = NULL;
    kd_dataset *ds = NULL;
    kd_eval_result r;
    memset(&r, 0, sizeof r);
    if ((rc = cli_model_open(CMD, &m, 1, &net, &ds)) != CLI_OK)
        return rc;
    if (kd_evaluate(net, ds, (int)batch, &r) != KD_OK) {
        rc = cli_fail("%s: %s", m.model, kd_last_error());
    } else if (json) {
        rc = print_json(m.model, &r);
    } else {
        print_result(m.model, &r);
        rc = CLI_OK;
    }
    kd_eval_result_clear(&r);
    kd_dataset_free(ds);
    kd_net_free(net);
    return rc;
}
