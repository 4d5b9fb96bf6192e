/* Test-only fault injection, loaded with LD_PRELOAD into the ranks of a
 * kindling job (never linked into the library). It counts calls at a few
 * chosen points and SIGKILLs its own process at the Nth one, so a fault
 * lands exactly inside a push, an allreduce, a parameter-server reply or a
 * checkpoint write and the same case reproduces run after run.
 *
 *   KD_FAILPOINT=POINT:N     the point and the call number (1-based)
 *   KD_FAILPOINT_RANK=R      only in the process with OMPI_COMM_WORLD_RANK=R
 *                            (unset: every rank; "any" likewise)
 *   KD_FAILPOINT_ONCE=FILE   fire only if FILE does not exist, and create it
 *                            (a relaunch with the same environment then runs
 *                            clean)
 *   KD_FAILPOINT_KILL=task   also SIGKILL the Spark task that runs this rank
 *                            (the parent of the kindling_spark keeper above
 *                            this process) just before killing itself
 *
 * Points:
 *   push:N         the Nth MPI_Accumulate (a worker's push of gradients or
 *                  of a counter); killed right after issuing it, before the
 *                  flush that completes it: the RMA epoch is left open
 *   allreduce:N    the Nth MPI_Iallreduce (sync mode's gradient exchange),
 *                  right after starting it
 *   send:N         the Nth MPI_Send, before it (a server answering a
 *                  checkpoint gather sends a header, then the shard)
 *   ckpt_write:N   the Nth checkpoint save (the Nth "*.tmp-*" file written
 *                  to, so the destination check that only creates one does
 *                  not count), after half of its first write: a half-written
 *                  temporary (the file is built in memory, then written with
 *                  write(2))
 *   ckpt_rename:N  the Nth rename of "*.tmp-*", before it: the temporary is
 *                  complete and fsynced but not yet in place
 *
 * Real functions are found with dlsym(RTLD_NEXT), so this library links
 * no MPI and is harmless in any other process it reaches. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mpi.h>

enum { FP_NONE, FP_PUSH, FP_ALLREDUCE, FP_SEND, FP_CKPT_WRITE, FP_CKPT_RENAME };

static int fp_point = -1; /* -1: not parsed yet */
static long fp_n;
static long fp_count;
static int fp_tmp_fd = -1; /* the temporary just created, until its first write */

static void fp_init(void)
{
    if (fp_point >= 0)
        return;
    fp_point = FP_NONE;
    const char *spec = getenv("KD_FAILPOINT");
    if (!spec || !*spec)
        return;
    const char *want = getenv("KD_FAILPOINT_RANK");
    const char *rank = getenv("OMPI_COMM_WORLD_RANK");
    if (want && *want && strcmp(want, "any") != 0 && (!rank || strcmp(want, rank) != 0))
        return;
    if (!rank) /* not an MPI rank (mpirun, orted, a shell): never fire */
        return;
    const char *once = getenv("KD_FAILPOINT_ONCE");
    if (once && *once && access(once, F_OK) == 0)
        return;
    static const struct { const char *name; int point; } names[] = {
        {"push", FP_PUSH}, {"allreduce", FP_ALLREDUCE}, {"send", FP_SEND},
        {"ckpt_write", FP_CKPT_WRITE}, {"ckpt_rename", FP_CKPT_RENAME}};
    const char *colon = strchr(spec, ':');
    size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
    fp_n = colon ? atol(colon + 1) : 1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i].name) == len && strncmp(spec, names[i].name, len) == 0)
            fp_point = names[i].point;
    if (fp_point == FP_NONE || fp_n < 1) {
        fprintf(stderr, "failpoint: cannot parse KD_FAILPOINT=%s\n", spec);
        fp_point = FP_NONE;
    }
}

/* ppid and argv (NULs turned into spaces) of pid; 0 on failure. */
static int proc_info(long pid, long *ppid, char *cmd, size_t cmdlen)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *rp = strrchr(buf, ')'); /* "pid (comm) state ppid ..." */
    if (!rp || sscanf(rp + 2, "%*c %ld", ppid) != 1)
        return 0;
    snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
    fd = open(path, O_RDONLY);
    cmd[0] = '\0';
    if (fd >= 0) {
        n = read(fd, cmd, cmdlen - 1);
        close(fd);
        if (n > 0) {
            for (ssize_t i = 0; i < n; i++)
                if (cmd[i] == '\0')
                    cmd[i] = ' ';
            cmd[n] = '\0';
        }
    }
    return 1;
}

/* The Spark task above this rank: the parent of the nearest keeper. */
static long spark_task_pid(void)
{
    long pid = getppid();
    char cmd[1024];
    for (int depth = 0; depth < 16 && pid > 1; depth++) {
        long ppid;
        if (!proc_info(pid, &ppid, cmd, sizeof cmd))
            return 0;
        if (strstr(cmd, "kindling_spark/keeper.py ") || strstr(cmd, "kindling_spark.keeper "))
            return ppid > 1 ? ppid : 0;
        pid = ppid;
    }
    return 0;
}

static void fp_fire(const char *what)
{
    const char *once = getenv("KD_FAILPOINT_ONCE");
    if (once && *once) {
        int fd = open(once, O_WRONLY | O_CREAT, 0644);
        if (fd >= 0)
            close(fd);
    }
    const char *kill_what = getenv("KD_FAILPOINT_KILL");
    long task = kill_what && strcmp(kill_what, "task") == 0 ? spark_task_pid() : 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    fprintf(stderr, "failpoint: rank %s (pid %ld): SIGKILL at %s (%s)%s at unix time %.3f\n",
            getenv("OMPI_COMM_WORLD_RANK"), (long)getpid(), getenv("KD_FAILPOINT"), what,
            task ? ", and its Spark task" : "", (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec);
    fflush(stderr);
    if (task)
        kill((pid_t)task, SIGKILL);
    raise(SIGKILL);
    _exit(137);
}

/* Counts a call at point; 1 when this is the one to fail at. */
static int fp_hit(int point)
{
    fp_init();
    return fp_point == point && ++fp_count == fp_n;
}

#define REAL(name) \
    static __typeof__(name) *real_##name; \
    if (!real_##name) \
        real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

int MPI_Accumulate(const void *origin, int ocount, MPI_Datatype otype, int target, MPI_Aint tdisp, int tcount,
                   MPI_Datatype ttype, MPI_Op op, MPI_Win win)
{
    REAL(MPI_Accumulate);
    int hit = fp_hit(FP_PUSH);
    int rc = real_MPI_Accumulate(origin, ocount, otype, target, tdisp, tcount, ttype, op, win);
    if (hit)
        fp_fire("MPI_Accumulate issued, not flushed");
    return rc;
}

int MPI_Iallreduce(const void *sendbuf, void *recvbuf, int count, MPI_Datatype dt, MPI_Op op, MPI_Comm comm,
                   MPI_Request *req)
{
    REAL(MPI_Iallreduce);
    int hit = fp_hit(FP_ALLREDUCE);
    int rc = real_MPI_Iallreduce(sendbuf, recvbuf, count, dt, op, comm, req);
    if (hit)
        fp_fire("MPI_Iallreduce started, not completed");
    return rc;
}

int MPI_Send(const void *buf, int count, MPI_Datatype dt, int dest, int tag, MPI_Comm comm)
{
    REAL(MPI_Send);
    if (fp_hit(FP_SEND))
        fp_fire("before MPI_Send");
    return real_MPI_Send(buf, count, dt, dest, tag, comm);
}

int open(const char *path, int flags, ...)
{
    REAL(open);
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    int fd = real_open(path, flags, mode);
    if (fd >= 0 && (flags & O_CREAT) && strstr(path, ".tmp-"))
        fp_tmp_fd = fd;
    return fd;
}

ssize_t write(int fd, const void *buf, size_t count)
{
    REAL(write);
    if (fp_tmp_fd < 0 || fd != fp_tmp_fd)
        return real_write(fd, buf, count);
    fp_tmp_fd = -1; /* one count per temporary */
    if (!fp_hit(FP_CKPT_WRITE))
        return real_write(fd, buf, count);
    /* Some of the file on disk, as a crash mid-write leaves it. */
    real_write(fd, buf, count / 2);
    fp_fire("checkpoint temporary half written");
    return -1;
}

int rename(const char *from, const char *to)
{
    REAL(rename);
    if (from && strstr(from, ".tmp-") && fp_hit(FP_CKPT_RENAME))
        fp_fire("checkpoint temporary complete, before rename");
    return real_rename(from, to);
}
