/* `kindling predict`: class probabilities of a saved model as CSV. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"

static const char *const CMD = "predict";

static void predict_help(void)
{
    printf(
        "usage: kindling predict --model M.h5 [data options] [--output OUT.csv] [--batch-size N]\n"
        "\n"
        "Write class probabilities as CSV: a header \"index,class,p0,...,p{K-1}\", then one\n"
        "row per sample (class is the most probable one). With --id-col the first column\n"
        "is \"id\" and holds each row's id instead of its index.\n"
        "\n"
        "  --model PATH           checkpoint written by 'kindling train' (required)\n"
        "  -o, --output PATH      output file (default stdout); written beside PATH and\n"
        "                         renamed, so a failure or a signal never leaves a partial file\n"
        "  --batch-size N         samples per forward pass (default 256, as eval)\n"
        "  --threads N            OpenBLAS threads (default 1; 0 = OpenBLAS's default)\n"
        CLI_CONTEXT_HELP
        "\n"
        "Data (default: the Fashion-MNIST t10k test set from $KD_FASHION_MNIST_DIR or\n"
        "      " CLI_DEFAULT_FASHION_MNIST_DIR "); labels are not needed:\n"
        "  --input F              a CSV, LibSVM, spool or IDX file (plain or gzip), told\n"
        "                         apart by its content, whatever its name\n"
        "  --dataset fashion-mnist\n"
        "  --images F [--labels F]  IDX files, plain or gzip\n"
        "  --csv F                one sample per line\n"
        "  --spool F              a binary spool file (format in io/spool.c)\n"
        "  --label-col N          CSV column holding a label to skip (default 0; -1 = none)\n"
        "  --id-col N             CSV column (0-based) holding an id to pass through to the\n"
        "                         output (it is not a feature)\n"
        "  --header               the CSV file starts with a header line\n"
        CLI_DELIMITER_HELP
        "  --libsvm F\n"
        "  --features N           LibSVM feature count (default: the network's input size)\n"
        "  -h, --help             this help\n");
}


enum { OPT_BATCH = CLI_OPT_FIRST_COMMAND_ID, OPT_ID_COL };

static const struct option PREDICT_OPTIONS[] = {
    {"id-col", required_argument, NULL, OPT_ID_COL},
    {"model", required_argument, NULL, CLI_OPT_MODEL},
    {"batch-size", required_argument, NULL, OPT_BATCH},
    {"output", required_argument, NULL, 'o'},
    {"threads", required_argument, NULL, CLI_OPT_THREADS},
    {"context", required_argument, NULL, CLI_OPT_CONTEXT},
    {"help", no_argument, NULL, 'h'},
    {"input", required_argument, NULL, CLI_OPT_INPUT},
    {"dataset", required_argument, NULL, CLI_OPT_DATASET},
    {"images", required_argument, NULL, CLI_OPT_TEST_IMAGES},
    {"labels", required_argument, NULL, CLI_OPT_TEST_LABELS},
    {"csv", required_argument, NULL, CLI_OPT_TEST_CSV},
    {"libsvm", required_argument, NULL, CLI_OPT_TEST_LIBSVM},
    {"spool", required_argument, NULL, CLI_OPT_TEST_SPOOL},
    {"label-col", required_argument, NULL, CLI_OPT_LABEL_COL},
    {"header", no_argument, NULL, CLI_OPT_HEADER},
    {"delimiter", required_argument, NULL, CLI_OPT_DELIMITER},
    {"features", required_argument, NULL, CLI_OPT_FEATURES},
    {NULL, 0, NULL, 0},
};

/* An id as a CSV cell: quoted (quotes doubled) when it holds a ',', a
 * quote or a line break, as RFC 4180 has it. */
static void put_id(FILE *f, const char *id)
{
    if (!strpbrk(id, ",\"\r\n")) {
        fputs(id, f);
        return;
    }
    fputc('"', f);
    for (const char *c = id; *c; c++) {
        if (*c == '"')
            fputc('"', f);
        fputc(*c, f);
    }
    fputc('"', f);
}

/* Write the CSV (ids: one per sample, or NULL for the index); returns 0 or
 * errno of the first failed write. */
static int write_predictions(FILE *f, const float *probs, int64_t n, int k, char *const *ids)
{
    fputs(ids ? "id,class" : "index,class", f);
    for (int j = 0; j < k; j++)
        fprintf(f, ",p%d", j);
    fputc('\n', f);
    for (int64_t i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * (size_t)k;
        int best = 0;
        for (int j = 1; j < k; j++)
            if (p[j] > p[best])
                best = j;
        if (ids)
            put_id(f, ids[i]);
        else
            fprintf(f, "%lld", (long long)i);
        fprintf(f, ",%d", best);
        for (int j = 0; j < k; j++)
            fprintf(f, ",%.6g", p[j]);
        if (fputc('\n', f) == EOF)
            return errno ? errno : EIO;
    }
    if (fflush(f) != 0 || ferror(f))
        return errno ? errno : EIO;
    return 0;
}

typedef struct predictions {
    const float *probs;
    int64_t n;
    int k;
    char *const *ids;
} predictions;

static int fill_predictions(FILE *f, void *ctx)
{
    const predictions *p = ctx;
    return write_predictions(f, p->probs, p->n, p->k, p->ids);
}

static int write_output(const char *path, const float *probs, int64_t n, int k, char *const *ids)
{
    predictions p = {probs, n, k, ids};
    if (!path) {
        int err = fill_predictions(stdout, &p);
        return err ? cli_fail("writing predictions: %s", strerror(err)) : CLI_OK;
    }
    return cli_write_file(path, fill_predictions, &p);
}

int cmd_predict(int argc, char **argv)
{
    const char *output = NULL;
    long long batch = 256, id_col = -1;
    char **ids = NULL;
    cli_model_opts m;
    int c, rc;

    cli_model_opts_init(&m);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":ho:", PREDICT_OPTIONS, NULL)) != -1) {
        switch (c) {
        case 'h': predict_help(); return CLI_OK;
        case 'o': output = optarg; break;
        case OPT_BATCH:
            if ((rc = cli_parse_int(CMD, "--batch-size", optarg, 1, INT_MAX, &batch)) != CLI_OK)
                return rc;
            break;
        case OPT_ID_COL:
            if ((rc = cli_parse_int(CMD, "--id-col", optarg, 0, INT_MAX, &id_col)) != CLI_OK)
                return rc;
            break;
        case '?':
        case ':': return cli_getopt_error(CMD, c, argv);
        default:
            if ((rc = cli_model_option(CMD, &m, c, optarg)) != CLI_OK)
                return rc < 0 ? cli_usage_error(CMD, "unhandled option") : rc;
        }
    }
    if (optind < argc)
        return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
    if (id_col >= 0) {
        m.data.id_col = (int)id_col;
        m.data.ids = &ids;
    }

    kd_net *net = NULL;
    kd_dataset *ds = NULL;
    float *probs = NULL;
    if ((rc = cli_model_open(CMD, &m, 0, &net, &ds)) != CLI_OK)
        return rc;
    int k = kd_net_num_classes(net);
    probs = malloc((size_t)(ds->n > 0 ? ds->n : 1) * (size_t)k * sizeof *probs);
    if (!probs) {
        rc = cli_fail("out of memory for %lld x %d probabilities", (long long)ds->n, k);
        goto done;
    }
    if (ds->n > 0 && kd_net_predict_batched(net, ds->x, ds->n, (int)batch, probs) != KD_OK) {
        rc = cli_fail("%s: %s", m.model, kd_last_error());
        goto done;
    }
    rc = write_output(output, probs, ds->n, k, ids);

done:
    free(ids);
    free(probs);
    kd_dataset_free(ds);
    kd_net_free(net);
    return rc;
}
