/* What `kindling train` does at each progress call of kd_train (on the
 * rank that writes checkpoints): print the progress line, append a line to
 * the --metrics file, and keep copies of the checkpoint just saved
 * (--keep-best, --keep-last). kd_train saves the checkpoint before it
 * reports an epoch's end, so the copies are of that epoch's file. */
#ifndef KD_CLI_TRAIN_WATCH_H
#define KD_CLI_TRAIN_WATCH_H

#include <stdint.h>
#include <stdio.h>

#include "cli_common.h"

typedef struct cli_train_watch {
    int speak;                  /* progress lines on stderr */
    cli_progress print;
    const kd_train_state *st;   /* the run's state (its history holds the epoch just ended) */
    /* --metrics FILE: one JSON line per epoch, and per metrics_every steps. */
    FILE *metrics;
    const char *metrics_path;
    int64_t metrics_every;
    /* Checkpoint copies: of `checkpoint` (the file kd_train saves). */
    const char *checkpoint;
    const char *keep_best;      /* the best epoch's checkpoint (kd_train_state_best, min_delta) */
    int keep_last;              /* the last N epochs' checkpoints, "<stem>-epochNNN<ext>" */
    double min_delta;
    /* A failed write or copy: the message was printed and the run asked to stop. */
    int failed;
} cli_train_watch;

/* Opens the metrics file (append: a resumed run continues it; else
 * truncate). Returns an exit code (1 with a message when it cannot). */
int cli_train_watch_open(cli_train_watch *w, const char *metrics_path, int append);
void cli_train_watch_close(cli_train_watch *w);
/* kd_progress_fn; user is a cli_train_watch. Returns 1 (stop) after a failure. */
int cli_train_watch_progress(const kd_progress *p, void *user);
/* The name --keep-last gives epoch `epoch`'s copy of `checkpoint`:
 * "run/model.h5" -> "run/model-epoch007.h5". Returns buf (NULL if too long). */
const char *cli_epoch_copy_name(const char *checkpoint, int epoch, char *buf, size_t len);

#endif
