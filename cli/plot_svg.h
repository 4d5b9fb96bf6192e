/* Training curves as an SVG picture (`kindling plot`): loss and accuracy
 * per epoch for the training, validation and test sets side by side, the
 * learning rate below, the best epoch marked. Plain SVG 1.1 text written
 * by this code, so any browser or SVG tool shows it. */
#ifndef KD_CLI_PLOT_SVG_H
#define KD_CLI_PLOT_SVG_H

#include <stdio.h>

#include "kindling.h"

typedef struct plot_info {
    const char *title;     /* the heading (e.g. the checkpoint's name) */
    const char *subtitle;  /* a line of facts under it, or NULL */
    int best_epoch;        /* marked with a dashed line; 0 = none */
} plot_info;

/* Writes the picture of st's history; returns 0 or errno of a failed write. */
int plot_svg_write(FILE *f, const kd_train_state *st, const plot_info *info);

#endif
