/* Parameter-server internals shared by ps_common.c (setup, layout, RMA
 * helpers), ps_server.c (the one-sided serve loop), ps_client.c (the
 * one-sided worker side, gather, finish) and ps_msg.c (the two-sided
 * protocol, both sides).
 *
 * Window layout on server s (disp_unit 1, byte displacements):
 *   [0, PS_NCOUNTERS + W) int64 counters (see enum below)
 *   one cache line: the server's doorbell, a uint32 (ps_bell.c)
 *   two parameter copies of count floats: version v lives in copy v % 2
 *   the gradient accumulator (count floats) workers add into
 * Workers' windows are empty.
 *
 * Gradients and counters: every access is an accumulate-family RMA call.
 * Workers only MPI_SUM and the server only MPI_SUM / MPI_REPLACE on
 * locations workers read with MPI_NO_OP, so the default accumulate_ops
 * (same_op_no_op) holds and each element is atomic. In particular the
 * server takes gradients by reading them (NO_OP) and adding their negation
 * (SUM), not by MPI_REPLACE with zeros: REPLACE concurrent with the
 * workers' SUM on the same address is outside same_op_no_op, the only
 * guarantee MPI gives without asking.
 *
 * Parameters: the server writes version v + 1 (MPI_REPLACE) into the copy
 * workers are not reading (v + 1) % 2, and announces it in two steps:
 * WRITING = v + 1 (flushed) before the first byte, VERSION = v + 1 after the
 * last. A worker reads VERSION = v, then MPI_Get's copy v % 2 (a plain get:
 * the atomic NO_OP read takes the target's accumulate lock, so it queued
 * behind the server's own locked REPLACE and gradient take, which doubled
 * the pull time on one host), then reads WRITING: while WRITING <= v + 1
 * nobody had begun to rewrite copy v % 2 (that starts only at WRITING =
 * v + 2), so the get did not overlap a write and is exact. Otherwise it
 * tries again; after PS_PULL_TRIES attempts it falls back to a NO_OP read,
 * atomic per element (the guarantee the pull always had).
 *
 * Direct access (ps->direct): with staleness 0 in a shared-memory window
 * (one host, MPI_WIN_UNIFIED), no RMA can touch the server's accumulator
 * or the copy it writes while it takes or publishes a round: every worker
 * still training has pushed the round and waits for its version before it
 * pulls or pushes again, and a pull reads only the copy of the version it
 * saw. So the server reads and clears its accumulator and writes the new
 * copy with plain loads and stores between MPI_Win_sync calls: one pass
 * each on the path every worker waits on, where the take was four passes
 * (two of them locked accumulates) and the publish a locked MPI_REPLACE.
 * The counters stay atomic RMA. */
#ifndef KD_PS_INTERNAL_H
#define KD_PS_INTERNAL_H

#include <stdarg.h>
#include <stdint.h>

#include "error.h"
#include "ps.h"

enum {
    PS_PUSHES = 0,   /* pushes completed (grads flushed before the +1) */
    PS_SAMPLES = 1,  /* samples of every push so far (server 0; global samples/s) */
    PS_VERSION = 2,  /* optimizer steps this server applied in this run */
    PS_FINISHED = 3, /* workers that called kd_ps_worker_finish */
    PS_STEPS = 4,    /* the shard optimizer's step count (resume included) */
    PS_TAKEN = 5,    /* pushes applied in this run; set after the version holding them is announced */
    PS_WRITING = 6,  /* the version whose parameters are being (or were last) written */
    PS_NCOUNTERS = 7 /* then W clocks, used on server 0 when max_staleness > 0 */
};
/* A push bumps [PS_PUSHES, PS_SAMPLES] in one call per server; a pull
 * reads [PS_SAMPLES, PS_TAKEN] in one call per server. */
#define PS_PULL_FIRST PS_SAMPLES
#define PS_PULL_COUNTERS (PS_TAKEN - PS_SAMPLES + 1)

/* Point-to-point tags on the private communicator. */
enum {
    PS_TAG_SEED = 7101,
    PS_TAG_GATHER_REQ = 7201, /* one-sided protocol only; MSG sends a header */
    PS_TAG_GATHER_REPLY = 7202,
    PS_TAG_HEADER = 7301,     /* MSG, worker -> server: what the worker wants */
    PS_TAG_GRADS = 7302,      /* MSG, worker -> server: a push's gradients */
    PS_TAG_REPLY = 7303,      /* MSG, server -> worker: version, steps, samples */
    PS_TAG_PARAMS = 7304      /* MSG, server -> worker: the shard's parameters */
};

/* MSG headers: int64 [kind, samples or want_state, 0, 0]; replies: int64
 * [version, optimizer steps, samples pushed so far, 0]. */
enum { PS_MSG_PUSH = 1, PS_MSG_PULL = 2, PS_MSG_GATHER = 3, PS_MSG_FINISH = 4 };
#define PS_MSG_WORDS 4

/* Plain-get attempts of one pull before the atomic fallback. */
#define PS_PULL_TRIES 4

/* Added to a finished worker's clock so it never holds others back. */
#define PS_CLOCK_DONE ((int64_t)1 << 62)

struct kd_ps {
    MPI_Comm comm; /* duplicate of the caller's: own tags, MPI_ERRORS_RETURN */
    kd_ps_protocol protocol; /* KD_PS_RMA or KD_PS_MSG */
    int shared;    /* every rank on one host (the RMA window is in shared memory) */
    int shared_refused; /* ... unless the MPI library refused one (no osc/sm) */
    int crowded;   /* more ranks on this host than cores: idle waits sleep */
    MPI_Win win;   /* RMA only */
    char *own;     /* this rank's window memory (a server's; RMA only) */
    uint32_t *bell;          /* server: its doorbell, or NULL (ps_bell.c) */
    uint32_t **server_bells; /* worker: each server's doorbell, or NULL */
    int direct;    /* server: own accumulator and copies by load/store (see above) */
    int locked;    /* inside MPI_Win_lock_all */
    int rank, size, servers, workers;
    kd_ps_config cfg; /* chunk resolved */
    kd_optim_config oc;
    size_t n;
    int slots;     /* optimizer state slots of oc's kind */

    /* server */
    size_t offset, count; /* this server's shard */
    kd_optim *opt;
    float *params;        /* authoritative shard parameters */
    float *grad;          /* gradients taken from the window, or received (MSG) */
    float *acc;           /* MSG, synchronous rounds: the round's sum so far */
    int64_t taken;        /* pushes consumed */
    int64_t steps_base;   /* optimizer steps at start (a resumed run's) */
    int64_t version;

    /* worker */
    int64_t clock;        /* pushes made */
    int64_t seen_version; /* min over servers at the last pull */
    int64_t seen_steps;   /* server 0's optimizer steps at the last pull */
    int finished;
    int64_t *clocks;      /* W, read from server 0 */
    int64_t seen_samples; /* server 0's sample count at the last pull */
    int64_t *pull_counters; /* PS_PULL_COUNTERS per server, from VERSION (RMA) */
    int64_t *pull_writing;  /* 1 per server: WRITING after the get (RMA) */
    char *pull_retry;       /* 1 per server: its copy must be read again (RMA) */
    int64_t *msg_out, *msg_in; /* PS_MSG_WORDS per server: headers, replies (MSG) */
    MPI_Request *msg_req;      /* 4 per server (MSG) */
};

static inline int ps_worker_index(const kd_ps *ps) { return ps->rank - ps->servers; }

/* Byte displacement of the parameter copy holding `version` / of the
 * gradient accumulator in server s's window. */
MPI_Aint ps_params_disp(const kd_ps *ps, int s, int64_t version);
MPI_Aint ps_grads_disp(const kd_ps *ps, int s);
MPI_Aint ps_counter_disp(int which);
MPI_Aint ps_bell_disp(const kd_ps *ps);

/* A failed MPI call as a kd message: "parameter server rank 3 (worker 1):
 * MPI_Accumulate to server 0 failed: <MPI's text>". */
kd_status ps_mpi_fail(const kd_ps *ps, int rc, const char *fmt, ...) KD_PRINTF(3, 4);
#define PS_MPI(ps, call, ...)                                   \
    do {                                                        \
        int ps_rc_ = (call);                                    \
        if (ps_rc_ != MPI_SUCCESS)                              \
            return ps_mpi_fail((ps), ps_rc_, __VA_ARGS__);      \
    } while (0)

/* Chunked accumulate-family calls on target's window (count elements of
 * type dt starting at byte displacement disp). No flush. */
kd_status ps_accumulate(const kd_ps *ps, const void *origin, size_t count, MPI_Datatype dt,
                        int target, MPI_Aint disp, MPI_Op op);
kd_status ps_read(const kd_ps *ps, void *result, size_t count, MPI_Datatype dt, int target,
                  MPI_Aint disp);
/* Chunked MPI_Get: only for memory no one writes meanwhile. No flush. */
kd_status ps_get(const kd_ps *ps, void *result, size_t count, MPI_Datatype dt, int target, MPI_Aint disp);
kd_status ps_flush(const kd_ps *ps, int target);
kd_status ps_flush_servers(const kd_ps *ps); /* every server rank */
/* Read counters [first, first + count) of server s, completed. */
kd_status ps_read_counters(const kd_ps *ps, int s, int first, int count, int64_t *out);

/* Large float messages in pieces that fit MPI's int counts. */
kd_status ps_send_floats(const kd_ps *ps, const float *buf, size_t count, int dest, int tag);
kd_status ps_recv_floats(const kd_ps *ps, float *buf, size_t count, int src, int tag);

/* Sleep between idle polls: 20 us doubling to 500 us, reset on work. */
void ps_backoff(long *ns);
void ps_backoff_grow(long *ns); /* the doubling alone */
#define PS_BACKOFF_START_NS 20000L

/* A worker waiting for its servers (the staleness bound): polls with
 * sched_yield for up to PS_SPIN_NS, so it sees a published round at once
 * while handing its core to any rank that can run (the server applying
 * that round, on a crowded host), then sleeps as ps_backoff. A server
 * only sleeps: spinning there takes the cores from computing workers. */
typedef struct {
    long sleep_ns;         /* 0 while spinning */
    int64_t spin_until_ns; /* CLOCK_MONOTONIC */
} ps_wait;
void ps_wait_start(ps_wait *w);
void ps_wait_next(ps_wait *w);
#define PS_SPIN_NS 2000000L

/* Doorbells (ps_bell.c). Setup: after the window exists (base: this
 * rank's part); leaves them off where they cannot work. A worker rings
 * server s once what it changed there is complete; a server reads its bell
 * before checking its counters, and waits (up to *ns, which then grows as
 * ps_backoff's) only while the bell still holds what it read. */
kd_status ps_bells_setup(kd_ps *ps, char *base);
void ps_bell_ring(const kd_ps *ps, int s);
void ps_bell_ring_servers(const kd_ps *ps);
uint32_t ps_bell_seen(const kd_ps *ps);
void ps_bell_wait(const kd_ps *ps, uint32_t seen, long *ns);

/* The two-sided protocol (ps_msg.c). */
kd_status ps_msg_exchange(kd_ps *ps, const float *grads, float *params, int64_t samples);
kd_status ps_msg_pull(kd_ps *ps, float *params);
kd_status ps_msg_gather(kd_ps *ps, float *params, float *state, int64_t *steps0);
kd_status ps_msg_finish(kd_ps *ps);
kd_status ps_msg_serve(kd_ps *ps);
/* The gather reply both protocols send: shard range, slots, steps, then
 * the parameters and (if asked) the optimizer state. */
kd_status ps_send_shard(kd_ps *ps, int dest, int want_state);
kd_status ps_recv_shard(kd_ps *ps, int s, float *params, float *state, int want_state, int64_t *steps);

#endif
