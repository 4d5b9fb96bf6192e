/* The streaming spool writer (io/spool.c), used by the converters in
 * io/idx.c, io/csv.c and io/libsvm.c. Internal; the public side is
 * kd_dataset_save_spool and kd_convert_*_to_spool in kindling.h. */
#ifndef KD_SPOOL_WRITER_H
#define KD_SPOOL_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "kindling.h"

/* Header, then features appended in chunks; labels go to an unlinked side
 * file and are appended at the end, the header (count, CRC) is written
 * last, and the file is committed with kd_safe_file. Memory: a fixed few
 * MiB. */
typedef struct kd_spool_writer kd_spool_writer;
kd_status kd_spool_writer_open(const char *path, const kd_shape *shape, int has_labels,
                               kd_spool_writer **out);
/* n samples: n * size(shape) floats and (when has_labels) n labels >= 0. */
kd_status kd_spool_writer_add(kd_spool_writer *w, const float *x, const int32_t *y, size_t n);
/* The same in pieces: floats (any number; samples may span calls) and labels. */
kd_status kd_spool_writer_features(kd_spool_writer *w, const float *x, size_t nfloats);
kd_status kd_spool_writer_labels(kd_spool_writer *w, const int32_t *y, size_t n);
int64_t kd_spool_writer_count(const kd_spool_writer *w);
/* Completes and commits the file; always frees w. */
kd_status kd_spool_writer_finish(kd_spool_writer *w);
/* Removes the temporary files; frees w. NULL is accepted. */
void kd_spool_writer_abort(kd_spool_writer *w);

#endif
