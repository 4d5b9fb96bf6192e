/* The training-state record: counters plus the per-epoch history, which
 * grows by one record per epoch and is owned by the struct. */
#include "error.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void kd_train_state_init(kd_train_state *st)
{
    if (st)
        memset(st, 0, sizeof *st);
}

void kd_train_state_clear(kd_train_state *st)
{
    if (!st)
        return;
    free(st->history);
    kd_train_state_init(st);
}

kd_status kd_train_state_append(kd_train_state *st, const kd_epoch_record *rec)
{
    if (!st || !rec)
        return kd_fail(KD_ERR_INVALID, "kd_train_state_append: %s is NULL", !st ? "state" : "record");
    if (st->history_len < 0 || (st->history_len > 0 && !st->history))
        return kd_fail(KD_ERR_STATE, "train state is inconsistent: history_len %d with %s history",
                       (int)st->history_len, st->history ? "a" : "no");
    if (st->history_len == INT32_MAX)
        return kd_fail(KD_ERR_INVALID, "train state history is full (%d epochs)", (int)st->history_len);
    /* One realloc per epoch: histories are short, and an exact size stays
     * correct whoever allocated the array before (no hidden capacity). */
    size_t len = (size_t)st->history_len;
    kd_epoch_record *grown = realloc(st->history, (len + 1) * sizeof *grown);
    if (!grown)
        return kd_fail(KD_ERR_NOMEM, "out of memory growing the training history to %zu epochs", len + 1);
    st->history = grown;
    st->history[len] = *rec;
    st->history_len++;
    return KD_OK;
}

kd_status kd_train_state_best(const kd_train_state *st, double min_delta, kd_best_epoch *out)
{
    if (!st || !out)
        return kd_fail(KD_ERR_INVALID, "kd_train_state_best: %s is NULL", !st ? "state" : "out");
    if (!(min_delta >= 0) || !isfinite(min_delta))
        return kd_fail(KD_ERR_INVALID, "min_delta must be a number >= 0, got %g", min_delta);
    if (st->history_len < 0 || (st->history_len > 0 && !st->history))
        return kd_fail(KD_ERR_STATE, "train state is inconsistent: history_len %d with %s history",
                       (int)st->history_len, st->history ? "a" : "no");
    out->epoch = 0;
    out->value = NAN;
    out->since = 0;
    out->on_val = st->history_len > 0 && !isnan(st->history[st->history_len - 1].val_loss);
    for (int32_t i = 0; i < st->history_len; i++) {
        const kd_epoch_record *r = &st->history[i];
        double v = out->on_val ? r->val_loss : r->train_loss;
        if (out->on_val != !isnan(r->val_loss) || isnan(v))
            continue; /* the other kind of figure, or none */
        if (out->epoch == 0 || v < out->value - min_delta) {
            out->epoch = r->epoch;
            out->value = v;
            out->since = 0;
        } else {
            out->since++;
        }
    }
    return KD_OK;
}
