/* Spool files (io/spool.c): the byte layout, save/load round trips, and a
 * clear error for every way a file can be wrong. Files are built byte by
 * byte here, independently of the writer, in a mkdtemp directory. */
#include "kindling.h"

#include "check.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char tmp_dir[] = "/tmp/kd_test_spool_XXXXXX";

static const char *tmp_path(const char *name)
{
    static char bufs[128][600];
    static int next;
    if (next == 128) {
        fprintf(stderr, "tmp_path: too many paths\n");
        exit(2);
    }
    char *b = bufs[next++];
    snprintf(b, sizeof bufs[0], "%s/%s", tmp_dir, name);
    return b;
}

/* ------------------------------------------------ hand-built spool bytes */
typedef struct spool_bytes {
    unsigned char *data;
    size_t len;
} spool_bytes;

static void le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void le64(unsigned char *p, uint64_t v)
{
    le32(p, (uint32_t)v);
    le32(p + 4, (uint32_t)(v >> 32));
}

/* The format as documented: header, features, labels (when y), CRC over the payload. */
static spool_bytes build(int rank, const uint32_t dims[3], uint64_t count, const float *x,
                         const int32_t *y)
{
    size_t size = 1;
    for (int i = 0; i < rank; i++)
        size *= dims[i];
    size_t fbytes = (size_t)count * size * 4, lbytes = y ? (size_t)count * 4 : 0;
    spool_bytes b = {calloc(1, 64 + fbytes + lbytes), 64 + fbytes + lbytes};
    unsigned char *h = b.data;
    memcpy(h, "KDSPOOL1", 8);
    le32(h + 8, 1);
    le32(h + 12, (uint32_t)rank);
    for (int i = 0; i < rank; i++)
        le32(h + 16 + 4 * i, dims[i]);
    le32(h + 28, y ? 1u : 0u);
    le64(h + 32, count);
    unsigned char *p = h + 64;
    for (size_t i = 0; i < count * size; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], 4);
        le32(p + 4 * i, bits);
    }
    for (size_t i = 0; y && i < count; i++)
        le32(p + fbytes + 4 * i, (uint32_t)y[i]);
    uLong crc = crc32(crc32(0L, Z_NULL, 0), p, (uInt)(fbytes + lbytes));
    le64(h + 40, (uint64_t)crc);
    return b;
}

static const char *write_file(const char *name, const void *data, size_t len)
{
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len)) {
        perror(path);
        exit(2);
    }
    fclose(f);
    return path;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *len = 0;
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *d = malloc(n ? (size_t)n : 1);
    *len = fread(d, 1, (size_t)n, f);
    fclose(f);
    return d;
}

/* A variant of good bytes with one change, written to its own file. */
static const char *variant(const char *name, const spool_bytes *good, size_t len, size_t off,
                           const void *patch, size_t patch_len)
{
    unsigned char *d = malloc(len > good->len ? len : good->len);
    memcpy(d, good->data, good->len);
    if (len > good->len)
        memset(d + good->len, 0, len - good->len);
    if (patch)
        memcpy(d + off, patch, patch_len);
    const char *path = write_file(name, d, len);
    free(d);
    return path;
}

static const char *with_u32(const char *name, const spool_bytes *good, size_t off, uint32_t v)
{
    unsigned char p[4];
    le32(p, v);
    return variant(name, good, good->len, off, p, 4);
}

static int count_tmp_files(void)
{
    DIR *d = opendir(tmp_dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strstr(e->d_name, ".tmp-") != NULL;
    if (d)
        closedir(d);
    return n;
}

/* ------------------------------------------------------------------ tests */
static void test_reads_documented_layout(void)
{
    const uint32_t dims[3] = {3, 0, 0};
    const float x[] = {0.5f, -1.25f, 3e-8f, 1e30f, 0.0f, -0.0f};
    const int32_t y[] = {7, 0};
    spool_bytes b = build(1, dims, 2, x, y);
    const char *path = write_file("layout.spool", b.data, b.len);

    kd_dataset *ds = NULL;
    CHECK_OK(kd_dataset_load_spool(path, &ds));
    if (ds) {
        CHECK(ds->n == 2 && ds->shape.rank == 1 && ds->shape.dim[0] == 3, "n %lld rank %d dim %d",
              (long long)ds->n, ds->shape.rank, ds->shape.dim[0]);
        CHECK(memcmp(ds->x, x, sizeof x) == 0, "features differ");
        CHECK(ds->y[0] == 7 && ds->y[1] == 0, "labels %d %d", ds->y[0], ds->y[1]);
        CHECK(ds->num_classes == 8, "num_classes %d", ds->num_classes);
    }
    kd_dataset_free(ds);

    /* The writer produces exactly these bytes. */
    kd_shape s = {.rank = 1, .dim = {3}};
    CHECK_OK(kd_dataset_alloc(2, &s, &ds));
    memcpy(ds->x, x, sizeof x);
    memcpy(ds->y, y, sizeof y);
    const char *out = tmp_path("written.spool");
    CHECK_OK(kd_dataset_save_spool(out, ds));
    kd_dataset_free(ds);
    size_t len;
    unsigned char *got = read_all(out, &len);
    CHECK(got && len == b.len && memcmp(got, b.data, len) == 0, "written %zu bytes, documented %zu, %s",
          len, b.len, got && len == b.len ? "contents differ" : "sizes differ");
    free(got);
    free(b.data);
}

static void test_round_trips(void)
{
    /* Rank 3 without labels: every label comes back -1. */
    kd_shape s = {.rank = 3, .dim = {2, 3, 4}};
    kd_dataset *ds = NULL, *back = NULL;
    CHECK_OK(kd_dataset_alloc(5, &s, &ds));
    for (size_t i = 0; i < 5 * 24; i++)
        ds->x[i] = (float)i * 0.37f - 11.0f;
    const char *path = tmp_path("image.spool");
    CHECK_OK(kd_dataset_save_spool(path, ds));
    CHECK_OK(kd_dataset_load_spool(path, &back));
    if (back) {
        CHECK(back->n == 5 && back->shape.rank == 3 && back->shape.dim[0] == 2 && back->shape.dim[1] == 3 &&
                  back->shape.dim[2] == 4, "shape rank %d", back->shape.rank);
        CHECK(memcmp(back->x, ds->x, 5 * 24 * sizeof(float)) == 0, "features differ");
        int all_unlabelled = 1;
        for (int i = 0; i < 5; i++)
            all_unlabelled &= back->y[i] == -1;
        CHECK(all_unlabelled && back->num_classes == 0, "labels should be -1, num_classes %d", back->num_classes);
    }
    kd_dataset_free(back);
    back = NULL;

    /* Saving again over the file replaces it and leaves no temporary behind. */
    for (int i = 0; i < 5; i++)
        ds->y[i] = 4 - i;
    CHECK_OK(kd_dataset_save_spool(path, ds));
    CHECK_OK(kd_dataset_load_spool(path, &back));
    CHECK(back && back->y[0] == 4 && back->y[4] == 0 && back->num_classes == 5, "labels after overwrite");
    CHECK(count_tmp_files() == 0, "%d temporary files left", count_tmp_files());
    kd_dataset_free(back);
    kd_dataset_free(ds);

    /* An empty partition: count 0 keeps its shape. */
    kd_shape s1 = {.rank = 1, .dim = {784}};
    CHECK_OK(kd_dataset_alloc(0, &s1, &ds));
    const char *empty = tmp_path("empty.spool");
    CHECK_OK(kd_dataset_save_spool(empty, ds));
    kd_dataset_free(ds);
    struct stat st;
    CHECK(stat(empty, &st) == 0 && st.st_size == 64, "empty spool is %lld bytes", (long long)st.st_size);
    back = NULL;
    CHECK_OK(kd_dataset_load_spool(empty, &back));
    CHECK(back && back->n == 0 && back->shape.rank == 1 && back->shape.dim[0] == 784, "empty spool shape");
    kd_dataset_free(back);
}

static void test_rejects_bad_files(void)
{
    const uint32_t dims[3] = {2, 2, 0};
    const float x[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const int32_t y[] = {1, 2, 0};
    spool_bytes g = build(2, dims, 3, x, y); /* 64 + 48 + 12 bytes */
    kd_dataset *ds = NULL;

    CHECK_OK(kd_dataset_load_spool(write_file("good.spool", g.data, g.len), &ds));
    kd_dataset_free(ds);
    ds = NULL;

    CHECK_FAILS(kd_dataset_load_spool(tmp_path("missing.spool"), &ds), KD_ERR_IO, "missing.spool: cannot open");
    CHECK_FAILS(kd_dataset_load_spool(tmp_dir, &ds), KD_ERR_IO, "not a regular file");
    CHECK_FAILS(kd_dataset_load_spool(variant("short.spool", &g, 40, 0, NULL, 0), &ds), KD_ERR_FORMAT,
                "file has 40 bytes, shorter than the 64-byte spool header");
    CHECK_FAILS(kd_dataset_load_spool(variant("magic.spool", &g, g.len, 0, "KDSPOOL2", 8), &ds), KD_ERR_FORMAT,
                "offset 0 (magic): bad magic \"KDSPOOL2\"");
    CHECK_FAILS(kd_dataset_load_spool(variant("csv.spool", &g, g.len, 0, "1,2,3\n\x01\x02", 8), &ds),
                KD_ERR_FORMAT, "1,2,3\\x0a\\x01\\x02");
    CHECK_FAILS(kd_dataset_load_spool(with_u32("version.spool", &g, 8, 2), &ds), KD_ERR_FORMAT,
                "offset 8 (version): unsupported spool version 2");
    CHECK_FAILS(kd_dataset_load_spool(with_u32("rank0.spool", &g, 12, 0), &ds), KD_ERR_FORMAT,
                "offset 12 (rank): sample rank 0, expected 1..3");
    CHECK_FAILS(kd_dataset_load_spool(with_u32("rank4.spool", &g, 12, 4), &ds), KD_ERR_FORMAT,
                "offset 12 (rank): sample rank 4");
    CHECK_FAILS(kd_dataset_load_spool(with_u32("dim0.spool", &g, 20, 0), &ds), KD_ERR_FORMAT,
                "offset 20 (dims[1]): dimension 0");
    CHECK_FAILS(kd_dataset_load_spool(with_u32("dimbig.spool", &g, 16, 0x80000000u), &ds), KD_ERR_FORMAT,
                "offset 16 (dims[0]): dimension 2147483648");
    CHECK_FAILS(kd_dataset_load_spool(with_u32("dim2.spool", &g, 24, 5), &ds), KD_ERR_FORMAT,
                "offset 24 (dims[2]): 5 beyond rank 2, expected 0");
    CHECK_FAILS(kd_dataset_load_spool(with_u32("flags.spool", &g, 28, 3), &ds), KD_ERR_FORMAT,
                "offset 28 (flags): unknown flag bits 0x2");
    CHECK_FAILS(kd_dataset_load_spool(with_u32("crchigh.spool", &g, 44, 1), &ds), KD_ERR_FORMAT,
                "offset 40 (crc32): high 32 bits");
    CHECK_FAILS(kd_dataset_load_spool(variant("reserved.spool", &g, g.len, 60, "\x01", 1), &ds), KD_ERR_FORMAT,
                "offset 60 (reserved): byte 0x01");

    /* Sizes: a truncated or padded payload names what it expected. */
    CHECK_FAILS(kd_dataset_load_spool(variant("trunc_x.spool", &g, 64 + 40, 0, NULL, 0), &ds), KD_ERR_FORMAT,
                "offset 64 (features): expected 48 bytes of features (3 samples of shape 2x2), file has 40");
    CHECK_FAILS(kd_dataset_load_spool(variant("trunc_y.spool", &g, g.len - 1, 0, NULL, 0), &ds), KD_ERR_FORMAT,
                "offset 112 (labels): expected 12 bytes of labels, file has 11");
    CHECK_FAILS(kd_dataset_load_spool(variant("long.spool", &g, g.len + 3, 0, NULL, 0), &ds), KD_ERR_FORMAT,
                "offset 124: 3 unexpected bytes after the labels");
    CHECK_FAILS(kd_dataset_load_spool(with_u32("nolabels.spool", &g, 28, 0), &ds), KD_ERR_FORMAT,
                "12 unexpected bytes after the features");
    unsigned char huge[8];
    le64(huge, UINT64_MAX / 2);
    CHECK_FAILS(kd_dataset_load_spool(variant("huge.spool", &g, g.len, 32, huge, 8), &ds), KD_ERR_FORMAT,
                "offset 32 (count)");
    le64(huge, 1000000);
    CHECK_FAILS(kd_dataset_load_spool(variant("count.spool", &g, g.len, 32, huge, 8), &ds), KD_ERR_FORMAT,
                "expected 16000000 bytes of features");

    /* Payload bytes: one flipped bit anywhere is caught by the CRC. */
    CHECK_FAILS(kd_dataset_load_spool(variant("flip_x.spool", &g, g.len, 64 + 17, "\x7f", 1), &ds),
                KD_ERR_FORMAT, "payload corrupt");
    CHECK_FAILS(kd_dataset_load_spool(variant("flip_y.spool", &g, g.len, g.len - 1, "\x01", 1), &ds),
                KD_ERR_FORMAT, "payload corrupt: CRC32 of the 60 payload bytes");

    /* A negative label with a matching CRC is still rejected, by position. */
    const int32_t bad_y[] = {1, -3, 0};
    spool_bytes nb = build(2, dims, 3, x, bad_y);
    CHECK_FAILS(kd_dataset_load_spool(write_file("neg.spool", nb.data, nb.len), &ds), KD_ERR_FORMAT,
                "offset 116 (label of sample 1): -3; labels must be >= 0");
    CHECK(ds == NULL, "no dataset after a failed load");
    CHECK_FAILS(kd_dataset_load_spool(NULL, &ds), KD_ERR_INVALID, "no path");
    free(nb.data);
    free(g.data);
}

static void test_save_errors(void)
{
    kd_shape s = {.rank = 1, .dim = {2}};
    kd_dataset *ds = NULL;
    CHECK_OK(kd_dataset_alloc(3, &s, &ds));
    if (!ds)
        return;
    const char *path = tmp_path("save_err.spool");

    ds->y[0] = 1; /* 1, -1, -1: a mix */
    CHECK_FAILS(kd_dataset_save_spool(path, ds), KD_ERR_INVALID, "sample 1 has no label (-1) but 1 others");
    ds->y[1] = ds->y[2] = -2;
    CHECK_FAILS(kd_dataset_save_spool(path, ds), KD_ERR_INVALID, "sample 1 has label -2");
    ds->y[1] = ds->y[2] = 0;
    CHECK_FAILS(kd_dataset_save_spool(tmp_path("no/such/dir/x.spool"), ds), KD_ERR_IO,
                "cannot create temporary file");

    /* The target is a directory: the rename fails, the directory and its
     * contents stay, and the temporary file is removed. */
    const char *dir = tmp_path("occupied");
    mkdir(dir, 0700);
    const char *inside = write_file("occupied/keep", "k", 1);
    CHECK_FAILS(kd_dataset_save_spool(dir, ds), KD_ERR_IO, "cannot rename");
    struct stat st;
    CHECK(stat(inside, &st) == 0, "the directory's contents were touched");
    CHECK(count_tmp_files() == 0, "%d temporary files left", count_tmp_files());
    unlink(inside);
    rmdir(dir);

    kd_shape s4 = {.rank = 4, .dim = {1, 1, 1, 1}};
    kd_dataset four = *ds;
    four.shape = s4;
    CHECK_FAILS(kd_dataset_save_spool(path, &four), KD_ERR_SHAPE, "rank 4");
    CHECK_FAILS(kd_dataset_save_spool(path, NULL), KD_ERR_INVALID, "no dataset");
    kd_dataset_free(ds);
}

static void remove_tree(void)
{
    DIR *d = opendir(tmp_dir);
    char p[700];
    for (struct dirent *e; d && (e = readdir(d));) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", tmp_dir, e->d_name);
            unlink(p);
        }
    }
    if (d)
        closedir(d);
    rmdir(tmp_dir);
}

int main(void)
{
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_reads_documented_layout();
    test_round_trips();
    test_rejects_bad_files();
    test_save_errors();
    remove_tree();
    return check_summary();
}
