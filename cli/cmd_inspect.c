/* `kindling inspect`: what a checkpoint holds - layers, optimizer, training
 * state and history - as text or as JSON (--json). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli_common.h"
#include "cli_json.h"
#include "commands.h"

static const char *const CMD = "inspect";

static void inspect_help(void)
{
    printf(
        "usage: kindling inspect M.h5 [--json]   (or --model M.h5, as for eval and predict)\n"
        "\n"
        "Show a checkpoint: its layers (shapes, weights, parameter counts), the\n"
        "optimizer and its settings, the training position and the per-epoch history.\n"
        "\n"
        "  --model PATH           the checkpoint (instead of the argument)\n"
        "  --json                 one JSON object on stdout: checkpoint, spec, input_shape,\n"
        "                         num_classes, parameters, layers, optimizer, training and\n"
        "                         history (per-epoch objects with the checkpoint's column\n"
        "                         names, null where not measured)\n"
        "  -h, --help             this help\n");
}

enum { OPT_JSON = CLI_OPT_FIRST_COMMAND_ID };

static const struct option INSPECT_OPTIONS[] = {
    {"model", required_argument, NULL, CLI_OPT_MODEL},
    {"json", no_argument, NULL, OPT_JSON},
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
    /* Validation columns only for a history that has them. */
    int val = 0;
    for (int i = 0; i < st->history_len; i++)
        val |= !isnan(st->history[i].val_loss);
    printf("\n%5s  %10s  %9s  ", "epoch", "train_loss", "train_acc");
    if (val)
        printf("%9s  %8s  ", "val_loss", "val_acc");
    printf("%9s  %8s  %8s  %10s\n", "test_loss", "test_acc", "seconds", "lr");
    for (int i = 0; i < st->history_len; i++) {
        const kd_epoch_record *r = &st->history[i];
        printf("%5d  %10.4f  %9.4f  ", r->epoch, r->train_loss, r->train_accuracy);
        if (val && isnan(r->val_loss))
            printf("%9s  %8s  ", "-", "-");
        else if (val)
            printf("%9.4f  %8.4f  ", r->val_loss, r->val_accuracy);
        if (isnan(r->test_loss))
            printf("%9s  %8s", "-", "-");
        else
            printf("%9.4f  %8.4f", r->test_loss, r->test_accuracy);
        printf("  %8.2f  %10.4g\n", r->seconds, r->learning_rate);
    }
}

/* ------------------------------------------------------------------ JSON */

static cJSON *shape_json(const kd_shape *s)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < s->rank; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(s->dim[i]));
    return a;
}

static int layers_json(const kd_net *net, cJSON *root)
{
    cJSON *layers = cJSON_AddArrayToObject(root, "layers");
    for (int i = 0; layers && i < kd_net_num_layers(net); i++) {
        kd_layer_info li;
        if (kd_net_layer_info(net, i, &li) != KD_OK)
            return cli_library_error();
        cJSON *l = cJSON_CreateObject();
        cJSON_AddItemToArray(layers, l);
        cJSON_AddNumberToObject(l, "index", li.index);
        cJSON_AddStringToObject(l, "name", li.name);
        cJSON_AddStringToObject(l, "type", li.type);
        cJSON_AddItemToObject(l, "input", shape_json(&li.in));
        cJSON_AddItemToObject(l, "output", shape_json(&li.out));
        cJSON *w = cJSON_AddArrayToObject(l, "weight_shape");
        for (int d = 0; w && li.weight_count && d < li.weight_rank; d++)
            cJSON_AddItemToArray(w, cJSON_CreateNumber(li.weight_dims[d]));
        cJSON_AddNumberToObject(l, "bias", (double)li.bias_count);
        cJSON_AddNumberToObject(l, "parameters", (double)(li.weight_count + li.bias_count));
    }
    return CLI_OK;
}

static void optimizer_json(const kd_optim *opt, cJSON *root)
{
    if (!opt) {
        cJSON_AddNullToObject(root, "optimizer");
        return;
    }
    const kd_optim_config *c = kd_optim_get_config(opt);
    cJSON *o = cJSON_AddObjectToObject(root, "optimizer");
    cJSON_AddStringToObject(o, "kind", kd_optim_kind_name(c->kind));
    cli_json_add_number(o, "lr", c->lr);
    cli_json_add_number(o, "momentum", c->momentum);
    cJSON_AddBoolToObject(o, "nesterov", c->nesterov);
    cli_json_add_number(o, "beta1", c->beta1);
    cli_json_add_number(o, "beta2", c->beta2);
    cli_json_add_number(o, "eps", c->eps);
    cli_json_add_number(o, "weight_decay", c->weight_decay);
    cJSON_AddStringToObject(o, "schedule", kd_schedule_kind_name(c->schedule));
    cJSON_AddNumberToObject(o, "step_size", (double)c->step_size);
    cli_json_add_number(o, "gamma", c->gamma);
    cJSON_AddNumberToObject(o, "total_steps", (double)c->total_steps);
    cli_json_add_number(o, "lr_min", c->lr_min);
    cJSON_AddNumberToObject(o, "warmup_steps", (double)c->warmup_steps);
    cJSON_AddNumberToObject(o, "steps", (double)kd_optim_steps(opt));
    cli_json_add_number(o, "next_lr", kd_optim_current_lr(opt));
}

static void history_json(const kd_train_state *st, cJSON *root)
{
    cJSON *t = cJSON_AddObjectToObject(root, "training");
    cJSON_AddNumberToObject(t, "epoch", st->epoch);
    cJSON_AddNumberToObject(t, "step", (double)st->step);
    /* A 64-bit seed loses digits as a JSON number (a double): a string keeps it. */
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)st->seed);
    cJSON_AddStringToObject(t, "seed", seed);
    cJSON_AddNumberToObject(t, "batch_size", st->batch_size);
    kd_best_epoch b;
    if (kd_train_state_best(st, 0.0, &b) == KD_OK && b.epoch > 0) {
        cJSON *best = cJSON_AddObjectToObject(t, "best");
        cJSON_AddNumberToObject(best, "epoch", b.epoch);
        cJSON_AddStringToObject(best, "monitor", b.on_val ? "val_loss" : "train_loss");
        cJSON_AddItemToObject(best, "value", cli_json_number(b.value));
    }
    cJSON *h = cJSON_AddArrayToObject(root, "history");
    for (int i = 0; h && i < st->history_len; i++) {
        const kd_epoch_record *r = &st->history[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddItemToArray(h, e);
        cJSON_AddNumberToObject(e, "epoch", r->epoch);
        cJSON_AddItemToObject(e, "train_loss", cli_json_number(r->train_loss));
        cJSON_AddItemToObject(e, "train_accuracy", cli_json_number(r->train_accuracy));
        cJSON_AddItemToObject(e, "val_loss", cli_json_number(r->val_loss));
        cJSON_AddItemToObject(e, "val_accuracy", cli_json_number(r->val_accuracy));
        cJSON_AddItemToObject(e, "test_loss", cli_json_number(r->test_loss));
        cJSON_AddItemToObject(e, "test_accuracy", cli_json_number(r->test_accuracy));
        cJSON_AddItemToObject(e, "seconds", cli_json_number(r->seconds));
        cJSON_AddItemToObject(e, "learning_rate", cli_json_number(r->learning_rate));
    }
}

static int print_json(const char *path, const kd_net *net, const kd_optim *opt, const kd_train_state *st)
{
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return cli_fail("out of memory");
    kd_shape in = kd_net_input_shape(net);
    cJSON_AddStringToObject(root, "checkpoint", path);
    cJSON *spec = cJSON_Parse(kd_net_spec_json(net));
    if (spec)
        cJSON_AddItemToObject(root, "spec", spec);
    cJSON_AddItemToObject(root, "input_shape", shape_json(&in));
    cJSON_AddNumberToObject(root, "num_classes", kd_net_num_classes(net));
    cJSON_AddNumberToObject(root, "parameters", (double)kd_net_param_count(net));
    cJSON_AddNumberToObject(root, "state_values", (double)kd_net_state_count(net));
    int rc = layers_json(net, root);
    if (rc == CLI_OK) {
        optimizer_json(opt, root);
        history_json(st, root);
        char *text = cJSON_Print(root);
        if (!text)
            rc = cli_fail("out of memory");
        else {
            printf("%s\n", text);
            cJSON_free(text);
        }
    }
    cJSON_Delete(root);
    return rc;
}

int cmd_inspect(int argc, char **argv)
{
    int c, json = 0;
    const char *path = NULL;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", INSPECT_OPTIONS, NULL)) != -1) {
        switch (c) {
        case 'h': inspect_help(); return CLI_OK;
        case CLI_OPT_MODEL: path = optarg; break;
        case OPT_JSON: json = 1; break;
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

    int rc;
    if (json) {
        rc = print_json(path, net, opt, &st);
    } else {
        printf("checkpoint %s\n\n", path);
        rc = print_layers(net);
        if (rc == CLI_OK) {
            print_optimizer(opt);
            print_history(&st);
        }
    }
    kd_train_state_clear(&st);
    kd_optim_free(opt);
    kd_net_free(net);
    return rc;
}
