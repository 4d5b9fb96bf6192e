/* Progress lines, the metrics file and checkpoint copies of `kindling
 * train`; see train_watch.h. */
#include "train_watch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli_json.h"
#include "cli_signals.h"

int cli_train_watch_open(cli_train_watch *w, const char *metrics_path, int append)
{
    w->metrics_path = metrics_path;
    w->metrics = NULL;
    if (!metrics_path)
        return CLI_OK;
    w->metrics = fopen(metrics_path, append ? "a" : "w");
    if (!w->metrics)
        return cli_fail("--metrics %s: cannot open it for writing: %s", metrics_path, strerror(errno));
    return CLI_OK;
}

void cli_train_watch_close(cli_train_watch *w)
{
    if (w->metrics && fclose(w->metrics) != 0 && !w->failed) {
        cli_fail("--metrics %s: writing failed: %s", w->metrics_path, strerror(errno));
        w->failed = 1;
    }
    w->metrics = NULL;
}

const char *cli_epoch_copy_name(const char *checkpoint, int epoch, char *buf, size_t len)
{
    const char *slash = strrchr(checkpoint, '/');
    const char *dot = strrchr(slash ? slash + 1 : checkpoint, '.');
    size_t stem = dot && dot != (slash ? slash + 1 : checkpoint) ? (size_t)(dot - checkpoint) : strlen(checkpoint);
    int n = snprintf(buf, len, "%.*s-epoch%03d%s", (int)stem, checkpoint, epoch, checkpoint + stem);
    return n > 0 && (size_t)n < len ? buf : NULL;
}

/* "kindling: <problem>" on a line of its own (after a live progress line). */
static int watch_fail(cli_train_watch *w, const char *fmt, ...) CLI_PRINTF(2, 3);
static int watch_fail(cli_train_watch *w, const char *fmt, ...)
{
    if (w->print.line_open) {
        fputc('\n', stderr);
        w->print.line_open = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    int rc = cli_vfail(fmt, ap);
    va_end(ap);
    return rc;
}

/* One JSON line: an epoch's record, or the running figures every N steps. */
static int write_metrics(cli_train_watch *w, const kd_progress *p)
{
    const kd_epoch_record *r = p->epoch_done ? p->record : NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return watch_fail(w, "--metrics: out of memory");
    char stamp[32];
    time_t now = time(NULL);
    struct tm utc;
    gmtime_r(&now, &utc);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &utc);
    cJSON_AddStringToObject(o, "event", r ? "epoch" : "step");
    cJSON_AddNumberToObject(o, "epoch", p->epoch);
    cJSON_AddNumberToObject(o, "epochs", p->epochs);
    cJSON_AddNumberToObject(o, "step", (double)p->step);
    cli_json_add_number(o, "train_loss", r ? r->train_loss : p->loss);
    cli_json_add_number(o, "train_accuracy", r ? r->train_accuracy : p->accuracy);
    if (r) {
        cli_json_add_number(o, "val_loss", r->val_loss);
        cli_json_add_number(o, "val_accuracy", r->val_accuracy);
        cli_json_add_number(o, "test_loss", r->test_loss);
        cli_json_add_number(o, "test_accuracy", r->test_accuracy);
    } else {
        cJSON_AddNumberToObject(o, "samples", (double)p->samples_done);
        cJSON_AddNumberToObject(o, "samples_per_epoch", (double)p->samples_per_epoch);
    }
    cli_json_add_number(o, "learning_rate", r ? r->learning_rate : p->learning_rate);
    /* An epoch's own rate: its samples over its time (scoring included). */
    cli_json_add_number(o, "samples_per_sec", r && r->seconds > 0 ? (double)p->samples_done / r->seconds : p->samples_per_sec);
    if (r)
        cli_json_add_number(o, "seconds", r->seconds);
    cli_json_add_number(o, "elapsed", p->seconds);
    cJSON_AddStringToObject(o, "time", stamp);
    char *line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!line)
        return watch_fail(w, "--metrics: out of memory");
    /* One line at a time, flushed: `tail -f` follows it, and a crash keeps whole lines. */
    int bad = fprintf(w->metrics, "%s\n", line) < 0 || fflush(w->metrics) != 0;
    cJSON_free(line);
    if (bad)
        return watch_fail(w, "--metrics %s: writing failed: %s", w->metrics_path, strerror(errno));
    return CLI_OK;
}

/* After an epoch's checkpoint was saved: the copies the flags ask for. */
static int keep_copies(cli_train_watch *w, int epoch)
{
    char name[4400];
    if (w->keep_last > 0) {
        if (!cli_epoch_copy_name(w->checkpoint, epoch, name, sizeof name))
            return watch_fail(w, "--keep-last: the checkpoint name %s is too long", w->checkpoint);
        cli_signals_protect_current(name);
        if (kd_file_copy(w->checkpoint, name) != KD_OK)
            return watch_fail(w, "--keep-last: %s", kd_last_error());
        /* The copy that falls out of the last N. */
        if (epoch - w->keep_last >= 1 && cli_epoch_copy_name(w->checkpoint, epoch - w->keep_last, name, sizeof name) &&
            remove(name) != 0 && errno != ENOENT)
            return watch_fail(w, "--keep-last: cannot remove %s: %s", name, strerror(errno));
    }
    if (w->keep_best) {
        kd_best_epoch best;
        if (kd_train_state_best(w->st, w->min_delta, &best) != KD_OK)
            return watch_fail(w, "%s", kd_last_error());
        if (best.epoch == epoch && kd_file_copy(w->checkpoint, w->keep_best) != KD_OK)
            return watch_fail(w, "--keep-best: %s", kd_last_error());
    }
    return CLI_OK;
}

int cli_train_watch_progress(const kd_progress *p, void *user)
{
    cli_train_watch *w = user;
    if (w->speak)
        cli_progress_print(p, &w->print);
    int due = p->epoch_done || (w->metrics_every > 0 && p->step % w->metrics_every == 0);
    int rc = CLI_OK;
    if (w->metrics && due)
        rc = write_metrics(w, p);
    if (rc == CLI_OK && p->epoch_done && p->record && w->checkpoint)
        rc = keep_copies(w, p->record->epoch);
    if (rc != CLI_OK) {
        w->failed = 1;
        return 1;
    }
    return 0;
}
