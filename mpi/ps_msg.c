/* Parameter server, two-sided protocol (KD_PS_MSG): for ranks on several
 * hosts, where one-sided RMA runs on osc/pt2pt and every accumulate, get
 * and flush waits for the server to enter MPI (6+ round trips per step).
 *
 * A worker's step is one exchange with each server, all in flight at once:
 * it posts the receives of the reply (version, optimizer steps, samples)
 * and of the shard's parameters, then sends a header (PUSH, its sample
 * count) and the shard's gradients. The server waits for headers; on a
 * PUSH it sends the parameters it has now while it receives the gradients
 * (both directions at once, as an MPI_Sendrecv would), then applies them.
 * So the parameters a worker gets do not include the push it just made,
 * as with RMA where the pull follows the push before the server steps.
 *
 * What a step applies is what ps.h says for both protocols:
 *   max_staleness 0 (synchronous rounds): the server adds each worker's
 *     push, steps once with the mean when every active worker has pushed,
 *     and only then replies to each (with the new parameters).
 *   max_staleness k > 0: it steps on every push (divided by W) and holds
 *     a worker's reply back while that worker is more than k pushes ahead
 *     of the slowest; k = -1 never holds one back.
 * Other headers: PULL (the parameters only), GATHER (the shard and the
 * optimizer state, for a checkpoint: every earlier push is applied, since
 * the server takes one header at a time and finishes a push before the
 * next), FINISH (the worker is done; it no longer holds others back).
 *
 * Waiting for a header: a server with a core of its own (no more ranks on
 * its host than cores) probes without pause, as MPI_Recv would; on a
 * crowded host it probes for a while, then sleeps 20 us doubling to 500 us
 * between probes (ps_backoff), leaving the cores to the workers. Measured
 * (MLP, 500 us of compute per step, bench_exchange, 2 cores): 1 server + 1
 * worker, 0.10 ms per step spinning against 0.43 ms sleeping; 1 server + 2
 * workers, 0.87 ms sleeping against 1.9 ms spinning and 2.5 ms in a
 * blocking MPI_Recv (Open MPI's yielding poll). */
#include <stdlib.h>
#include <string.h>

#include "ps_internal.h"

/* Probes without sleeping before the back-off starts (~1 us each). */
#define PS_MSG_SPIN 2000

static void shard_of(const kd_ps *ps, int s, size_t *off, size_t *count)
{
    kd_ps_shard_range(ps->n, ps->servers, s, off, count);
}

static kd_status wait_all(kd_ps *ps, int n, MPI_Request *req, const char *what)
{
    PS_MPI(ps, MPI_Waitall(n, req, MPI_STATUSES_IGNORE), "MPI_Waitall (%s)", what);
    return KD_OK;
}

/* ------------------------------------------------------------- worker */

/* Post the receives of every server's reply and parameters (4 requests a
 * server: reply, parameters, then the two sends the caller may add). */
static kd_status post_replies(kd_ps *ps, float *params)
{
    for (int s = 0; s < ps->servers; s++) {
        size_t off, count;
        shard_of(ps, s, &off, &count);
        MPI_Request *r = ps->msg_req + 4 * s;
        PS_MPI(ps, MPI_Irecv(ps->msg_in + PS_MSG_WORDS * s, PS_MSG_WORDS, MPI_INT64_T, s, PS_TAG_REPLY, ps->comm, &r[0]),
               "MPI_Irecv of the reply of server %d", s);
        PS_MPI(ps, MPI_Irecv(params + off, (int)count, MPI_FLOAT, s, PS_TAG_PARAMS, ps->comm, &r[1]),
               "MPI_Irecv of %zu parameters from server %d", count, s);
        r[2] = r[3] = MPI_REQUEST_NULL;
    }
    return KD_OK;
}

static kd_status send_header(kd_ps *ps, int s, int64_t kind, int64_t arg, MPI_Request *req)
{
    int64_t *h = ps->msg_out + PS_MSG_WORDS * s;
    h[0] = kind;
    h[1] = arg;
    h[2] = h[3] = 0;
    if (req)
        PS_MPI(ps, MPI_Isend(h, PS_MSG_WORDS, MPI_INT64_T, s, PS_TAG_HEADER, ps->comm, req),
               "MPI_Isend of a header to server %d", s);
    else
        PS_MPI(ps, MPI_Send(h, PS_MSG_WORDS, MPI_INT64_T, s, PS_TAG_HEADER, ps->comm),
               "MPI_Send of a header to server %d", s);
    return KD_OK;
}

static void take_replies(kd_ps *ps)
{
    int64_t min_version = INT64_MAX;
    for (int s = 0; s < ps->servers; s++) {
        int64_t v = ps->msg_in[PS_MSG_WORDS * s];
        min_version = v < min_version ? v : min_version;
    }
    ps->seen_version = min_version;
    ps->seen_steps = ps->msg_in[1];   /* server 0 */
    ps->seen_samples = ps->msg_in[2]; /* server 0 */
}

kd_status ps_msg_exchange(kd_ps *ps, const float *grads, float *params, int64_t samples)
{
    KD_TRY(post_replies(ps, params));
    for (int s = 0; s < ps->servers; s++) {
        size_t off, count;
        shard_of(ps, s, &off, &count);
        MPI_Request *r = ps->msg_req + 4 * s;
        KD_TRY(send_header(ps, s, PS_MSG_PUSH, samples, &r[2]));
        PS_MPI(ps, MPI_Isend(grads + off, (int)count, MPI_FLOAT, s, PS_TAG_GRADS, ps->comm, &r[3]),
               "MPI_Isend of %zu gradients to server %d", count, s);
    }
    KD_TRY(wait_all(ps, 4 * ps->servers, ps->msg_req, "exchange with the servers"));
    ps->clock++;
    take_replies(ps);
    return KD_OK;
}

kd_status ps_msg_pull(kd_ps *ps, float *params)
{
    KD_TRY(post_replies(ps, params));
    for (int s = 0; s < ps->servers; s++)
        KD_TRY(send_header(ps, s, PS_MSG_PULL, 0, &ps->msg_req[4 * s + 2]));
    KD_TRY(wait_all(ps, 4 * ps->servers, ps->msg_req, "pull from the servers"));
    take_replies(ps);
    return KD_OK;
}

kd_status ps_msg_gather(kd_ps *ps, float *params, float *state, int64_t *steps0)
{
    for (int s = 0; s < ps->servers; s++) {
        int64_t steps = 0;
        KD_TRY(send_header(ps, s, PS_MSG_GATHER, state != NULL, NULL));
        KD_TRY(ps_recv_shard(ps, s, params, state, state != NULL, &steps));
        if (s == 0)
            *steps0 = steps;
    }
    return KD_OK;
}

kd_status ps_msg_finish(kd_ps *ps)
{
    for (int s = 0; s < ps->servers; s++)
        KD_TRY(send_header(ps, s, PS_MSG_FINISH, 0, NULL));
    return KD_OK;
}

/* ------------------------------------------------------------- server */

typedef struct msg_server {
    kd_ps *ps;
    int64_t *clock;   /* pushes received per worker (+ PS_CLOCK_DONE once finished) */
    char *owed;       /* the worker pushed and waits for a reply the bound holds back */
    int64_t *reply;   /* PS_MSG_WORDS per worker: the reply in flight */
    MPI_Request *req; /* 2 per worker: reply and parameters in flight */
    int finished;     /* workers that sent FINISH */
    int pending;      /* synchronous rounds: pushes added into ps->acc */
    int64_t samples;  /* of every push */
} msg_server;

/* Every reply sent has left ps->params, which may change now. */
static kd_status replies_done(msg_server *m)
{
    return wait_all(m->ps, 2 * m->ps->workers, m->req, "replies to the workers");
}

static kd_status send_reply(msg_server *m, int w)
{
    kd_ps *ps = m->ps;
    int dest = ps->servers + w;
    MPI_Request *r = m->req + 2 * w;
    KD_TRY(wait_all(ps, 2, r, "the previous reply")); /* already delivered: the worker asked again */
    int64_t *h = m->reply + PS_MSG_WORDS * w;
    h[0] = ps->version;
    h[1] = kd_optim_steps(ps->opt);
    h[2] = m->samples;
    h[3] = 0;
    PS_MPI(ps, MPI_Isend(h, PS_MSG_WORDS, MPI_INT64_T, dest, PS_TAG_REPLY, ps->comm, &r[0]),
           "MPI_Isend of a reply to rank %d", dest);
    PS_MPI(ps, MPI_Isend(ps->params, (int)ps->count, MPI_FLOAT, dest, PS_TAG_PARAMS, ps->comm, &r[1]),
           "MPI_Isend of %zu parameters to rank %d", ps->count, dest);
    return KD_OK;
}

/* May worker w, having pushed its clock, go on (k > 0: stale-synchronous)? */
static int within_bound(const msg_server *m, int w)
{
    int k = m->ps->cfg.max_staleness;
    if (k < 0)
        return 1;
    int64_t slowest = INT64_MAX;
    for (int v = 0; v < m->ps->workers; v++)
        slowest = m->clock[v] < slowest ? m->clock[v] : slowest;
    return slowest >= m->clock[w] - k;
}

/* Replies the bound held back and now allows. */
static kd_status release(msg_server *m)
{
    for (int w = 0; w < m->ps->workers; w++)
        if (m->owed[w] && within_bound(m, w)) {
            m->owed[w] = 0;
            KD_TRY(send_reply(m, w));
        }
    return KD_OK;
}

/* One optimizer step on g / divisor (see ps_server.c maybe_step for the
 * divisor and the schedule's clock). */
static kd_status step(msg_server *m, float *g, int64_t divisor, int64_t pushes)
{
    kd_ps *ps = m->ps;
    KD_TRY(replies_done(m));
    float d = (float)divisor; /* division, not * (1/d): exact when the sum is a multiple of d */
    for (size_t i = 0; i < ps->count; i++)
        g[i] /= d;
    if (ps->cfg.max_staleness != 0)
        kd_optim_set_steps(ps->opt, ps->steps_base + ps->taken / ps->workers);
    kd_status s = kd_optim_step(ps->opt, ps->params, g);
    if (s != KD_OK)
        return kd_fail_context(s, "parameter server rank %d", ps->rank);
    ps->taken += pushes;
    ps->version++;
    return KD_OK;
}

/* Synchronous rounds: step once every active worker has pushed, then
 * answer them all with the new parameters. */
static kd_status maybe_round(msg_server *m)
{
    kd_ps *ps = m->ps;
    if (m->pending == 0 || m->pending < ps->workers - m->finished)
        return KD_OK;
    memcpy(ps->grad, ps->acc, sizeof(float) * ps->count);
    KD_TRY(step(m, ps->grad, m->pending, m->pending));
    memset(ps->acc, 0, sizeof(float) * ps->count);
    m->pending = 0;
    for (int w = 0; w < ps->workers; w++)
        if (m->owed[w]) {
            m->owed[w] = 0;
            KD_TRY(send_reply(m, w));
        }
    return KD_OK;
}

static kd_status on_push(msg_server *m, int w, int64_t samples)
{
    kd_ps *ps = m->ps;
    int src = ps->servers + w, k = ps->cfg.max_staleness;
    m->samples += samples;
    m->clock[w]++;
    /* Asynchronous: the parameters go out while the gradients come in. */
    if (k != 0 && within_bound(m, w))
        KD_TRY(send_reply(m, w));
    else
        m->owed[w] = 1;
    PS_MPI(ps, MPI_Recv(ps->grad, (int)ps->count, MPI_FLOAT, src, PS_TAG_GRADS, ps->comm, MPI_STATUS_IGNORE),
           "MPI_Recv of %zu gradients from rank %d", ps->count, src);
    if (k == 0) {
        for (size_t i = 0; i < ps->count; i++)
            ps->acc[i] += ps->grad[i];
        m->pending++;
        return maybe_round(m);
    }
    KD_TRY(step(m, ps->grad, ps->workers, 1));
    return release(m);
}

/* The next header (its sender in *src): probe, spin, then back off. */
static kd_status next_header(msg_server *m, int64_t *h, int *src)
{
    kd_ps *ps = m->ps;
    long backoff = PS_BACKOFF_START_NS;
    for (int polls = 0;; polls++) {
        int flag = 0;
        MPI_Status st;
        PS_MPI(ps, MPI_Iprobe(MPI_ANY_SOURCE, PS_TAG_HEADER, ps->comm, &flag, &st), "MPI_Iprobe for headers");
        if (flag) {
            *src = st.MPI_SOURCE;
            PS_MPI(ps, MPI_Recv(h, PS_MSG_WORDS, MPI_INT64_T, *src, PS_TAG_HEADER, ps->comm, MPI_STATUS_IGNORE),
                   "MPI_Recv of a header from rank %d", *src);
            return KD_OK;
        }
        if (ps->crowded && polls >= PS_MSG_SPIN)
            ps_backoff(&backoff);
    }
}

static kd_status serve(msg_server *m)
{
    kd_ps *ps = m->ps;
    while (m->finished < ps->workers) {
        int64_t h[PS_MSG_WORDS];
        int src = -1;
        KD_TRY(next_header(m, h, &src));
        int w = src - ps->servers;
        if (w < 0 || w >= ps->workers)
            return kd_fail(KD_ERR_STATE, "parameter server rank %d: a header from rank %d, which is not a worker",
                           ps->rank, src);
        switch (h[0]) {
        case PS_MSG_PUSH:
            KD_TRY(on_push(m, w, h[1]));
            break;
        case PS_MSG_PULL:
            KD_TRY(send_reply(m, w));
            break;
        case PS_MSG_GATHER:
            KD_TRY(ps_send_shard(ps, src, h[1] != 0));
            break;
        case PS_MSG_FINISH:
            m->finished++;
            m->clock[w] += PS_CLOCK_DONE;
            KD_TRY(ps->cfg.max_staleness == 0 ? maybe_round(m) : release(m));
            break;
        default:
            return kd_fail(KD_ERR_STATE, "parameter server rank %d: header of unknown kind %lld from rank %d", ps->rank,
                           (long long)h[0], src);
        }
    }
    return replies_done(m);
}

kd_status ps_msg_serve(kd_ps *ps)
{
    size_t W = (size_t)ps->workers;
    msg_server m;
    memset(&m, 0, sizeof m);
    m.ps = ps;
    m.clock = kd_calloc(W, sizeof(int64_t), "worker clocks");
    m.owed = kd_calloc(W, 1, "held replies");
    m.reply = kd_calloc(W * PS_MSG_WORDS, sizeof(int64_t), "replies");
    m.req = kd_malloc(sizeof(MPI_Request) * 2 * W, "reply requests");
    kd_status s = m.clock && m.owed && m.reply && m.req ? KD_OK : KD_ERR_NOMEM;
    for (size_t i = 0; s == KD_OK && i < 2 * W; i++)
        m.req[i] = MPI_REQUEST_NULL;
    if (s == KD_OK)
        s = serve(&m);
    free(m.clock);
    free(m.owed);
    free(m.reply);
    free(m.req);
    return s;
}
