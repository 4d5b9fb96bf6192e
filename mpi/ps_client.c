/* Parameter server: the worker side of the one-sided protocol, and the
 * entry points of both. A training step pushes the batch's gradients into
 * every server's accumulator, waits as the staleness bound demands, and
 * pulls the fresh parameters; a checkpoint gathers the shards and the
 * optimizer state by message.
 *
 * Round trips of a step (one flush each): the push's gradients; the
 * counters (version, steps, samples; with a staleness bound also the
 * clocks), which completes the push's counter bumps too; the parameters;
 * the WRITING check. In shared memory, where a flush is no round trip, the
 * push also completes its counter bumps and rings the servers' doorbells. */
#include <stdlib.h>

#include "ps_internal.h"

static kd_status check_worker(const kd_ps *ps, const char *what)
{
    if (!ps)
        return kd_fail(KD_ERR_INVALID, "%s: NULL parameter server", what);
    if (kd_ps_is_server(ps))
        return kd_fail(KD_ERR_STATE, "%s is for worker ranks; rank %d is a server", what, ps->rank);
    if (ps->finished)
        return kd_fail(KD_ERR_STATE, "%s on rank %d after kd_ps_worker_finish", what, ps->rank);
    return KD_OK;
}

/* Gradients into every shard's accumulator; only once they are complete at
 * the target (flush) do the push and sample counts go up, so a server that
 * sees the count has every element of the push. The counter bumps are
 * completed by the pull's first flush, not one of their own. */
static kd_status push(kd_ps *ps, const float *grads, int64_t samples)
{
    for (int s = 0; s < ps->servers; s++) {
        size_t off, count;
        kd_ps_shard_range(ps->n, ps->servers, s, &off, &count);
        KD_TRY(ps_accumulate(ps, grads + off, count, MPI_FLOAT, s, ps_grads_disp(ps, s), MPI_SUM));
    }
    KD_TRY(ps_flush_servers(ps));
    int64_t one = 1, bump[2] = {1, samples}, bump_others[2] = {1, 0}; /* PUSHES, SAMPLES */
    for (int s = 0; s < ps->servers; s++)
        KD_TRY(ps_accumulate(ps, s == 0 ? bump : bump_others, 2, MPI_INT64_T, s, ps_counter_disp(PS_PUSHES), MPI_SUM));
    if (ps->cfg.max_staleness > 0)
        KD_TRY(ps_accumulate(ps, &one, 1, MPI_INT64_T, 0, ps_counter_disp(PS_NCOUNTERS + ps_worker_index(ps)),
                             MPI_SUM));
    ps->clock++;
    if (ps->server_bells) { /* shared memory: the flush costs no round trip */
        KD_TRY(ps_flush_servers(ps));
        ps_bell_ring_servers(ps);
    }
    return KD_OK;
}

/* Issue a counter read on every server still marked in pull_retry (and,
 * with `clocks`, the workers' clocks on server 0), then complete them. */
static kd_status read_counters_of(kd_ps *ps, int first, int count, int64_t *out, int clocks)
{
    for (int s = 0; s < ps->servers; s++)
        if (ps->pull_retry[s])
            KD_TRY(ps_read(ps, out + (size_t)s * (size_t)count, (size_t)count, MPI_INT64_T, s, ps_counter_disp(first)));
    if (clocks)
        KD_TRY(ps_read(ps, ps->clocks, (size_t)ps->workers, MPI_INT64_T, 0, ps_counter_disp(PS_NCOUNTERS)));
    for (int s = 0; s < ps->servers; s++)
        if (ps->pull_retry[s] || (clocks && s == 0))
            KD_TRY(ps_flush(ps, s));
    return KD_OK;
}

/* Pushes every server must have applied before a worker at clock c reads
 * (bound k > 0): each worker's first c - k, or all of a finished worker's
 * if it made fewer. */
static int64_t pushes_due(const kd_ps *ps, int k)
{
    int64_t due = 0, upto = ps->clock - k;
    for (int w = 0; w < ps->workers; w++) {
        int64_t made = ps->clocks[w] >= PS_CLOCK_DONE ? ps->clocks[w] - PS_CLOCK_DONE : ps->clocks[w];
        due += made < upto ? made : upto;
    }
    return due;
}

/* The counters as the staleness bound needs them before a pull, read in
 * one round per wait: k = 0: every server has applied this round. k > 0
 * (stale-synchronous parallel): no worker is more than k pushes behind
 * this one, and the parameters read hold every worker's pushes up to k
 * behind this one's, so a server that falls behind (descheduled on a busy
 * host) holds the workers back instead of letting them train for many
 * steps on old parameters. k = -1: whatever they are. */
static kd_status counters_within_bound(kd_ps *ps, int64_t *c)
{
    ps_wait wait;
    ps_wait_start(&wait);
    int k = ps->cfg.max_staleness;
    for (;;) {
        KD_TRY(read_counters_of(ps, PS_PULL_FIRST, PS_PULL_COUNTERS, c, k > 0));
        int ready = 1;
        if (k == 0) {
            for (int s = 0; s < ps->servers; s++)
                ready &= c[PS_PULL_COUNTERS * s + PS_VERSION - PS_PULL_FIRST] >= ps->clock;
        } else if (k > 0) {
            int64_t slowest = ps->clocks[0];
            for (int w = 1; w < ps->workers; w++)
                slowest = ps->clocks[w] < slowest ? ps->clocks[w] : slowest;
            ready = slowest >= ps->clock - k;
            int64_t due = ready ? pushes_due(ps, k) : 0;
            for (int s = 0; ready && s < ps->servers; s++)
                ready = c[PS_PULL_COUNTERS * s + PS_TAKEN - PS_PULL_FIRST] >= due;
        }
        if (ready)
            return KD_OK;
        ps_wait_next(&wait);
    }
}

/* Every server's shard as of one published version per server: a plain get
 * of the copy that version lives in, kept if the server had not begun to
 * rewrite that copy by the time the get completed (see ps_internal.h).
 * Each round talks to all servers in flight at once. `bounded`: the first
 * counter read waits for the staleness bound. */
static kd_status pull(kd_ps *ps, float *params, int bounded)
{
    int64_t *c = ps->pull_counters; /* per server: SAMPLES, VERSION, FINISHED, STEPS, TAKEN */
    const int V = PS_VERSION - PS_PULL_FIRST;
    for (int s = 0; s < ps->servers; s++)
        ps->pull_retry[s] = 1;
    for (int attempt = 1;; attempt++) {
        int last = attempt == PS_PULL_TRIES;
        if (attempt == 1 && bounded)
            KD_TRY(counters_within_bound(ps, c));
        else
            KD_TRY(read_counters_of(ps, PS_PULL_FIRST, PS_PULL_COUNTERS, c, 0));
        for (int s = 0; s < ps->servers; s++) {
            if (!ps->pull_retry[s])
                continue;
            size_t off, count;
            kd_ps_shard_range(ps->n, ps->servers, s, &off, &count);
            MPI_Aint disp = ps_params_disp(ps, s, c[PS_PULL_COUNTERS * s + V]);
            /* Last try: atomic per element even if the copy is being rewritten. */
            KD_TRY(last ? ps_read(ps, params + off, count, MPI_FLOAT, s, disp)
                        : ps_get(ps, params + off, count, MPI_FLOAT, s, disp));
        }
        for (int s = 0; s < ps->servers; s++)
            if (ps->pull_retry[s])
                KD_TRY(ps_flush(ps, s));
        if (last)
            break;
        KD_TRY(read_counters_of(ps, PS_WRITING, 1, ps->pull_writing, 0));
        int again = 0;
        for (int s = 0; s < ps->servers; s++) {
            ps->pull_retry[s] = ps->pull_retry[s] && ps->pull_writing[s] > c[PS_PULL_COUNTERS * s + V] + 1;
            again |= ps->pull_retry[s];
        }
        if (!again)
            break;
    }
    int64_t min_version = INT64_MAX;
    for (int s = 0; s < ps->servers; s++)
        min_version = c[PS_PULL_COUNTERS * s + V] < min_version ? c[PS_PULL_COUNTERS * s + V] : min_version;
    ps->seen_version = min_version;
    ps->seen_steps = c[PS_STEPS - PS_PULL_FIRST];     /* server 0 */
    ps->seen_samples = c[PS_SAMPLES - PS_PULL_FIRST]; /* server 0 */
    return KD_OK;
}

kd_status kd_ps_pull(kd_ps *ps, float *params)
{
    KD_TRY(check_worker(ps, "kd_ps_pull"));
    if (!params)
        return kd_fail(KD_ERR_INVALID, "kd_ps_pull: params is NULL");
    return ps->protocol == KD_PS_MSG ? ps_msg_pull(ps, params) : pull(ps, params, 0);
}

static kd_status ps_exchange_step(void *ctx, kd_net *net, kd_optim *opt, const kd_step *step)
{
    kd_ps *ps = ctx; /* every push counts the same (see ps.h, "the mean"); its samples only feed the count */
    KD_TRY(check_worker(ps, "the parameter-server exchange"));
    if (kd_net_param_count(net) != ps->n)
        return kd_fail(KD_ERR_SHAPE, "parameter server: the network has %zu parameters, the servers hold %zu",
                       kd_net_param_count(net), ps->n);
    /* The host copies: read the gradients, write the fresh parameters. */
    KD_TRY(kd_net_to_host(net, KD_NET_PARAMS | KD_NET_GRADS));
    int64_t samples = step && step->samples > 0 ? step->samples : 0;
    if (ps->protocol == KD_PS_MSG) {
        KD_TRY(ps_msg_exchange(ps, kd_net_grads(net), kd_net_params(net), samples));
    } else {
        KD_TRY(push(ps, kd_net_grads(net), samples));
        KD_TRY(pull(ps, kd_net_params(net), 1));
    }
    if (opt)
        kd_optim_set_steps(opt, ps->seen_steps);
    return KD_OK;
}

kd_exchange kd_ps_exchange(kd_ps *ps)
{
    kd_exchange ex = {"ps", ps, ps_exchange_step};
    return ex;
}

int64_t kd_ps_version(const kd_ps *ps) { return ps ? ps->seen_version : 0; }
int64_t kd_ps_clock(const kd_ps *ps) { return ps ? ps->clock : 0; }
int64_t kd_ps_samples(const kd_ps *ps) { return ps ? ps->seen_samples : 0; }

kd_status kd_ps_gather(kd_ps *ps, float *params, kd_optim *opt_full)
{
    KD_TRY(check_worker(ps, "kd_ps_gather"));
    if (!params)
        return kd_fail(KD_ERR_INVALID, "kd_ps_gather: params is NULL");
    float *state = NULL;
    if (opt_full) {
        if (kd_optim_param_count(opt_full) != ps->n)
            return kd_fail(KD_ERR_SHAPE, "kd_ps_gather: the optimizer is for %zu parameters, the servers hold %zu",
                           kd_optim_param_count(opt_full), ps->n);
        if (kd_optim_state_slots(opt_full) != ps->slots)
            return kd_fail(KD_ERR_INVALID, "kd_ps_gather: the optimizer (%s) has %d state slot(s), the servers' (%s) %d",
                           kd_optim_kind_name(kd_optim_get_config(opt_full)->kind), kd_optim_state_slots(opt_full),
                           kd_optim_kind_name(ps->oc.kind), ps->slots);
        state = kd_optim_state(opt_full, NULL);
    }
    int want_state = opt_full != NULL;
    int64_t steps0 = 0;
    if (ps->protocol == KD_PS_MSG) {
        KD_TRY(ps_msg_gather(ps, params, state, &steps0));
    } else {
        for (int s = 0; s < ps->servers; s++) {
            int64_t steps = 0;
            PS_MPI(ps, MPI_Send(&want_state, 1, MPI_INT, s, PS_TAG_GATHER_REQ, ps->comm),
                   "MPI_Send of a gather request to server %d", s);
            ps_bell_ring(ps, s);
            KD_TRY(ps_recv_shard(ps, s, params, state, want_state, &steps));
            if (s == 0)
                steps0 = steps;
        }
    }
    if (opt_full)
        kd_optim_set_steps(opt_full, steps0);
    return KD_OK;
}

kd_status kd_ps_worker_finish(kd_ps *ps)
{
    if (!ps)
        return kd_fail(KD_ERR_INVALID, "kd_ps_worker_finish: NULL parameter server");
    if (kd_ps_is_server(ps))
        return kd_fail(KD_ERR_STATE, "kd_ps_worker_finish is for worker ranks; rank %d is a server", ps->rank);
    if (ps->finished)
        return KD_OK;
    if (ps->protocol == KD_PS_MSG) {
        KD_TRY(ps_msg_finish(ps));
        ps->finished = 1;
        return KD_OK;
    }
    int64_t one = 1, done = PS_CLOCK_DONE;
    for (int s = 0; s < ps->servers; s++)
        KD_TRY(ps_accumulate(ps, &one, 1, MPI_INT64_T, s, ps_counter_disp(PS_FINISHED), MPI_SUM));
    if (ps->cfg.max_staleness > 0)
        KD_TRY(ps_accumulate(ps, &done, 1, MPI_INT64_T, 0, ps_counter_disp(PS_NCOUNTERS + ps_worker_index(ps)),
                             MPI_SUM));
    KD_TRY(ps_flush_servers(ps));
    ps_bell_ring_servers(ps);
    ps->finished = 1;
    return KD_OK;
}
