/* Fashion-MNIST for the accuracy tests (CPU and GPU): Debian's
 * dataset-fashion-mnist, or KD_FASHION_MNIST_DIR. */
#ifndef KD_FASHION_DATA_H
#define KD_FASHION_DATA_H

#include <stdio.h>
#include <stdlib.h>

#include "kindling.h"

static inline const char *fashion_dir(void)
{
    const char *d = getenv("KD_FASHION_MNIST_DIR");
    return d && *d ? d : "/usr/share/datasets/fashion-mnist";
}

/* prefix "train" or "t10k". */
static inline kd_status fashion_load(const char *prefix, kd_dataset **out)
{
    char img[512], lab[512];
    snprintf(img, sizeof img, "%s/%s-images-idx3-ubyte.gz", fashion_dir(), prefix);
    snprintf(lab, sizeof lab, "%s/%s-labels-idx1-ubyte.gz", fashion_dir(), prefix);
    return kd_dataset_load_idx(img, lab, out);
}

/* A kd_train progress callback: one line per epoch on stderr, named by
 * progress_user (a string). */
static inline int fashion_report(const kd_progress *p, void *user)
{
    if (p->epoch_done)
        fprintf(stderr, "  %s epoch %d/%d loss %.4f acc %.4f test_acc %.4f %.0f samples/s\n", (const char *)user,
                p->epoch, p->epochs, p->loss, p->accuracy, p->record->test_accuracy, p->samples_per_sec);
    return 0;
}

#endif
