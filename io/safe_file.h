/* Crash-safe replacement of a file, shared by the writers in io/ (checkpoints,
 * spools): write everything to "<path>.tmp-<host>-<pid>" beside the target, then
 * commit = fsync the temporary, rename it over path, fsync the directory.
 * A crash or error at any point leaves either the old file or the new one
 * under path, never a mix. A temporary left by a writer that was killed is
 * never read, and the next save of that path on the same host removes it
 * once the dead writer's pid is gone. Not part of the public API. */
#ifndef KD_SAFE_FILE_H
#define KD_SAFE_FILE_H

#include "kindling.h"

typedef struct kd_safe_file {
    const char *path; /* borrowed: the final name, also used in messages */
    char *tmp;        /* owned: the temporary name beside path */
} kd_safe_file;

/* Makes the temporary name for path (what names it for allocation errors).
 * Creates no file: the caller creates and writes sf->tmp, then closes it
 * and calls exactly one of kd_safe_file_commit or kd_safe_file_abort. */
kd_status kd_safe_file_begin(kd_safe_file *sf, const char *path, const char *what);

/* The temporary name this process uses for path, into buf. */
kd_status kd_safe_file_temp_name(const char *path, char *buf, size_t len);

/* fsyncs the (closed) temporary, renames it over path and fsyncs path's
 * directory. If it fails before the rename the temporary is removed.
 * Always releases sf. */
kd_status kd_safe_file_commit(kd_safe_file *sf);

/* Removes the temporary (if the caller created it) and releases sf. */
void kd_safe_file_abort(kd_safe_file *sf);

#endif
