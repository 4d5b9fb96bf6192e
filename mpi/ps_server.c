/* Parameter server: the one-sided serve loop of a server rank (the
 * two-sided one is in ps_msg.c). It polls its own
 * window's counters, takes the accumulated gradients when a step is due,
 * runs the same kd_optim_step a single process runs (on its shard only),
 * publishes the shard and bumps its version; between polls it answers
 * gather requests and keeps calling into MPI, which is what moves remote
 * accumulates along on transports without passive-target progress. Idle,
 * it sleeps until a worker rings its doorbell or a timer ends (ps_bell.c). */
#include <stdlib.h>
#include <string.h>

#include "ps_internal.h"

/* Gradients accumulated since the last take, divided by `divisor`
 * (division, not * (1/d): exact when the sum is a multiple of d), and
 * cleared. Direct (see ps_internal.h): one pass of loads and stores.
 * Otherwise atomically per element: read them (NO_OP), then add their
 * negation (SUM), so whatever a worker adds in between stays for the next
 * take; the negation is made in place and undone on the way out (negation
 * is exact, so both ways give the same quotient). */
static kd_status take_gradients(kd_ps *ps, int64_t divisor)
{
    MPI_Aint disp = ps_grads_disp(ps, ps->rank);
    float *g = ps->grad, d = (float)divisor;
    if (ps->direct) {
        float *acc = (float *)(void *)(ps->own + disp);
        PS_MPI(ps, MPI_Win_sync(ps->win), "MPI_Win_sync"); /* the pushes' stores, seen */
        for (size_t i = 0; i < ps->count; i++) {
            g[i] = acc[i] / d;
            acc[i] = 0.0f;
        }
        PS_MPI(ps, MPI_Win_sync(ps->win), "MPI_Win_sync"); /* the zeros, before the next push */
        return KD_OK;
    }
    KD_TRY(ps_read(ps, g, ps->count, MPI_FLOAT, ps->rank, disp));
    KD_TRY(ps_flush(ps, ps->rank));
    for (size_t i = 0; i < ps->count; i++)
        g[i] = -g[i];
    KD_TRY(ps_accumulate(ps, g, ps->count, MPI_FLOAT, ps->rank, disp, MPI_SUM));
    KD_TRY(ps_flush(ps, ps->rank)); /* the origin buffer is ours again */
    for (size_t i = 0; i < ps->count; i++)
        g[i] = -g[i] / d;
    return KD_OK;
}

/* The shard's parameters into the copy of version `next`. */
static kd_status write_copy(kd_ps *ps, int64_t next)
{
    MPI_Aint disp = ps_params_disp(ps, ps->rank, next);
    if (ps->direct) {
        PS_MPI(ps, MPI_Win_sync(ps->win), "MPI_Win_sync"); /* WRITING first */
        memcpy(ps->own + disp, ps->params, sizeof(float) * ps->count);
        PS_MPI(ps, MPI_Win_sync(ps->win), "MPI_Win_sync"); /* the copy, before VERSION */
        return KD_OK;
    }
    KD_TRY(ps_accumulate(ps, ps->params, ps->count, MPI_FLOAT, ps->rank, disp, MPI_REPLACE));
    return ps_flush(ps, ps->rank);
}

/* Version v + 1 into the copy no worker reads (see ps_internal.h): WRITING
 * first, the parameters, then VERSION, each completed before the next.
 * TAKEN (the pushes version v + 1 holds) comes last, so a worker that reads
 * it also reads a VERSION whose parameters hold those pushes; one reading
 * the old TAKEN with the new VERSION only waits a poll longer. */
static kd_status publish(kd_ps *ps, int64_t taken)
{
    int64_t one = 1, next = ps->version + 1, steps = kd_optim_steps(ps->opt);
    KD_TRY(ps_accumulate(ps, &one, 1, MPI_INT64_T, ps->rank, ps_counter_disp(PS_WRITING), MPI_SUM));
    KD_TRY(ps_flush(ps, ps->rank));
    KD_TRY(write_copy(ps, next));
    KD_TRY(ps_accumulate(ps, &steps, 1, MPI_INT64_T, ps->rank, ps_counter_disp(PS_STEPS), MPI_REPLACE));
    KD_TRY(ps_accumulate(ps, &one, 1, MPI_INT64_T, ps->rank, ps_counter_disp(PS_VERSION), MPI_SUM));
    KD_TRY(ps_flush(ps, ps->rank));
    KD_TRY(ps_accumulate(ps, &taken, 1, MPI_INT64_T, ps->rank, ps_counter_disp(PS_TAKEN), MPI_REPLACE));
    KD_TRY(ps_flush(ps, ps->rank));
    ps->version = next;
    return KD_OK;
}

/* One optimizer step if pushes allow it; *worked says whether one ran. */
static kd_status maybe_step(kd_ps *ps, int *worked)
{
    /* FINISHED is read before PUSHES: a worker bumps FINISHED only after
     * its last push is counted, so when every worker reads as finished the
     * push count read afterwards is final. */
    int64_t finished, pushes;
    KD_TRY(ps_read_counters(ps, ps->rank, PS_FINISHED, 1, &finished));
    KD_TRY(ps_read_counters(ps, ps->rank, PS_PUSHES, 1, &pushes));
    int64_t pending = pushes - ps->taken, divisor;
    if (pending <= 0)
        return KD_OK;
    if (ps->cfg.max_staleness == 0) {
        /* A round is one push from every worker still training. Workers
         * cannot push round r+1 before round r is applied, so pending never
         * mixes rounds. */
        int64_t active = ps->workers - finished;
        if (pending < active)
            return KD_OK;
        divisor = pending;
    } else {
        divisor = ps->workers;
    }
    KD_TRY(take_gradients(ps, divisor));
    /* Async: how many pushes a step takes depends on timing (one each when
     * the server keeps up, as over TCP), so the schedule's clock is rounds
     * of W pushes, the steps a synchronous run would have taken. */
    if (ps->cfg.max_staleness != 0)
        kd_optim_set_steps(ps->opt, ps->steps_base + ps->taken / ps->workers);
    kd_status s = kd_optim_step(ps->opt, ps->params, ps->grad);
    if (s != KD_OK)
        return kd_fail_context(s, "parameter server rank %d", ps->rank);
    KD_TRY(publish(ps, ps->taken + pending));
    ps->taken += pending;
    *worked = 1;
    return KD_OK;
}

/* A worker asked for this shard (and, if the request says so, the
 * optimizer state) for a checkpoint. */
static kd_status answer_gather(kd_ps *ps, int src)
{
    int want_state = 0, worked = 0;
    PS_MPI(ps, MPI_Recv(&want_state, 1, MPI_INT, src, PS_TAG_GATHER_REQ, ps->comm, MPI_STATUS_IGNORE),
           "MPI_Recv of a gather request from rank %d", src);
    /* Apply what has arrived up to the request (the requester synchronised
     * with the other workers first when it wants every push included). */
    KD_TRY(maybe_step(ps, &worked));
    return ps_send_shard(ps, src, want_state);
}

kd_status kd_ps_serve(kd_ps *ps)
{
    if (!ps)
        return kd_fail(KD_ERR_INVALID, "kd_ps_serve: NULL parameter server");
    if (!kd_ps_is_server(ps))
        return kd_fail(KD_ERR_STATE, "kd_ps_serve: rank %d is a worker, not a server", ps->rank);
    if (ps->protocol == KD_PS_MSG)
        return ps_msg_serve(ps);
    long backoff = PS_BACKOFF_START_NS;
    for (;;) {
        int worked = 0;
        int64_t finished;
        uint32_t bell = ps_bell_seen(ps); /* before the counters: see ps_bell.c */
        /* Read before the step: if every worker had finished by then, the
         * step below sees their final pushes. */
        KD_TRY(ps_read_counters(ps, ps->rank, PS_FINISHED, 1, &finished));
        KD_TRY(maybe_step(ps, &worked));
        int flag = 0;
        MPI_Status st;
        PS_MPI(ps, MPI_Iprobe(MPI_ANY_SOURCE, PS_TAG_GATHER_REQ, ps->comm, &flag, &st),
               "MPI_Iprobe for gather requests");
        if (flag) {
            KD_TRY(answer_gather(ps, st.MPI_SOURCE));
            worked = 1;
        }
        if (finished >= ps->workers) {
            int64_t pushes;
            KD_TRY(ps_read_counters(ps, ps->rank, PS_PUSHES, 1, &pushes));
            if (pushes == ps->taken)
                return KD_OK;
            continue; /* the last pushes: step again without sleeping */
        }
        if (worked)
            backoff = PS_BACKOFF_START_NS;
        else
            ps_bell_wait(ps, bell, &backoff);
    }
}
