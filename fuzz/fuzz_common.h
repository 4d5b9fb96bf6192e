/* Shared helpers for the libFuzzer harnesses.
 *
 * Kindling's loaders take paths, so each input is written to an anonymous
 * in-memory file (memfd) and handed over as /proc/self/fd/N: nothing is
 * left on disk and parallel fuzzing jobs cannot collide. HDF5 insists on
 * resolving a real path, which a memfd lacks, so the checkpoint harness
 * uses fuzz_file_open_disk: a unique file under $TMPDIR (default /tmp),
 * removed again by fuzz_file_close. */
#ifndef KD_FUZZ_COMMON_H
#define KD_FUZZ_COMMON_H

#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "error.h" /* kd_clear_error: a stale message must not hide a missing one */
#include "kindling.h"

typedef struct fuzz_file {
    int fd;
    int on_disk; /* path is a real file to unlink on close */
    char path[4096];
} fuzz_file;

static inline void fuzz_write_all(int fd, const void *data, size_t n)
{
    const unsigned char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) {
            perror("write");
            abort();
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Creates an in-memory file holding [data, data + n). Aborts on failure:
 * that is the harness's environment failing, not the code under test. */
static inline void fuzz_file_open(fuzz_file *f, const void *data, size_t n)
{
    f->on_disk = 0;
    f->fd = memfd_create("kd-fuzz", 0);
    if (f->fd < 0) {
        perror("memfd_create");
        abort();
    }
    fuzz_write_all(f->fd, data, n);
    snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
}

static inline void fuzz_file_open_disk(fuzz_file *f, const void *data, size_t n)
{
    const char *dir = getenv("TMPDIR");
    snprintf(f->path, sizeof f->path, "%s/kd-fuzz-XXXXXX", dir && *dir ? dir : "/tmp");
    f->on_disk = 1;
    f->fd = mkstemp(f->path);
    if (f->fd < 0) {
        perror("mkstemp");
        abort();
    }
    fuzz_write_all(f->fd, data, n);
}

static inline void fuzz_file_close(fuzz_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    if (f->on_disk)
        unlink(f->path);
    f->fd = -1;
}

/* gzip of [data, data + n) into a malloc'd buffer (*out_n bytes), so a
 * harness can feed the gzip path of a reader valid streams of mutated
 * content. Corrupt streams reach it directly when the input starts 1f 8b. */
static inline unsigned char *fuzz_gzip(const void *data, size_t n, size_t *out_n)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    /* 15 + 16: zlib window, gzip wrapper. */
    if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    size_t cap = deflateBound(&z, (uLong)n) + 32;
    unsigned char *buf = malloc(cap);
    if (!buf)
        abort();
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)n;
    z.next_out = buf;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        abort();
    *out_n = z.total_out;
    deflateEnd(&z);
    return buf;
}

/* Every failure must come with a message naming the problem (call
 * kd_clear_error() before the call under test). */
static inline void fuzz_check_error(kd_status s)
{
    if (getenv("KD_FUZZ_VERBOSE")) /* to see what an input does: KD_FUZZ_VERBOSE=1 fuzz_x FILE */
        fprintf(stderr, "status %s: %s\n", kd_status_name(s), kd_last_error());
    if (s != KD_OK && kd_last_error()[0] == '\0') {
        fprintf(stderr, "status %s without an error message\n", kd_status_name(s));
        abort();
    }
}

/* A loaded data set must be internally consistent. Reading every feature
 * and label lets ASan check that the buffers really are as long as n and
 * the shape say. */
static inline void fuzz_check_dataset(const kd_dataset *ds, int allow_empty)
{
    if (!ds || ds->n < (allow_empty ? 0 : 1)) {
        fprintf(stderr, "loader succeeded with %s\n", ds ? "no samples" : "no dataset");
        abort();
    }
    size_t size = kd_shape_size(&ds->shape);
    if (size == 0 || ds->shape.rank > 3) {
        fprintf(stderr, "loaded dataset has an invalid shape (rank %d)\n", ds->shape.rank);
        abort();
    }
    volatile float sink = 0.0f;
    for (size_t i = 0; i < (size_t)ds->n * size; i++)
        sink += ds->x[i];
    int32_t max_label = -1;
    for (int64_t i = 0; i < ds->n; i++) {
        if (ds->y[i] < -1) {
            fprintf(stderr, "sample %lld has label %d\n", (long long)i, ds->y[i]);
            abort();
        }
        if (ds->y[i] > max_label)
            max_label = ds->y[i];
    }
    if (ds->num_classes != max_label + 1) {
        fprintf(stderr, "num_classes %d but the largest label is %d\n", ds->num_classes, max_label);
        abort();
    }
    (void)sink;
}

#endif
