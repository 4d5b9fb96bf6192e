/* `kindling convert`: IDX, CSV or LibSVM to a spool file, streamed in
 * bounded memory, so a data set too large to load can still be trained on
 * (spool files are memory-mapped by `train --train-spool`). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "cli_signals.h"
#include "commands.h"

static const char *const CMD = "convert";

static void convert_help(void)
{
    printf("usage: kindling convert (--images F [--labels F] | --csv F | --libsvm F) --output F.spool\n"
           "\n"
           "Convert a data set to a spool file (the binary format of --train-spool, layout in\n"
           "io/spool.c) without loading it: the input is read a block at a time and the\n"
           "output written as it goes, in a few MiB of memory whatever the size. The output\n"
           "is crash-safe: written beside F.spool, fsynced and renamed over it.\n"
           "\n"
           "  --images F [--labels F]   IDX files, plain or gzip (uint8 is scaled to [0,1])\n"
           "  --csv F                   one sample per line\n"
           "  --label-col N             CSV column with the class (default 0; -1 = none)\n"
           "  --header                  the CSV file starts with a header line\n"
           "  --delimiter C             CSV column delimiter: one character or 'tab' (default:\n"
           "                            the most frequent of ',' ';' and tab on the first line)\n"
           "  --shape CxHxW             CSV: per-sample shape of the features (default: flat)\n"
           "  --libsvm F                \"label idx:val ...\"\n"
           "  --features N              LibSVM feature count, or:\n"
           "  --net NAME|FILE           LibSVM: the network's input size, the rule 'kindling\n"
           "                            train --train-libsvm' follows (the file alone cannot tell\n"
           "                            the width: it leaves trailing zero features out)\n"
           "  -o, --output F            the spool file to write\n"
           "  -q, --quiet               no summary line\n"
           "  -h, --help                this help\n"
           "\n"
           "Training reads the spool with --train-spool F (or --test-spool F); the\n"
           "features are reshaped to the network's input when the sizes agree.\n");
}

enum { OPT_IMAGES = CLI_OPT_FIRST_COMMAND_ID, OPT_LABELS, OPT_CSV, OPT_LIBSVM, OPT_SHAPE, OPT_NET };

static const struct option CONVERT_OPTIONS[] = {
    {"images", required_argument, NULL, OPT_IMAGES},
    {"labels", required_argument, NULL, OPT_LABELS},
    {"csv", required_argument, NULL, OPT_CSV},
    {"libsvm", required_argument, NULL, OPT_LIBSVM},
    {"shape", required_argument, NULL, OPT_SHAPE},
    {"net", required_argument, NULL, OPT_NET},
    {"label-col", required_argument, NULL, CLI_OPT_LABEL_COL},
    {"header", no_argument, NULL, CLI_OPT_HEADER},
    {"delimiter", required_argument, NULL, CLI_OPT_DELIMITER},
    {"features", required_argument, NULL, CLI_OPT_FEATURES},
    {"output", required_argument, NULL, 'o'},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* "1x28x28" or "784": 1 to 3 dimensions >= 1. */
static int parse_shape(const char *text, kd_shape *out)
{
    memset(out, 0, sizeof *out);
    const char *p = text;
    for (;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > INT_MAX || out->rank == 3 || (*end != 'x' && *end != '\0'))
            return cli_usage_error(CMD, "--shape: expected 1 to 3 dimensions >= 1 like 1x28x28, got '%s'", text);
        out->dim[out->rank++] = (int)v;
        if (*end == '\0')
            return kd_shape_size(out) ? CLI_OK
                                      : cli_usage_error(CMD, "--shape: '%s' is too large", text);
        p = end + 1;
    }
}

int cmd_convert(int argc, char **argv)
{
    const char *images = NULL, *labels = NULL, *csv = NULL, *libsvm = NULL, *output = NULL, *net_name = NULL;
    kd_shape shape;
    int have_shape = 0, quiet = 0, c, rc;
    cli_data_opts d;
    cli_data_opts_init(&d);

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":ho:q", CONVERT_OPTIONS, NULL)) != -1) {
        switch (c) {
        case 'h': convert_help(); return CLI_OK;
        case 'q': quiet = 1; break;
        case 'o': output = optarg; break;
        case OPT_IMAGES: images = optarg; break;
        case OPT_LABELS: labels = optarg; break;
        case OPT_CSV: csv = optarg; break;
        case OPT_LIBSVM: libsvm = optarg; break;
        case OPT_NET: net_name = optarg; break;
        case OPT_SHAPE:
            if ((rc = parse_shape(optarg, &shape)) != CLI_OK)
                return rc;
            have_shape = 1;
            break;
        case '?':
        case ':': return cli_getopt_error(CMD, c, argv);
        default:
            if ((rc = cli_data_option(CMD, &d, c, optarg)) != CLI_OK)
                return rc < 0 ? cli_usage_error(CMD, "unhandled option") : rc;
        }
    }
    if (optind < argc)
        return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
    int sources = (images || labels) + (csv != NULL) + (libsvm != NULL);
    if (sources != 1)
        return cli_usage_error(CMD, "%s", sources ? "choose one input (--images, --csv or --libsvm)"
                                                  : "no input: give --images, --csv or --libsvm");
    if (!output)
        return cli_usage_error(CMD, "--output: the spool file to write is missing");
    if (labels && !images)
        return cli_usage_error(CMD, "--labels needs --images");
    if (have_shape && !csv)
        return cli_usage_error(CMD, "--shape: only applies to --csv");
    if ((d.header || d.label_col != 0 || d.delimiter) && !csv)
        return cli_usage_error(CMD, "%s: only applies to --csv",
                               d.header ? "--header" : d.delimiter ? "--delimiter" : "--label-col");
    if ((d.features || net_name) && !libsvm)
        return cli_usage_error(CMD, "%s: only applies to --libsvm", d.features ? "--features" : "--net");
    if (libsvm && d.features && net_name)
        return cli_usage_error(CMD, "give --features or --net, not both");
    /* One rule for LibSVM's width everywhere: --features, else the network's
     * input size (what train, eval and predict use). */
    if (libsvm && !d.features && !net_name)
        return cli_usage_error(CMD, "--libsvm needs --features N or --net NAME|FILE: LibSVM leaves trailing zero "
                                    "features out, so the file alone does not tell the width, and 'kindling train' "
                                    "reads LibSVM at the network's input size");
    if (net_name) {
        kd_net *net = NULL;
        if ((rc = cli_create_net(CMD, "--net", net_name, 0, &net)) != CLI_OK)
            return rc;
        kd_shape in = kd_net_input_shape(net);
        size_t size = kd_shape_size(&in);
        kd_net_free(net);
        if (size > INT_MAX)
            return cli_fail("--net %s: %zu inputs are more than LibSVM's %d features", net_name, size, INT_MAX);
        d.features = (int)size;
    }

    const char *input = images ? images : csv ? csv : libsvm;
    cli_signals_protect_save(output); /* a signal mid-write removes the temporary */
    int64_t n = 0;
    kd_status s;
    if (images)
        s = kd_convert_idx_to_spool(images, labels, output, &n);
    else if (csv) {
        kd_csv_options o = {d.label_col, d.header, d.delimiter};
        s = kd_convert_csv_to_spool_opts(csv, &o, have_shape ? &shape : NULL, output, &n);
        if (s != KD_OK) {
            char msg[1024], hint[512];
            snprintf(msg, sizeof msg, "%s", kd_last_error());
            return cli_fail("%s%s", msg, cli_csv_hint(csv, &d, 0, 0, hint, sizeof hint));
        }
    } else {
        s = kd_convert_libsvm_to_spool(libsvm, d.features, output, &n);
    }
    if (s != KD_OK)
        return cli_library_error();
    if (!quiet)
        printf("converted %lld sample%s from %s to %s\n", (long long)n, n == 1 ? "" : "s", input, output);
    return CLI_OK;
}
