/* Doorbells: how an idle server learns at once that a worker has pushed,
 * finished or asked for a gather, without polling its counters on a timer.
 *
 * A server that polls must sleep between polls (spinning takes the cores
 * of computing workers on a crowded host), and its sleep grows to 500 us
 * while workers compute, so it saw a round up to a sleep (plus the timer's
 * slack) late: at staleness 0 every worker waits through that delay each
 * step. With a doorbell the server sleeps in the kernel on a 32-bit word of
 * its own window and a worker that rings it (increments it, then wakes the
 * sleeper) ends the sleep at once.
 *
 * Only where the words are shared memory that both processes map (an
 * osc/sm window on one host) and the kernel has futexes (Linux); otherwise
 * ringing does nothing and the server sleeps on its timer, as before. The
 * timer stays in both cases: it bounds a wait whose ring was missed.
 *
 * No wake-up is lost: the server reads the word before it checks its
 * counters, and FUTEX_WAIT sleeps only while the word still holds that
 * value; a worker rings only after the counters it changed are complete. */
#include <time.h>

#include "ps_internal.h"

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#define PS_HAVE_FUTEX 1
#else
#define PS_HAVE_FUTEX 0
#endif

kd_status ps_bells_setup(kd_ps *ps, char *base)
{
    if (!PS_HAVE_FUTEX || !ps->shared || ps->shared_refused)
        return KD_OK;
    MPI_Aint disp = ps_bell_disp(ps);
    if (kd_ps_is_server(ps)) {
        ps->bell = (uint32_t *)(void *)(base + disp);
        return KD_OK;
    }
    ps->server_bells = kd_calloc((size_t)ps->servers, sizeof *ps->server_bells, "server doorbells");
    if (!ps->server_bells)
        return KD_ERR_NOMEM;
    for (int s = 0; s < ps->servers; s++) {
        MPI_Aint size = 0;
        int unit = 0;
        char *theirs = NULL;
        PS_MPI(ps, MPI_Win_shared_query(ps->win, s, &size, &unit, &theirs),
               "MPI_Win_shared_query (server %d's window)", s);
        ps->server_bells[s] = (uint32_t *)(void *)(theirs + disp);
    }
    return KD_OK;
}

void ps_bell_ring(const kd_ps *ps, int s)
{
#if PS_HAVE_FUTEX
    if (!ps->server_bells)
        return;
    uint32_t *bell = ps->server_bells[s];
    __atomic_fetch_add(bell, 1u, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, bell, FUTEX_WAKE, 1, NULL, NULL, 0); /* none asleep: a cheap no-op */
#else
    (void)ps;
    (void)s;
#endif
}

void ps_bell_ring_servers(const kd_ps *ps)
{
    for (int s = 0; s < ps->servers; s++)
        ps_bell_ring(ps, s);
}

uint32_t ps_bell_seen(const kd_ps *ps) { return ps->bell ? __atomic_load_n(ps->bell, __ATOMIC_SEQ_CST) : 0; }

void ps_bell_wait(const kd_ps *ps, uint32_t seen, long *ns)
{
#if PS_HAVE_FUTEX
    if (ps->bell) {
        struct timespec ts = {0, *ns};
        /* rung since `seen` (EAGAIN), a signal, the timeout: all just return */
        syscall(SYS_futex, ps->bell, FUTEX_WAIT, seen, &ts, NULL, 0);
        ps_backoff_grow(ns);
        return;
    }
#endif
    (void)ps;
    (void)seen;
    ps_backoff(ns); /* no doorbell: the timer alone */
}
