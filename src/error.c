#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The message of the last failure, one per thread. (The library's other
 * process-wide state is what the caller sets or loads once: the memory
 * budget of kd_set_memory_limit (memlimit.c), OpenBLAS's thread count
 * (blas.c) and the CUDA module (gpu_loader.c).) */
static _Thread_local char last_error[1024];

const char *kd_last_error(void) { return last_error; }

void kd_clear_error(void) { last_error[0] = '\0'; }

kd_status kd_fail(kd_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return s;
}

kd_status kd_fail_context(kd_status s, const char *fmt, ...)
{
    char prefix[512], old[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    /* Truncation of an over-long message is acceptable; keep the prefix. */
    size_t n = strlen(prefix);
    if (n > sizeof last_error - 3)
        n = sizeof last_error - 3;
    memcpy(last_error, prefix, n);
    memcpy(last_error + n, ": ", 2);
    size_t room = sizeof last_error - n - 3, m = strlen(old);
    if (m > room)
        m = room;
    memcpy(last_error + n + 2, old, m);
    last_error[n + 2 + m] = '\0';
    return s;
}

void *kd_malloc(size_t n, const char *what)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        kd_fail(KD_ERR_NOMEM, "out of memory allocating %zu bytes for %s", n, what);
    return p;
}

void *kd_calloc(size_t count, size_t size, const char *what)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        kd_fail(KD_ERR_NOMEM, "out of memory allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}

const char *kd_status_name(kd_status s)
{
    switch (s) {
    case KD_OK: return "ok";
    case KD_ERR_INVALID: return "invalid argument";
    case KD_ERR_IO: return "I/O error";
    case KD_ERR_FORMAT: return "format error";
    case KD_ERR_SHAPE: return "shape mismatch";
    case KD_ERR_NOMEM: return "out of memory";
    case KD_ERR_NUMERIC: return "numeric error";
    case KD_ERR_STATE: return "invalid state";
    case KD_ERR_UNSUPPORTED: return "unsupported";
    case KD_ERR_DEVICE: return "device error";
    }
    return "unknown status";
}

const char *kd_version(void) { return KD_VERSION_STRING; }
