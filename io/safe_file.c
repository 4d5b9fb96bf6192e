/* Crash-safe file replacement; see safe_file.h. */
#include "safe_file.h"

#include "error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void remove_stale_temporaries(const char *path);
static char *dir_of(const char *path);

/* This host's name as it goes into a temporary's name: letters, digits,
 * '.', '_' and '-' only, at most 64 characters. */
static void host_tag(char *buf, size_t len)
{
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        snprintf(host, sizeof host, "host");
    size_t j = 0;
    for (size_t i = 0; host[i] && j + 1 < len && j < 64; i++) {
        char c = host[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '_' || c == '-';
        buf[j++] = ok ? c : '_';
    }
    buf[j] = 0;
}

kd_status kd_safe_file_temp_name(const char *path, char *buf, size_t len)
{
    char host[72];
    host_tag(host, sizeof host);
    int n = snprintf(buf, len, "%s.tmp-%s-%ld", path, host, (long)getpid());
    if (n < 0 || (size_t)n >= len)
        return kd_fail(KD_ERR_INVALID, "%s: path too long for a temporary name", path);
    return KD_OK;
}

kd_status kd_save_temp_path(const char *path, char *buf, size_t len)
{
    if (!path || !buf)
        return kd_fail(KD_ERR_INVALID, "kd_save_temp_path: NULL argument");
    return kd_safe_file_temp_name(path, buf, len);
}

kd_status kd_save_check_path(const char *path)
{
    if (!path || !path[0])
        return kd_fail(KD_ERR_INVALID, "kd_save_check_path: no path");
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return kd_fail(KD_ERR_IO, "%s: is a directory; name a file in it (e.g. %s%smodel.h5)", path, path,
                       path[strlen(path) - 1] == '/' ? "" : "/");
    char *dir = dir_of(path);
    if (!dir)
        return KD_ERR_NOMEM;
    kd_status s = KD_OK;
    if (stat(dir, &st) != 0)
        s = kd_fail(KD_ERR_IO, "%s: cannot save there: directory %s: %s", path, dir, strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        s = kd_fail(KD_ERR_IO, "%s: cannot save there: %s is not a directory", path, dir);
    if (s != KD_OK) {
        free(dir);
        return s;
    }
    /* Permissions, a read-only file system, quotas on inodes: only trying tells. */
    char tmp[PATH_MAX + 128];
    s = kd_safe_file_temp_name(path, tmp, sizeof tmp);
    if (s == KD_OK) {
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno == EEXIST) /* this process's own temporary, left by a failed save */
            fd = open(tmp, O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            s = kd_fail(KD_ERR_IO, "%s: cannot save there: cannot create a file in %s: %s", path, dir, strerror(errno));
        } else {
            close(fd);
            unlink(tmp);
        }
    }
    free(dir);
    return s;
}

kd_status kd_safe_file_begin(kd_safe_file *sf, const char *path, const char *what)
{
    /* Room for ".tmp-", the host tag, '-' and any pid. */
    size_t tmp_len = strlen(path) + 100;
    sf->path = path;
    sf->tmp = kd_malloc(tmp_len, what);
    if (!sf->tmp)
        return KD_ERR_NOMEM;
    kd_status s = kd_safe_file_temp_name(path, sf->tmp, tmp_len);
    if (s != KD_OK) {
        free(sf->tmp);
        sf->tmp = NULL;
        return s;
    }
    remove_stale_temporaries(path);
    return KD_OK;
}

/* Opens target and fsyncs it; messages name path (the file being saved). */
static kd_status fsync_path(const char *path, const char *target, int flags, const char *what)
{
    int fd = open(target, flags);
    if (fd < 0)
        return kd_fail(KD_ERR_IO, "%s: cannot open %s for fsync: %s", path, what, strerror(errno));
    if (fsync(fd) != 0 && errno != EINVAL) { /* EINVAL: this file system cannot sync it */
        int e = errno;
        close(fd);
        return kd_fail(KD_ERR_IO, "%s: fsync of %s failed: %s", path, what, strerror(e));
    }
    close(fd);
    return KD_OK;
}

/* The directory holding path ("." when path has no slash). Caller frees. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 1;
    char *dir = kd_malloc(n + 1, "directory name");
    if (!dir)
        return NULL;
    if (!slash)
        memcpy(dir, ".", 1);
    else if (n == 0) /* "/x" */
        memcpy(dir, "/", (n = 1));
    else
        memcpy(dir, path, n);
    dir[n] = '\0';
    return dir;
}

/* Whether the process that wrote a temporary last modified at `mtime` may
 * still be writing it. Dead: no such pid, a zombie (killed, not yet
 * reaped), or a pid now used by a process or thread that started after the
 * file was last written (pid reuse). Unknown cases count as alive. */
static int writer_alive(pid_t pid, time_t mtime)
{
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 1;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    const char *p = strrchr(buf, ')'); /* the name may hold spaces and ')' */
    if (!p || p[1] != ' ')
        return 1;
    char state = p[2];
    if (state == 'Z' || state == 'X')
        return 0;
    /* Field 22, starttime in clock ticks since boot; fields from 3 on follow ") ". */
    unsigned long long start = 0;
    int field = 3;
    for (const char *q = p + 2; *q && field < 22; q++)
        if (*q == ' ')
            field++, start = strtoull(q + 1, NULL, 10);
    long ticks = sysconf(_SC_CLK_TCK);
    unsigned long long btime = 0;
    FILE *st = fopen("/proc/stat", "r");
    if (st) {
        char line[256];
        while (fgets(line, sizeof line, st))
            if (sscanf(line, "btime %llu", &btime) == 1)
                break;
        fclose(st);
    }
    if (field != 22 || ticks <= 0 || !btime)
        return 1;
    time_t started = (time_t)(btime + start / (unsigned long long)ticks);
    return started <= mtime + 1; /* started later than the last write: someone else */
}

/* Temporaries of path left by writers that died (SIGKILL, power loss):
 * "<name>.tmp-<host>-<pid>" beside it, written on this host by a process
 * that no longer exists. Checked on every save (a directory scan, cheap
 * next to writing the file), so the run that resumes after a crash removes
 * what the crashed one left. Temporaries of other hosts sharing the
 * directory are never touched: their pids mean nothing here. */
static void remove_stale_temporaries(const char *path)
{
    char host[72];
    host_tag(host, sizeof host);
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t blen = strlen(base), hlen = strlen(host);
    char *dir = dir_of(path);
    DIR *d = dir ? opendir(dir) : NULL;
    free(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        if (strncmp(n, base, blen) != 0 || strncmp(n + blen, ".tmp-", 5) != 0 ||
            strncmp(n + blen + 5, host, hlen) != 0 || n[blen + 5 + hlen] != '-')
            continue;
        const char *digits = n + blen + 5 + hlen + 1;
        char *end;
        errno = 0;
        long pid = strtol(digits, &end, 10);
        if (end == digits || *end || errno || pid <= 0 || pid == (long)getpid())
            continue;
        struct stat sb;
        if (fstatat(dirfd(d), n, &sb, AT_SYMLINK_NOFOLLOW) == 0 && !writer_alive((pid_t)pid, sb.st_mtime))
            unlinkat(dirfd(d), n, 0);
    }
    closedir(d);
}

kd_status kd_safe_file_commit(kd_safe_file *sf)
{
    const char *path = sf->path;
    kd_status s = fsync_path(path, sf->tmp, O_RDONLY, "the temporary file");
    if (s == KD_OK && rename(sf->tmp, path) != 0)
        s = kd_fail(KD_ERR_IO, "%s: cannot rename %s over it: %s", path, sf->tmp, strerror(errno));
    if (s != KD_OK) {
        kd_safe_file_abort(sf);
        return s;
    }
    free(sf->tmp);
    sf->tmp = NULL;
    /* The rename is only durable once the directory entry is on disk. */
    char *dir = dir_of(path);
    if (!dir)
        return KD_ERR_NOMEM;
    s = fsync_path(path, dir, O_RDONLY | O_DIRECTORY, "its directory");
    free(dir);
    return s;
}

void kd_safe_file_abort(kd_safe_file *sf)
{
    /* unlink, not remove: if the name is a directory it is not ours to delete. */
    if (sf->tmp)
        unlink(sf->tmp);
    free(sf->tmp);
    sf->tmp = NULL;
}

kd_status kd_file_copy(const char *from, const char *to)
{
    if (!from || !from[0] || !to || !to[0])
        return kd_fail(KD_ERR_INVALID, "kd_file_copy: no %s path", !from || !from[0] ? "source" : "destination");
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return kd_fail(KD_ERR_IO, "%s: cannot copy it to %s: %s", from, to, strerror(errno));
    kd_safe_file sf;
    kd_status s = kd_safe_file_begin(&sf, to, "copy temporary name");
    if (s != KD_OK) {
        close(in);
        return s;
    }
    int out = open(sf.tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (out < 0) {
        s = kd_fail(KD_ERR_IO, "%s: cannot create temporary file %s (%s)", to, sf.tmp, strerror(errno));
        close(in);
        kd_safe_file_abort(&sf);
        return s;
    }
    char buf[1 << 16];
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            s = kd_fail(KD_ERR_IO, "%s: reading it to copy to %s failed: %s", from, to, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(out, buf + done, (size_t)(n - done));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                int e = w < 0 ? errno : EIO;
                s = kd_fail(KD_ERR_IO, "%s: writing the copy of %s failed (%s)%s", to, from, strerror(e),
                            e == ENOSPC || e == EDQUOT ? "; free some space, the previous copy (if any) is unchanged"
                                                       : "");
                break;
            }
            done += w;
        }
        if (s != KD_OK)
            break;
    }
    close(in);
    if (close(out) != 0 && s == KD_OK)
        s = kd_fail(KD_ERR_IO, "%s: closing the copy failed (%s)", to, strerror(errno));
    if (s != KD_OK) {
        kd_safe_file_abort(&sf);
        return s;
    }
    return kd_safe_file_commit(&sf);
}
