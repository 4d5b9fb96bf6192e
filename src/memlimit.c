/* How much memory a data set may take: detection of the limits that apply
 * to this process, and the checks the data-set allocation and the readers
 * make before they allocate.
 * See kd_memory_available in kindling.h. Reads /proc and /sys only. */
#include "kindling.h"

#include "error.h"
#include "memlimit.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static _Atomic uint64_t fixed_limit; /* 0 = detect */

void kd_set_memory_limit(uint64_t bytes) { atomic_store(&fixed_limit, bytes); }

/* "<key> <number>[ kB]" from a /proc or /sys key-value file; 0 if absent. */
static int read_key(const char *path, const char *key, uint64_t *out)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[256];
    size_t klen = strlen(key);
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) != 0 || (line[klen] != ' ' && line[klen] != '\t' && line[klen] != ':'))
            continue;
        char *p = line + klen + (line[klen] == ':');
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p)
            break;
        while (*end == ' ' || *end == '\t')
            end++;
        *out = strncmp(end, "kB", 2) == 0 ? (uint64_t)v * 1024 : (uint64_t)v;
        found = 1;
        break;
    }
    fclose(f);
    return found;
}

/* A file holding one number (or "max"). 0 if absent or "max". */
static int read_number(const char *path, uint64_t *out)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char buf[64] = "";
    int ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    if (!ok || strncmp(buf, "max", 3) == 0)
        return 0;
    char *end;
    unsigned long long v = strtoull(buf, &end, 10);
    if (end == buf)
        return 0;
    *out = (uint64_t)v;
    return 1;
}

static void take(uint64_t v, const char *what, uint64_t *best, const char **source)
{
    if (v < *best) {
        *best = v;
        *source = what;
    }
}

/* This process's cgroup path in the hierarchy `controller` ("" = v2). */
static int cgroup_path(const char *controller, char *out, size_t len)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f)
        return 0;
    char line[1024];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        const char *ctrls = c1 + 1;
        int match = controller[0] ? strstr(ctrls, controller) != NULL : ctrls[0] == '\0';
        if (!match)
            continue;
        char *path = c2 + 1;
        path[strcspn(path, "\n")] = '\0';
        snprintf(out, len, "%s", path);
        found = 1;
    }
    fclose(f);
    return found;
}

/* Limit minus the usage that cannot be reclaimed (page cache can). */
static int cgroup_headroom(const char *dir, const char *limit_file, const char *usage_file, int v1,
                           uint64_t *out)
{
    char p[1400];
    uint64_t limit = 0, usage = 0, active = 0, inactive = 0;
    snprintf(p, sizeof p, "%s/%s", dir, limit_file);
    if (!read_number(p, &limit) || limit >= (UINT64_C(1) << 60)) /* v1 "unlimited" is ~2^63 */
        return 0;
    snprintf(p, sizeof p, "%s/%s", dir, usage_file);
    if (!read_number(p, &usage))
        return 0;
    snprintf(p, sizeof p, "%s/memory.stat", dir);
    if (!read_key(p, v1 ? "total_active_file" : "active_file", &active))
        read_key(p, "active_file", &active);
    if (!read_key(p, v1 ? "total_inactive_file" : "inactive_file", &inactive))
        read_key(p, "inactive_file", &inactive);
    uint64_t file = active + inactive;
    uint64_t pinned = usage > file ? usage - file : 0;
    *out = limit > pinned ? limit - pinned : 0;
    return 1;
}

static void cgroup_limits(uint64_t *best, const char **source)
{
    char path[1024], dir[1200];
    uint64_t h;
    static const char *const v2_roots[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
    if (cgroup_path("", path, sizeof path)) {
        for (size_t i = 0; i < 2; i++) {
            snprintf(dir, sizeof dir, "%s%s", v2_roots[i], path);
            if (cgroup_headroom(dir, "memory.max", "memory.current", 0, &h)) {
                take(h, "cgroup memory.max", best, source);
                break;
            }
            /* Inside a cgroup namespace the own group is the mount's root. */
            if (cgroup_headroom(v2_roots[i], "memory.max", "memory.current", 0, &h)) {
                take(h, "cgroup memory.max", best, source);
                break;
            }
        }
    }
    if (cgroup_path("memory", path, sizeof path)) {
        snprintf(dir, sizeof dir, "/sys/fs/cgroup/memory%s", path);
        if (cgroup_headroom(dir, "memory.limit_in_bytes", "memory.usage_in_bytes", 1, &h) ||
            cgroup_headroom("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", 1, &h))
            take(h, "cgroup memory.limit_in_bytes", best, source);
    }
}

/* Headroom under an rlimit, given the current use (from /proc/self/status). */
static void rlimit_headroom(int resource, const char *status_key, const char *what, uint64_t *best,
                            const char **source)
{
    struct rlimit rl;
    if (getrlimit(resource, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return;
    uint64_t used = 0;
    read_key("/proc/self/status", status_key, &used);
    take((uint64_t)rl.rlim_cur > used ? (uint64_t)rl.rlim_cur - used : 0, what, best, source);
}

uint64_t kd_memory_headroom(int mapped, const char **source)
{
    uint64_t fixed = atomic_load(&fixed_limit);
    *source = "no limit found";
    if (fixed && !mapped) { /* a budget for memory; a mapping pages, so only RLIMIT_AS limits it */
        *source = "kd_set_memory_limit";
        return fixed;
    }
    uint64_t best = UINT64_MAX, v;
    if (!mapped) {
        if (read_key("/proc/meminfo", "MemAvailable", &v))
            take(v, "MemAvailable in /proc/meminfo", &best, source);
        cgroup_limits(&best, source);
        rlimit_headroom(RLIMIT_DATA, "VmData", "RLIMIT_DATA (ulimit -d)", &best, source);
    }
    rlimit_headroom(RLIMIT_AS, "VmSize", "RLIMIT_AS (ulimit -v)", &best, source);
    return best;
}

uint64_t kd_memory_available(char *source, size_t len)
{
    const char *what;
    uint64_t v = kd_memory_headroom(0, &what);
    if (source && len)
        snprintf(source, len, "%s", what);
    return v;
}

const char *kd_format_bytes(uint64_t b, char *buf, size_t len)
{
    if (b == UINT64_MAX)
        snprintf(buf, len, "unlimited");
    else if (b >= (UINT64_C(1) << 30))
        snprintf(buf, len, "%.2f GiB", (double)b / (double)(UINT64_C(1) << 30));
    else if (b >= (UINT64_C(1) << 20))
        snprintf(buf, len, "%.1f MiB", (double)b / (double)(UINT64_C(1) << 20));
    else
        snprintf(buf, len, "%llu bytes", (unsigned long long)b);
    return buf;
}

kd_status kd_memory_check(uint64_t total, uint64_t more, int mapped, const char *path, const char *what)
{
    const char *source;
    uint64_t avail = kd_memory_headroom(mapped, &source);
    int fixed = atomic_load(&fixed_limit) != 0;
    uint64_t bytes = fixed && !mapped ? total : more;
    if (bytes <= avail)
        return KD_OK;
    char need[32], have[32];
    kd_format_bytes(total, need, sizeof need);
    kd_format_bytes(avail, have, sizeof have);
    if (mapped)
        return kd_fail(KD_ERR_NOMEM, "%s: mapping %s needs %s of address space, but only %s is left under %s; "
                                     "raise the limit (ulimit -v) for this process",
                       path, what, need, have, source);
    return kd_fail(KD_ERR_NOMEM, "%s: %s needs %s of memory, but only %s is available (%s); "
                                 "convert it once to a spool file (kindling convert ... --output F.spool) and "
                                 "train on that (--train-spool F.spool): spool files are memory-mapped, not loaded",
                   path, what, need, have, source);
}
