/* Which reader a data file needs, judged by its first bytes (through gzip),
 * never by its name: "x.CSV", "x.txt" or "data" are all read correctly. */
#include "kindling.h"

#include "error.h"
#include "reader_util.h"

#include <string.h>

#define HEAD_BYTES 4096

/* IDX: two zero bytes, a type code, then 1 to 3 dimensions (io/idx.c). */
static int is_idx(const unsigned char *b, size_t n)
{
    if (n < 4 || b[0] != 0 || b[1] != 0 || b[3] < 1 || b[3] > 3)
        return 0;
    return b[2] == 0x08 || b[2] == 0x09 || b[2] == 0x0B || b[2] == 0x0C || b[2] == 0x0D || b[2] == 0x0E;
}

/* LibSVM text: a label, blanks, then "index:value" (the first line that is
 * neither blank nor a '#' comment decides). Anything else that is text is taken as CSV. */
static int looks_libsvm(const char *s, size_t n)
{
    size_t i = 0;
    for (;;) { /* blank lines and LibSVM's '#' comment lines */
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
            i++;
        if (i >= n || s[i] != '#')
            break;
        while (i < n && s[i] != '\n')
            i++;
    }
    while (i < n && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != ',' && s[i] != ';')
        i++; /* the label */
    if (i >= n || (s[i] != ' ' && s[i] != '\t'))
        return 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    size_t digits = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++, digits++;
    return digits > 0 && i < n && s[i] == ':';
}

kd_status kd_data_format_detect(const char *path, kd_data_format *out)
{
    if (!out)
        return kd_fail(KD_ERR_INVALID, "data_format_detect: no output pointer");
    kd_reader r;
    KD_TRY(kd_reader_open(&r, path));
    unsigned char head[HEAD_BYTES];
    size_t n = 0;
    kd_status s = kd_reader_read(&r, head, sizeof head, &n);
    kd_reader_close(&r);
    if (s != KD_OK)
        return s;
    const unsigned char *b = head;
    if (n >= 3 && memcmp(b, "\xEF\xBB\xBF", 3) == 0) { /* a UTF-8 byte order mark before text */
        b += 3;
        n -= 3;
    }
    if (n >= 8 && memcmp(b, "KDSPOOL1", 8) == 0) {
        *out = KD_DATA_SPOOL;
        return KD_OK;
    }
    if (is_idx(b, n)) {
        *out = KD_DATA_IDX;
        return KD_OK;
    }
    if (n >= 8 && memcmp(b, "\x89HDF\r\n\x1a\n", 8) == 0)
        return kd_fail(KD_ERR_FORMAT, "%s: an HDF5 file (a checkpoint?), not data", path);
    if (n == 0)
        return kd_fail(KD_ERR_FORMAT, "%s: empty file, no samples", path);
    for (size_t i = 0; i < n; i++)
        if (b[i] == 0 || (b[i] < 0x20 && b[i] != '\t' && b[i] != '\n' && b[i] != '\r'))
            return kd_fail(KD_ERR_FORMAT, "%s: not a data file Kindling reads (binary, but not IDX or a spool; "
                           "text would be CSV or LibSVM)", path);
    *out = looks_libsvm((const char *)b, n) ? KD_DATA_LIBSVM : KD_DATA_CSV;
    return KD_OK;
}
