/* MPI start-up, roles and the start-up agreement check.
 *
 * Transport defaults: Debian's Open MPI disables the one-sided components
 * pt2pt and ucx (/etc/openmpi/openmpi-mca-params.conf), and the remaining
 * ones (sm, rdma) cannot create windows across hosts over TCP (MPI_ERR_WIN).
 * kd_mpi_init therefore sets OMPI_MCA_osc=sm,rdma,pt2pt before MPI_Init:
 * the framework picks, per window, the highest-priority component that
 * accepts it, so one host gets rdma/sm (shared memory, 5-10 GB/s here) and
 * windows spanning hosts over TCP fall back to pt2pt (which needs at most
 * MPI_THREAD_SERIALIZED; we ask for FUNNELED). That list is chosen once,
 * before any rank knows where the others run, so it must work in every
 * placement; deciding from host names would need MPI already running.
 * setenv(..., 0) keeps a user's own setting. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "world.h"

#define KD_OSC_DEFAULT "sm,rdma,pt2pt"

kd_status kd_mpi_check(int mpi_rc, const char *what)
{
    if (mpi_rc == MPI_SUCCESS)
        return KD_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(mpi_rc, msg, &len) != MPI_SUCCESS)
        snprintf(msg, sizeof msg, "MPI error %d", mpi_rc);
    return kd_fail(KD_ERR_IO, "%s: %s", what, msg);
}

kd_status kd_mpi_init(int *argc, char ***argv)
{
    int started = 0, finished = 0;
    MPI_Initialized(&started);
    MPI_Finalized(&finished);
    if (finished)
        return kd_fail(KD_ERR_STATE, "MPI was already finalized in this process");
    if (started)
        return KD_OK;
    if (setenv("OMPI_MCA_osc", KD_OSC_DEFAULT, 0) != 0)
        return kd_fail(KD_ERR_INVALID, "could not set OMPI_MCA_osc in the environment");
    int provided = 0;
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS)
        return kd_fail(KD_ERR_IO, "MPI_Init_thread failed (error %d)", rc);
    if (provided < MPI_THREAD_FUNNELED)
        return kd_fail(KD_ERR_UNSUPPORTED, "the MPI library gives thread level %d; Kindling needs MPI_THREAD_FUNNELED",
                       provided);
    return KD_OK;
}

void kd_mpi_finalize(void)
{
    int started = 0, finished = 0;
    MPI_Initialized(&started);
    MPI_Finalized(&finished);
    if (started && !finished)
        MPI_Finalize();
}

void kd_mpi_abort(int code)
{
    int started = 0, finished = 0;
    MPI_Initialized(&started);
    MPI_Finalized(&finished);
    if (started && !finished)
        MPI_Abort(MPI_COMM_WORLD, code);
}

int kd_mpi_world_rank(void)
{
    int started = 0, rank = 0;
    MPI_Initialized(&started);
    if (started)
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
}

kd_dist_config kd_dist_config_default(void)
{
    kd_dist_config c;
    memset(&c, 0, sizeof c);
    c.mode = KD_DIST_SYNC;
    c.servers = 0;
    c.max_staleness = -1;
    c.bucket_bytes = 0;
    c.overlap = 1;
    c.ps_protocol = KD_PS_AUTO;
    return c;
}

const char *kd_dist_mode_name(kd_dist_mode m)
{
    return m == KD_DIST_ASYNC ? "async" : m == KD_DIST_SYNC ? "sync" : "?";
}

/* ------------------------------------------------------------- agreement */

/* FNV-1a, 64 bit: cheap, stable across hosts, enough to detect accidents. */
static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}
#define FNV_START 0xcbf29ce484222325ULL
#define HASH_FIELD(h, v) ((h) = fnv1a((h), &(v), sizeof(v)))

/* One rank's view of the run, gathered from every rank and compared field by field. */
typedef struct agree_record {
    uint64_t v[24]; /* indexed by agree_field (below), F_COUNT <= 24 */
} agree_record;

/* In comparison order: the optimizer's schedule is derived from the batch
 * size, epochs and training-set size, so those come first and a message
 * names the setting the user actually changed. */
typedef enum {
    F_MODE, F_SERVERS, F_STALENESS, F_PROTOCOL, F_LOCAL_DATA, F_SPEC, F_PARAMS, F_BATCH, F_EPOCHS, F_SEED,
    F_RESUME_EPOCH, F_RESUME_STEP, F_TRAIN_N, F_VAL, F_PATIENCE, F_MIN_DELTA, F_OPTIM, F_TOTAL, F_COUNT
} agree_field;

_Static_assert(F_COUNT <= 24, "agree_record is too small for the fields");

/* Fields only workers have (servers hold no data): not compared on servers. */
#define WORKER_ONLY(f) ((f) == F_TRAIN_N || (f) == F_VAL)

static const char *const FIELD_NAMES[F_COUNT] = {
    "distribution mode (--dist)", "server count (--servers)", "staleness bound (--max-staleness)",
    "parameter-server protocol (--ps-protocol)", "data placement (--local-data)",
    "network spec (hash)", "parameter count", "batch size", "epochs", "seed",
    "resume epoch", "resume step", "training-set size", "validation data (--val-*)",
    "early-stopping patience (--patience)", "early-stopping min delta (--min-delta)", "optimizer settings (hash)",
    "configuration hash"};

static void print_value(agree_field f, uint64_t v, char *buf, size_t len)
{
    switch (f) {
    case F_MODE: snprintf(buf, len, "%s", kd_dist_mode_name((kd_dist_mode)v)); break;
    case F_PROTOCOL: snprintf(buf, len, "%s", v == KD_PS_RMA ? "rma" : v == KD_PS_MSG ? "msg" : "auto"); break;
    case F_SPEC: case F_OPTIM: case F_TOTAL: snprintf(buf, len, "%016llx", (unsigned long long)v); break;
    case F_STALENESS: case F_SERVERS: case F_BATCH: case F_EPOCHS: case F_RESUME_EPOCH: case F_RESUME_STEP:
    case F_TRAIN_N: case F_PATIENCE:
        snprintf(buf, len, "%lld", (long long)(int64_t)v); break;
    case F_VAL: snprintf(buf, len, "%s", v ? "given" : "none"); break;
    case F_MIN_DELTA: {
        double x;
        memcpy(&x, &v, sizeof x);
        snprintf(buf, len, "%g", x);
        break;
    }
    default: snprintf(buf, len, "%llu", (unsigned long long)v); break;
    }
}

/* "ranks disagree on the batch size: 32 on ranks 0, 1; 64 on rank 2".
 * Ranks with skip[r] set are left out (servers have no training set). */
static kd_status report_mismatch(agree_field f, const agree_record *all, int n, const unsigned char *skip)
{
    char msg[1024];
    size_t used = (size_t)snprintf(msg, sizeof msg, "ranks disagree on the %s:", FIELD_NAMES[f]);
    unsigned char *done = calloc((size_t)n, 1);
    if (!done)
        return kd_fail(KD_ERR_NOMEM, "ranks disagree on the %s", FIELD_NAMES[f]);
    int groups = 0;
    for (int r = 0; r < n && used < sizeof msg; r++) {
        if (done[r] || (skip && skip[r]))
            continue;
        char val[64];
        print_value(f, all[r].v[f], val, sizeof val);
        int count = 0;
        for (int q = r; q < n; q++)
            if (!done[q] && !(skip && skip[q]) && all[q].v[f] == all[r].v[f])
                count++;
        used += (size_t)snprintf(msg + used, sizeof msg - used, "%s %s on rank%s", groups ? ";" : "", val,
                                 count > 1 ? "s" : "");
        int listed = 0;
        for (int q = r; q < n && used < sizeof msg; q++) {
            if (done[q] || (skip && skip[q]) || all[q].v[f] != all[r].v[f])
                continue;
            done[q] = 1;
            if (listed < 12)
                used += (size_t)snprintf(msg + used, sizeof msg - used, "%s %d", listed ? "," : "", q);
            else if (listed == 12)
                used += (size_t)snprintf(msg + used, sizeof msg - used, ", ...");
            listed++;
        }
        groups++;
    }
    free(done);
    return kd_fail(KD_ERR_INVALID, "%s", msg);
}

/* Gathers every rank's record; all ranks reach the same verdict. Fields
 * [first, last] are compared in order so the message names the first real
 * difference rather than just the combined hash. */
static kd_status agree(MPI_Comm comm, agree_record *mine, int first, int last, int is_server)
{
    int n = 0;
    MPI_Comm_size(comm, &n);
    uint64_t total = FNV_START;
    for (int f = first; f <= last; f++)
        if (!WORKER_ONLY(f))
            HASH_FIELD(total, mine->v[f]);
    mine->v[F_TOTAL] = total;
    agree_record *all = kd_malloc(sizeof *all * (size_t)n, "configuration records");
    int *servers = kd_malloc(sizeof *servers * (size_t)n, "role flags");
    unsigned char *skip = kd_calloc((size_t)n, 1, "role flags");
    kd_status s = all && servers && skip ? KD_OK : KD_ERR_NOMEM;
    if (s == KD_OK)
        s = kd_mpi_check(MPI_Allgather(mine, (int)sizeof *mine, MPI_BYTE, all, (int)sizeof *mine, MPI_BYTE, comm),
                         "exchanging configurations at start-up");
    if (s == KD_OK)
        s = kd_mpi_check(MPI_Allgather(&is_server, 1, MPI_INT, servers, 1, MPI_INT, comm),
                         "exchanging roles at start-up");
    for (int f = first; s == KD_OK && f <= last; f++) {
        for (int r = 0; r < n; r++)
            skip[r] = WORKER_ONLY(f) && servers[r];
        int ref = -1;
        for (int r = 0; r < n && s == KD_OK; r++) {
            if (skip[r])
                continue;
            if (ref < 0)
                ref = r;
            else if (all[r].v[f] != all[ref].v[f])
                s = report_mismatch((agree_field)f, all, n, skip);
        }
    }
    /* Redundant with the fields, but a guard if a field is ever added to
     * the hash without its own comparison. */
    for (int r = 1; s == KD_OK && r < n; r++)
        if (all[r].v[F_TOTAL] != all[0].v[F_TOTAL])
            s = report_mismatch(F_TOTAL, all, n, NULL);
    free(all);
    free(servers);
    free(skip);
    return s;
}

/* ----------------------------------------------------------------- roles */

/* Ranks that share memory count as one host (what Open MPI uses shared
 * memory between); the lowest rank of each host counts it. */
static kd_status count_hosts(kd_dist *d)
{
    MPI_Comm node = MPI_COMM_NULL;
    KD_TRY(kd_mpi_check(MPI_Comm_split_type(d->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node),
                        "finding the ranks that share this host"));
    int local_rank = 0;
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_size(node, &d->stats.local_ranks);
    MPI_Comm_free(&node);
    int leader = local_rank == 0;
    return kd_mpi_check(MPI_Allreduce(&leader, &d->stats.hosts, 1, MPI_INT, MPI_SUM, d->comm), "counting the hosts");
}

kd_status kd_dist_create(MPI_Comm comm, const kd_dist_config *dc, kd_dist **out)
{
    if (!dc || !out)
        return kd_fail(KD_ERR_INVALID, "kd_dist_create: NULL argument");
    *out = NULL;
    int started = 0;
    MPI_Initialized(&started);
    if (!started)
        return kd_fail(KD_ERR_STATE, "kd_dist_create: MPI is not started (call kd_mpi_init first)");
    kd_dist *d = kd_calloc(1, sizeof *d, "distributed run");
    if (!d)
        return KD_ERR_NOMEM;
    d->cfg = *dc;
    d->comm = d->workers = MPI_COMM_NULL;
    kd_status s = kd_mpi_check(MPI_Comm_dup(comm, &d->comm), "duplicating the communicator");
    if (s == KD_OK) {
        MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
        MPI_Comm_rank(d->comm, &d->rank);
        MPI_Comm_size(d->comm, &d->size);
        /* Every rank must agree on the roles before acting on them. */
        agree_record rec;
        memset(&rec, 0, sizeof rec);
        rec.v[F_MODE] = (uint64_t)dc->mode;
        rec.v[F_SERVERS] = (uint64_t)(int64_t)dc->servers;
        rec.v[F_STALENESS] = (uint64_t)(int64_t)dc->max_staleness;
        rec.v[F_PROTOCOL] = (uint64_t)dc->ps_protocol;
        s = agree(d->comm, &rec, F_MODE, F_PROTOCOL, 0);
    }
    if (s == KD_OK) {
        if (dc->mode != KD_DIST_SYNC && dc->mode != KD_DIST_ASYNC)
            s = kd_fail(KD_ERR_INVALID, "unknown distribution mode %d", (int)dc->mode);
        else if (dc->servers < 0)
            s = kd_fail(KD_ERR_INVALID, "the server count must be >= 0, got %d", dc->servers);
        else if (dc->mode == KD_DIST_SYNC && dc->servers != 0)
            s = kd_fail(KD_ERR_INVALID, "sync mode has no parameter servers (got %d servers; use async)", dc->servers);
        else if (dc->mode == KD_DIST_ASYNC && dc->servers < 1)
            s = kd_fail(KD_ERR_INVALID, "async mode needs at least one parameter server, got %d", dc->servers);
        else if (d->size - dc->servers < 1)
            s = kd_fail(KD_ERR_INVALID,
                        "%d server%s among %d rank%s leave no worker: the number of ranks minus servers must be >= 1",
                        dc->servers, dc->servers == 1 ? "" : "s", d->size, d->size == 1 ? "" : "s");
        else if (dc->max_staleness < -1)
            s = kd_fail(KD_ERR_INVALID, "the staleness bound must be -1 (unbounded) or >= 0, got %d",
                        dc->max_staleness);
        else if (dc->ps_protocol != KD_PS_AUTO && dc->ps_protocol != KD_PS_RMA && dc->ps_protocol != KD_PS_MSG)
            s = kd_fail(KD_ERR_INVALID, "unknown parameter-server protocol %d", (int)dc->ps_protocol);
    }
    if (s == KD_OK)
        s = count_hosts(d);
    if (s == KD_OK) {
        d->servers = dc->servers;
        d->num_workers = d->size - d->servers;
        d->worker_index = d->rank >= d->servers ? d->rank - d->servers : -1;
        s = kd_mpi_check(MPI_Comm_split(d->comm, d->worker_index >= 0 ? 1 : MPI_UNDEFINED, d->rank, &d->workers),
                         "splitting off the workers");
        if (s == KD_OK && d->workers != MPI_COMM_NULL)
            MPI_Comm_set_errhandler(d->workers, MPI_ERRORS_RETURN);
    }
    if (s != KD_OK) {
        kd_dist_free(d);
        return s;
    }
    *out = d;
    return KD_OK;
}

void kd_dist_free(kd_dist *d)
{
    if (!d)
        return;
    if (d->workers != MPI_COMM_NULL)
        MPI_Comm_free(&d->workers);
    if (d->comm != MPI_COMM_NULL)
        MPI_Comm_free(&d->comm);
    free(d);
}

int kd_dist_is_server(const kd_dist *d) { return d->worker_index < 0; }
int kd_dist_num_workers(const kd_dist *d) { return d->num_workers; }
int kd_dist_num_servers(const kd_dist *d) { return d->servers; }
int kd_dist_worker_index(const kd_dist *d) { return d->worker_index; }
int kd_dist_is_writer(const kd_dist *d) { return d->worker_index == 0; }
kd_dist_stats kd_dist_get_stats(const kd_dist *d) { return d->stats; }

const char *kd_dist_role_str(const kd_dist *d, char *buf, size_t len)
{
    if (d->worker_index >= 0)
        snprintf(buf, len, "worker %d (rank %d)", d->worker_index, d->rank);
    else
        snprintf(buf, len, "server %d (rank %d)", d->rank, d->rank);
    return buf;
}

static uint64_t optim_hash(const kd_optim_config *c)
{
    uint64_t h = FNV_START;
    int32_t kind = (int32_t)c->kind, schedule = (int32_t)c->schedule, nesterov = c->nesterov;
    HASH_FIELD(h, kind);
    HASH_FIELD(h, c->lr);
    HASH_FIELD(h, c->momentum);
    HASH_FIELD(h, nesterov);
    HASH_FIELD(h, c->beta1);
    HASH_FIELD(h, c->beta2);
    HASH_FIELD(h, c->eps);
    HASH_FIELD(h, c->weight_decay);
    HASH_FIELD(h, schedule);
    HASH_FIELD(h, c->step_size);
    HASH_FIELD(h, c->gamma);
    HASH_FIELD(h, c->total_steps);
    HASH_FIELD(h, c->lr_min);
    HASH_FIELD(h, c->warmup_steps);
    return h;
}

kd_status kd_dist_check_config(kd_dist *d, const kd_net *net, const kd_optim *opt,
                               const kd_train_config *cfg, const kd_train_state *st, int64_t train_n)
{
    if (!d || !net || !opt || !cfg || !st)
        return kd_fail(KD_ERR_INVALID, "kd_dist_check_config: NULL argument");
    agree_record rec;
    memset(&rec, 0, sizeof rec);
    const char *spec = kd_net_spec_json(net);
    rec.v[F_MODE] = (uint64_t)d->cfg.mode;
    rec.v[F_SERVERS] = (uint64_t)(int64_t)d->cfg.servers;
    rec.v[F_STALENESS] = (uint64_t)(int64_t)d->cfg.max_staleness;
    rec.v[F_PROTOCOL] = (uint64_t)d->cfg.ps_protocol;
    rec.v[F_LOCAL_DATA] = (uint64_t)(d->cfg.local_data != 0);
    rec.v[F_SPEC] = fnv1a(FNV_START, spec, strlen(spec));
    rec.v[F_PARAMS] = (uint64_t)kd_net_param_count(net);
    rec.v[F_OPTIM] = optim_hash(kd_optim_get_config(opt));
    rec.v[F_BATCH] = (uint64_t)(int64_t)cfg->batch_size;
    rec.v[F_EPOCHS] = (uint64_t)(int64_t)cfg->epochs;
    rec.v[F_SEED] = st->seed ? st->seed : cfg->seed;
    rec.v[F_RESUME_EPOCH] = (uint64_t)(int64_t)st->epoch;
    rec.v[F_RESUME_STEP] = (uint64_t)st->step;
    /* With local data every worker holds its own share: sizes differ by design. */
    rec.v[F_TRAIN_N] = d->cfg.local_data ? 0 : (uint64_t)train_n;
    /* Whether the epoch ends combine figures over the workers (kd_dist_train) must agree. */
    rec.v[F_VAL] = cfg->val != NULL;
    rec.v[F_PATIENCE] = (uint64_t)(int64_t)cfg->patience;
    memcpy(&rec.v[F_MIN_DELTA], &cfg->min_delta, sizeof cfg->min_delta);
    KD_TRY(agree(d->comm, &rec, F_MODE, F_OPTIM, kd_dist_is_server(d)));
    size_t n = kd_net_param_count(net);
    if ((size_t)d->servers > n)
        return kd_fail(KD_ERR_INVALID, "%d servers for %zu parameter%s: each server needs at least one parameter",
                       d->servers, n, n == 1 ? "" : "s");
    return KD_OK;
}
