/* Internal helpers shared by the data readers (IDX, CSV, LibSVM):
 * a byte/line source that reads plain or gzip files (detected by the magic
 * bytes 1f 8b, not by the name), number parsing with full checks, and
 * growable buffers (checked against the memory limits of src/memlimit.h).
 * Not part of the public API. */
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
/* kd_grow, after checking with kd_memory_check that the larger buffer fits;
 * `held` is what the caller's other buffers for this data set hold. */
kd_status kd_grow_checked(void **p, size_t *cap, size_t need, size_t elem, const char *what,
                          const char *path, uint64_t held);

#endif
