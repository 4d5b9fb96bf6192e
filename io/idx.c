/* IDX reader (the MNIST / Fashion-MNIST format), plain or gzip.
 *
 * Layout: 2 zero bytes, an element type byte, a rank byte, then `rank`
 * big-endian uint32 dimensions (the first is the sample count), then the
 * data in big-endian row-major order. Images may be uint8 (0x08, scaled to
 * [0,1]) or float32 (0x0D) of rank 1..4; labels are uint8 of rank 1. */
#include "kindling.h"

#include "dataset.h"
#include "error.h"
#include "memlimit.h"
#include "reader_util.h"
#include "spool_writer.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define IDX_UINT8 0x08
#define IDX_FLOAT32 0x0D
#define IDX_CHUNK (1u << 20)
#define GZIP_MAX_RATIO 1032u /* deflate's largest expansion (zlib FAQ) */

typedef struct idx_header {
    int type, rank;
    uint32_t dim[4];
    size_t header_bytes; /* 4 + 4 * rank */
    size_t data_bytes;   /* everything after the header */
} idx_header;

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static const char *type_name(int type)
{
    switch (type) {
    case 0x08: return "uint8";
    case 0x09: return "int8";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    }
    return "unknown";
}

/* Reads exactly n bytes or reports how far the data got. `what` is "image"
 * or "label"; done is how many data bytes were read before this call. */
static kd_status read_data(kd_reader *r, const idx_header *h, const char *what, void *dst,
                           size_t n, size_t done)
{
    size_t got;
    KD_TRY(kd_reader_read(r, dst, n, &got));
    if (got < n)
        return kd_fail(KD_ERR_FORMAT,
                       "%s: truncated: expected %zu bytes of %s data after the %zu-byte header, "
                       "got %zu%s",
                       r->path, h->data_bytes, what, h->header_bytes, done + got,
                       r->gz_truncated ? " (gzip stream ends early)" : "");
    return KD_OK;
}

/* Opens path and reads and checks its header for the given role. */
static kd_status open_idx(const char *path, int labels, kd_reader *r, idx_header *h)
{
    const char *what = labels ? "label" : "image";
    memset(h, 0, sizeof *h);
    KD_TRY(kd_reader_open(r, path));

    unsigned char head[4 + 4 * 4];
    size_t got;
    KD_TRY(kd_reader_read(r, head, 4, &got));
    if (got == 0 && !r->gz_truncated)
        return kd_fail(KD_ERR_FORMAT, "%s: empty file (no samples)", path);
    if (got < 4)
        return kd_fail(KD_ERR_FORMAT, "%s: truncated: only %zu bytes, less than an IDX magic "
                       "number%s", path, got, r->gz_truncated ? " (gzip stream ends early)" : "");
    uint32_t magic = be32(head);
    const char *expect = labels ? "0x00000801 for uint8 labels"
                                : "0x00000803 for uint8 images; also 0x0000080N uint8 or 0x00000D0N float32, rank N 1..4";
    if (head[0] != 0 || head[1] != 0 || head[3] < 1 || head[3] > 4)
        return kd_fail(KD_ERR_FORMAT, "%s: bad magic number 0x%08x: not an IDX %s file "
                       "(expected %s)", path, magic, what, expect);
    h->type = head[2];
    h->rank = head[3];
    if (h->type != IDX_UINT8 && h->type != IDX_FLOAT32)
        return kd_fail(labels ? KD_ERR_FORMAT : KD_ERR_UNSUPPORTED,
                       "%s: IDX element type 0x%02x (%s) is not supported (magic 0x%08x; "
                       "expected %s)", path, h->type, type_name(h->type), magic, expect);
    if (labels && (h->type != IDX_UINT8 || h->rank != 1))
        return kd_fail(KD_ERR_FORMAT, "%s: bad magic number 0x%08x for a label file (expected %s)",
                       path, magic, expect);

    h->header_bytes = 4 + 4 * (size_t)h->rank;
    KD_TRY(kd_reader_read(r, head + 4, 4 * (size_t)h->rank, &got));
    if (got < 4 * (size_t)h->rank)
        return kd_fail(KD_ERR_FORMAT, "%s: truncated header: expected %zu bytes, got %zu%s", path,
                       h->header_bytes, 4 + got, r->gz_truncated ? " (gzip stream ends early)" : "");
    size_t elem = h->type == IDX_UINT8 ? 1 : 4;
    size_t bytes = elem;
    for (int i = 0; i < h->rank; i++) {
        h->dim[i] = be32(head + 4 + 4 * i);
        if (h->dim[i] == 0 && i == 0)
            return kd_fail(KD_ERR_FORMAT, "%s: header says 0 %ss (no samples)", path, what);
        if (h->dim[i] == 0 || h->dim[i] > INT_MAX)
            return kd_fail(KD_ERR_FORMAT, "%s: header dimension %d is %u", path, i, h->dim[i]);
        if (bytes > SIZE_MAX / h->dim[i])
            return kd_fail(KD_ERR_FORMAT, "%s: header dimensions give more data than fits in memory",
                           path);
        bytes *= h->dim[i];
    }
    h->data_bytes = bytes;

    /* A plain file's size tells truncation before anything is allocated. */
    struct stat st;
    if (r->fp && fstat(fileno(r->fp), &st) == 0 && S_ISREG(st.st_mode) &&
        (uint64_t)st.st_size < h->header_bytes + h->data_bytes)
        return kd_fail(KD_ERR_FORMAT,
                       "%s: truncated: expected %zu bytes of %s data after the %zu-byte header, "
                       "got %llu", path, h->data_bytes, what, h->header_bytes,
                       (unsigned long long)st.st_size - h->header_bytes);
    /* A gzip file cannot say how much it holds, but deflate expands at most
     * 1032:1, so a tiny file claiming gigabytes is refused before the data
     * set is allocated for it. */
    if (r->is_gzip && stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
        (uint64_t)st.st_size <= UINT64_MAX / GZIP_MAX_RATIO &&
        h->header_bytes + h->data_bytes > (uint64_t)st.st_size * GZIP_MAX_RATIO)
        return kd_fail(KD_ERR_FORMAT,
                       "%s: truncated: the header announces %zu bytes of %s data, more than a "
                       "%llu-byte gzip file can hold", path, h->data_bytes, what,
                       (unsigned long long)st.st_size);
    return KD_OK;
}

/* The data must end where the header says; more means header and data disagree. */
static kd_status expect_end(kd_reader *r, const idx_header *h, const char *what)
{
    unsigned char extra;
    size_t got;
    KD_TRY(kd_reader_read(r, &extra, 1, &got));
    if (got != 0)
        return kd_fail(KD_ERR_FORMAT, "%s: unexpected bytes after the %zu bytes of %s data the "
                       "header announces", r->path, h->data_bytes, what);
    if (r->gz_truncated)
        return kd_fail(KD_ERR_FORMAT, "%s: truncated: gzip stream ends early (after all %zu bytes "
                       "of %s data, but without its end marker and checksum)", r->path,
                       h->data_bytes, what);
    return KD_OK;
}

/* Per-sample shape: drop the count; 2-d images get one channel. */
static kd_shape sample_shape(const idx_header *ih)
{
    kd_shape shape = {0, {0}};
    if (ih->rank == 1) {
        shape.rank = 1;
        shape.dim[0] = 1;
    } else if (ih->rank == 3) {
        shape.rank = 3;
        shape.dim[0] = 1;
        shape.dim[1] = (int)ih->dim[1];
        shape.dim[2] = (int)ih->dim[2];
    } else {
        shape.rank = ih->rank - 1;
        for (int i = 1; i < ih->rank; i++)
            shape.dim[i - 1] = (int)ih->dim[i];
    }
    return shape;
}

static kd_status read_images(kd_reader *r, const idx_header *h, kd_dataset *ds)
{
    unsigned char *chunk = kd_malloc(IDX_CHUNK, "the IDX read buffer");
    if (!chunk)
        return KD_ERR_NOMEM;
    kd_status s = KD_OK;
    size_t done = 0;
    if (h->type == IDX_UINT8) {
        while (s == KD_OK && done < h->data_bytes) {
            size_t n = h->data_bytes - done < IDX_CHUNK ? h->data_bytes - done : IDX_CHUNK;
            s = read_data(r, h, "image", chunk, n, done);
            for (size_t i = 0; s == KD_OK && i < n; i++)
                ds->x[done + i] = (float)chunk[i] / 255.0f;
            done += n;
        }
    } else {
        while (s == KD_OK && done < h->data_bytes) {
            size_t n = h->data_bytes - done < IDX_CHUNK ? h->data_bytes - done : IDX_CHUNK;
            s = read_data(r, h, "image", chunk, n, done);
            for (size_t i = 0; s == KD_OK && i < n; i += 4) {
                uint32_t bits = be32(chunk + i);
                memcpy(&ds->x[(done + i) / 4], &bits, sizeof bits);
            }
            done += n;
        }
    }
    free(chunk);
    return s == KD_OK ? expect_end(r, h, "image") : s;
}

static kd_status read_labels(kd_reader *r, const idx_header *h, kd_dataset *ds)
{
    unsigned char *raw = kd_malloc(h->data_bytes, "the IDX labels");
    if (!raw)
        return KD_ERR_NOMEM;
    kd_status s = read_data(r, h, "label", raw, h->data_bytes, 0);
    if (s == KD_OK)
        s = expect_end(r, h, "label");
    if (s == KD_OK) {
        for (size_t i = 0; i < h->data_bytes; i++)
            ds->y[i] = raw[i];
        ds->num_classes = kd_labels_num_classes(ds->y, ds->n);
    }
    free(raw);
    return s;
}

/* Opens the images file and, when labels_path is given, the labels file,
 * and checks that their counts agree. On failure what was opened stays
 * open for the caller's usual cleanup (labels is zeroed first). */
static kd_status open_pair(const char *images_path, const char *labels_path, kd_reader *images, idx_header *ih,
                           kd_reader *labels, idx_header *lh)
{
    memset(labels, 0, sizeof *labels);
    kd_status s = open_idx(images_path, 0, images, ih);
    if (s == KD_OK && labels_path)
        s = open_idx(labels_path, 1, labels, lh);
    if (s == KD_OK && labels_path && lh->dim[0] != ih->dim[0])
        s = kd_fail(KD_ERR_FORMAT, "count mismatch: %s has %u images but %s has %u labels",
                    images_path, ih->dim[0], labels_path, lh->dim[0]);
    return s;
}

kd_status kd_dataset_load_idx(const char *images_path, const char *labels_path,
                              kd_dataset **out)
{
    if (!out)
        return kd_fail(KD_ERR_INVALID, "load_idx: no output pointer");
    *out = NULL;
    if (!images_path)
        return kd_fail(KD_ERR_INVALID, "load_idx: no images path given");

    kd_reader images, labels;
    idx_header ih, lh;
    kd_dataset *ds = NULL;
    kd_status s = open_pair(images_path, labels_path, &images, &ih, &labels, &lh);
    if (s == KD_OK) {
        kd_shape shape = sample_shape(&ih);
        char what[160], sb[64];
        snprintf(what, sizeof what, "loading %u samples of shape %s as float32%s", ih.dim[0],
                 kd_shape_str(&shape, sb, sizeof sb), ih.type == IDX_UINT8 ? " (4 bytes per uint8 pixel)" : "");
        uint64_t bytes = (uint64_t)ih.dim[0] * (kd_shape_size(&shape) * 4 + 4);
        s = kd_memory_check(bytes, bytes, 0, images_path, what);
    }
    if (s == KD_OK) {
        kd_shape shape = sample_shape(&ih);
        s = kd_dataset_alloc((int64_t)ih.dim[0], &shape, &ds);
        if (s != KD_OK)
            kd_fail_context(s, "%s", images_path);
    }
    if (s == KD_OK)
        s = read_images(&images, &ih, ds);
    if (s == KD_OK && labels_path)
        s = read_labels(&labels, &lh, ds);
    kd_reader_close(&images);
    kd_reader_close(&labels);
    if (s != KD_OK) {
        kd_dataset_free(ds);
        return s;
    }
    *out = ds;
    return KD_OK;
}

/* Streams images (and labels) into a spool writer, a block of samples at a time. */
static kd_status convert_stream(kd_reader *images, const idx_header *ih, kd_reader *labels, const idx_header *lh,
                                kd_spool_writer *w, size_t size)
{
    size_t elem = ih->type == IDX_UINT8 ? 1 : 4;
    size_t per = size * elem; /* raw bytes per sample */
    size_t block = IDX_CHUNK / per ? IDX_CHUNK / per : 1;
    unsigned char *raw = kd_malloc(block * per, "the IDX read buffer");
    float *x = raw ? kd_malloc(block * size * sizeof(float), "the IDX conversion buffer") : NULL;
    unsigned char *lraw = x ? kd_malloc(block, "the IDX label buffer") : NULL;
    int32_t *y = lraw ? kd_malloc(block * sizeof(int32_t), "the IDX label buffer") : NULL;
    kd_status s = y ? KD_OK : KD_ERR_NOMEM;
    size_t done = 0, ldone = 0;
    for (uint32_t at = 0; s == KD_OK && at < ih->dim[0];) {
        size_t k = ih->dim[0] - at < block ? ih->dim[0] - at : block;
        s = read_data(images, ih, "image", raw, k * per, done);
        for (size_t i = 0; s == KD_OK && i < k * size; i++) {
            if (elem == 1) {
                x[i] = (float)raw[i] / 255.0f;
            } else {
                uint32_t bits = be32(raw + 4 * i);
                memcpy(&x[i], &bits, sizeof bits);
            }
        }
        if (s == KD_OK && labels) {
            s = read_data(labels, lh, "label", lraw, k, ldone);
            for (size_t i = 0; s == KD_OK && i < k; i++)
                y[i] = lraw[i];
        }
        if (s == KD_OK)
            s = kd_spool_writer_add(w, x, labels ? y : NULL, k);
        done += k * per;
        ldone += k;
        at += (uint32_t)k;
    }
    free(raw);
    free(x);
    free(lraw);
    free(y);
    if (s == KD_OK)
        s = expect_end(images, ih, "image");
    if (s == KD_OK && labels)
        s = expect_end(labels, lh, "label");
    return s;
}

kd_status kd_convert_idx_to_spool(const char *images_path, const char *labels_path, const char *spool_path,
                                  int64_t *count)
{
    if (count)
        *count = 0;
    if (!images_path || !spool_path)
        return kd_fail(KD_ERR_INVALID, "convert_idx: no %s path given", images_path ? "spool" : "images");
    kd_reader images, labels;
    idx_header ih, lh;
    kd_spool_writer *w = NULL;
    kd_status s = open_pair(images_path, labels_path, &images, &ih, &labels, &lh);
    kd_shape shape = sample_shape(&ih);
    if (s == KD_OK)
        s = kd_spool_writer_open(spool_path, &shape, labels_path != NULL, &w);
    if (s == KD_OK)
        s = convert_stream(&images, &ih, labels_path ? &labels : NULL, &lh, w, kd_shape_size(&shape));
    kd_reader_close(&images);
    kd_reader_close(&labels);
    if (s == KD_OK) {
        int64_t n = kd_spool_writer_count(w);
        s = kd_spool_writer_finish(w);
        if (s == KD_OK && count)
            *count = n;
    } else {
        kd_spool_writer_abort(w);
    }
    return s;
}
