/* What the MPI driver adds to kd_train (internal; the public side is
 * kd_train in kindling.h and kd_dist_train in kindling_mpi.h).
 *
 * At an epoch's end each worker holds its own sums: the training loss and
 * hits over its part of the epoch, and the validation loss and hits over
 * its share of the validation data (none where another worker scores it).
 * `combine` replaces them by the sums over every worker, so each worker
 * records the same epoch and judges early stopping alike (a worker that
 * stopped alone would leave the others waiting in the next collective). */
#ifndef KD_TRAIN_HOOKS_H
#define KD_TRAIN_HOOKS_H

#include "kindling.h"

typedef struct kd_epoch_sums {
    double train_loss, train_correct, train_count; /* loss summed over samples */
    double val_loss, val_correct, val_count;
} kd_epoch_sums;

typedef struct kd_train_hooks {
    kd_status (*combine)(void *user, kd_epoch_sums *sums);
    void *user;
} kd_train_hooks;

/* kd_train with hooks (NULL: none, which is kd_train). */
kd_status kd_train_hooked(kd_net *net, kd_optim *opt, const kd_dataset *train, const kd_train_config *cfg,
                          kd_train_state *st, const kd_train_hooks *hooks);

#endif
