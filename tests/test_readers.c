/* The data readers (IDX, CSV, LibSVM), shapes and kd_dataset_validate.
 * Small good and bad files are generated into a mkdtemp directory; the
 * real Fashion-MNIST files are checked when present. */
#include "kindling.h"

#include "check.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

static char tmp_dir[] = "/tmp/kd_test_readers_XXXXXX";

/* ---------------------------------------------------------------- helpers */

static const char *tmp_path(const char *name)
{
    /* Every path gets its own buffer, so earlier ones stay valid. */
    static char bufs[256][600];
    static int next;
    if (next == 256) {
        fprintf(stderr, "tmp_path: too many paths\n");
        exit(2);
    }
    char *b = bufs[next++];
    snprintf(b, sizeof bufs[0], "%s/%s", tmp_dir, name);
    return b;
}

static const char *write_bytes(const char *name, const void *data, size_t len)
{
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len) {
        perror(path);
        exit(2);
    }
    fclose(f);
    return path;
}

static const char *write_text(const char *name, const char *text)
{
    return write_bytes(name, text, strlen(text));
}

static const char *write_gz(const char *name, const void *data, size_t len)
{
    const char *path = tmp_path(name);
    gzFile g = gzopen(path, "wb");
    if (!g || (len && gzwrite(g, data, (unsigned)len) != (int)len) || gzclose(g) != Z_OK) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
    return path;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n)
        exit(2);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* An IDX file image in memory: header for (type, rank, dims) then data. */
static unsigned char *make_idx(int type, int rank, const uint32_t *dims, const void *data,
                               size_t data_len, size_t *len)
{
    size_t head = 4 + 4 * (size_t)rank;
    unsigned char *b = malloc(head + data_len + 1);
    b[0] = b[1] = 0;
    b[2] = (unsigned char)type;
    b[3] = (unsigned char)rank;
    for (int i = 0; i < rank; i++)
        put_be32(b + 4 + 4 * i, dims[i]);
    if (data_len)
        memcpy(b + head, data, data_len);
    *len = head + data_len;
    return b;
}

/* The small IDX pair used by several checks: 5 images of 3x4, 5 labels. */
enum { NIMG = 5, IMG_H = 3, IMG_W = 4, IMG_SIZE = IMG_H * IMG_W };
static unsigned char img_bytes[NIMG * IMG_SIZE];
static const unsigned char img_labels[NIMG] = {3, 0, 2, 2, 1};

static void check_small_idx(const kd_dataset *ds, int labelled, const char *what)
{
    CHECK(ds->n == NIMG, "%s: n %lld", what, (long long)ds->n);
    CHECK(ds->shape.rank == 3 && ds->shape.dim[0] == 1 && ds->shape.dim[1] == IMG_H &&
              ds->shape.dim[2] == IMG_W,
          "%s: shape rank %d %dx%dx%d", what, ds->shape.rank, ds->shape.dim[0], ds->shape.dim[1],
          ds->shape.dim[2]);
    int bad = 0;
    for (int i = 0; i < NIMG * IMG_SIZE; i++)
        bad += ds->x[i] != (float)img_bytes[i] / 255.0f;
    CHECK(bad == 0, "%s: %d pixels differ from byte/255", what, bad);
    CHECK(ds->x[0] == 0.0f && ds->x[NIMG * IMG_SIZE - 1] == 1.0f, "%s: ends %g %g", what, ds->x[0],
          ds->x[NIMG * IMG_SIZE - 1]);
    int label_bad = 0;
    for (int i = 0; i < NIMG; i++)
        label_bad += ds->y[i] != (labelled ? img_labels[i] : -1);
    CHECK(label_bad == 0, "%s: %d labels differ", what, label_bad);
    CHECK(ds->num_classes == (labelled ? 4 : 0), "%s: num_classes %d", what, ds->num_classes);
}

/* ----------------------------------------------------------------- shapes */

static void test_shapes(void)
{
    char buf[64];
    kd_shape img = {3, {1, 28, 28, 0}};
    kd_shape flat = {1, {784, 0, 0, 0}};
    CHECK(kd_shape_size(&img) == 784, "size %zu", kd_shape_size(&img));
    CHECK(kd_shape_size(&flat) == 784, "size %zu", kd_shape_size(&flat));
    CHECK(strcmp(kd_shape_str(&img, buf, sizeof buf), "1x28x28") == 0, "str '%s'", buf);
    CHECK(strcmp(kd_shape_str(&flat, buf, sizeof buf), "784") == 0, "str '%s'", buf);
    char small[4];
    kd_shape_str(&img, small, sizeof small);
    CHECK(strcmp(small, "1x2") == 0, "truncated str '%s'", small);
    kd_shape bad_rank = {0, {5, 0, 0, 0}};
    kd_shape zero_dim = {2, {3, 0, 0, 0}};
    CHECK(kd_shape_size(&bad_rank) == 0, "rank 0 size %zu", kd_shape_size(&bad_rank));
    CHECK(kd_shape_size(&zero_dim) == 0, "zero dim size %zu", kd_shape_size(&zero_dim));

    kd_dataset *ds = NULL;
    kd_shape s23 = {2, {2, 3, 0, 0}};
    CHECK_OK(kd_dataset_alloc(5, &s23, &ds));
    if (ds) {
        int bad = 0;
        for (int i = 0; i < 5 * 6; i++)
            bad += ds->x[i] != 0.0f;
        for (int i = 0; i < 5; i++)
            bad += ds->y[i] != -1;
        CHECK(bad == 0 && ds->n == 5 && ds->num_classes == 0 && ds->shape.dim[1] == 3,
              "fresh dataset: %d bad entries", bad);
    }
    kd_dataset_free(ds);
    CHECK_OK(kd_dataset_alloc(0, &s23, &ds));
    CHECK(ds && ds->n == 0, "empty dataset");
    kd_dataset_free(ds);
    kd_dataset_free(NULL);

    ds = (kd_dataset *)&ds; /* must be reset to NULL on failure */
    CHECK_FAILS(kd_dataset_alloc(-1, &s23, &ds), KD_ERR_INVALID, "negative");
    CHECK(ds == NULL, "out not cleared on failure");
    kd_shape rank4 = {4, {1, 2, 3, 4}};
    CHECK_FAILS(kd_dataset_alloc(2, &rank4, &ds), KD_ERR_SHAPE, "rank 4");
    CHECK_FAILS(kd_dataset_alloc(2, &bad_rank, &ds), KD_ERR_SHAPE, "rank 0");
    CHECK_FAILS(kd_dataset_alloc(2, &zero_dim, &ds), KD_ERR_SHAPE, "dimension 1 is 0");
    kd_shape big = {3, {1000, 1000, 1000, 0}};
    CHECK_FAILS(kd_dataset_alloc(INT64_MAX / 4, &big, &ds), KD_ERR_NOMEM, "do not fit");
    CHECK_FAILS(kd_dataset_alloc(2, NULL, &ds), KD_ERR_INVALID, "no sample shape");
}

/* ------------------------------------------------------------------- IDX */

static void test_idx_round_trip(void)
{
    for (int i = 0; i < NIMG * IMG_SIZE; i++)
        img_bytes[i] = (unsigned char)((i * 37 + 11) % 256);
    img_bytes[0] = 0;
    img_bytes[NIMG * IMG_SIZE - 1] = 255;

    uint32_t idims[3] = {NIMG, IMG_H, IMG_W}, ldims[1] = {NIMG};
    size_t ilen, llen;
    unsigned char *ifile = make_idx(0x08, 3, idims, img_bytes, sizeof img_bytes, &ilen);
    unsigned char *lfile = make_idx(0x08, 1, ldims, img_labels, sizeof img_labels, &llen);
    CHECK(ifile[2] == 0x08 && ifile[3] == 3 && ilen == 16 + sizeof img_bytes, "idx header");

    const char *ip = write_bytes("img.idx", ifile, ilen);
    const char *lp = write_bytes("lab.idx", lfile, llen);
    const char *igz = write_gz("img.idx.gz", ifile, ilen);
    const char *lgz = write_gz("lab.idx.gz", lfile, llen);
    /* Detection is by content: a gzip file with a plain-looking name. */
    const char *igz_noext = write_gz("img_gz_without_extension", ifile, ilen);

    kd_dataset *ds = NULL;
    CHECK_OK(kd_dataset_load_idx(ip, lp, &ds));
    if (ds)
        check_small_idx(ds, 1, "plain");
    kd_dataset_free(ds);
    ds = NULL;
    CHECK_OK(kd_dataset_load_idx(igz, lgz, &ds));
    if (ds)
        check_small_idx(ds, 1, "gzip");
    kd_dataset_free(ds);
    ds = NULL;
    CHECK_OK(kd_dataset_load_idx(igz_noext, lp, &ds));
    if (ds)
        check_small_idx(ds, 1, "gzip without .gz name, plain labels");
    kd_dataset_free(ds);
    ds = NULL;
    CHECK_OK(kd_dataset_load_idx(ip, NULL, &ds));
    if (ds)
        check_small_idx(ds, 0, "no labels");
    kd_dataset_free(ds);
    ds = NULL;

    /* float32, rank 2 (n, features): big-endian floats, values kept exactly. */
    const float fvals[3][4] = {{0.5f, -1.25f, 3e-8f, 1e30f}, {0, -0.0f, 7.0f, 0.1f},
                               {-2.5f, 100.0f, 1.0f / 3.0f, -1e-30f}};
    unsigned char fbytes[sizeof fvals];
    for (int i = 0; i < 12; i++) {
        uint32_t bits;
        memcpy(&bits, &fvals[i / 4][i % 4], 4);
        put_be32(fbytes + 4 * i, bits);
    }
    uint32_t fdims[2] = {3, 4};
    size_t flen;
    unsigned char *ffile = make_idx(0x0D, 2, fdims, fbytes, sizeof fbytes, &flen);
    uint32_t l3dims[1] = {3};
    const unsigned char l3[3] = {1, 0, 1};
    size_t l3len;
    unsigned char *l3file = make_idx(0x08, 1, l3dims, l3, 3, &l3len);
    CHECK_OK(kd_dataset_load_idx(write_bytes("f32.idx", ffile, flen),
                                 write_bytes("l3.idx", l3file, l3len), &ds));
    if (ds) {
        CHECK(ds->n == 3 && ds->shape.rank == 1 && ds->shape.dim[0] == 4, "f32 shape rank %d dim %d",
              ds->shape.rank, ds->shape.dim[0]);
        CHECK(memcmp(ds->x, fvals, sizeof fvals) == 0, "f32 values differ (first %g)", ds->x[0]);
        CHECK(ds->y[0] == 1 && ds->y[1] == 0 && ds->y[2] == 1 && ds->num_classes == 2,
              "f32 labels %d %d %d, classes %d", ds->y[0], ds->y[1], ds->y[2], ds->num_classes);
    }
    kd_dataset_free(ds);
    ds = NULL;

    /* uint8 rank 4 (n, c, h, w) keeps its channels. */
    unsigned char r4[2 * 2 * 2 * 3];
    for (int i = 0; i < 24; i++)
        r4[i] = (unsigned char)(i * 10);
    uint32_t r4dims[4] = {2, 2, 2, 3};
    size_t r4len;
    unsigned char *r4file = make_idx(0x08, 4, r4dims, r4, sizeof r4, &r4len);
    CHECK_OK(kd_dataset_load_idx(write_gz("r4.idx.gz", r4file, r4len), NULL, &ds));
    if (ds) {
        CHECK(ds->n == 2 && ds->shape.rank == 3 && ds->shape.dim[0] == 2 && ds->shape.dim[1] == 2 &&
                  ds->shape.dim[2] == 3,
              "rank-4 shape rank %d", ds->shape.rank);
        CHECK(ds->x[23] == 230.0f / 255.0f && ds->x[13] == 130.0f / 255.0f, "rank-4 values");
    }
    kd_dataset_free(ds);
    free(ifile);
    free(lfile);
    free(ffile);
    free(l3file);
    free(r4file);
}

static void test_idx_errors(void)
{
    kd_dataset *ds = NULL;
    uint32_t idims[3] = {NIMG, IMG_H, IMG_W}, ldims[1] = {NIMG};
    size_t ilen, llen;
    unsigned char *ifile = make_idx(0x08, 3, idims, img_bytes, sizeof img_bytes, &ilen);
    unsigned char *lfile = make_idx(0x08, 1, ldims, img_labels, sizeof img_labels, &llen);
    const char *lp = write_bytes("lab_ok.idx", lfile, llen);

    const char *missing = tmp_path("no_such_file.idx");
    CHECK_FAILS(kd_dataset_load_idx(missing, lp, &ds), KD_ERR_IO, "no_such_file.idx");
    CHECK_FAILS(kd_dataset_load_idx(missing, lp, &ds), KD_ERR_IO, "No such file or directory");
    CHECK_FAILS(kd_dataset_load_idx(write_bytes("img_ok.idx", ifile, ilen), missing, &ds),
                KD_ERR_IO, "no_such_file.idx");
    CHECK(ds == NULL, "out set on failure");

    /* Truncated data: 16-byte header announces 60 bytes, 20 present. */
    CHECK_FAILS(kd_dataset_load_idx(write_bytes("trunc.idx", ifile, 16 + 20), lp, &ds),
                KD_ERR_FORMAT,
                "trunc.idx: truncated: expected 60 bytes of image data after the 16-byte header, got 20");
    /* The same inside a complete gzip stream. */
    CHECK_FAILS(kd_dataset_load_idx(write_gz("trunc.idx.gz", ifile, 16 + 20), lp, &ds),
                KD_ERR_FORMAT, "truncated: expected 60 bytes of image data after the 16-byte header, got 20");
    /* A gzip stream cut short (a download that stopped). */
    size_t gzlen;
    unsigned char *gz = read_all(tmp_path("img.idx.gz"), &gzlen);
    CHECK_FAILS(kd_dataset_load_idx(write_bytes("cut.idx.gz", gz, gzlen - 12), lp, &ds),
                KD_ERR_FORMAT, "gzip stream ends early");
    CHECK_FAILS(kd_dataset_load_idx(write_bytes("cut2.idx.gz", gz, 12), lp, &ds), KD_ERR_FORMAT,
                "truncated");
    /* Truncated header, and a truncated labels file. */
    CHECK_FAILS(kd_dataset_load_idx(write_bytes("trunc_head.idx", ifile, 10), lp, &ds),
                KD_ERR_FORMAT, "truncated header: expected 16 bytes, got 10");
    CHECK_FAILS(kd_dataset_load_idx(tmp_path("img_ok.idx"), write_bytes("trunc_lab.idx", lfile, 10),
                                    &ds),
                KD_ERR_FORMAT, "expected 5 bytes of label data after the 8-byte header, got 2");

    /* Corrupt deflate data: a gzip header, then a block of the invalid type 3. */
    unsigned char bad_gz[32] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    memset(bad_gz + 10, 0xff, sizeof bad_gz - 10);
    CHECK_FAILS(kd_dataset_load_idx(write_bytes("corrupt.gz", bad_gz, sizeof bad_gz), lp, &ds),
                KD_ERR_FORMAT, "corrupt gzip data");
    CHECK_FAILS(kd_dataset_load_idx(tmp_path("corrupt.gz"), lp, &ds), KD_ERR_FORMAT, "zlib error");
    /* A wrong CRC in the trailer: all data decompresses, the check fails. */
    gz[gzlen - 8] ^= 0x5a;
    CHECK_FAILS(kd_dataset_load_idx(write_bytes("badcrc.idx.gz", gz, gzlen), lp, &ds),
                KD_ERR_FORMAT, "corrupt gzip data");
    free(gz);

    /* Not IDX at all, and a labels file passed as images (and vice versa). */
    CHECK_FAILS(kd_dataset_load_idx(write_text("text.idx", "hello, this is text\n"), lp, &ds),
                KD_ERR_FORMAT, "bad magic number 0x68656c6c");
    CHECK_FAILS(kd_dataset_load_idx(tmp_path("img_ok.idx"), tmp_path("img_ok.idx"), &ds),
                KD_ERR_FORMAT, "bad magic number 0x00000803 for a label file");
    uint32_t d1[1] = {2};
    int32_t ints[2] = {0, 1};
    size_t tlen;
    unsigned char *tfile = make_idx(0x0C, 1, d1, ints, sizeof ints, &tlen);
    CHECK_FAILS(kd_dataset_load_idx(write_bytes("int32.idx", tfile, tlen), NULL, &ds),
                KD_ERR_UNSUPPORTED, "type 0x0c (int32)");
    free(tfile);

    /* Image and label counts disagree. */
    uint32_t l4dims[1] = {4};
    size_t l4len;
    unsigned char *l4file = make_idx(0x08, 1, l4dims, img_labels, 4, &l4len);
    CHECK_FAILS(kd_dataset_load_idx(tmp_path("img_ok.idx"), write_bytes("lab4.idx", l4file, l4len),
                                    &ds),
                KD_ERR_FORMAT, "count mismatch");
    CHECK_FAILS(kd_dataset_load_idx(tmp_path("img_ok.idx"), tmp_path("lab4.idx"), &ds),
                KD_ERR_FORMAT, "has 5 images but");
    free(l4file);

    /* Empty files, zero samples, and bytes beyond what the header says. */
    CHECK_FAILS(kd_dataset_load_idx(write_bytes("empty.idx", "", 0), NULL, &ds), KD_ERR_FORMAT,
                "no samples");
    CHECK_FAILS(kd_dataset_load_idx(write_gz("empty.idx.gz", "", 0), NULL, &ds), KD_ERR_FORMAT,
                "no samples");
    uint32_t zdims[3] = {0, 3, 4};
    size_t zlen;
    unsigned char *zfile = make_idx(0x08, 3, zdims, NULL, 0, &zlen);
    CHECK_FAILS(kd_dataset_load_idx(write_bytes("zero.idx", zfile, zlen), NULL, &ds), KD_ERR_FORMAT,
                "no samples");
    free(zfile);
    unsigned char *longer = malloc(ilen + 3);
    memcpy(longer, ifile, ilen);
    memset(longer + ilen, 7, 3);
    CHECK_FAILS(kd_dataset_load_idx(write_bytes("long.idx", longer, ilen + 3), NULL, &ds),
                KD_ERR_FORMAT, "unexpected bytes after the 60 bytes of image data");
    free(longer);
    CHECK(ds == NULL, "out set on failure");
    free(ifile);
    free(lfile);
}

/* Fashion-MNIST, checked against an independent read of the raw gzip bytes. */
static void check_fashion(const char *dir, const char *prefix, int64_t expect_n)
{
    char ip[512], lp[512];
    snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    kd_dataset *ds = NULL;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_OK(kd_dataset_load_idx(ip, lp, &ds));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("fashion %s: loaded in %.2f s\n", prefix, secs);
    if (!ds)
        return;
    if (!SANITIZED)
        CHECK(secs < 5.0, "loading %s took %.2f s", prefix, secs);
    CHECK(ds->n == expect_n, "%s: n %lld", prefix, (long long)ds->n);
    CHECK(ds->shape.rank == 3 && ds->shape.dim[0] == 1 && ds->shape.dim[1] == 28 &&
              ds->shape.dim[2] == 28,
          "%s: shape rank %d", prefix, ds->shape.rank);
    CHECK(ds->num_classes == 10, "%s: num_classes %d", prefix, ds->num_classes);
    int64_t count[10] = {0}, out_of_range = 0;
    for (int64_t i = 0; i < ds->n; i++) {
        if (ds->y[i] >= 0 && ds->y[i] < 10)
            count[ds->y[i]]++;
        else
            out_of_range++;
    }
    CHECK(out_of_range == 0, "%s: %lld labels outside 0..9", prefix, (long long)out_of_range);
    for (int c = 0; c < 10; c++)
        CHECK(count[c] == expect_n / 10, "%s: class %d has %lld samples", prefix, c,
              (long long)count[c]);
    CHECK(ds->y[0] == 9, "%s: first label %d (an ankle boot in both sets)", prefix, ds->y[0]);
    CHECK_OK(kd_dataset_validate(ds, 10));

    gzFile g = gzopen(ip, "rb");
    size_t total = 16 + (size_t)expect_n * 784;
    unsigned char *raw = malloc(total);
    int got = g ? gzread(g, raw, (unsigned)total) : -1;
    if (g)
        gzclose(g);
    CHECK(got == (int)total, "raw read of %s: %d bytes", ip, got);
    if (got == (int)total) {
        int64_t bad = 0;
        float lo = 1, hi = 0;
        for (size_t i = 0; i < total - 16; i++) {
            bad += ds->x[i] != (float)raw[16 + i] / 255.0f;
            lo = ds->x[i] < lo ? ds->x[i] : lo;
            hi = ds->x[i] > hi ? ds->x[i] : hi;
        }
        CHECK(bad == 0, "%s: %lld pixels differ from the raw bytes", prefix, (long long)bad);
        CHECK(lo == 0.0f && hi == 1.0f, "%s: pixel range [%g, %g]", prefix, lo, hi);
    }
    free(raw);

    /* Written out as CSV (label first, %.9g round-trips a float), the CSV
     * reader must give back the same data set. */
    if (expect_n == 10000) {
        const char *cp = tmp_path("fashion_test.csv");
        FILE *f = fopen(cp, "w");
        fprintf(f, "label");
        for (int j = 0; j < 784; j++)
            fprintf(f, ",pixel%d", j);
        fputc('\n', f);
        for (int64_t i = 0; i < ds->n; i++) {
            fprintf(f, "%d", ds->y[i]);
            for (int j = 0; j < 784; j++)
                fprintf(f, ",%.9g", ds->x[i * 784 + j]);
            fputc('\n', f);
        }
        fclose(f);
        kd_dataset *cs = NULL;
        kd_shape img = {3, {1, 28, 28, 0}};
        clock_gettime(CLOCK_MONOTONIC, &t0);
        CHECK_OK(kd_dataset_load_csv(cp, 0, 1, &img, &cs));
        clock_gettime(CLOCK_MONOTONIC, &t1);
        secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        printf("fashion %s as CSV: loaded in %.2f s\n", prefix, secs);
        if (cs) {
            CHECK(cs->n == ds->n && cs->shape.rank == 3 && cs->shape.dim[2] == 28 &&
                      cs->num_classes == 10,
                  "CSV copy: n %lld rank %d", (long long)cs->n, cs->shape.rank);
            CHECK(memcmp(cs->x, ds->x, (size_t)ds->n * 784 * sizeof(float)) == 0,
                  "CSV copy: features differ");
            CHECK(memcmp(cs->y, ds->y, (size_t)ds->n * sizeof(int32_t)) == 0,
                  "CSV copy: labels differ");
        }
        kd_dataset_free(cs);
        remove(cp);
    }
    kd_dataset_free(ds);
}

static void test_fashion(void)
{
    const char *dir = getenv("KD_FASHION_DIR");
    if (!dir)
        dir = "/usr/share/datasets/fashion-mnist";
    char probe[512];
    snprintf(probe, sizeof probe, "%s/train-images-idx3-ubyte.gz", dir);
    if (access(probe, R_OK) != 0) {
        printf("SKIP Fashion-MNIST checks: %s not found (set KD_FASHION_DIR)\n", probe);
        return;
    }
    check_fashion(dir, "train", 60000);
    check_fashion(dir, "t10k", 10000);
}

/* ------------------------------------------------------------------- CSV */

static void test_csv(void)
{
    kd_dataset *ds = NULL;
    /* Header, CRLF endings, blanks around cells, a blank trailing line. */
    const char *p = write_text("good.csv", "label,a,b,c\r\n"
                                           "2,0.5,-1.25,3\r\n"
                                           "0, 1e-3 ,255,-0\r\n"
                                           "1,0.1,7,1e30\r\n"
                                           "\r\n");
    CHECK_OK(kd_dataset_load_csv(p, 0, 1, NULL, &ds));
    if (ds) {
        const float want[9] = {0.5f, -1.25f, 3.0f, 1e-3f, 255.0f, -0.0f, 0.1f, 7.0f, 1e30f};
        CHECK(ds->n == 3 && ds->shape.rank == 1 && ds->shape.dim[0] == 3, "n %lld dim %d",
              (long long)ds->n, ds->shape.dim[0]);
        CHECK(ds->n == 3 && memcmp(ds->x, want, sizeof want) == 0, "values differ: %g %g %g",
              ds->x[0], ds->x[3], ds->x[8]);
        CHECK(ds->y[0] == 2 && ds->y[1] == 0 && ds->y[2] == 1 && ds->num_classes == 3,
              "labels %d %d %d classes %d", ds->y[0], ds->y[1], ds->y[2], ds->num_classes);
    }
    kd_dataset_free(ds);
    ds = NULL;

    /* No header, label in the last column, a shape, no final newline. */
    p = write_text("last.csv", "1,2,3,4,5\n6,7,8,9,0");
    kd_shape s22 = {3, {1, 2, 2, 0}};
    CHECK_OK(kd_dataset_load_csv(p, 4, 0, &s22, &ds));
    if (ds) {
        CHECK(ds->n == 2 && ds->shape.rank == 3 && ds->shape.dim[1] == 2, "n %lld rank %d",
              (long long)ds->n, ds->shape.rank);
        CHECK(ds->x[0] == 1 && ds->x[3] == 4 && ds->x[4] == 6 && ds->x[7] == 9, "values %g %g",
              ds->x[0], ds->x[7]);
        CHECK(ds->y[0] == 5 && ds->y[1] == 0 && ds->num_classes == 6, "labels %d %d", ds->y[0],
              ds->y[1]);
    }
    kd_dataset_free(ds);
    ds = NULL;
    /* No label column: every column is a feature, labels -1. Gzip works too. */
    const char *nl = "1,2,3\n4,5,6\n";
    CHECK_OK(kd_dataset_load_csv(write_gz("nolabel.csv.gz", nl, strlen(nl)), -1, 0, NULL, &ds));
    if (ds)
        CHECK(ds->n == 2 && ds->shape.dim[0] == 3 && ds->x[5] == 6 && ds->y[0] == -1 &&
                  ds->y[1] == -1 && ds->num_classes == 0,
              "unlabelled: n %lld", (long long)ds->n);
    kd_dataset_free(ds);
    ds = NULL;
    /* A long line (more than the 1 MiB read block) and "3.0" as a label. */
    {
        size_t cols = 700000, cap = cols * 2 + 16;
        char *big = malloc(cap);
        size_t k = (size_t)sprintf(big, "3.0");
        for (size_t j = 0; j < cols; j++)
            k += (size_t)sprintf(big + k, ",%d", (int)(j % 10));
        big[k++] = '\n';
        big[k] = '\0';
        CHECK_OK(kd_dataset_load_csv(write_text("wide.csv", big), 0, 0, NULL, &ds));
        if (ds)
            CHECK(ds->n == 1 && ds->shape.dim[0] == (int)cols && ds->x[cols - 1] == 9.0f &&
                      ds->y[0] == 3,
                  "wide line: dim %d", ds->shape.dim[0]);
        kd_dataset_free(ds);
        ds = NULL;
        free(big);
    }

    CHECK_FAILS(kd_dataset_load_csv(p, 4, 0, &(kd_shape){1, {5, 0, 0, 0}}, &ds), KD_ERR_SHAPE,
                "shape 5 has 5 values but the rows have 4 features");
    CHECK_FAILS(kd_dataset_load_csv(tmp_path("missing.csv"), 0, 0, NULL, &ds), KD_ERR_IO,
                "missing.csv: cannot open: No such file");
    CHECK_FAILS(kd_dataset_load_csv(write_text("badnum.csv", "1,2,3\n0,1.2x,3\n"), 0, 0, NULL, &ds),
                KD_ERR_FORMAT, "badnum.csv:line 2, column 2: not a number (trailing characters): '1.2x'");
    CHECK_FAILS(kd_dataset_load_csv(write_text("word.csv", "1,2,3\n0,abc,3\n"), 0, 0, NULL, &ds),
                KD_ERR_FORMAT, "line 2, column 2: not a number: 'abc'");
    CHECK_FAILS(kd_dataset_load_csv(write_text("emptycell.csv", "1,2,3\n0,,3\n"), 0, 0, NULL, &ds),
                KD_ERR_FORMAT, "line 2, column 2: empty cell");
    CHECK_FAILS(kd_dataset_load_csv(write_text("huge.csv", "1,2,3\n0,1e99,3\n"), 0, 0, NULL, &ds),
                KD_ERR_FORMAT, "line 2, column 2: out of float range");
    CHECK_FAILS(kd_dataset_load_csv(write_text("few.csv", "h1,h2,h3\n1,2,3\n0,1\n"), 0, 1, NULL, &ds),
                KD_ERR_FORMAT, "few.csv:line 3: too few columns: 2, expected 3");
    CHECK_FAILS(kd_dataset_load_csv(write_text("many.csv", "1,2,3\n0,1,2,3,4\n"), 0, 0, NULL, &ds),
                KD_ERR_FORMAT, "many.csv:line 2: too many columns: 5, expected 3");
    CHECK_FAILS(kd_dataset_load_csv(write_text("fraclabel.csv", "1,2\n2.5,3\n"), 0, 0, NULL, &ds),
                KD_ERR_FORMAT, "line 2, column 1 (label): not an integer");
    CHECK_FAILS(kd_dataset_load_csv(write_text("neglabel.csv", "1,2\n-1,3\n"), 0, 0, NULL, &ds),
                KD_ERR_FORMAT, "line 2, column 1 (label): negative");
    CHECK_FAILS(kd_dataset_load_csv(write_text("wordlabel.csv", "cat,2\n"), 0, 0, NULL, &ds),
                KD_ERR_FORMAT, "line 1, column 1 (label): not an integer");
    CHECK_FAILS(kd_dataset_load_csv(write_text("empty.csv", ""), 0, 0, NULL, &ds), KD_ERR_FORMAT,
                "no samples");
    CHECK_FAILS(kd_dataset_load_csv(write_text("headeronly.csv", "label,a\n"), 0, 1, NULL, &ds),
                KD_ERR_FORMAT, "no samples");
    CHECK_FAILS(kd_dataset_load_csv(write_text("blanks.csv", "\n\n"), 0, 0, NULL, &ds),
                KD_ERR_FORMAT, "no samples");
    CHECK_FAILS(kd_dataset_load_csv(write_text("gap.csv", "1,2\n\n3,4\n"), 0, 0, NULL, &ds),
                KD_ERR_FORMAT, "gap.csv:line 2: blank line before more data");
    CHECK_FAILS(kd_dataset_load_csv(write_text("labelcol.csv", "1,2\n"), 5, 0, NULL, &ds),
                KD_ERR_FORMAT, "label column 5");
    CHECK_FAILS(kd_dataset_load_csv(write_text("onlylabel.csv", "1\n"), 0, 0, NULL, &ds),
                KD_ERR_FORMAT, "no feature columns");
    CHECK_FAILS(kd_dataset_load_csv(write_bytes("nul.csv", "1,2\n3,\0\n", 7), 0, 0, NULL, &ds),
                KD_ERR_FORMAT, "nul.csv:line 2: NUL byte");
    CHECK_FAILS(kd_dataset_load_csv(p, -2, 0, NULL, &ds), KD_ERR_INVALID, "label column -2");
    /* A gzip CSV cut short must not pass as a shorter file. */
    {
        char text[4000];
        size_t k = 0;
        for (int i = 0; i < 300; i++)
            k += (size_t)sprintf(text + k, "%d,%d.5\n", i % 3, i);
        const char *gp = write_gz("cut.csv.gz", text, k);
        size_t glen;
        unsigned char *g = read_all(gp, &glen);
        CHECK_FAILS(kd_dataset_load_csv(write_bytes("cut2.csv.gz", g, glen / 2), 0, 0, NULL, &ds),
                    KD_ERR_FORMAT, "truncated gzip stream");
        free(g);
    }
    CHECK(ds == NULL, "out set on failure");
}


/* What spreadsheet programs write: a UTF-8 byte order mark, ';' or tab
 * between columns (detected, or given), and what the sniffer tells. */
static void test_csv_dialects(void)
{
    const float want[4] = {0.5f, -1.25f, 3, 1e-3f};
    const char *texts[][2] = {
        {"bom.csv", "\xEF\xBB\xBF" "2,0.5,-1.25\n0,3,1e-3\n"},
        {"bomheader.csv", "\xEF\xBB\xBF" "label,a,b\n2,0.5,-1.25\n0,3,1e-3\n"},
        {"semi.csv", "2;0.5;-1.25\n0;3;1e-3\n"},
        {"tab.tsv", "2\t0.5\t-1.25\r\n0\t3\t1e-3\r\n"},
        {"semi.csv.gz", "2;0.5;-1.25\n0;3;1e-3\n"},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        kd_dataset *ds = NULL;
        const char *name = texts[i][0], *text = texts[i][1];
        const char *p = strstr(name, ".gz") ? write_gz(name, text, strlen(text)) : write_text(name, text);
        CHECK_OK(kd_dataset_load_csv(p, 0, strstr(name, "header") != NULL, NULL, &ds));
        if (ds) {
            CHECK(ds->n == 2 && ds->shape.dim[0] == 2 && memcmp(ds->x, want, sizeof want) == 0 && ds->y[0] == 2 &&
                      ds->y[1] == 0,
                  "%s: n %lld width %d x0 %g y0 %d", name, (long long)ds->n, ds->shape.dim[0], ds->x[0], ds->y[0]);
        }
        kd_dataset_free(ds);
    }
    /* A given delimiter; decimal commas in a ';' file are refused, not misread. */
    kd_dataset *ds = NULL;
    kd_csv_options o = kd_csv_options_default();
    o.delimiter = '|';
    CHECK_OK(kd_dataset_load_csv_opts(write_text("pipe.csv", "2|0.5|-1.25\n0|3|1e-3\n"), &o, NULL, &ds));
    if (ds)
        CHECK(ds->n == 2 && memcmp(ds->x, want, sizeof want) == 0, "pipe: n %lld", (long long)ds->n);
    kd_dataset_free(ds);
    ds = NULL;
    CHECK_FAILS(kd_dataset_load_csv(write_text("pipe2.csv", "2|0.5|-1.25\n"), 0, 0, NULL, &ds), KD_ERR_FORMAT,
                "no feature columns, only the label (no ',', ';' or tab on the line)");
    CHECK_FAILS(kd_dataset_load_csv(write_text("decimal.csv", "1;0,5;0,25\n"), 0, 0, NULL, &ds), KD_ERR_FORMAT,
                "decimal.csv:line 1, column 2: not a number (trailing characters): '0,5' (a decimal comma? numbers "
                "must use '.')");
    o.delimiter = '.';
    CHECK_FAILS(kd_dataset_load_csv_opts(tmp_path("pipe.csv"), &o, NULL, &ds), KD_ERR_INVALID, "delimiter");
    kd_shape two = {1, {2, 0, 0, 0}};
    o.delimiter = '\t';
    int64_t count = 0;
    CHECK_OK(kd_convert_csv_to_spool_opts(write_text("tab2.csv", "1\t2\t3\n0\t4\t5\n"), &o, &two,
                                          tmp_path("tab2.spool"), &count));
    CHECK(count == 2, "tab convert: %lld samples", (long long)count);

    /* The sniffer: columns, delimiter and whether line 1 is a header. */
    kd_csv_layout l;
    kd_csv_options d = kd_csv_options_default();
    CHECK_OK(kd_csv_sniff(write_text("hdr.csv", "label;a;b\n1;2;3\n"), &d, &l));
    CHECK(l.delimiter == ';' && l.columns == 3 && l.header_likely == 1, "header: '%c' %d %d", l.delimiter,
          l.columns, l.header_likely);
    d.has_header = 1;
    CHECK_OK(kd_csv_sniff(tmp_path("hdr.csv"), &d, &l));
    CHECK(l.columns == 3 && l.header_likely == 0, "header skipped: %d %d", l.columns, l.header_likely);
    d.has_header = 0;
    CHECK_OK(kd_csv_sniff(tmp_path("semi.csv"), &d, &l));
    CHECK(l.delimiter == ';' && l.columns == 3 && l.header_likely == 0, "numbers: '%c' %d %d", l.delimiter, l.columns,
          l.header_likely);
    CHECK_OK(kd_csv_sniff(tmp_path("pipe.csv"), &d, &l));
    CHECK(l.delimiter == ',' && l.columns == 1, "one column: '%c' %d", l.delimiter, l.columns);
    CHECK_FAILS(kd_csv_sniff(write_text("nothing.csv", "\n"), &d, &l), KD_ERR_FORMAT, "no samples");
}

/* Formats told by content, whatever the name. */
static void test_data_format(void)
{
    kd_data_format f = 0;
    CHECK_OK(kd_data_format_detect(write_text("rows.txt", "1,2,3\n"), &f));
    CHECK(f == KD_DATA_CSV, "CSV named .txt: %d", (int)f);
    CHECK_OK(kd_data_format_detect(write_text("ROWS.CSV", "\xEF\xBB\xBF" "a;b\n1;2\n"), &f));
    CHECK(f == KD_DATA_CSV, "CSV named .CSV with a BOM: %d", (int)f);
    CHECK_OK(kd_data_format_detect(write_text("rows.csv", "# made by hand\n\n1 3:0.5 7:1\n"), &f));
    CHECK(f == KD_DATA_LIBSVM, "LibSVM named .csv, after a comment line: %d", (int)f);
    CHECK_OK(kd_data_format_detect(write_text("data", "1 3:0.5 7:1\n0 1:2\n"), &f));
    CHECK(f == KD_DATA_LIBSVM, "LibSVM without extension: %d", (int)f);
    CHECK_OK(kd_data_format_detect(write_gz("data.gz", "1 3:0.5\n", 8), &f));
    CHECK(f == KD_DATA_LIBSVM, "gzip LibSVM: %d", (int)f);
    uint32_t dims[3] = {1, 2, 2};
    unsigned char pix[4] = {0, 1, 2, 3};
    size_t len;
    unsigned char *idx = make_idx(0x08, 3, dims, pix, sizeof pix, &len);
    CHECK_OK(kd_data_format_detect(write_gz("images.TXT", idx, len), &f));
    CHECK(f == KD_DATA_IDX, "gzip IDX named .TXT: %d", (int)f);
    free(idx);
    CHECK_OK(kd_data_format_detect(tmp_path("tab2.spool"), &f));
    CHECK(f == KD_DATA_SPOOL, "spool: %d", (int)f);
    CHECK_FAILS(kd_data_format_detect(write_bytes("ck.csv", "\x89HDF\r\n\x1a\n\0\0", 10), &f), KD_ERR_FORMAT,
                "an HDF5 file");
    CHECK_FAILS(kd_data_format_detect(write_bytes("bin.csv", "\x01\x02\x03\x04", 4), &f), KD_ERR_FORMAT,
                "bin.csv: not a data file");
    CHECK_FAILS(kd_data_format_detect(write_text("empty.txt", ""), &f), KD_ERR_FORMAT, "empty file");
    CHECK_FAILS(kd_data_format_detect(tmp_path("missing.csv"), &f), KD_ERR_IO, "missing.csv");
}

/* ---------------------------------------------------------------- LibSVM */

static void test_libsvm(void)
{
    kd_dataset *ds = NULL;
    const char *p = write_text("good.svm", "# a comment line\n"
                                           "1 1:0.5 3:-2\n"
                                           "0\t2:4   # features 1 and 3 are zero\r\n"
                                           "\n"
                                           "2\n"
                                           "+1 1:1e-3 2:0.25 3:7\n");
    CHECK_OK(kd_dataset_load_libsvm(p, 0, &ds));
    if (ds) {
        const float want[12] = {0.5f, 0, -2, 0, 4, 0, 0, 0, 0, 1e-3f, 0.25f, 7};
        CHECK(ds->n == 4 && ds->shape.rank == 1 && ds->shape.dim[0] == 3, "n %lld dim %d",
              (long long)ds->n, ds->shape.dim[0]);
        CHECK(ds->n == 4 && memcmp(ds->x, want, sizeof want) == 0, "values differ: %g %g",
              ds->x[0], ds->x[9]);
        CHECK(ds->y[0] == 1 && ds->y[1] == 0 && ds->y[2] == 2 && ds->y[3] == 1 &&
                  ds->num_classes == 3,
              "labels %d %d %d %d", ds->y[0], ds->y[1], ds->y[2], ds->y[3]);
    }
    kd_dataset_free(ds);
    ds = NULL;
    CHECK_OK(kd_dataset_load_libsvm(p, 5, &ds));
    if (ds)
        CHECK(ds->n == 4 && ds->shape.dim[0] == 5 && ds->x[5 + 1] == 4 && ds->x[3 * 5 + 2] == 7 &&
                  ds->x[3 * 5 + 4] == 0,
              "width 5: dim %d", ds->shape.dim[0]);
    kd_dataset_free(ds);
    ds = NULL;

    CHECK_FAILS(kd_dataset_load_libsvm(p, 2, &ds), KD_ERR_FORMAT,
                "good.svm:line 2, token 3 '3:-2': index 3 > num_features 2");
    CHECK_FAILS(kd_dataset_load_libsvm(tmp_path("missing.svm"), 0, &ds), KD_ERR_IO,
                "missing.svm: cannot open");
    CHECK_FAILS(kd_dataset_load_libsvm(write_text("tok.svm", "1 1:2\n0 1:1 oops\n"), 0, &ds),
                KD_ERR_FORMAT, "tok.svm:line 2, token 3 'oops': expected index:value");
    CHECK_FAILS(kd_dataset_load_libsvm(write_text("val.svm", "1 1:2 2:x\n"), 0, &ds),
                KD_ERR_FORMAT, "line 1, token 3 '2:x': value not a number");
    CHECK_FAILS(kd_dataset_load_libsvm(write_text("noval.svm", "1 1:\n"), 0, &ds), KD_ERR_FORMAT,
                "token 2 '1:': value missing");
    CHECK_FAILS(kd_dataset_load_libsvm(write_text("idx.svm", "1 a:2\n"), 0, &ds), KD_ERR_FORMAT,
                "token 2 'a:2': index is not a positive integer");
    CHECK_FAILS(kd_dataset_load_libsvm(write_text("asc.svm", "1 1:1\n1 3:1 2:1\n"), 0, &ds),
                KD_ERR_FORMAT, "asc.svm:line 2, token 3 '2:1': index 2 after 3 (indices must be strictly ascending)");
    CHECK_FAILS(kd_dataset_load_libsvm(write_text("dup.svm", "1 2:1 2:1\n"), 0, &ds),
                KD_ERR_FORMAT, "strictly ascending");
    CHECK_FAILS(kd_dataset_load_libsvm(write_text("zero.svm", "1 0:1 2:1\n"), 0, &ds),
                KD_ERR_FORMAT, "line 1, token 2 '0:1': index 0 (indices are 1-based)");
    CHECK_FAILS(kd_dataset_load_libsvm(write_text("lab.svm", "1 1:1\n1.5 1:1\n"), 0, &ds),
                KD_ERR_FORMAT, "lab.svm:line 2, token 1 '1.5': label not an integer");
    CHECK_FAILS(kd_dataset_load_libsvm(write_text("neg.svm", "-1 1:1\n"), 0, &ds), KD_ERR_FORMAT,
                "token 1 '-1': label negative");
    CHECK_FAILS(kd_dataset_load_libsvm(write_text("empty.svm", ""), 0, &ds), KD_ERR_FORMAT,
                "no samples");
    CHECK_FAILS(kd_dataset_load_libsvm(write_text("comments.svm", "# nothing\n\n  # here\n"), 0, &ds),
                KD_ERR_FORMAT, "no samples");
    CHECK_FAILS(kd_dataset_load_libsvm(write_text("nofeat.svm", "1\n0\n"), 0, &ds), KD_ERR_FORMAT,
                "no features");
    CHECK_FAILS(kd_dataset_load_libsvm(p, -1, &ds), KD_ERR_INVALID, "num_features -1");
    CHECK(ds == NULL, "out set on failure");
}

/* -------------------------------------------------------------- validate */

static void test_validate(void)
{
    kd_dataset *ds = NULL;
    kd_shape s3 = {1, {3, 0, 0, 0}};
    CHECK_OK(kd_dataset_alloc(4, &s3, &ds));
    if (!ds)
        return;
    /* Unlabelled data is fine for prediction (0), not for training. */
    CHECK_OK(kd_dataset_validate(ds, 0));
    CHECK_FAILS(kd_dataset_validate(ds, 10), KD_ERR_INVALID, "sample 0: no label (-1)");
    const int32_t labels[4] = {0, 9, 3, 9};
    memcpy(ds->y, labels, sizeof labels);
    CHECK_OK(kd_dataset_validate(ds, 10));
    ds->y[2] = 12;
    CHECK_FAILS(kd_dataset_validate(ds, 10), KD_ERR_INVALID,
                "sample 2: label 12 outside the 10 classes [0, 9]");
    ds->y[2] = 3;
    CHECK_FAILS(kd_dataset_validate(ds, 5), KD_ERR_INVALID,
                "sample 1: label 9 outside the 5 classes [0, 4]");
    ds->y[1] = -7;
    CHECK_FAILS(kd_dataset_validate(ds, 10), KD_ERR_INVALID, "sample 1: label -7 outside");
    ds->y[1] = 9;
    CHECK_FAILS(kd_dataset_validate(ds, -1), KD_ERR_INVALID, "num_classes -1");

    ds->x[2 * 3 + 1] = NAN;
    ds->x[3 * 3 + 0] = INFINITY;
    CHECK_FAILS(kd_dataset_validate(ds, 10), KD_ERR_NUMERIC, "sample 2, feature 1: NaN");
    CHECK_FAILS(kd_dataset_validate(ds, 0), KD_ERR_NUMERIC, "sample 2, feature 1: NaN");
    ds->x[2 * 3 + 1] = 0;
    CHECK_FAILS(kd_dataset_validate(ds, 10), KD_ERR_NUMERIC, "sample 3, feature 0: +Inf");
    ds->x[3 * 3 + 0] = -INFINITY;
    CHECK_FAILS(kd_dataset_validate(ds, 10), KD_ERR_NUMERIC, "sample 3, feature 0: -Inf");
    ds->x[3 * 3 + 0] = 1;
    CHECK_OK(kd_dataset_validate(ds, 10));
    CHECK_FAILS(kd_dataset_validate(NULL, 10), KD_ERR_INVALID, "no dataset");
    kd_dataset_free(ds);

    /* NaN and Inf spelled in a file load, and validation catches them. */
    ds = NULL;
    CHECK_OK(kd_dataset_load_csv(write_text("nan.csv", "0,1,2\n1,nan,3\n"), 0, 0, NULL, &ds));
    if (ds)
        CHECK_FAILS(kd_dataset_validate(ds, 2), KD_ERR_NUMERIC, "sample 1, feature 0: NaN");
    kd_dataset_free(ds);
    ds = NULL;
    CHECK_OK(kd_dataset_load_libsvm(write_text("inf.svm", "0 1:1\n1 2:-inf\n"), 0, &ds));
    if (ds)
        CHECK_FAILS(kd_dataset_validate(ds, 2), KD_ERR_NUMERIC, "sample 1, feature 1: -Inf");
    kd_dataset_free(ds);
    ds = NULL;
    /* Labels 0..11 in the file, a 10-class network. */
    CHECK_OK(kd_dataset_load_csv(write_text("twelve.csv", "0,1\n11,1\n"), 0, 0, NULL, &ds));
    if (ds) {
        CHECK(ds->num_classes == 12, "num_classes %d", ds->num_classes);
        CHECK_FAILS(kd_dataset_validate(ds, 10), KD_ERR_INVALID,
                    "sample 1: label 11 outside the 10 classes [0, 9]");
    }
    kd_dataset_free(ds);
}

static void remove_tmp_dir(void)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp_dir);
}

int main(void)
{
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_shapes();
    test_idx_round_trip();
    test_idx_errors();
    test_csv();
    test_csv_dialects();
    test_libsvm();
    test_data_format();
    test_validate();
    test_fashion();
    remove_tmp_dir();
    return check_summary();
}
