/* Parameter server: shards, setup (protocol, window, seeding, resume),
 * teardown and the checked, chunked MPI helpers both sides use. */
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ps_internal.h"

void kd_ps_shard_range(size_t n, int servers, int s, size_t *offset, size_t *count)
{
    size_t S = servers > 0 ? (size_t)servers : 1, base = n / S, extra = n % S, i = (size_t)(s > 0 ? s : 0);
    *offset = i * base + (i < extra ? i : extra);
    *count = i < S ? base + (i < extra ? 1 : 0) : 0;
}

int kd_ps_is_server(const kd_ps *ps) { return ps && ps->rank < ps->servers; }

/* ------------------------------------------------------------ layout */

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

MPI_Aint ps_counter_disp(int which) { return (MPI_Aint)which * (MPI_Aint)sizeof(int64_t); }

/* One parameter copy or the accumulator of server s: whole cache lines. */
static MPI_Aint region_bytes(const kd_ps *ps, int s)
{
    size_t off, count;
    kd_ps_shard_range(ps->n, ps->servers, s, &off, &count);
    return (MPI_Aint)round_up(sizeof(float) * count, 64);
}

MPI_Aint ps_bell_disp(const kd_ps *ps)
{
    return (MPI_Aint)round_up(sizeof(int64_t) * (size_t)(PS_NCOUNTERS + ps->workers), 64);
}

static MPI_Aint first_region_disp(const kd_ps *ps) { return ps_bell_disp(ps) + 64; }

MPI_Aint ps_params_disp(const kd_ps *ps, int s, int64_t version)
{
    return first_region_disp(ps) + (MPI_Aint)(version % 2) * region_bytes(ps, s);
}

MPI_Aint ps_grads_disp(const kd_ps *ps, int s) { return first_region_disp(ps) + 2 * region_bytes(ps, s); }

/* ------------------------------------------------------------ errors */

kd_status ps_mpi_fail(const kd_ps *ps, int rc, const char *fmt, ...)
{
    char msg[MPI_MAX_ERROR_STRING], what[256];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
        snprintf(msg, sizeof msg, "MPI error code %d", rc);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    int server = ps->rank < ps->servers;
    /* KD_ERR_IO: a failed transfer is the closest kind to a failed read/write. */
    return kd_fail(KD_ERR_IO, "parameter server rank %d (%s %d): %s failed: %s", ps->rank,
                   server ? "server" : "worker", server ? ps->rank : ps_worker_index(ps), what, msg);
}

/* ---------------------------------------------------------- RMA helpers */

static const char *op_name(MPI_Op op)
{
    return op == MPI_SUM ? "MPI_SUM" : op == MPI_REPLACE ? "MPI_REPLACE" : op == MPI_NO_OP ? "MPI_NO_OP" : "op";
}

kd_status ps_accumulate(const kd_ps *ps, const void *origin, size_t count, MPI_Datatype dt, int target,
                        MPI_Aint disp, MPI_Op op)
{
    int es = 0;
    PS_MPI(ps, MPI_Type_size(dt, &es), "MPI_Type_size");
    for (size_t off = 0; off < count; off += ps->cfg.chunk) {
        int len = (int)(count - off < ps->cfg.chunk ? count - off : ps->cfg.chunk);
        PS_MPI(ps,
               MPI_Accumulate((const char *)origin + off * (size_t)es, len, dt, target,
                              disp + (MPI_Aint)(off * (size_t)es), len, dt, op, ps->win),
               "MPI_Accumulate (%s, %d elements at byte %lld) to rank %d", op_name(op), len,
               (long long)(disp + (MPI_Aint)(off * (size_t)es)), target);
    }
    return KD_OK;
}

/* MPI_Get_accumulate with MPI_NO_OP: an atomic-per-element read, so it may
 * overlap the owner's MPI_REPLACE and other ranks' MPI_SUM. */
kd_status ps_read(const kd_ps *ps, void *result, size_t count, MPI_Datatype dt, int target, MPI_Aint disp)
{
    int es = 0;
    PS_MPI(ps, MPI_Type_size(dt, &es), "MPI_Type_size");
    for (size_t off = 0; off < count; off += ps->cfg.chunk) {
        int len = (int)(count - off < ps->cfg.chunk ? count - off : ps->cfg.chunk);
        PS_MPI(ps,
               MPI_Get_accumulate(NULL, 0, dt, (char *)result + off * (size_t)es, len, dt, target,
                                  disp + (MPI_Aint)(off * (size_t)es), len, dt, MPI_NO_OP, ps->win),
               "MPI_Get_accumulate (MPI_NO_OP, %d elements at byte %lld) from rank %d", len,
               (long long)(disp + (MPI_Aint)(off * (size_t)es)), target);
    }
    return KD_OK;
}

kd_status ps_get(const kd_ps *ps, void *result, size_t count, MPI_Datatype dt, int target, MPI_Aint disp)
{
    int es = 0;
    PS_MPI(ps, MPI_Type_size(dt, &es), "MPI_Type_size");
    for (size_t off = 0; off < count; off += ps->cfg.chunk) {
        int len = (int)(count - off < ps->cfg.chunk ? count - off : ps->cfg.chunk);
        PS_MPI(ps,
               MPI_Get((char *)result + off * (size_t)es, len, dt, target, disp + (MPI_Aint)(off * (size_t)es), len,
                       dt, ps->win),
               "MPI_Get (%d elements at byte %lld) from rank %d", len, (long long)(disp + (MPI_Aint)(off * (size_t)es)),
               target);
    }
    return KD_OK;
}

kd_status ps_flush(const kd_ps *ps, int target)
{
    PS_MPI(ps, MPI_Win_flush(target, ps->win), "MPI_Win_flush to rank %d", target);
    return KD_OK;
}

/* Per server, not MPI_Win_flush_all: under osc/pt2pt flush_all waits for
 * an answer from every rank of the lock_all epoch, so a worker would stall
 * on another worker that is busy computing (measured: the fast worker
 * moved in step with a sleeping one). Workers never target workers. */
kd_status ps_flush_servers(const kd_ps *ps)
{
    for (int s = 0; s < ps->servers; s++)
        KD_TRY(ps_flush(ps, s));
    return KD_OK;
}

kd_status ps_read_counters(const kd_ps *ps, int s, int first, int count, int64_t *out)
{
    KD_TRY(ps_read(ps, out, (size_t)count, MPI_INT64_T, s, ps_counter_disp(first)));
    return ps_flush(ps, s);
}

/* ------------------------------------------------------------- messages */

#define PS_MSG_PIECE ((size_t)1 << 26) /* floats per message: well inside int */

kd_status ps_send_floats(const kd_ps *ps, const float *buf, size_t count, int dest, int tag)
{
    for (size_t off = 0; off < count; off += PS_MSG_PIECE) {
        int len = (int)(count - off < PS_MSG_PIECE ? count - off : PS_MSG_PIECE);
        PS_MPI(ps, MPI_Send(buf + off, len, MPI_FLOAT, dest, tag, ps->comm), "MPI_Send of %d floats to rank %d",
               len, dest);
    }
    return KD_OK;
}

kd_status ps_recv_floats(const kd_ps *ps, float *buf, size_t count, int src, int tag)
{
    for (size_t off = 0; off < count; off += PS_MSG_PIECE) {
        int len = (int)(count - off < PS_MSG_PIECE ? count - off : PS_MSG_PIECE);
        PS_MPI(ps, MPI_Recv(buf + off, len, MPI_FLOAT, src, tag, ps->comm, MPI_STATUS_IGNORE),
               "MPI_Recv of %d floats from rank %d", len, src);
    }
    return KD_OK;
}

void ps_backoff_grow(long *ns) { *ns = *ns >= 250000L ? 500000L : *ns * 2; }

void ps_backoff(long *ns)
{
    struct timespec ts = {0, *ns};
    nanosleep(&ts, NULL);
    ps_backoff_grow(ns);
}

static int64_t monotonic_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

void ps_wait_start(ps_wait *w)
{
    w->sleep_ns = 0;
    w->spin_until_ns = monotonic_ns() + PS_SPIN_NS;
}

void ps_wait_next(ps_wait *w)
{
    if (w->sleep_ns == 0) {
        if (monotonic_ns() < w->spin_until_ns) {
            sched_yield();
            return;
        }
        w->sleep_ns = PS_BACKOFF_START_NS;
    }
    ps_backoff(&w->sleep_ns);
}

/* ---------------------------------------------------------------- setup */

/* Every rank learns whether any rank failed, so all leave a collective
 * setup together instead of some waiting forever in the next collective. */
static kd_status agree(MPI_Comm comm, int rank, kd_status s)
{
    struct {
        int status, rank;
    } in = {(int)s, rank}, worst = {0, 0};
    int rc = MPI_Allreduce(&in, &worst, 1, MPI_2INT, MPI_MAXLOC, comm);
    if (rc != MPI_SUCCESS) {
        char msg[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_Error_string(rc, msg, &len);
        return kd_fail(KD_ERR_IO, "parameter server setup, rank %d: MPI_Allreduce failed: %s", rank, msg);
    }
    if (s != KD_OK)
        return s;
    if (worst.status != KD_OK)
        return kd_fail((kd_status)worst.status, "parameter server setup failed on rank %d (its message says why)",
                       worst.rank);
    return KD_OK;
}

static kd_status check_args(int rank, int size, const kd_ps_config *pc, size_t n, const kd_optim_config *oc,
                            const float *params0, const kd_optim *opt0, int *slots)
{
    if (!pc || !oc)
        return kd_fail(KD_ERR_INVALID, "parameter server: %s is NULL", !pc ? "the server config" : "the optimizer config");
    if (pc->servers < 1)
        return kd_fail(KD_ERR_INVALID, "parameter server: needs at least 1 server rank, got %d", pc->servers);
    if (size - pc->servers < 1)
        return kd_fail(KD_ERR_INVALID,
                       "parameter server: %d server rank(s) on %d rank(s) leave no worker rank "
                       "(start more ranks or use fewer servers)",
                       pc->servers, size);
    if (n == 0)
        return kd_fail(KD_ERR_INVALID, "parameter server: the model has no parameters");
    if ((size_t)pc->servers > n)
        return kd_fail(KD_ERR_INVALID,
                       "parameter server: %d servers for %zu parameter(s): every server needs at least one parameter",
                       pc->servers, n);
    if (pc->max_staleness < -1)
        return kd_fail(KD_ERR_INVALID, "parameter server: max staleness must be -1 (unbounded) or >= 0, got %d",
                       pc->max_staleness);
    if (pc->chunk > (size_t)INT_MAX / sizeof(int64_t))
        return kd_fail(KD_ERR_INVALID, "parameter server: chunk of %zu elements is too large for one MPI call",
                       pc->chunk);
    if (pc->protocol != KD_PS_AUTO && pc->protocol != KD_PS_RMA && pc->protocol != KD_PS_MSG)
        return kd_fail(KD_ERR_INVALID, "parameter server: unknown protocol %d", (int)pc->protocol);
    /* MSG sends a shard as one message (an int count of floats). */
    if (n / (size_t)pc->servers + 1 > (size_t)INT_MAX)
        return kd_fail(KD_ERR_INVALID, "parameter server: shards of %zu parameters are too large for one message; "
                       "use more servers", n / (size_t)pc->servers + 1);
    kd_optim *probe = NULL;
    KD_TRY(kd_optim_create(oc, 1, &probe)); /* validates oc and tells its slot count */
    *slots = kd_optim_state_slots(probe);
    kd_optim_free(probe);
    if (rank != pc->servers)
        return KD_OK;
    /* The first worker is the source of the servers' initial state. */
    if (!params0)
        return kd_fail(KD_ERR_INVALID, "parameter server: the first worker (rank %d) must pass the initial parameters",
                       rank);
    if (opt0) {
        if (kd_optim_param_count(opt0) != n)
            return kd_fail(KD_ERR_SHAPE, "parameter server: the optimizer to resume is for %zu parameters, the model has %zu",
                           kd_optim_param_count(opt0), n);
        if (kd_optim_state_slots(opt0) != *slots)
            return kd_fail(KD_ERR_INVALID,
                           "parameter server: the optimizer to resume (%s) has %d state slot(s) but %s needs %d",
                           kd_optim_kind_name(kd_optim_get_config(opt0)->kind), kd_optim_state_slots(opt0),
                           kd_optim_kind_name(oc->kind), *slots);
    }
    return KD_OK;
}

/* Servers: buffers, optimizer, zeroed counters and gradients. */
static kd_status setup_server(kd_ps *ps, char *base)
{
    kd_ps_shard_range(ps->n, ps->servers, ps->rank, &ps->offset, &ps->count);
    KD_TRY(kd_optim_create(&ps->oc, ps->count, &ps->opt));
    ps->params = kd_malloc(sizeof(float) * ps->count, "parameter-server shard");
    ps->grad = ps->params ? kd_malloc(sizeof(float) * ps->count, "parameter-server gradients") : NULL;
    if (!ps->grad)
        return KD_ERR_NOMEM;
    if (ps->protocol == KD_PS_MSG) {
        /* Synchronous rounds add every worker's push before stepping. */
        if (ps->cfg.max_staleness == 0 && !(ps->acc = kd_calloc(ps->count, sizeof(float), "parameter-server round sum")))
            return KD_ERR_NOMEM;
        return KD_OK;
    }
    /* Before any epoch: plain stores into our own window are allowed. */
    memset(base, 0, (size_t)ps_grads_disp(ps, ps->rank) + sizeof(float) * ps->count);
    return KD_OK;
}

/* Workers: the buffers of a pull (RMA) or of an exchange (MSG). */
static kd_status setup_worker(kd_ps *ps)
{
    size_t S = (size_t)ps->servers;
    if (ps->protocol == KD_PS_MSG) {
        ps->msg_out = kd_calloc(PS_MSG_WORDS * S, sizeof(int64_t), "exchange headers");
        ps->msg_in = ps->msg_out ? kd_calloc(PS_MSG_WORDS * S, sizeof(int64_t), "exchange replies") : NULL;
        ps->msg_req = ps->msg_in ? kd_malloc(sizeof(MPI_Request) * 4 * S, "exchange requests") : NULL;
        return ps->msg_req ? KD_OK : KD_ERR_NOMEM;
    }
    ps->clocks = kd_malloc(sizeof(int64_t) * (size_t)ps->workers, "worker clocks");
    ps->pull_counters = ps->clocks ? kd_malloc(sizeof(int64_t) * PS_PULL_COUNTERS * S, "pull counters") : NULL;
    ps->pull_writing = ps->pull_counters ? kd_malloc(sizeof(int64_t) * S, "pull counters") : NULL;
    ps->pull_retry = ps->pull_writing ? kd_malloc(S, "pull flags") : NULL;
    return ps->pull_retry ? KD_OK : KD_ERR_NOMEM;
}

/* Cores this host gives us: online CPUs, or fewer under a cgroup (v2) CPU
 * quota. Not the affinity mask: Open MPI binds each rank to one core. */
static int host_cores(void)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int cores = online > 0 ? (int)online : 1;
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (f) {
        char quota[32] = "";
        long period = 0;
        if (fscanf(f, "%31s %ld", quota, &period) == 2 && strcmp(quota, "max") != 0 && period > 0) {
            long q = atol(quota);
            int limit = (int)((q + period - 1) / period);
            if (limit >= 1 && limit < cores)
                cores = limit;
        }
        fclose(f);
    }
    return cores;
}

/* Whether every rank of comm shares this host's memory, and whether this
 * host has more of them than cores. "Every rank" is agreed on: ranks may
 * see it differently (two Open MPI daemons on one machine: the ranks of one
 * count the other's as local, not the other way round), and a shared
 * window is a collective that every rank must enter. */
static kd_status where_ranks_are(kd_ps *ps)
{
    MPI_Comm node = MPI_COMM_NULL;
    int local = 0;
    PS_MPI(ps, MPI_Comm_split_type(ps->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node),
           "MPI_Comm_split_type (which ranks share memory)");
    int rc = MPI_Comm_size(node, &local);
    MPI_Comm_free(&node);
    PS_MPI(ps, rc, "MPI_Comm_size");
    int mine = local == ps->size;
    PS_MPI(ps, MPI_Allreduce(&mine, &ps->shared, 1, MPI_INT, MPI_MIN, ps->comm), "MPI_Allreduce (one host?)");
    ps->crowded = local > host_cores();
    return KD_OK;
}

/* Whether this server takes and publishes rounds with plain loads and
 * stores (see ps_internal.h): only in a shared-memory window whose public
 * and private copies are one (MPI_WIN_UNIFIED), at staleness 0. */
static kd_status choose_direct(kd_ps *ps, char *base)
{
    ps->own = base;
    if (!ps->shared || ps->shared_refused || ps->cfg.max_staleness != 0)
        return KD_OK;
    int *model = NULL, flag = 0;
    PS_MPI(ps, MPI_Win_get_attr(ps->win, MPI_WIN_MODEL, &model, &flag), "MPI_Win_get_attr (MPI_WIN_MODEL)");
    ps->direct = flag && model && *model == MPI_WIN_UNIFIED;
    return KD_OK;
}

/* The first worker sends each server its piece of params0 and opt0. */
static kd_status seed_send(kd_ps *ps, const float *params0, const kd_optim *opt0)
{
    size_t state_count = 0;
    const float *state = opt0 ? kd_optim_state((kd_optim *)opt0, &state_count) : NULL;
    for (int s = 0; s < ps->servers; s++) {
        size_t off, count;
        kd_ps_shard_range(ps->n, ps->servers, s, &off, &count);
        int64_t hdr[2] = {opt0 != NULL, opt0 ? kd_optim_steps(opt0) : 0};
        PS_MPI(ps, MPI_Send(hdr, 2, MPI_INT64_T, s, PS_TAG_SEED, ps->comm), "MPI_Send of the seed header to rank %d", s);
        KD_TRY(ps_send_floats(ps, params0 + off, count, s, PS_TAG_SEED));
        for (int j = 0; opt0 && j < ps->slots; j++)
            KD_TRY(ps_send_floats(ps, state + (size_t)j * ps->n + off, count, s, PS_TAG_SEED));
    }
    return KD_OK;
}

static kd_status seed_recv(kd_ps *ps, char *base)
{
    int src = ps->servers; /* the first worker */
    int64_t hdr[2];
    PS_MPI(ps, MPI_Recv(hdr, 2, MPI_INT64_T, src, PS_TAG_SEED, ps->comm, MPI_STATUS_IGNORE),
           "MPI_Recv of the seed header from rank %d", src);
    KD_TRY(ps_recv_floats(ps, ps->params, ps->count, src, PS_TAG_SEED));
    if (hdr[0]) {
        float *state = kd_optim_state(ps->opt, NULL);
        for (int j = 0; j < ps->slots; j++)
            KD_TRY(ps_recv_floats(ps, state + (size_t)j * ps->count, ps->count, src, PS_TAG_SEED));
        kd_optim_set_steps(ps->opt, hdr[1]);
        ps->steps_base = hdr[1];
    }
    if (base) {
        memcpy(base + ps_params_disp(ps, ps->rank, 0), ps->params, sizeof(float) * ps->count); /* version 0 */
        ((int64_t *)base)[PS_STEPS] = kd_optim_steps(ps->opt);
    }
    return KD_OK;
}

kd_status kd_ps_create(MPI_Comm comm, const kd_ps_config *pc, size_t n_params, const kd_optim_config *oc,
                       const float *params0, const kd_optim *opt0, kd_ps **out)
{
    if (!out)
        return kd_fail(KD_ERR_INVALID, "kd_ps_create: out is NULL");
    *out = NULL;
    int rank = 0, size = 0;
    if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS || MPI_Comm_size(comm, &size) != MPI_SUCCESS)
        return kd_fail(KD_ERR_INVALID, "parameter server: the communicator is not valid");
    int slots = 0;
    kd_ps *ps = NULL;
    kd_status s = check_args(rank, size, pc, n_params, oc, params0, opt0, &slots);
    if (s == KD_OK && !(ps = kd_calloc(1, sizeof *ps, "parameter server")))
        s = KD_ERR_NOMEM;
    if ((s = agree(comm, rank, s)) != KD_OK) {
        free(ps);
        return s;
    }
    ps->comm = MPI_COMM_NULL;
    ps->win = MPI_WIN_NULL;
    ps->rank = rank;
    ps->size = size;
    ps->servers = pc->servers;
    ps->workers = size - pc->servers;
    ps->cfg = *pc;
    if (ps->cfg.chunk == 0)
        ps->cfg.chunk = KD_PS_DEFAULT_CHUNK;
    ps->oc = *oc;
    ps->n = n_params;
    ps->slots = slots;
    int server = rank < ps->servers;

    /* A private communicator: our tags cannot meet the driver's messages,
     * and errors come back as codes instead of aborting. */
    int rc = MPI_Comm_dup(comm, &ps->comm);
    if (rc != MPI_SUCCESS) {
        s = ps_mpi_fail(ps, rc, "MPI_Comm_dup");
        free(ps);
        return s;
    }
    if ((rc = MPI_Comm_set_errhandler(ps->comm, MPI_ERRORS_RETURN)) != MPI_SUCCESS)
        s = ps_mpi_fail(ps, rc, "MPI_Comm_set_errhandler");

    if (s == KD_OK)
        s = where_ranks_are(ps);
    ps->protocol = pc->protocol != KD_PS_AUTO ? pc->protocol : ps->shared ? KD_PS_RMA : KD_PS_MSG;
    if (server)
        kd_ps_shard_range(n_params, ps->servers, rank, &ps->offset, &ps->count);
    char *base = NULL;
    if (s == KD_OK && ps->protocol == KD_PS_RMA) {
        MPI_Aint bytes = server ? ps_grads_disp(ps, rank) + (MPI_Aint)(sizeof(float) * ps->count) : 0;
        MPI_Info info = MPI_INFO_NULL;
        /* Pushes flush before bumping a counter, so no ordering between
         * accumulates is needed: let the implementation reorder them. Each
         * rank's shared segment on its own pages (its NUMA node). */
        if (MPI_Info_create(&info) == MPI_SUCCESS) {
            MPI_Info_set(info, "accumulate_ordering", "none");
            MPI_Info_set(info, "alloc_shared_noncontig", "true");
        }
        /* One host: a shared-memory window, so Open MPI takes osc/sm (it
         * would pick osc/rdma for MPI_Win_allocate, 2-3x slower here). A
         * component list without sm (OMPI_MCA_osc=pt2pt) refuses it on
         * every rank: then a plain window. */
        rc = MPI_ERR_WIN;
        if (ps->shared) {
            int refused = MPI_Win_allocate_shared(bytes, 1, info, ps->comm, &base, &ps->win) != MPI_SUCCESS, any = 0;
            rc = MPI_Allreduce(&refused, &any, 1, MPI_INT, MPI_MAX, ps->comm);
            if (rc == MPI_SUCCESS && any && !refused)
                rc = MPI_ERR_WIN; /* refused elsewhere only: cannot be undone collectively */
            else if (rc == MPI_SUCCESS && any)
                ps->shared_refused = 1;
        }
        if (!ps->shared || ps->shared_refused)
            rc = MPI_Win_allocate(bytes, 1, info, ps->comm, &base, &ps->win);
        if (rc != MPI_SUCCESS)
            s = ps_mpi_fail(ps, rc, "%s of %lld bytes",
                            ps->shared && !ps->shared_refused ? "MPI_Win_allocate_shared" : "MPI_Win_allocate",
                            (long long)bytes);
        if (info != MPI_INFO_NULL)
            MPI_Info_free(&info);
        if (s == KD_OK && (rc = MPI_Win_set_errhandler(ps->win, MPI_ERRORS_RETURN)) != MPI_SUCCESS)
            s = ps_mpi_fail(ps, rc, "MPI_Win_set_errhandler");
        if (s == KD_OK && server)
            s = choose_direct(ps, base);
        if (s == KD_OK)
            s = ps_bells_setup(ps, base);
    }
    if (s == KD_OK)
        s = server ? setup_server(ps, base) : setup_worker(ps);
    if ((s = agree(ps->comm, rank, s)) != KD_OK)
        goto fail;

    if (rank == ps->servers)
        s = seed_send(ps, params0, opt0);
    else if (server)
        s = seed_recv(ps, base);
    if ((s = agree(ps->comm, rank, s)) != KD_OK)
        goto fail;

    /* One passive-target epoch for the whole run. NOCHECK: every rank
     * takes only shared locks, which never conflict. */
    if (ps->protocol == KD_PS_RMA) {
        if ((rc = MPI_Win_lock_all(MPI_MODE_NOCHECK, ps->win)) != MPI_SUCCESS)
            s = ps_mpi_fail(ps, rc, "MPI_Win_lock_all");
        else
            ps->locked = 1;
        if (s == KD_OK && (rc = MPI_Win_sync(ps->win)) != MPI_SUCCESS)
            s = ps_mpi_fail(ps, rc, "MPI_Win_sync");
    }
    /* The agreement doubles as the barrier: no worker touches a server's
     * window before that server has published its seeded shard. */
    if ((s = agree(ps->comm, rank, s)) != KD_OK)
        goto fail;
    *out = ps;
    return KD_OK;

fail:
    kd_ps_free(ps); /* every rank is here together: agree() saw to it */
    return s;
}

void kd_ps_free(kd_ps *ps)
{
    if (!ps)
        return;
    if (ps->locked)
        MPI_Win_unlock_all(ps->win);
    if (ps->win != MPI_WIN_NULL)
        MPI_Win_free(&ps->win);
    if (ps->comm != MPI_COMM_NULL)
        MPI_Comm_free(&ps->comm);
    kd_optim_free(ps->opt);
    free(ps->params);
    free(ps->grad);
    free(ps->clocks);
    free(ps->pull_counters);
    free(ps->pull_writing);
    free(ps->pull_retry);
    free(ps->server_bells);
    free(ps->acc);
    free(ps->msg_out);
    free(ps->msg_in);
    free(ps->msg_req);
    free(ps);
}

kd_ps_protocol kd_ps_get_protocol(const kd_ps *ps) { return ps->protocol; }

const char *kd_ps_describe(const kd_ps *ps)
{
    if (ps->protocol == KD_PS_MSG)
        return ps->shared ? "two-sided messages (one host)" : "two-sided messages (ranks on several hosts)";
    if (ps->shared && ps->shared_refused)
        return "one-sided RMA (one host; the MPI library refused a shared-memory window)";
    return ps->shared ? "one-sided RMA in shared memory" : "one-sided RMA across hosts";
}

/* ------------------------------------------------------- gather replies */

kd_status ps_send_shard(kd_ps *ps, int dest, int want_state)
{
    int64_t hdr[4] = {(int64_t)ps->offset, (int64_t)ps->count, ps->slots, kd_optim_steps(ps->opt)};
    PS_MPI(ps, MPI_Send(hdr, 4, MPI_INT64_T, dest, PS_TAG_GATHER_REPLY, ps->comm),
           "MPI_Send of the gather header to rank %d", dest);
    KD_TRY(ps_send_floats(ps, ps->params, ps->count, dest, PS_TAG_GATHER_REPLY));
    if (want_state) {
        const float *state = kd_optim_state(ps->opt, NULL);
        for (int j = 0; j < ps->slots; j++)
            KD_TRY(ps_send_floats(ps, state + (size_t)j * ps->count, ps->count, dest, PS_TAG_GATHER_REPLY));
    }
    return KD_OK;
}

kd_status ps_recv_shard(kd_ps *ps, int s, float *params, float *state, int want_state, int64_t *steps)
{
    size_t off, count;
    kd_ps_shard_range(ps->n, ps->servers, s, &off, &count);
    int64_t hdr[4];
    PS_MPI(ps, MPI_Recv(hdr, 4, MPI_INT64_T, s, PS_TAG_GATHER_REPLY, ps->comm, MPI_STATUS_IGNORE),
           "MPI_Recv of the gather header from server %d", s);
    if (hdr[0] != (int64_t)off || hdr[1] != (int64_t)count || hdr[2] != ps->slots)
        return kd_fail(KD_ERR_STATE,
                       "kd_ps_gather: server %d holds [%lld, +%lld) with %lld slot(s), expected [%zu, +%zu) with %d", s,
                       (long long)hdr[0], (long long)hdr[1], (long long)hdr[2], off, count, ps->slots);
    *steps = hdr[3];
    KD_TRY(ps_recv_floats(ps, params + off, count, s, PS_TAG_GATHER_REPLY));
    for (int j = 0; want_state && j < ps->slots; j++)
        KD_TRY(ps_recv_floats(ps, state + (size_t)j * ps->n + off, count, s, PS_TAG_GATHER_REPLY));
    return KD_OK;
}
