/* Evaluation: loss, accuracy, per-class accuracy and the confusion matrix
 * in inference mode. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "net.h"

void kd_eval_result_clear(kd_eval_result *r)
{
    if (!r)
        return;
    free(r->per_class_accuracy);
    free(r->per_class_count);
    free(r->confusion);
    memset(r, 0, sizeof *r);
}

kd_status kd_evaluate(kd_net *net, const kd_dataset *ds, int batch_size, kd_eval_result *out)
{
    if (!net || !ds || !out)
        return kd_fail(KD_ERR_INVALID, "kd_evaluate: NULL argument");
    memset(out, 0, sizeof *out);
    if (batch_size < 1)
        return kd_fail(KD_ERR_INVALID, "batch size must be >= 1, got %d", batch_size);
    size_t in = kd_shape_size(&net->input);
    if (kd_shape_size(&ds->shape) != in) {
        char a[64], b[64];
        return kd_fail(KD_ERR_SHAPE, "data samples have shape %s (%zu values) but the network expects %s (%zu)",
                       kd_shape_str(&ds->shape, a, sizeof a), kd_shape_size(&ds->shape),
                       kd_shape_str(&net->input, b, sizeof b), in);
    }
    if (ds->n < 1)
        return kd_fail(KD_ERR_INVALID, "cannot evaluate on an empty data set");
    KD_TRY(kd_dataset_validate(ds, net->num_classes));
    int K = net->num_classes;
    out->num_classes = K;
    out->per_class_accuracy = kd_calloc((size_t)K, sizeof(double), "per-class accuracy");
    out->per_class_count = kd_calloc((size_t)K, sizeof(int64_t), "per-class count");
    out->confusion = kd_calloc((size_t)K * (size_t)K, sizeof(int64_t), "confusion matrix");
    int64_t *hits = kd_calloc((size_t)K, sizeof(int64_t), "per-class hits");
    if (!out->per_class_accuracy || !out->per_class_count || !out->confusion || !hits) {
        free(hits);
        kd_eval_result_clear(out);
        return KD_ERR_NOMEM;
    }
    double loss = 0;
    int64_t correct = 0;
    for (int64_t at = 0; at < ds->n; at += batch_size) {
        int b = (int)(ds->n - at < batch_size ? ds->n - at : batch_size);
        kd_status s = kd_net_forward(net, ds->x + (size_t)at * in, b, 0);
        if (s != KD_OK) {
            free(hits);
            kd_eval_result_clear(out);
            return s;
        }
        const float *p = kd_net_output(net);
        s = p ? kd_output_check(p, b, K, at) : KD_ERR_DEVICE; /* NULL: a device failure, the message is set */
        if (s != KD_OK) {
            free(hits);
            kd_eval_result_clear(out);
            return s;
        }
        for (int i = 0; i < b; i++) {
            const float *row = p + (size_t)i * K;
            int y = ds->y[at + i], best = 0;
            for (int k = 1; k < K; k++)
                if (row[k] > row[best])
                    best = k;
            loss += kd_nll(row[y]);
            out->per_class_count[y]++;
            out->confusion[(size_t)y * (size_t)K + (size_t)best]++;
            if (best == y) {
                hits[y]++;
                correct++;
            }
        }
    }
    for (int k = 0; k < K; k++)
        out->per_class_accuracy[k] = out->per_class_count[k] ? (double)hits[k] / (double)out->per_class_count[k] : NAN;
    free(hits);
    out->count = ds->n;
    out->loss = loss / (double)ds->n;
    out->accuracy = (double)correct / (double)ds->n;
    return KD_OK;
}
