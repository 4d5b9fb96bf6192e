/* `kindling inspect`: what a checkpoint holds - layers, optimizer, training
 * state and history. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"

static const char *const CMD = "inspect";

static void inspect_help(void)
{
    printf(
        "usage: kindling inspect M.h5   (or --model M.h5, as for eval and predict)\n"
        "\n"
        "Show a checkpoint: its layers (shapes, weights, parameter counts), the\n"
        "optimizer and its settings, the training position and the per-epoch history.\n"
        "\n"
        "  --model PATH           the checkpoint (instead of the argument)\n"
        "  -h, --help             this help\n");
}

static const struct option INSPECT_OPTIONS[] = {
    {"model", required_argument, NULL, CLI_OPT_MODEL},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static const char *weight_dims_str(const kd_layer_info *li, char *buf, size_t len)
{
    size_t used = 0;
    if (li->weight_count == 0 || li->weight_rank <= 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    buf[0] = '\0';
    for (int i = 0; i < li->weight_rank && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%d", i ? "x" : "", li->weight_dims[i]);
    if (li->bias_count && used < len)
        snprintf(buf + used, len - used, " +%zu", li->bias_count);
    return buf;
}

static int print_layers(const kd_net *net)
{
    int n = kd_net_num_layers(net);
    char in[48], out[48], w[64], io[100];
    printf("%3s  %-14s %-10s %-26s %-18s %10s\n", "#", "name", "type", "input -> output", "weights", "params");
    for (int i = 0; i < n; i++) {
        kd_layer_info li;
        if (kd_net_layer_info(net, i, &li) != KD_OK)
            return cli_library_error();
        snprintf(io, sizeof io, "%s -> %s", kd_shape_str(&li.in, in, sizeof in),
                 kd_shape_str(&li.out, out, sizeof out));
        printf("%3d  %-14s %-10s %-26s %-18s %10zu\n", li.index, li.name, li.type, io,
               weight_dims_str(&li, w, sizeof w), li.weight_count + li.bias_count);
    }
    printf("total parameters %zu", kd_net_param_count(net));
    if (kd_net_state_count(net))
        printf(" (plus %zu non-trainable state values)", kd_net_state_count(net));
    printf("\nclasses %d\n", kd_net_num_classes(net));
    return CLI_OK;
}

static void print_optimizer(const kd_optim *opt)
{
    if (!opt) {
        printf("\noptimizer  none saved\n");
        return;
    }
    const kd_optim_config *c = kd_optim_get_config(opt);
    printf("\noptimizer  %s  lr %g", kd_optim_kind_name(c->kind), c->lr);
    if (c->kind == KD_OPT_MOMENTUM)
        printf("  momentum %g  nesterov %s", c->momentum, c->nesterov ? "yes" : "no");
    if (c->kind == KD_OPT_ADAM || c->kind == KD_OPT_ADAMW)
        printf("  beta1 %g  beta2 %g  eps %g", c->beta1, c->beta2, c->eps);
    printf("  weight_decay %g\n", c->weight_decay);
    printf("schedule   %s", kd_schedule_kind_name(c->schedule));
    if (c->schedule == KD_SCHED_STEP)
        printf("  step_size %lld steps  gamma %g", (long long)c->step_size, c->gamma);
    if (c->schedule == KD_SCHED_COSINE)
        printf("  total %lld steps  lr_min %g", (long long)c->total_steps, c->lr_min);
    printf("\nsteps      %lld  (next lr %g)\n", (long long)kd_optim_steps(opt), kd_optim_current_lr(opt));
}

static void print_history(const kd_train_state *st)
{
    printf("\nepoch %d  step %lld  seed %llu  batch size %d\n", st->epoch, (long long)st->step,
           (unsigned long long)st->seed, st->batch_size);
    if (st->history_len == 0) {
        printf("no history\n");
        return;
    }
    printf("\n%5s  %10s  %9s  %9s  %8s  %8s  %10s\n", "epoch", "train_loss", "train_acc", "test_loss", "test_acc",
           "seconds", "lr");
    for (int i = 0; i < st->history_len; i++) {
        const kd_epoch_record *r = &st->history[i];
        printf("%5d  %10.4f  %9.4f  ", r->epoch, r->train_loss, r->train_accuracy);
        if (isnan(r->test_loss))
            printf("%9s  %8s", "-", "-");
        else
            printf("%9.4f  %8.4f", r->test_loss, r->test_accuracy);
        printf("  %8.2f  %10.4g\n", r->seconds, r->learning_rate);
    }
}

int cmd_inspect(int argc, char **argv)
{
    int c;
    const char *path = NULL;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", INSPECT_OPTIONS, NULL)) != -1) {
        switch (c) {
        case 'h': inspect_help(); return CLI_OK;
        case CLI_OPT_MODEL: path = optarg; break;
        default: return cli_getopt_error(CMD, c, argv);
        }
    }
    int from_model = path != NULL;
    if (!path && optind < argc)
        path = argv[optind++];
    if (!path)
        return cli_usage_error(CMD, "missing the checkpoint file (kindling inspect M.h5, or --model M.h5)");
    if (optind < argc)
        return cli_usage_error(CMD, "unexpected argument '%s'%s", argv[optind],
                               from_model ? " (--model already names the checkpoint)" : "");

    kd_net *net = NULL;
    kd_optim *opt = NULL;
    kd_train_state st;
    kd_train_state_init(&st);
    if (kd_checkpoint_load(path, &net, &opt, &st) != KD_OK)
        return cli_library_error();

    printf("checkpoint %s\n\n", path);
    int rc = print_layers(net);
    if (rc == CLI_OK) {
        print_optimizer(opt);
        print_history(&st);
    }
    kd_train_state_clear(&st);
    kd_optim_free(opt);
    kd_net_free(net);
    return rc;
}
