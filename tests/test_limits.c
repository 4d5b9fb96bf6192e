/* Resource limits: memory-mapped spool files (same data as before, clean
 * free), the streaming converters (IDX/CSV/LibSVM -> spool equal the
 * loaders' data), and the refusals of data sets that do not fit (a
 * kd_set_memory_limit budget, RLIMIT_AS in a forked child, a LibSVM line
 * with a huge feature index). Files live in a mkdtemp directory. */
#include "kindling.h"

#include "check.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define KD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KD_ASAN 1
#endif
#endif

static char tmp_dir[] = "/tmp/kd_test_limits_XXXXXX";

static const char *tmp_path(const char *name)
{
    static char bufs[64][600];
    static int next;
    char *b = bufs[next++ % 64];
    snprintf(b, sizeof bufs[0], "%s/%s", tmp_dir, name);
    return b;
}

static const char *write_bytes(const char *name, const void *data, size_t len, int gz)
{
    const char *p = tmp_path(name);
    if (gz) {
        gzFile g = gzopen(p, "wb");
        if (!g || (len && gzwrite(g, data, (unsigned)len) != (int)len) || gzclose(g) != Z_OK) {
            fprintf(stderr, "cannot write %s\n", p);
            exit(2);
        }
        return p;
    }
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", p);
        exit(2);
    }
    return p;
}

static uint32_t rng_state = 12345;
static uint32_t rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

static void be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* n images of 28x28 uint8 and their labels as IDX files (gzip when gz). */
static void make_idx(const char *img_name, const char *lab_name, uint32_t n, int gz, const char **img,
                     const char **lab)
{
    size_t ilen = 16 + (size_t)n * 784, llen = 8 + n;
    unsigned char *ib = malloc(ilen), *lb = malloc(llen);
    be32(ib, 0x803);
    be32(ib + 4, n);
    be32(ib + 8, 28);
    be32(ib + 12, 28);
    for (size_t i = 16; i < ilen; i++)
        ib[i] = (unsigned char)rnd();
    be32(lb, 0x801);
    be32(lb + 4, n);
    for (size_t i = 8; i < llen; i++)
        lb[i] = (unsigned char)(rnd() % 10);
    *img = write_bytes(img_name, ib, ilen, gz);
    if (lab)
        *lab = write_bytes(lab_name, lb, llen, gz);
    free(ib);
    free(lb);
}

static int same_data(const kd_dataset *a, const kd_dataset *b)
{
    size_t size = kd_shape_size(&a->shape);
    if (a->n != b->n || size != kd_shape_size(&b->shape) || a->num_classes != b->num_classes)
        return 0;
    return a->n == 0 || (memcmp(a->x, b->x, (size_t)a->n * size * sizeof(float)) == 0 &&
                         memcmp(a->y, b->y, (size_t)a->n * sizeof(int32_t)) == 0);
}

/* ----------------------------------------------------- memory-mapped spools */
static void test_mapped_spool(void)
{
    kd_shape s = {3, {1, 5, 7, 0}};
    kd_dataset *ds = NULL, *back = NULL;
    CHECK_OK(kd_dataset_alloc(1000, &s, &ds));
    if (!ds)
        return;
    CHECK(ds->mapping == NULL, "an allocated data set owns malloc'd memory");
    for (int64_t i = 0; i < ds->n * 35; i++)
        ds->x[i] = (float)(rnd() % 1000) / 7.0f;
    for (int64_t i = 0; i < ds->n; i++)
        ds->y[i] = (int32_t)(rnd() % 13);
    ds->num_classes = 13;
    const char *p = tmp_path("mapped.spool");
    CHECK_OK(kd_dataset_save_spool(p, ds));
    CHECK_OK(kd_dataset_load_spool(p, &back));
    if (back) {
        CHECK(back->mapping != NULL, "a loaded spool is memory-mapped");
        CHECK(back->n == 1000 && back->shape.rank == 3 && back->shape.dim[2] == 7, "shape");
        CHECK(memcmp(back->x, ds->x, 1000 * 35 * sizeof(float)) == 0, "mapped features equal the saved ones");
        CHECK(memcmp(back->y, ds->y, 1000 * sizeof(int32_t)) == 0, "mapped labels equal the saved ones");
        CHECK_OK(kd_dataset_validate(back, back->num_classes));
        /* Replacing the file by rename (what every writer does) leaves the mapping intact. */
        CHECK_OK(kd_dataset_save_spool(p, ds));
        CHECK(memcmp(back->x, ds->x, 1000 * 35 * sizeof(float)) == 0, "mapping survives a rewrite by rename");
    }
    kd_dataset_free(back);
    back = NULL;

    /* Without labels: y is -1 (malloc'd beside the mapping) and frees cleanly. */
    for (int64_t i = 0; i < ds->n; i++)
        ds->y[i] = -1;
    CHECK_OK(kd_dataset_save_spool(p, ds));
    CHECK_OK(kd_dataset_load_spool(p, &back));
    if (back) {
        int bad = 0;
        for (int64_t i = 0; i < back->n; i++)
            bad += back->y[i] != -1;
        CHECK(back->mapping && bad == 0 && back->num_classes == 0, "unlabelled mapped spool: %d labels not -1", bad);
        CHECK(memcmp(back->x, ds->x, 1000 * 35 * sizeof(float)) == 0, "unlabelled features");
    }
    kd_dataset_free(back);
    back = NULL;

    /* Corruption is still found, streaming through the mapping. */
    FILE *f = fopen(p, "r+b");
    if (f) {
        fseek(f, 64 + 4 * 500, SEEK_SET);
        fputc(0x5a, f);
        fclose(f);
    }
    CHECK_FAILS(kd_dataset_load_spool(p, &back), KD_ERR_FORMAT, "payload corrupt");
    CHECK(back == NULL, "nothing returned for a corrupt file");
    kd_dataset_free(ds);

    /* An empty spool still loads. */
    CHECK_OK(kd_dataset_alloc(0, &s, &ds));
    CHECK_OK(kd_dataset_save_spool(p, ds));
    kd_dataset_free(ds);
    ds = NULL;
    CHECK_OK(kd_dataset_load_spool(p, &ds));
    CHECK(ds && ds->n == 0, "empty spool");
    kd_dataset_free(ds);

    /* A zeroed, hand-built struct (mapping NULL) is still freed with free(). */
    kd_dataset *hand = calloc(1, sizeof *hand);
    hand->x = malloc(16);
    hand->y = malloc(16);
    kd_dataset_free(hand);
    kd_dataset_free(NULL);
}

/* ------------------------------------------------------------- converters */
static void test_convert_idx(void)
{
    const char *img, *lab, *gimg, *glab;
    /* 3000 samples: several of the converter's 1 MiB blocks. */
    make_idx("conv-img.idx", "conv-lab.idx", 3000, 0, &img, &lab);
    rng_state = 777;
    make_idx("conv-img.idx.gz", "conv-lab.idx.gz", 1500, 1, &gimg, &glab);
    kd_dataset *a = NULL, *b = NULL;
    int64_t n = -1;
    const char *sp = tmp_path("idx.spool");
    CHECK_OK(kd_convert_idx_to_spool(img, lab, sp, &n));
    CHECK(n == 3000, "converted %lld samples", (long long)n);
    CHECK_OK(kd_dataset_load_idx(img, lab, &a));
    CHECK_OK(kd_dataset_load_spool(sp, &b));
    CHECK(a && b && same_data(a, b) && b->shape.rank == 3 && b->shape.dim[1] == 28, "IDX -> spool == IDX");
    kd_dataset_free(a);
    kd_dataset_free(b);
    a = b = NULL;
    /* gzip, and images without labels. */
    CHECK_OK(kd_convert_idx_to_spool(gimg, glab, sp, &n));
    CHECK_OK(kd_dataset_load_idx(gimg, glab, &a));
    CHECK_OK(kd_dataset_load_spool(sp, &b));
    CHECK(a && b && same_data(a, b), "gzip IDX -> spool == IDX");
    kd_dataset_free(a);
    kd_dataset_free(b);
    a = b = NULL;
    CHECK_OK(kd_convert_idx_to_spool(img, NULL, sp, &n));
    CHECK_OK(kd_dataset_load_idx(img, NULL, &a));
    CHECK_OK(kd_dataset_load_spool(sp, &b));
    CHECK(a && b && same_data(a, b) && b->num_classes == 0, "IDX without labels -> spool");
    kd_dataset_free(a);
    kd_dataset_free(b);
    /* Errors: mismatched counts, and nothing left behind. */
    CHECK_FAILS(kd_convert_idx_to_spool(img, glab, tmp_path("bad.spool"), &n), KD_ERR_FORMAT, "count mismatch");
    struct stat st;
    CHECK(stat(tmp_path("bad.spool"), &st) != 0, "a failed conversion leaves no output");
}

static void test_convert_csv(void)
{
    /* 7 rows of 300000 features: the converter writes 3 rows a block. */
    const int cols = 300000, rows = 7;
    size_t cap = (size_t)rows * cols * 6 + 64, len = 0;
    char *text = malloc(cap);
    len += (size_t)snprintf(text + len, cap - len, "label");
    for (int j = 0; j < cols; j++)
        len += (size_t)snprintf(text + len, cap - len, ",f%d", j);
    text[len++] = '\n';
    for (int i = 0; i < rows; i++) {
        len += (size_t)snprintf(text + len, cap - len, "%d", i % 3);
        for (int j = 0; j < cols; j++)
            len += (size_t)snprintf(text + len, cap - len, ",%u", rnd() % 100);
        text[len++] = '\n';
    }
    const char *p = write_bytes("wide.csv", text, len, 0);
    const char *pg = write_bytes("wide.csv.gz", text, len, 1);
    free(text);
    kd_dataset *a = NULL, *b = NULL;
    int64_t n = 0;
    const char *sp = tmp_path("csv.spool");
    CHECK_OK(kd_convert_csv_to_spool(p, 0, 1, NULL, sp, &n));
    CHECK(n == rows, "converted %lld rows", (long long)n);
    CHECK_OK(kd_dataset_load_csv(p, 0, 1, NULL, &a));
    CHECK_OK(kd_dataset_load_spool(sp, &b));
    CHECK(a && b && same_data(a, b), "CSV -> spool == CSV");
    kd_dataset_free(a);
    kd_dataset_free(b);
    a = b = NULL;
    CHECK_OK(kd_convert_csv_to_spool(pg, 0, 1, NULL, sp, &n));
    CHECK_OK(kd_dataset_load_spool(sp, &b));
    CHECK(b && b->n == rows && b->shape.dim[0] == cols, "gzip CSV -> spool");
    kd_dataset_free(b);
    b = NULL;

    /* Small: a shape, no label column. */
    const char *small = "1,2,3,4\n5,6,7,8\n";
    p = write_bytes("small.csv", small, strlen(small), 0);
    kd_shape s22 = {3, {1, 2, 2, 0}};
    CHECK_OK(kd_convert_csv_to_spool(p, -1, 0, &s22, sp, &n));
    CHECK_OK(kd_dataset_load_csv(p, -1, 0, &s22, &a));
    CHECK_OK(kd_dataset_load_spool(sp, &b));
    CHECK(a && b && same_data(a, b) && b->shape.rank == 3 && b->y[1] == -1, "CSV with a shape, no labels");
    kd_dataset_free(a);
    kd_dataset_free(b);
    /* Parse errors carry the line, as the loader's do. */
    p = write_bytes("bad.csv", "1,2\n3,x\n", 8, 0);
    CHECK_FAILS(kd_convert_csv_to_spool(p, 0, 0, NULL, sp, &n), KD_ERR_FORMAT, "line 2");
    p = write_bytes("empty.csv", "", 0, 0);
    CHECK_FAILS(kd_convert_csv_to_spool(p, 0, 0, NULL, sp, &n), KD_ERR_FORMAT, "no samples");
}

static void test_convert_libsvm(void)
{
    const char *text = "1 1:0.5 3:2\n0 2:1.5 # comment\n\n2 5:-1\n";
    const char *p = write_bytes("a.svm", text, strlen(text), 0);
    kd_dataset *a = NULL, *b = NULL;
    int64_t n = 0;
    const char *sp = tmp_path("svm.spool");
    CHECK_OK(kd_convert_libsvm_to_spool(p, 0, sp, &n)); /* width from a first pass */
    CHECK_OK(kd_dataset_load_libsvm(p, 0, &a));
    CHECK_OK(kd_dataset_load_spool(sp, &b));
    CHECK(n == 3 && a && b && same_data(a, b) && b->shape.dim[0] == 5, "LibSVM -> spool == LibSVM");
    kd_dataset_free(a);
    kd_dataset_free(b);
    a = b = NULL;
    CHECK_OK(kd_convert_libsvm_to_spool(p, 8, sp, &n));
    CHECK_OK(kd_dataset_load_libsvm(p, 8, &a));
    CHECK_OK(kd_dataset_load_spool(sp, &b));
    CHECK(a && b && same_data(a, b) && b->shape.dim[0] == 8, "LibSVM with a width");
    kd_dataset_free(a);
    kd_dataset_free(b);
    a = b = NULL;
    /* Rows wider than the converter's 1M-float segment. */
    const char *wide = "1 1:1 1048576:2 1048577:3 2500000:4\n0 1048575:5\n";
    p = write_bytes("wide.svm", wide, strlen(wide), 0);
    CHECK_OK(kd_convert_libsvm_to_spool(p, 0, sp, &n));
    CHECK_OK(kd_dataset_load_spool(sp, &b));
    if (b && b->n == 2 && b->shape.dim[0] == 2500000) {
        const float *r0 = b->x, *r1 = b->x + 2500000;
        double sum = 0;
        for (int64_t i = 0; i < 2 * 2500000; i++)
            sum += b->x[i];
        CHECK(r0[0] == 1 && r0[1048575] == 2 && r0[1048576] == 3 && r0[2499999] == 4 && r1[1048574] == 5 &&
                  sum == 15 && b->y[0] == 1 && b->y[1] == 0,
              "wide LibSVM rows");
    } else {
        CHECK(0, "wide LibSVM spool: %s", b ? "wrong shape" : kd_last_error());
    }
    kd_dataset_free(b);
    p = write_bytes("bad.svm", "1 3:1 2:1\n", 10, 0);
    CHECK_FAILS(kd_convert_libsvm_to_spool(p, 0, sp, &n), KD_ERR_FORMAT, "ascending");
}

/* ---------------------------------------------------------- refusals */
static void test_budget_refusals(void)
{
    const char *img, *lab;
    rng_state = 99;
    make_idx("big-img.idx", "big-lab.idx", 2000, 0, &img, &lab); /* 6.3 MB as float32 */
    kd_dataset *ds = NULL;
    char src[64];
    kd_set_memory_limit(4u << 20);
    CHECK(kd_memory_available(src, sizeof src) == (4u << 20) && strcmp(src, "kd_set_memory_limit") == 0,
          "fixed budget reported (%s)", src);
    CHECK_FAILS(kd_dataset_load_idx(img, lab, &ds), KD_ERR_NOMEM, "big-img.idx: loading 2000 samples");
    CHECK(strstr(kd_last_error(), "6.0 MiB") && strstr(kd_last_error(), "4.0 MiB") &&
              strstr(kd_last_error(), "kindling convert"),
          "message names the size, the limit and the way out: %s", kd_last_error());
    CHECK(ds == NULL, "nothing returned");
    /* The way out works under the same budget: convert, then the mapped spool. */
    const char *sp = tmp_path("big.spool");
    CHECK_OK(kd_convert_idx_to_spool(img, lab, sp, NULL));
    CHECK_OK(kd_dataset_load_spool(sp, &ds));
    CHECK(ds && ds->n == 2000 && ds->mapping, "spool loads under the budget");
    kd_dataset_free(ds);
    ds = NULL;

    /* CSV: refused while growing. */
    size_t cap = 3u << 20, len = 0;
    char *text = malloc(cap);
    while (len + 64 < cap)
        len += (size_t)snprintf(text + len, cap - len, "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16\n");
    const char *csv = write_bytes("big.csv", text, len, 0);
    free(text);
    kd_set_memory_limit(1u << 20);
    CHECK_FAILS(kd_dataset_load_csv(csv, 0, 0, NULL, &ds), KD_ERR_NOMEM, "big.csv: loading the samples (line");
    CHECK(strstr(kd_last_error(), "kd_set_memory_limit"), "%s", kd_last_error());
    CHECK_OK(kd_convert_csv_to_spool(csv, 0, 0, NULL, sp, NULL));

    /* LibSVM: one line with feature index 2147483647 = an 8 GiB dense row. */
    const char *huge = write_bytes("huge.svm", "1 2147483647:1\n", 15, 0);
    kd_set_memory_limit((uint64_t)1 << 30);
    CHECK_FAILS(kd_dataset_load_libsvm(huge, 0, &ds), KD_ERR_NOMEM, "huge.svm: loading 1 samples x 2147483647");
    CHECK(strstr(kd_last_error(), "8.00 GiB") && strstr(kd_last_error(), "index, 2147483647 on line 1") &&
              strstr(kd_last_error(), "--features"),
          "huge index message: %s", kd_last_error());
    /* With an explicit width it is a plain format error, as before. */
    CHECK_FAILS(kd_dataset_load_libsvm(huge, 100, &ds), KD_ERR_FORMAT, "> num_features 100");
    kd_set_memory_limit(0);
    char why[64];
    uint64_t avail = kd_memory_available(why, sizeof why);
    CHECK(avail > 0 && strcmp(why, "kd_set_memory_limit") != 0, "detection back on: %llu (%s)",
          (unsigned long long)avail, why);
}

/* RLIMIT_AS in a forked child: the detection sees it and the readers refuse. */
static void test_rlimit_as(void)
{
#ifdef KD_ASAN
    printf("SKIP test_rlimit_as: AddressSanitizer reserves terabytes of address space, so RLIMIT_AS "
           "cannot be set in an ASan build (the budget tests above cover the refusals)\n");
#else
    const char *img, *lab;
    rng_state = 4242;
    make_idx("as-img.idx", "as-lab.idx", 8000, 0, &img, &lab); /* 25 MB as float32 */
    const char *sp = tmp_path("as.spool");
    const char *huge = write_bytes("as-huge.svm", "1 2147483647:1\n", 15, 0);
    if (kd_convert_idx_to_spool(img, lab, sp, NULL) != KD_OK) {
        CHECK(0, "convert: %s", kd_last_error());
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* Room for 16 MiB more than this process maps now. */
        FILE *f = fopen("/proc/self/status", "r");
        char line[256];
        unsigned long long vm_kb = 0;
        while (f && fgets(line, sizeof line, f))
            if (sscanf(line, "VmSize: %llu kB", &vm_kb) == 1)
                break;
        if (f)
            fclose(f);
        struct rlimit rl = {(rlim_t)(vm_kb * 1024 + (16u << 20)), RLIM_INFINITY};
        if (vm_kb == 0 || setrlimit(RLIMIT_AS, &rl) != 0)
            _exit(10);
        char src[64];
        uint64_t avail = kd_memory_available(src, sizeof src);
        if (avail > (16u << 20) || !strstr(src, "RLIMIT_AS"))
            _exit(11);
        kd_dataset *ds = NULL;
        if (kd_dataset_load_idx(img, lab, &ds) != KD_ERR_NOMEM || !strstr(kd_last_error(), "RLIMIT_AS"))
            _exit(12);
        if (kd_dataset_load_libsvm(huge, 0, &ds) != KD_ERR_NOMEM || !strstr(kd_last_error(), "2147483647"))
            _exit(13);
        /* The 25 MB mapping does not fit 16 MiB of address space either: a clear refusal. */
        if (kd_dataset_load_spool(sp, &ds) != KD_ERR_NOMEM || !strstr(kd_last_error(), "address space"))
            _exit(14);
        /* Conversion runs in bounded memory under the same limit. */
        if (kd_convert_idx_to_spool(img, lab, sp, NULL) != KD_OK)
            _exit(15);
        /* With 64 MiB of room the spool maps and reads. */
        rl.rlim_cur += 48u << 20;
        if (setrlimit(RLIMIT_AS, &rl) != 0 || kd_dataset_load_spool(sp, &ds) != KD_OK || ds->n != 8000)
            _exit(16);
        kd_dataset_free(ds);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "RLIMIT_AS child: status %d, exit %d (see the codes)",
          status, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
#endif
}

static void remove_tmp_dir(void)
{
    DIR *d = opendir(tmp_dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            unlink(tmp_path(e->d_name));
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
    test_mapped_spool();
    test_convert_idx();
    test_convert_csv();
    test_convert_libsvm();
    test_budget_refusals();
    test_rlimit_as();
    remove_tmp_dir();
    return check_summary();
}
