/* Internal error reporting: record a message for kd_last_error() and
 * return the status, so library code reads `return kd_fail(KD_ERR_IO, ...)`. */
#ifndef KD_ERROR_H
#define KD_ERROR_H

#include "kindling.h"

#if defined(__GNUC__)
#define KD_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define KD_PRINTF(a, b)
#endif

kd_status kd_fail(kd_status s, const char *fmt, ...) KD_PRINTF(2, 3);
/* Prefix the current message with context: "reading x.csv: <old message>". */
kd_status kd_fail_context(kd_status s, const char *fmt, ...) KD_PRINTF(2, 3);
void kd_clear_error(void);

/* Allocation helpers that set the error on failure. */
void *kd_malloc(size_t n, const char *what);
void *kd_calloc(size_t count, size_t size, const char *what);

#define KD_TRY(expr)                      \
    do {                                  \
        kd_status kd_try_s_ = (expr);     \
        if (kd_try_s_ != KD_OK)           \
            return kd_try_s_;             \
    } while (0)

#endif
