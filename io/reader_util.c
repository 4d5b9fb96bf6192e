#include "reader_util.h"

#include "error.h"
#include "memlimit.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Large blocks keep reading a 50 MB gzip or a 200 MB CSV in the seconds range. */
#define KD_READ_BLOCK (1u << 20)

kd_status kd_reader_open(kd_reader *r, const char *path)
{
    memset(r, 0, sizeof *r);
    if (!path || !*path)
        return kd_fail(KD_ERR_INVALID, "no file name given");
    r->path = path;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return kd_fail(KD_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char magic[2];
    size_t n = fread(magic, 1, 2, fp);
    if (n == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
        fclose(fp);
        errno = 0;
        r->gz = gzopen(path, "rb");
        if (!r->gz)
            return kd_fail(errno ? KD_ERR_IO : KD_ERR_NOMEM, "%s: cannot open gzip: %s", path,
                           errno ? strerror(errno) : "zlib could not allocate its state");
        gzbuffer(r->gz, 256u * 1024u);
        r->is_gzip = 1;
        return KD_OK;
    }
    if (ferror(fp) || fseek(fp, 0, SEEK_SET) != 0) {
        int e = errno;
        fclose(fp);
        return kd_fail(KD_ERR_IO, "%s: cannot read: %s", path, strerror(e));
    }
    r->fp = fp;
    return KD_OK;
}

void kd_reader_close(kd_reader *r)
{
    if (!r)
        return;
    if (r->fp)
        fclose(r->fp);
    if (r->gz)
        gzclose(r->gz);
    free(r->buf);
    memset(r, 0, sizeof *r);
}

kd_status kd_reader_read(kd_reader *r, void *dst, size_t n, size_t *got)
{
    unsigned char *out = dst;
    size_t total = 0;
    *got = 0;
    if (r->fp) {
        total = fread(out, 1, n, r->fp);
        if (total < n && ferror(r->fp))
            return kd_fail(KD_ERR_IO, "%s: read failed after %zu bytes: %s", r->path, total,
                           strerror(errno));
        *got = total;
        return KD_OK;
    }
    while (total < n) {
        size_t want = n - total;
        if (want > (1u << 30))  /* gzread takes an unsigned and returns an int */
            want = 1u << 30;
        int k = gzread(r->gz, out + total, (unsigned)want);
        if (k < 0) {
            int err;
            const char *msg = gzerror(r->gz, &err);
            if (err == Z_ERRNO)
                return kd_fail(KD_ERR_IO, "%s: read failed: %s", r->path, strerror(errno));
            if (err == Z_MEM_ERROR)
                return kd_fail(KD_ERR_NOMEM, "%s: zlib out of memory", r->path);
            return kd_fail(KD_ERR_FORMAT, "%s: corrupt gzip data after %zu bytes (zlib error: %s)",
                           r->path, total, msg);
        }
        if (k == 0) {
            int err;
            gzerror(r->gz, &err);
            /* Z_BUF_ERROR here is zlib's "unexpected end of file". */
            if (err == Z_BUF_ERROR)
                r->gz_truncated = 1;
            break;
        }
        total += (size_t)k;
    }
    *got = total;
    return KD_OK;
}

kd_status kd_reader_next_line(kd_reader *r, char **line, size_t *len)
{
    *line = NULL;
    *len = 0;
    if (!r->buf) {
        r->buf_cap = KD_READ_BLOCK;
        r->buf = kd_malloc(r->buf_cap + 1, "the line buffer");
        if (!r->buf)
            return KD_ERR_NOMEM;
    }
    size_t scan_from = r->buf_start;
    for (;;) {
        char *nl = memchr(r->buf + scan_from, '\n', r->buf_end - scan_from);
        if (nl || (r->at_eof && r->buf_end > r->buf_start)) {
            char *s = r->buf + r->buf_start;
            char *e = nl ? nl : r->buf + r->buf_end;
            r->buf_start = nl ? (size_t)(nl - r->buf) + 1 : r->buf_end;
            r->line_no++;
            if (e > s && e[-1] == '\r')
                e--;
            /* A UTF-8 byte order mark (what spreadsheet programs put first)
             * is not part of the first line's text. */
            if (r->line_no == 1 && e - s >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
                s += 3;
            *e = '\0'; /* the +1 in the allocation leaves room at the very end */
            if (memchr(s, '\0', (size_t)(e - s)))
                return kd_fail(KD_ERR_FORMAT, "%s:line %lld: NUL byte (binary data, not text)",
                               r->path, (long long)r->line_no);
            *line = s;
            *len = (size_t)(e - s);
            return KD_OK;
        }
        if (r->at_eof)
            return KD_OK; /* no more lines */
        /* Keep the partial line, then fill the rest of the buffer. */
        size_t keep = r->buf_end - r->buf_start;
        if (r->buf_start > 0) {
            memmove(r->buf, r->buf + r->buf_start, keep);
            r->buf_start = 0;
            r->buf_end = keep;
        }
        if (r->buf_end == r->buf_cap) { /* one line longer than the buffer */
            size_t cap = r->buf_cap * 2;
            char *nb = realloc(r->buf, cap + 1);
            if (!nb)
                return kd_fail(KD_ERR_NOMEM, "%s:line %lld: out of memory for a %zu-byte line",
                               r->path, (long long)r->line_no + 1, r->buf_cap);
            r->buf = nb;
            r->buf_cap = cap;
        }
        size_t got;
        KD_TRY(kd_reader_read(r, r->buf + r->buf_end, r->buf_cap - r->buf_end, &got));
        if (got == 0) {
            if (r->gz_truncated)
                return kd_fail(KD_ERR_FORMAT,
                               "%s: truncated gzip stream (ends unexpectedly after line %lld)",
                               r->path, (long long)r->line_no);
            r->at_eof = 1;
        }
        scan_from = r->buf_end;
        r->buf_end += got;
    }
}

static int is_blank(char c) { return c == ' ' || c == '\t'; }

const char *kd_parse_float(const char *s, const char *end, float *out)
{
    while (s < end && is_blank(*s))
        s++;
    while (end > s && is_blank(end[-1]))
        end--;
    if (s == end)
        return "empty cell";
    /* Fast path, exact: up to 7 plain digits are an integer below 2^24,
     * which strtof would also return exactly (the common 0..255 pixels). */
    if (end - s <= 7) {
        const char *p = s;
        int32_t v = 0;
        while (p < end && *p >= '0' && *p <= '9')
            v = v * 10 + (*p++ - '0');
        if (p == end) {
            *out = (float)v;
            return NULL;
        }
    }
    /* strtof needs a terminated string; the cell ends at a separator or at
     * the line's NUL, and strtof stops at either, so no copy is needed as
     * long as the cell itself cannot run into the next one. */
    char *stop;
    errno = 0;
    float v = strtof(s, &stop);
    if (stop == s)
        return "not a number";
    if (stop != end)
        return "not a number (trailing characters)";
    if (errno == ERANGE && isinf(v))
        return "out of float range";
    *out = v;
    return NULL;
}

const char *kd_parse_label(const char *s, const char *end, int32_t *out)
{
    while (s < end && is_blank(*s))
        s++;
    while (end > s && is_blank(end[-1]))
        end--;
    if (s == end)
        return "empty label";
    const char *p = s;
    if (*p == '-')
        return "negative (labels are class indices 0, 1, 2, ...)";
    if (*p == '+')
        p++;
    const char *digits = p;
    int64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        v = v * 10 + (*p++ - '0');
        /* INT32_MAX itself is out too: num_classes = 1 + the largest label. */
        if (v >= INT32_MAX)
            return "label too large";
    }
    if (p == digits)
        return "not an integer (labels are class indices 0, 1, 2, ...)";
    if (p < end && *p == '.') { /* "3.0" written by float-minded tools */
        p++;
        while (p < end && *p == '0')
            p++;
    }
    if (p != end)
        return "not an integer (labels are class indices 0, 1, 2, ...)";
    *out = (int32_t)v;
    return NULL;
}

const char *kd_snippet(const char *s, const char *end, char *buf, size_t len)
{
    size_t n = (size_t)(end - s);
    if (len == 0)
        return buf;
    if (n < len) {
        memcpy(buf, s, n);
        buf[n] = '\0';
    } else if (len > 4) {
        memcpy(buf, s, len - 4);
        memcpy(buf + len - 4, "...", 4);
    } else {
        buf[0] = '\0';
    }
    return buf;
}

kd_status kd_grow(void **p, size_t *cap, size_t need, size_t elem, const char *what)
{
    if (need <= *cap)
        return KD_OK;
    size_t c = *cap ? *cap : 1024;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem)
            return kd_fail(KD_ERR_NOMEM, "%s: %zu elements is too many", what, need);
        c *= 2;
    }
    void *np = realloc(*p, c * elem);
    if (!np)
        return kd_fail(KD_ERR_NOMEM, "out of memory growing %s to %zu bytes", what, c * elem);
    *p = np;
    *cap = c;
    return KD_OK;
}

kd_status kd_grow_checked(void **p, size_t *cap, size_t need, size_t elem, const char *what,
                          const char *path, uint64_t held)
{
    if (need <= *cap)
        return KD_OK;
    size_t c = *cap ? *cap : 1024;
    while (c < need && c <= SIZE_MAX / 2 / elem)
        c *= 2;
    if (c >= need) {
        uint64_t more = (uint64_t)(c - *cap) * elem, total = held + (uint64_t)c * elem;
        KD_TRY(kd_memory_check(total, more, 0, path, what));
    }
    return kd_grow(p, cap, need, elem, what);
}
