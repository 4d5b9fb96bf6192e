/* Memory limits for data sets (src/memlimit.c): how much this process may
 * still allocate (MemAvailable, the cgroup limit, rlimits, or the budget of
 * kd_set_memory_limit), and the check the data-set allocation and the
 * readers make before they allocate. Internal; the public side is
 * kd_memory_available and kd_set_memory_limit in kindling.h. */
#ifndef KD_MEMLIMIT_H
#define KD_MEMLIMIT_H

#include <stdint.h>

#include "kindling.h"

/* KD_ERR_NOMEM naming path, `what` (e.g. "60000 samples of 1x28x28
 * float32"), the bytes needed and the binding limit when they cannot be had. `more` is what this allocation adds
 * now (compared with the detected headroom), `total` what the data set will
 * then hold (compared with a kd_set_memory_limit budget). mapped != 0: the
 * bytes are a file mapping, which only the address-space limit constrains. */
kd_status kd_memory_check(uint64_t total, uint64_t more, int mapped, const char *path, const char *what);
/* The bytes available now and which limit binds (a static string). */
uint64_t kd_memory_headroom(int mapped, const char **source);

/* "1.50 GiB", "12.0 MiB", "100 bytes". */
const char *kd_format_bytes(uint64_t bytes, char *buf, size_t len);

#endif
