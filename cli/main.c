/* `kindling`: the command-line front end. Dispatches to one sub-command,
 * whose return value is the exit code (0 ok, 1 runtime failure, 2 usage). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_common.h"
#include "cli_signals.h"
#include "commands.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command COMMANDS[] = {
    {"train", cmd_train, "train a network (Fashion-MNIST, IDX, CSV or LibSVM data)"},
    {"eval", cmd_eval, "loss, accuracy and per-class accuracy of a checkpoint"},
    {"predict", cmd_predict, "class probabilities of a checkpoint as CSV"},
    {"inspect", cmd_inspect, "layers, optimizer and history stored in a checkpoint"},
    {"plot", cmd_plot, "training curves of a checkpoint as an SVG picture"},
    {"convert", cmd_convert, "IDX, CSV or LibSVM to a spool file, in bounded memory"},
};
#define NUM_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: kindling <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < NUM_COMMANDS; i++)
        fprintf(f, "  %-9s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f,
            "  help      this list, or 'kindling help <command>' for a command's options\n"
            "\n"
            "  --version print the version\n"
            "\nExit status: 0 success, 1 failure, 2 usage error (also: --context gpu without a\n"
            "usable CUDA device).\n");
}

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < NUM_COMMANDS; i++)
        if (strcmp(COMMANDS[i].name, name) == 0)
            return &COMMANDS[i];
    return NULL;
}

static int unknown_command(const char *name)
{
    fprintf(stderr, "kindling: unknown command '%s'\ntry 'kindling --help'\n", name);
    return CLI_USAGE;
}

/* OpenBLAS picks its kernels when it loads, from OPENBLAS_CORETYPE or the
 * CPU model; an OpenBLAS older than the CPU falls back to slow generic
 * kernels. Re-execute once with the kernel family the CPU supports. A
 * user's own OPENBLAS_CORETYPE, or KD_BLAS_AUTO=0, is left alone. */
static void choose_blas_kernels(char **argv)
{
    const char *off = getenv("KD_BLAS_AUTO");
    if (getenv("OPENBLAS_CORETYPE") || (off && strcmp(off, "0") == 0))
        return;
    const char *better = kd_blas_better_coretype();
    if (!better || setenv("OPENBLAS_CORETYPE", better, 1) != 0)
        return;
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE"); /* exec failed: carry on with what we have */
}

/* KD_MEMORY_LIMIT=N[KMG]: the memory budget for loading a data set instead
 * of what the system reports (see kd_set_memory_limit). Returns 0, or 2
 * after a message for a bad value. */
static int apply_memory_limit(void)
{
    const char *v = getenv("KD_MEMORY_LIMIT");
    if (!v || !*v)
        return CLI_OK;
    char *end;
    double x = strtod(v, &end);
    double mult = 1;
    switch (*end) {
    case 'k': case 'K': mult = 1024.0; end++; break;
    case 'm': case 'M': mult = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
    default: break;
    }
    if (end == v || *end != '\0' || !(x >= 0) || x * mult >= 1.8e19) {
        fprintf(stderr, "kindling: KD_MEMORY_LIMIT: expected bytes with an optional K, M or G suffix (0 = detect), "
                        "got '%s'\n", v);
        return CLI_USAGE;
    }
    kd_set_memory_limit((uint64_t)(x * mult));
    return CLI_OK;
}

int main(int argc, char **argv)
{
    choose_blas_kernels(argv);
    cli_signals_install();
    if (apply_memory_limit() != CLI_OK)
        return CLI_USAGE;
    if (argc < 2) {
        usage(stderr);
        return CLI_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        if (strcmp(name, "help") == 0 && argc > 2) {
            const command *c = find_command(argv[2]);
            if (!c)
                return unknown_command(argv[2]);
            char help_flag[] = "--help";
            char *sub_argv[] = {argv[2], help_flag, NULL};
            return c->run(2, sub_argv);
        }
        usage(stdout);
        return CLI_OK;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("kindling %s (OpenBLAS kernels: %s)\n", kd_version(), kd_blas_corename());
        return CLI_OK;
    }
    const command *c = find_command(name);
    if (!c)
        return unknown_command(name);
    return c->run(argc - 1, argv + 1);
}
