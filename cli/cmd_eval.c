/* `kindling eval`: loss, accuracy and per-class accuracy of a saved model. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"

static const char *const CMD = "eval";

static void eval_help(void)
{
    printf(
        "usage: kindling eval --model M.h5 [data options] [--batch-size N]\n"
        "\n"
        "Evaluate a checkpoint: loss, accuracy and per-class accuracy on stdout.\n"
        "\n"
        "  --model PATH           checkpoint written by 'kindling train' (required)\n"
        "  --batch-size N         samples per forward pass (default 256)\n"
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

enum { OPT_BATCH = CLI_OPT_FIRST_COMMAND_ID };

static const struct option EVAL_OPTIONS[] = {
    {"model", required_argument, NULL, CLI_OPT_MODEL},
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

static void print_result(const char *model, const kd_eval_result *r)
{
    printf("model     %s\n", model);
    printf("samples   %lld\n", (long long)r->count);
    printf("loss      %.4f\n", r->loss);
    printf("accuracy  %.4f\n", r->accuracy);
    printf("\n%5s  %8s  %8s\n", "class", "samples", "accuracy");
    for (int k = 0; k < r->num_classes; k++) {
        if (r->per_class_count[k] > 0)
            printf("%5d  %8lld  %8.4f\n", k, (long long)r->per_class_count[k], r->per_class_accuracy[k]);
        else
            printf("%5d  %8d  %8s\n", k, 0, "-");
    }
}

int cmd_eval(int argc, char **argv)
{
    long long batch = 256;
    cli_model_opts m;
    int c, rc;

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
    } else {
        print_result(m.model, &r);
        rc = CLI_OK;
    }
    kd_eval_result_clear(&r);
    kd_dataset_free(ds);
    kd_net_free(net);
    return rc;
}
