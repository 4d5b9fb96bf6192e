/* Internal helpers shared by the data readers (IDX, CSV, LibSVM):
 * a byte/line source that reads plain or gzip files (detected by the magic
 * bytes 1f 8b, not by the name), number parsing with full checks, and
 * growable buffers. Not part of the public API. */
#ifndef KD_READER_UTIL_H
#define KD_READER_UTIL_H

#include "kindling.h"

#include <stdint.h>
#include <stdio.h>
#include <zlib.h>

typedef struct kd_reader {
    const char *path;    /* borrowed; used in messages */
    FILE *fp;            /* plain file, or NULL */
    gzFile gz;           /* gzip file, or NULL */
    int is_gzip;
    int gz_truncated;    /* the gzip stream ended before its trailer */
    /* line reading */
    char *buf;           /* buf_cap + 1 bytes (room for a terminating NUL) */
    size_t buf_cap, buf_start, buf_end;
    int at_eof;
    int64_t line_no;     /* 1-based number of the last line returned */
} kd_reader;

/* Opens path (KD_ERR_IO naming the path and strerror on failure). */
kd_status kd_reader_open(kd_reader *r, const char *path);
void kd_reader_close(kd_reader *r);

/* Reads up to n bytes. *got < n only at the end of the data; then
 * r->gz_truncated tells whether a gzip stream was cut short. Corrupt gzip
 * data is KD_ERR_FORMAT with zlib's message. Do not mix with next_line. */
kd_status kd_reader_read(kd_reader *r, void *dst, size_t n, size_t *got);

/* Next line, without its "\n" or "\r\n" (nor, on line 1, a UTF-8 byte
 * order mark), NUL-terminated and writable until the next call. *line is NULL at the end of the file. A line holding a NUL
 * byte or a gzip stream cut short is KD_ERR_FORMAT. */
kd_status kd_reader_next_line(kd_reader *r, char **line, size_t *len);

/* Parses [s, end) as a float: surrounding blanks allowed, nothing else.
 * Returns NULL on success or a reason ("empty", "not a number",
 * "out of float range"). NaN/Inf spelled out are accepted here and left
 * to kd_dataset_validate. */
const char *kd_parse_float(const char *s, const char *end, float *out);

/* Parses [s, end) as a class label: a non-negative integer below INT32_MAX
 * ("3", "+3", "3.0" are fine; "3.5", "-1", "x" are not). Returns NULL or a
 * reason. */
const char *kd_parse_label(const char *s, const char *end, int32_t *out);

/* Copies [s, end) into buf for a message, shortened with "..." if long. */
const char *kd_snippet(const char *s, const char *end, char *buf, size_t len);

/* Grows *p (of *cap elements of elem bytes) to hold at least need elements,
 * doubling. what names the buffer for the out-of-memory message. */
kd_status kd_grow(void **p, size_t *cap, size_t need, size_t elem, const char *what);

/* Wraps already allocated buffers (malloc'd, n * size(shape) floats and n
 * labels) in a dataset, which takes ownership of them even on failure.
 * Sets num_classes from the labels. Implemented in dataset.c. */
kd_status kd_dataset_adopt(int64_t n, const kd_shape *shape, float *x, int32_t *y,
                           kd_dataset **out);

/* 1 + the largest label, 0 when every label is -1. Labels must be below
 * INT32_MAX (the readers reject larger ones). */
int kd_labels_num_classes(const int32_t *y, int64_t n);

/* Memory limits (io/memlimit.c). kd_memory_check: KD_ERR_NOMEM naming path,
 * `what` (e.g. "60000 samples of 1x28x28 float32"), the bytes needed and the
 * binding limit when they cannot be had. `more` is what this allocation adds
 * now (compared with the detected headroom), `total` what the data set will
 * then hold (compared with a kd_set_memory_limit budget). mapped != 0: the
 * bytes are a file mapping, which only the address-space limit constrains. */
kd_status kd_memory_check(uint64_t total, uint64_t more, int mapped, const char *path, const char *what);
/* kd_grow, after checking with kd_memory_check that the larger buffer fits;
 * `held` is what the caller's other buffers for this data set hold. */
kd_status kd_grow_checked(void **p, size_t *cap, size_t need, size_t elem, const char *what,
                          const char *path, uint64_t held);
/* The bytes available now and which limit binds (a static string). */
uint64_t kd_memory_headroom(int mapped, const char **source);

/* A data set whose x (and y) point into a read-only mapping of a spool
 * file: kd_dataset_free unmaps it, and frees x or y when they lie outside. */
struct kd_dataset_mapping {
    void *addr;
    size_t len;
};
/* "1.50 GiB", "12.0 MiB", "100 bytes". */
const char *kd_format_bytes(uint64_t bytes, char *buf, size_t len);

/* Streaming spool writer (io/spool.c): header, then features appended in
 * chunks; labels go to an unlinked side file and are appended at the end,
 * the header (count, CRC) is written last, and the file is committed with
 * kd_safe_file. Memory: a fixed few MiB. */
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
