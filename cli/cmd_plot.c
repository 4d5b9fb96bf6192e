/* `kindling plot`: a checkpoint's training curves as an SVG picture
 * (cli/plot_svg.c draws it). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli_common.h"
#include "commands.h"
#include "plot_svg.h"

static const char *const CMD = "plot";

static void plot_help(void)
{
    printf(
        "usage: kindling plot M.h5 [-o CURVES.svg] [--title TEXT]   (or --model M.h5)\n"
        "\n"
        "Draw the training curves recorded in a checkpoint as an SVG picture: loss and\n"
        "accuracy per epoch for the training, validation and test data, the best epoch\n"
        "(lowest validation loss, else training loss) marked, and the learning rate.\n"
        "Any web browser shows it; 'rsvg-convert curves.svg -o curves.png' makes a PNG.\n"
        "\n"
        "  --model PATH           the checkpoint (instead of the argument)\n"
        "  -o, --output PATH      the picture (default: beside the checkpoint, M-curves.svg;\n"
        "                         '-' for stdout); written beside PATH and renamed, so a\n"
        "                         failure or a signal never leaves a partial file\n"
        "  --title TEXT           the heading (default: the checkpoint's file name)\n"
        "  -h, --help             this help\n"
        "\n"
        "The path of the picture goes to stdout.\n");
}

enum { OPT_TITLE = CLI_OPT_FIRST_COMMAND_ID };

static const struct option PLOT_OPTIONS[] = {
    {"model", required_argument, NULL, CLI_OPT_MODEL},
    {"output", required_argument, NULL, 'o'},
    {"title", required_argument, NULL, OPT_TITLE},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* "run/model.h5" -> "run/model-curves.svg". */
static void default_output(const char *model, char *buf, size_t len)
{
    const char *slash = strrchr(model, '/');
    const char *base = slash ? slash + 1 : model;
    const char *dot = strrchr(base, '.');
    size_t stem = dot && dot != base ? (size_t)(dot - model) : strlen(model);
    snprintf(buf, len, "%.*s-curves.svg", (int)stem, model);
}

/* The preset the network was made from ("mlp", "lenet"), or NULL. */
static const char *preset_of(const kd_net *net)
{
    static const char *const PRESETS[] = {"mlp", "lenet"};
    for (size_t i = 0; i < sizeof PRESETS / sizeof PRESETS[0]; i++) {
        kd_net *p = NULL;
        int same = kd_net_create(PRESETS[i], 1, &p) == KD_OK && strcmp(kd_net_spec_json(p), kd_net_spec_json(net)) == 0;
        kd_net_free(p);
        if (same)
            return PRESETS[i];
    }
    return NULL;
}

/* "mlp, 109,386 parameters · 10 epochs, batch 64 · best val_loss 0.3124 at
 * epoch 7 · test accuracy 0.8871 after epoch 10". */
static void subtitle_of(const kd_net *net, const kd_train_state *st, const kd_best_epoch *best, char *buf,
                        size_t len)
{
    size_t used = 0;
    const char *preset = preset_of(net);
    size_t params = kd_net_param_count(net);
    char count[32];
    if (params >= 1000000)
        snprintf(count, sizeof count, "%.2fM", params / 1e6);
    else if (params >= 1000)
        snprintf(count, sizeof count, "%zu,%03zu", params / 1000, params % 1000);
    else
        snprintf(count, sizeof count, "%zu", params);
#define ADD(...) used += (size_t)snprintf(buf + used, used < len ? len - used : 0, __VA_ARGS__)
    if (preset)
        ADD("%s, ", preset);
    ADD("%s parameters", count);
    ADD("  \xc2\xb7  %d epoch%s, batch %d", st->history_len, st->history_len == 1 ? "" : "s", st->batch_size);
    if (best->epoch > 0)
        ADD("  \xc2\xb7  best %s %.4f at epoch %d", best->on_val ? "val_loss" : "train_loss", best->value, best->epoch);
    for (int i = st->history_len - 1; i >= 0; i--)
        if (isfinite(st->history[i].test_accuracy)) {
            ADD("  \xc2\xb7  test accuracy %.4f after epoch %d", st->history[i].test_accuracy, st->history[i].epoch);
            break;
        }
#undef ADD
}

typedef struct picture {
    const kd_train_state *st;
    const plot_info *info;
} picture;

static int fill_picture(FILE *f, void *ctx)
{
    const picture *p = ctx;
    return plot_svg_write(f, p->st, p->info);
}

static int write_picture(const char *path, const kd_train_state *st, const plot_info *info)
{
    picture p = {st, info};
    if (strcmp(path, "-") == 0) {
        int err = fill_picture(stdout, &p);
        return err ? cli_fail("writing the picture: %s", strerror(err)) : CLI_OK;
    }
    return cli_write_file(path, fill_picture, &p);
}

int cmd_plot(int argc, char **argv)
{
    const char *model = NULL, *output = NULL, *title = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":ho:", PLOT_OPTIONS, NULL)) != -1) {
        switch (c) {
        case 'h': plot_help(); return CLI_OK;
        case 'o': output = optarg; break;
        case CLI_OPT_MODEL: model = optarg; break;
        case OPT_TITLE: title = optarg; break;
        default: return cli_getopt_error(CMD, c, argv);
        }
    }
    int from_flag = model != NULL;
    if (!model && optind < argc)
        model = argv[optind++];
    if (!model)
        return cli_usage_error(CMD, "missing the checkpoint file (kindling plot M.h5, or --model M.h5)");
    if (optind < argc)
        return cli_usage_error(CMD, "unexpected argument '%s'%s", argv[optind],
                               from_flag ? " (--model already names the checkpoint)" : "");
    char fallback[4200];
    if (!output) {
        default_output(model, fallback, sizeof fallback);
        output = fallback;
    }
    const char *ext = strrchr(output, '.');
    if (strcmp(output, "-") != 0 && ext && strcasecmp(ext, ".png") == 0)
        return cli_usage_error(CMD, "-o %s: kindling draws SVG; write a .svg and convert it, e.g. "
                                    "rsvg-convert curves.svg -o %s", output, output);
    if (strcmp(output, "-") != 0 && !(ext && strcasecmp(ext, ".svg") == 0))
        return cli_usage_error(CMD, "-o %s: the picture is SVG: name it *.svg", output);

    kd_net *net = NULL;
    kd_train_state st;
    kd_train_state_init(&st);
    if (kd_checkpoint_load(model, &net, NULL, &st) != KD_OK)
        return cli_library_error();
    int rc = CLI_OK;
    if (st.history_len == 0) {
        rc = cli_fail("%s: no training history to plot (saved before its first epoch ended)", model);
    } else {
        kd_best_epoch best;
        if (kd_train_state_best(&st, 0.0, &best) != KD_OK)
            best.epoch = 0;
        char subtitle[512];
        subtitle_of(net, &st, &best, subtitle, sizeof subtitle);
        const char *slash = strrchr(model, '/');
        plot_info info = {title ? title : slash ? slash + 1 : model, subtitle, best.epoch};
        rc = write_picture(output, &st, &info);
        if (rc == CLI_OK && strcmp(output, "-") != 0)
            printf("%s\n", output);
    }
    kd_train_state_clear(&st);
    kd_net_free(net);
    return rc;
}
