/* Crash-safe file replacement; see safe_file.h. */
#include "safe_file.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

kd_status kd_safe_file_begin(kd_safe_file *sf, const char *path, const char *what)
{
    /* Room for ".tmp-" and any pid. */
    size_t tmp_len = strlen(path) + 32;
    sf->path = path;
    sf->tmp = kd_malloc(tmp_len, what);
    if (!sf->tmp)
        return KD_ERR_NOMEM;
    snprintf(sf->tmp, tmp_len, "%s.tmp-%ld", path, (long)getpid());
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
