/* Spool files: the binary row format in which a Spark task hands its
 * partition to its rank (written by spark-barrier/kindling_spark/spool.py
 * with numpy, or by kd_dataset_save_spool; read by kd_dataset_load_spool).
 *
 * Layout, all integers and floats little-endian:
 *
 *   offset size  field
 *        0    8  magic    "KDSPOOL1"
 *        8    4  version  u32, 1
 *       12    4  rank     u32, rank of the per-sample shape, 1..3
 *       16   12  dims     u32[3]; dims[i] >= 1 for i < rank, 0 beyond it
 *       28    4  flags    u32; bit 0: the file has labels; other bits 0
 *       32    8  count    u64, number of samples (0 is valid: an empty partition)
 *       40    8  crc32    u64; zlib crc32 of the payload in the low 32 bits,
 *                         high 32 bits 0
 *       48   16  reserved zero
 *       64       features count * prod(dims) float32, sample after sample
 *                labels   count int32 (>= 0), only when flags bit 0 is set
 *
 * The file ends right after the payload. The loader checks every field,
 * the exact file size and the CRC before trusting any of it, and names the
 * file, the field and its offset in each message. Without labels every
 * sample's label is -1 (the kd_dataset convention for "no label").
 *
 * Loading maps the file read-only (mmap) on little-endian hosts: ds->x and,
 * with labels, ds->y point into the mapping, the kernel pages it in and out
 * as training touches it, and a spool larger than the memory this process
 * may use still trains. The CRC and label checks stream through the mapping
 * once. Elsewhere (or where the file system cannot map) it is read into
 * malloc'd memory.
 *
 * Saving writes "<path>.tmp-<host>-<pid>", flushes and fsyncs it, renames it over
 * path and fsyncs the directory (as checkpoints do), so a reader never sees
 * a half-written spool under the final name.
 */
#include "kindling.h"

#include "dataset.h"
#include "error.h"
#include "memlimit.h"
#include "reader_util.h"
#include "safe_file.h"
#include "spool_writer.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define SPOOL_MAGIC "KDSPOOL1"
#define SPOOL_VERSION 1u
#define SPOOL_HEADER_BYTES 64
#define SPOOL_FLAG_LABELS 1u
#define SPOOL_MAX_RANK 3

/* Field offsets, named once so messages and code agree. */
enum {
    OFF_MAGIC = 0,
    OFF_VERSION = 8,
    OFF_RANK = 12,
    OFF_DIMS = 16,
    OFF_FLAGS = 28,
    OFF_COUNT = 32,
    OFF_CRC = 40,
    OFF_RESERVED = 48
};

/* I/O in chunks: bounds the byte-swap buffer and zlib's uInt lengths. */
#define CHUNK_BYTES ((size_t)1 << 20)

/* ------------------------------------------------------- little-endian */
static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

static int host_is_little_endian(void)
{
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* Reverses each 4-byte word (float32 and int32 share the swap). */
static void swap4(void *data, size_t words)
{
    unsigned char *p = data;
    for (size_t i = 0; i < words; i++, p += 4) {
        unsigned char t = p[0];
        p[0] = p[3];
        p[3] = t;
        t = p[1];
        p[1] = p[2];
        p[2] = t;
    }
}

static uLong crc_update(uLong crc, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len > 0) {
        uInt n = len > CHUNK_BYTES ? (uInt)CHUNK_BYTES : (uInt)len;
        crc = crc32(crc, p, n);
        p += n;
        len -= n;
    }
    return crc;
}

/* ---------------------------------------------------------------- load */
/* Reads exactly len bytes at the current position into dst; `what` and
 * `offset` go into the message of a short read. */
static kd_status read_exact(FILE *f, const char *path, void *dst, size_t len, const char *what,
                            uint64_t offset)
{
    size_t got = len ? fread(dst, 1, len, f) : 0;
    if (got == len)
        return KD_OK;
    if (ferror(f))
        return kd_fail(KD_ERR_IO, "%s: read error in the %s at offset %llu: %s", path, what,
                       (unsigned long long)offset, strerror(errno));
    /* The size was checked up front, so this is a file shrinking under us. */
    return kd_fail(KD_ERR_FORMAT, "%s: the %s at offset %llu ends after %zu of %zu bytes", path,
                   what, (unsigned long long)offset, got, len);
}

/* Checks the header fields; fills shape, count and flags. */
static kd_status parse_header(const char *path, const unsigned char *h, kd_shape *shape,
                              uint64_t *count, uint32_t *flags, uint32_t *crc)
{
    if (memcmp(h + OFF_MAGIC, SPOOL_MAGIC, 8) != 0) {
        char shown[8 * 4 + 1];
        size_t used = 0;
        for (int i = 0; i < 8; i++) {
            unsigned char c = h[OFF_MAGIC + i];
            used += (size_t)snprintf(shown + used, sizeof shown - used,
                                     c >= 0x20 && c < 0x7f ? "%c" : "\\x%02x", c);
        }
        return kd_fail(KD_ERR_FORMAT, "%s: offset %d (magic): bad magic \"%s\"; not a Kindling spool "
                                      "file (expected \"%s\")", path, OFF_MAGIC, shown, SPOOL_MAGIC);
    }
    uint32_t version = get_u32(h + OFF_VERSION);
    if (version != SPOOL_VERSION)
        return kd_fail(KD_ERR_FORMAT, "%s: offset %d (version): unsupported spool version %u "
                                      "(this build reads version %u)", path, OFF_VERSION, version,
                       SPOOL_VERSION);
    uint32_t rank = get_u32(h + OFF_RANK);
    if (rank < 1 || rank > SPOOL_MAX_RANK)
        return kd_fail(KD_ERR_FORMAT, "%s: offset %d (rank): sample rank %u, expected 1..%d", path,
                       OFF_RANK, rank, SPOOL_MAX_RANK);
    memset(shape, 0, sizeof *shape);
    shape->rank = (int)rank;
    for (uint32_t i = 0; i < SPOOL_MAX_RANK; i++) {
        uint32_t d = get_u32(h + OFF_DIMS + 4 * i);
        int off = OFF_DIMS + 4 * (int)i;
        if (i < rank && (d < 1 || d > INT_MAX))
            return kd_fail(KD_ERR_FORMAT, "%s: offset %d (dims[%u]): dimension %u, expected 1..%d", path,
                           off, i, d, INT_MAX);
        if (i >= rank && d != 0)
            return kd_fail(KD_ERR_FORMAT, "%s: offset %d (dims[%u]): %u beyond rank %u, expected 0",
                           path, off, i, d, rank);
        if (i < rank)
            shape->dim[i] = (int)d;
    }
    *flags = get_u32(h + OFF_FLAGS);
    if (*flags & ~SPOOL_FLAG_LABELS)
        return kd_fail(KD_ERR_FORMAT, "%s: offset %d (flags): unknown flag bits 0x%x", path, OFF_FLAGS,
                       *flags & ~SPOOL_FLAG_LABELS);
    *count = get_u64(h + OFF_COUNT);
    uint64_t crc_field = get_u64(h + OFF_CRC);
    if (crc_field >> 32)
        return kd_fail(KD_ERR_FORMAT, "%s: offset %d (crc32): high 32 bits are 0x%08x, expected 0", path,
                       OFF_CRC, (unsigned)(crc_field >> 32));
    *crc = (uint32_t)crc_field;
    for (int i = OFF_RESERVED; i < SPOOL_HEADER_BYTES; i++)
        if (h[i] != 0)
            return kd_fail(KD_ERR_FORMAT, "%s: offset %d (reserved): byte 0x%02x, expected 0", path, i, h[i]);
    return KD_OK;
}

/* Checks that the file holds exactly header + payload. */
static kd_status check_size(const char *path, uint64_t file_size, const kd_shape *shape, uint64_t count,
                            int has_labels, uint64_t *feature_bytes, uint64_t *label_bytes)
{
    uint64_t after = file_size - SPOOL_HEADER_BYTES;
    uint64_t size = kd_shape_size(shape);
    char sb[64];
    /* Products that overflow cannot match any real file. */
    if (size == 0 || count > UINT64_MAX / 4 / size || count > (uint64_t)INT64_MAX)
        return kd_fail(KD_ERR_FORMAT, "%s: offset %d (count): %llu samples of shape %s is more data than "
                                      "any file holds; file has %llu bytes after the header",
                       path, OFF_COUNT, (unsigned long long)count, kd_shape_str(shape, sb, sizeof sb),
                       (unsigned long long)after);
    *feature_bytes = count * size * 4;
    *label_bytes = has_labels ? count * 4 : 0;
    if (after < *feature_bytes)
        return kd_fail(KD_ERR_FORMAT, "%s: offset %d (features): expected %llu bytes of features "
                                      "(%llu samples of shape %s), file has %llu",
                       path, SPOOL_HEADER_BYTES, (unsigned long long)*feature_bytes, (unsigned long long)count,
                       kd_shape_str(shape, sb, sizeof sb), (unsigned long long)after);
    uint64_t label_off = SPOOL_HEADER_BYTES + *feature_bytes;
    if (after - *feature_bytes < *label_bytes)
        return kd_fail(KD_ERR_FORMAT, "%s: offset %llu (labels): expected %llu bytes of labels, file has %llu",
                       path, (unsigned long long)label_off, (unsigned long long)*label_bytes,
                       (unsigned long long)(after - *feature_bytes));
    uint64_t extra = after - *feature_bytes - *label_bytes;
    if (extra != 0)
        return kd_fail(KD_ERR_FORMAT, "%s: offset %llu: %llu unexpected bytes after the %s (count %llu, "
                                      "flags 0x%x)", path, (unsigned long long)(label_off + *label_bytes),
                       (unsigned long long)extra, has_labels ? "labels" : "features", (unsigned long long)count,
                       has_labels ? SPOOL_FLAG_LABELS : 0u);
    return KD_OK;
}

/* Reads `bytes` of 4-byte words into dst in chunks, folding them into *crc
 * (over the file's bytes, before any swap). */
static kd_status read_words(FILE *f, const char *path, void *dst, uint64_t bytes, uint64_t offset,
                            const char *what, uLong *crc)
{
    unsigned char *p = dst;
    uint64_t done = 0;
    while (done < bytes) {
        size_t n = bytes - done > CHUNK_BYTES ? CHUNK_BYTES : (size_t)(bytes - done);
        KD_TRY(read_exact(f, path, p + done, n, what, offset + done));
        *crc = crc_update(*crc, p + done, n);
        done += n;
    }
    if (!host_is_little_endian())
        swap4(dst, (size_t)(bytes / 4));
    return KD_OK;
}

/* The labels (at y, count n) must be >= 0 and below INT32_MAX. */
static kd_status check_labels(const char *path, const int32_t *y, int64_t n, uint64_t feature_bytes)
{
    for (int64_t i = 0; i < n; i++) {
        if (y[i] >= 0 && y[i] != INT32_MAX)
            continue;
        unsigned long long off = SPOOL_HEADER_BYTES + feature_bytes + 4 * (uint64_t)i;
        if (y[i] < 0)
            return kd_fail(KD_ERR_FORMAT, "%s: offset %llu (label of sample %lld): %d; labels must be >= 0", path,
                           off, (long long)i, y[i]);
        /* num_classes = 1 + the largest label must fit an int */
        return kd_fail(KD_ERR_FORMAT, "%s: offset %llu (label of sample %lld): %d; labels must be below %d", path,
                       off, (long long)i, y[i], INT32_MAX);
    }
    return KD_OK;
}

static kd_status crc_mismatch(const char *path, uint64_t payload, uint32_t got, uint32_t want)
{
    return kd_fail(KD_ERR_FORMAT, "%s: payload corrupt: CRC32 of the %llu payload bytes from offset %d is "
                                  "0x%08x, the header (offset %d, crc32) says 0x%08x",
                   path, (unsigned long long)payload, SPOOL_HEADER_BYTES, (unsigned)got, OFF_CRC, (unsigned)want);
}

/* Maps the whole (already checked) file read-only and builds the data set
 * on it. KD_ERR_UNSUPPORTED (no message) when this file cannot be mapped,
 * so the caller reads it instead. */
static kd_status load_mapped(int fd, const char *path, uint64_t file_size, const kd_shape *shape, uint64_t count,
                             int has_labels, uint64_t feature_bytes, uint64_t label_bytes, uint32_t want_crc,
                             kd_dataset **out)
{
    char what[128], sb[64];
    snprintf(what, sizeof what, "%llu samples of shape %s", (unsigned long long)count,
             kd_shape_str(shape, sb, sizeof sb));
    if (file_size > SIZE_MAX)
        return kd_fail(KD_ERR_NOMEM, "%s: %llu bytes do not fit this process's address space", path,
                       (unsigned long long)file_size);
    KD_TRY(kd_memory_check(file_size, file_size, 1, path, what));
    void *addr = mmap(NULL, (size_t)file_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
        int e = errno;
        if (e == ENOMEM)
            return kd_fail(KD_ERR_NOMEM, "%s: cannot map %s (%llu bytes): %s", path, what,
                           (unsigned long long)file_size, strerror(e));
        return KD_ERR_UNSUPPORTED; /* e.g. ENODEV: a file system without mmap */
    }
    const unsigned char *base = addr;
    kd_dataset *ds = kd_calloc(1, sizeof *ds, "a dataset");
    struct kd_dataset_mapping *m = ds ? kd_malloc(sizeof *m, "a dataset mapping") : NULL;
    if (!m) {
        free(ds);
        munmap(addr, (size_t)file_size);
        return KD_ERR_NOMEM;
    }
    m->addr = addr;
    m->len = (size_t)file_size;
    ds->mapping = m;
    ds->n = (int64_t)count;
    ds->shape = *shape;
    ds->x = (float *)(void *)(base + SPOOL_HEADER_BYTES); /* page-aligned + 64: float-aligned */
    kd_status s = KD_OK;
    if (has_labels) {
        ds->y = (int32_t *)(void *)(base + SPOOL_HEADER_BYTES + feature_bytes); /* 4-aligned */
    } else if (kd_memory_check((uint64_t)count * 4, (uint64_t)count * 4, 0, path, "the labels (-1)") != KD_OK ||
               !(ds->y = kd_malloc((size_t)count * sizeof(int32_t), "dataset labels"))) {
        s = KD_ERR_NOMEM;
    } else {
        for (uint64_t i = 0; i < count; i++)
            ds->y[i] = -1;
    }
    /* One sequential pass for the CRC (read-ahead), then ordinary access. */
    madvise(addr, (size_t)file_size, MADV_SEQUENTIAL);
    uLong crc = crc32(0L, Z_NULL, 0);
    if (s == KD_OK)
        crc = crc_update(crc, base + SPOOL_HEADER_BYTES, (size_t)(feature_bytes + label_bytes));
    if (s == KD_OK && (uint32_t)crc != want_crc)
        s = crc_mismatch(path, feature_bytes + label_bytes, (uint32_t)crc, want_crc);
    if (s == KD_OK && has_labels)
        s = check_labels(path, ds->y, ds->n, feature_bytes);
    madvise(addr, (size_t)file_size, MADV_NORMAL);
    if (s != KD_OK) {
        kd_dataset_free(ds);
        return s;
    }
    ds->num_classes = kd_labels_num_classes(ds->y, ds->n);
    *out = ds;
    return KD_OK;
}

static kd_status load_open(FILE *f, const char *path, kd_dataset **out)
{
    struct stat st;
    unsigned char h[SPOOL_HEADER_BYTES];
    if (fstat(fileno(f), &st) != 0)
        return kd_fail(KD_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return kd_fail(KD_ERR_IO, "%s: not a regular file", path);
    uint64_t file_size = (uint64_t)st.st_size;
    if (file_size < SPOOL_HEADER_BYTES)
        return kd_fail(KD_ERR_FORMAT, "%s: file has %llu bytes, shorter than the %d-byte spool header", path,
                       (unsigned long long)file_size, SPOOL_HEADER_BYTES);
    KD_TRY(read_exact(f, path, h, sizeof h, "header", 0));

    kd_shape shape;
    uint64_t count = 0, feature_bytes = 0, label_bytes = 0;
    uint32_t flags = 0, want_crc = 0;
    KD_TRY(parse_header(path, h, &shape, &count, &flags, &want_crc));
    int has_labels = (flags & SPOOL_FLAG_LABELS) != 0;
    KD_TRY(check_size(path, file_size, &shape, count, has_labels, &feature_bytes, &label_bytes));

    if (count > 0 && host_is_little_endian()) {
        kd_status ms = load_mapped(fileno(f), path, file_size, &shape, count, has_labels, feature_bytes,
                                   label_bytes, want_crc, out);
        if (ms != KD_ERR_UNSUPPORTED)
            return ms;
    }

    kd_dataset *ds = NULL;
    char what[128], sb[64];
    snprintf(what, sizeof what, "reading %llu samples of shape %s", (unsigned long long)count,
             kd_shape_str(&shape, sb, sizeof sb));
    uint64_t bytes = feature_bytes + count * 4;
    KD_TRY(kd_memory_check(bytes, bytes, 0, path, what));
    KD_TRY(kd_dataset_alloc((int64_t)count, &shape, &ds));
    uLong crc = crc32(0L, Z_NULL, 0);
    kd_status s = read_words(f, path, ds->x, feature_bytes, SPOOL_HEADER_BYTES, "features", &crc);
    if (s == KD_OK && has_labels)
        s = read_words(f, path, ds->y, label_bytes, SPOOL_HEADER_BYTES + feature_bytes, "labels", &crc);
    if (s == KD_OK && (uint32_t)crc != want_crc)
        s = crc_mismatch(path, feature_bytes + label_bytes, (uint32_t)crc, want_crc);
    if (s == KD_OK && has_labels)
        s = check_labels(path, ds->y, ds->n, feature_bytes);
    if (s != KD_OK) {
        kd_dataset_free(ds);
        return s;
    }
    ds->num_classes = kd_labels_num_classes(ds->y, ds->n);
    *out = ds;
    return KD_OK;
}

kd_status kd_dataset_load_spool(const char *path, kd_dataset **out)
{
    if (!out)
        return kd_fail(KD_ERR_INVALID, "load_spool: no output pointer");
    *out = NULL;
    if (!path)
        return kd_fail(KD_ERR_INVALID, "load_spool: no path");
    FILE *f = fopen(path, "rb");
    if (!f)
        return kd_fail(KD_ERR_IO, "%s: cannot open spool file: %s", path, strerror(errno));
    kd_status s = load_open(f, path, out);
    fclose(f);
    return s;
}

/* ---------------------------------------------------------------- save */
/* Writes n 4-byte words as little-endian, folding the written bytes into *crc. */
static kd_status write_words(FILE *f, const char *path, const char *tmp, const void *src, size_t words,
                             unsigned char *swap_buf, const char *what)
{
    const unsigned char *p = src;
    size_t bytes = words * 4;
    for (size_t done = 0; done < bytes;) {
        size_t n = bytes - done > CHUNK_BYTES ? CHUNK_BYTES : bytes - done;
        const unsigned char *chunk = p + done;
        if (swap_buf) {
            memcpy(swap_buf, chunk, n);
            swap4(swap_buf, n / 4);
            chunk = swap_buf;
        }
        if (fwrite(chunk, 1, n, f) != n)
            return kd_fail(KD_ERR_IO, "%s: writing the %s to %s failed: %s", path, what, tmp, strerror(errno));
        done += n;
    }
    return KD_OK;
}

/* CRC of the little-endian bytes of n 4-byte words. */
static uLong crc_words(uLong crc, const void *src, size_t words, unsigned char *swap_buf)
{
    if (!swap_buf)
        return crc_update(crc, src, words * 4);
    const unsigned char *p = src;
    size_t bytes = words * 4;
    for (size_t done = 0; done < bytes;) {
        size_t n = bytes - done > CHUNK_BYTES ? CHUNK_BYTES : bytes - done;
        memcpy(swap_buf, p + done, n);
        swap4(swap_buf, n / 4);
        crc = crc_update(crc, swap_buf, n);
        done += n;
    }
    return crc;
}

/* Writes header and payload to the already opened temporary file. */
static kd_status write_contents(FILE *f, const char *path, const char *tmp, const kd_dataset *ds,
                                size_t size, int has_labels)
{
    unsigned char *swap_buf = NULL;
    if (!host_is_little_endian() && !(swap_buf = kd_malloc(CHUNK_BYTES, "spool byte-swap buffer")))
        return KD_ERR_NOMEM;
    size_t n = (size_t)ds->n;
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc_words(crc, ds->x, n * size, swap_buf);
    if (has_labels)
        crc = crc_words(crc, ds->y, n, swap_buf);

    unsigned char h[SPOOL_HEADER_BYTES] = {0};
    memcpy(h + OFF_MAGIC, SPOOL_MAGIC, 8);
    put_u32(h + OFF_VERSION, SPOOL_VERSION);
    put_u32(h + OFF_RANK, (uint32_t)ds->shape.rank);
    for (int i = 0; i < ds->shape.rank; i++)
        put_u32(h + OFF_DIMS + 4 * i, (uint32_t)ds->shape.dim[i]);
    put_u32(h + OFF_FLAGS, has_labels ? SPOOL_FLAG_LABELS : 0u);
    put_u64(h + OFF_COUNT, (uint64_t)ds->n);
    put_u64(h + OFF_CRC, (uint64_t)(uint32_t)crc);

    kd_status s = KD_OK;
    if (fwrite(h, 1, sizeof h, f) != sizeof h)
        s = kd_fail(KD_ERR_IO, "%s: writing the header to %s failed: %s", path, tmp, strerror(errno));
    if (s == KD_OK)
        s = write_words(f, path, tmp, ds->x, n * size, swap_buf, "features");
    if (s == KD_OK && has_labels)
        s = write_words(f, path, tmp, ds->y, n, swap_buf, "labels");
    free(swap_buf);
    return s;
}

kd_status kd_dataset_save_spool(const char *path, const kd_dataset *ds)
{
    if (!path)
        return kd_fail(KD_ERR_INVALID, "save_spool: no path");
    if (!ds)
        return kd_fail(KD_ERR_INVALID, "save_spool %s: no dataset", path);
    size_t size = kd_shape_size(&ds->shape);
    if (ds->shape.rank < 1 || ds->shape.rank > SPOOL_MAX_RANK || size == 0)
        return kd_fail(KD_ERR_SHAPE, "save_spool %s: sample shape has rank %d; a spool holds rank 1..%d "
                                     "with every dimension >= 1", path, ds->shape.rank, SPOOL_MAX_RANK);
    if (ds->n < 0 || (ds->n > 0 && (!ds->x || !ds->y)))
        return kd_fail(KD_ERR_INVALID, "save_spool %s: dataset is not initialised (n %lld)", path,
                       (long long)ds->n);
    /* A spool has labels for every sample or for none: -1 everywhere means none. */
    int64_t labelled = 0, first_unlabelled = -1;
    for (int64_t i = 0; i < ds->n; i++) {
        if (ds->y[i] >= 0)
            labelled++;
        else if (ds->y[i] == -1 && first_unlabelled < 0)
            first_unlabelled = i;
        else if (ds->y[i] != -1)
            return kd_fail(KD_ERR_INVALID, "save_spool %s: sample %lld has label %d; labels must be >= 0 "
                                           "(or -1 for no label)", path, (long long)i, ds->y[i]);
    }
    if (labelled > 0 && first_unlabelled >= 0)
        return kd_fail(KD_ERR_INVALID, "save_spool %s: sample %lld has no label (-1) but %lld others have "
                                       "one; a spool file has labels for all samples or none",
                       path, (long long)first_unlabelled, (long long)labelled);
    int has_labels = labelled > 0;

    kd_safe_file sf;
    kd_status s = kd_safe_file_begin(&sf, path, "spool temporary name");
    if (s != KD_OK)
        return s;
    const char *tmp = sf.tmp;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        s = kd_fail(KD_ERR_IO, "%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
        kd_safe_file_abort(&sf);
        return s;
    }
    s = write_contents(f, path, tmp, ds, size, has_labels);
    if (s == KD_OK && fflush(f) != 0)
        s = kd_fail(KD_ERR_IO, "%s: flushing %s failed: %s", path, tmp, strerror(errno));
    if (fclose(f) != 0 && s == KD_OK)
        s = kd_fail(KD_ERR_IO, "%s: closing %s failed: %s", path, tmp, strerror(errno));
    if (s != KD_OK) {
        kd_safe_file_abort(&sf);
        return s;
    }
    return kd_safe_file_commit(&sf);
}

/* ------------------------------------------------------ streaming writer */
struct kd_spool_writer {
    kd_safe_file sf;
    FILE *f;             /* the temporary spool file */
    FILE *labels;        /* unlinked side file holding the labels so far */
    kd_shape shape;
    size_t size;         /* floats per sample */
    int has_labels;
    uint64_t floats, nlabels;
    uLong crc;           /* of the features so far */
    unsigned char *swap_buf;
};

kd_status kd_spool_writer_open(const char *path, const kd_shape *shape, int has_labels, kd_spool_writer **out)
{
    *out = NULL;
    if (!path)
        return kd_fail(KD_ERR_INVALID, "spool writer: no path");
    size_t size = kd_shape_size(shape);
    if (!shape || shape->rank < 1 || shape->rank > SPOOL_MAX_RANK || size == 0)
        return kd_fail(KD_ERR_SHAPE, "%s: a spool holds samples of rank 1..%d with every dimension >= 1", path,
                       SPOOL_MAX_RANK);
    kd_spool_writer *w = kd_calloc(1, sizeof *w, "a spool writer");
    if (!w)
        return KD_ERR_NOMEM;
    w->shape = *shape;
    for (int i = shape->rank; i < KD_MAX_RANK; i++)
        w->shape.dim[i] = 0;
    w->size = size;
    w->has_labels = has_labels;
    w->crc = crc32(0L, Z_NULL, 0);
    kd_status s = kd_safe_file_begin(&w->sf, path, "spool temporary name");
    if (s != KD_OK) {
        free(w);
        return s;
    }
    if (!host_is_little_endian() && !(w->swap_buf = kd_malloc(CHUNK_BYTES, "spool byte-swap buffer"))) {
        kd_spool_writer_abort(w);
        return KD_ERR_NOMEM;
    }
    w->f = fopen(w->sf.tmp, "wb");
    if (!w->f) {
        s = kd_fail(KD_ERR_IO, "%s: cannot create temporary file %s: %s", path, w->sf.tmp, strerror(errno));
        kd_spool_writer_abort(w);
        return s;
    }
    static const unsigned char zero[SPOOL_HEADER_BYTES]; /* the real header comes last */
    if (fwrite(zero, 1, sizeof zero, w->f) != sizeof zero) {
        s = kd_fail(KD_ERR_IO, "%s: writing %s failed: %s", path, w->sf.tmp, strerror(errno));
        kd_spool_writer_abort(w);
        return s;
    }
    if (has_labels) {
        size_t len = strlen(w->sf.tmp) + 8;
        char *name = kd_malloc(len, "spool label file name");
        if (!name) {
            kd_spool_writer_abort(w);
            return KD_ERR_NOMEM;
        }
        snprintf(name, len, "%s.labels", w->sf.tmp);
        w->labels = fopen(name, "w+b");
        int e = errno;
        if (w->labels)
            unlink(name); /* lives until closed, never left behind */
        else
            s = kd_fail(KD_ERR_IO, "%s: cannot create temporary file %s: %s", path, name, strerror(e));
        free(name);
        if (s != KD_OK) {
            kd_spool_writer_abort(w);
            return s;
        }
    }
    *out = w;
    return KD_OK;
}

int64_t kd_spool_writer_count(const kd_spool_writer *w) { return (int64_t)(w->floats / w->size); }

kd_status kd_spool_writer_features(kd_spool_writer *w, const float *x, size_t nfloats)
{
    if (nfloats == 0)
        return KD_OK;
    w->crc = crc_words(w->crc, x, nfloats, w->swap_buf);
    KD_TRY(write_words(w->f, w->sf.path, w->sf.tmp, x, nfloats, w->swap_buf, "features"));
    w->floats += nfloats;
    return KD_OK;
}

kd_status kd_spool_writer_labels(kd_spool_writer *w, const int32_t *y, size_t n)
{
    const char *path = w->sf.path;
    if (!w->has_labels)
        return kd_fail(KD_ERR_INVALID, "%s: labels given, but the spool was opened without labels", path);
    for (size_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] == INT32_MAX)
            return kd_fail(KD_ERR_INVALID, "%s: sample %llu has label %d; labels must be in [0, %d)", path,
                           (unsigned long long)(w->nlabels + i), y[i], INT32_MAX);
    if (n == 0)
        return KD_OK;
    KD_TRY(write_words(w->labels, path, "the label file", y, n, w->swap_buf, "labels"));
    w->nlabels += n;
    return KD_OK;
}

kd_status kd_spool_writer_add(kd_spool_writer *w, const float *x, const int32_t *y, size_t n)
{
    if (w->has_labels != (y != NULL))
        return kd_fail(KD_ERR_INVALID, "%s: labels %s, but the spool was opened %s labels", w->sf.path,
                       y ? "given" : "missing", w->has_labels ? "with" : "without");
    if (n > SIZE_MAX / 4 / w->size)
        return kd_fail(KD_ERR_INVALID, "%s: %zu samples of %zu floats do not fit", w->sf.path, n, w->size);
    KD_TRY(kd_spool_writer_features(w, x, n * w->size));
    return y ? kd_spool_writer_labels(w, y, n) : KD_OK;
}

kd_status kd_spool_writer_finish(kd_spool_writer *w)
{
    const char *path = w->sf.path;
    kd_status s = KD_OK;
    uint64_t count = w->floats / w->size;
    unsigned char *buf = NULL;
    uLong crc = w->crc;
    if (w->floats % w->size != 0 || (w->has_labels && w->nlabels != count))
        s = kd_fail(KD_ERR_INVALID, "%s: %llu floats and %llu labels do not make whole samples of %zu floats",
                    path, (unsigned long long)w->floats, (unsigned long long)w->nlabels, w->size);
    if (s == KD_OK && w->labels) { /* append the labels (already little-endian) after the features */
        if (!(buf = kd_malloc(CHUNK_BYTES, "spool copy buffer")))
            s = KD_ERR_NOMEM;
        if (s == KD_OK && (fflush(w->labels) != 0 || fseek(w->labels, 0, SEEK_SET) != 0))
            s = kd_fail(KD_ERR_IO, "%s: rewinding the label file failed: %s", path, strerror(errno));
        uint64_t left = w->nlabels * 4;
        while (s == KD_OK && left > 0) {
            size_t n = left > CHUNK_BYTES ? CHUNK_BYTES : (size_t)left;
            if (fread(buf, 1, n, w->labels) != n)
                s = kd_fail(KD_ERR_IO, "%s: reading back the label file failed: %s", path,
                            ferror(w->labels) ? strerror(errno) : "short read");
            else if (fwrite(buf, 1, n, w->f) != n)
                s = kd_fail(KD_ERR_IO, "%s: writing the labels to %s failed: %s", path, w->sf.tmp, strerror(errno));
            else
                crc = crc_update(crc, buf, n);
            left -= n;
        }
        free(buf);
    }
    unsigned char h[SPOOL_HEADER_BYTES] = {0};
    memcpy(h + OFF_MAGIC, SPOOL_MAGIC, 8);
    put_u32(h + OFF_VERSION, SPOOL_VERSION);
    put_u32(h + OFF_RANK, (uint32_t)w->shape.rank);
    for (int i = 0; i < w->shape.rank; i++)
        put_u32(h + OFF_DIMS + 4 * i, (uint32_t)w->shape.dim[i]);
    put_u32(h + OFF_FLAGS, w->has_labels && count > 0 ? SPOOL_FLAG_LABELS : 0u);
    put_u64(h + OFF_COUNT, count);
    put_u64(h + OFF_CRC, (uint64_t)(uint32_t)crc);
    if (s == KD_OK && (fseek(w->f, 0, SEEK_SET) != 0 || fwrite(h, 1, sizeof h, w->f) != sizeof h))
        s = kd_fail(KD_ERR_IO, "%s: writing the header to %s failed: %s", path, w->sf.tmp, strerror(errno));
    if (s == KD_OK && fflush(w->f) != 0)
        s = kd_fail(KD_ERR_IO, "%s: flushing %s failed: %s", path, w->sf.tmp, strerror(errno));
    int closed = fclose(w->f);
    w->f = NULL;
    if (closed != 0 && s == KD_OK)
        s = kd_fail(KD_ERR_IO, "%s: closing %s failed: %s", path, w->sf.tmp, strerror(errno));
    if (s == KD_OK) {
        s = kd_safe_file_commit(&w->sf);
        w->sf.tmp = NULL; /* released by commit either way */
    }
    kd_spool_writer_abort(w);
    return s;
}

void kd_spool_writer_abort(kd_spool_writer *w)
{
    if (!w)
        return;
    if (w->f)
        fclose(w->f);
    if (w->labels)
        fclose(w->labels);
    if (w->sf.tmp)
        kd_safe_file_abort(&w->sf);
    free(w->swap_buf);
    free(w);
}
