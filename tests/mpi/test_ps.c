/* The parameter server alone (mpi/ps_*.c), on 3 or 4 ranks:
 *   mpirun -np 4 --oversubscribe test_ps     (also with OMPI_MCA_osc=pt2pt)
 * 1. staleness 0 through the server equals single-process kd_train: one
 *    worker (same batches), and W workers on data parts (= batch W*B);
 * 2. known gradients pushed by every worker reach every shard: the final
 *    parameters are init - sum(pushes) / W, synchronous and asynchronous;
 * 3. gather returns what pull returns, the Adam state pieces land at their
 *    offsets (checked against a full-vector optimizer), and a resume on a
 *    different number of servers continues exactly;
 * 4. the stale-synchronous bound holds (and async does not wait), also on
 *    what a worker reads when the server falls behind;
 * 5. errors: no workers, too many servers, missing initial parameters.
 * Each under both protocols: one-sided RMA (in shared memory on one host)
 * and two-sided messages (what ranks on several hosts use). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "kindling.h"
#include "ps.h"

/* A step descriptor for direct exchange calls (the parameter server ignores it). */
static const kd_step ONE_STEP = {0, 1, 1};

static int g_rank, g_size;
static kd_ps_protocol g_protocol; /* every test runs under both protocols */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* system-wide: comparable across ranks on one host */
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *MLP_SPEC = "{\"input\": [6], \"layers\": [{\"type\": \"dense\", \"units\": 12}, {\"type\": \"tanh\"},"
                              " {\"type\": \"dense\", \"units\": 3}, {\"type\": \"softmax\"}]}";
static const char *DROPOUT_SPEC = "{\"input\": [6], \"layers\": [{\"type\": \"dense\", \"units\": 12}, {\"type\": \"relu\"},"
                                  " {\"type\": \"dropout\", \"rate\": 0.25}, {\"type\": \"dense\", \"units\": 3},"
                                  " {\"type\": \"softmax\"}]}";
/* 40 * 120 + 120 = 4920 parameters: several chunks per shard. */
static const char *WIDE_SPEC = "{\"input\": [40], \"layers\": [{\"type\": \"dense\", \"units\": 120}, {\"type\": \"softmax\"}]}";

/* Three separable-ish classes from a fixed generator (identical on every rank). */
static kd_dataset *make_data(int64_t n)
{
    kd_shape sh = {1, {6, 0, 0, 0}};
    kd_dataset *ds = NULL;
    if (kd_dataset_alloc(n, &sh, &ds) != KD_OK)
        return NULL;
    uint64_t x = 12345;
    for (int64_t i = 0; i < n; i++) {
        float s[3] = {0, 0, 0};
        for (int j = 0; j < 6; j++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            float v = (float)((x >> 33) % 2000) / 1000.0f - 1.0f;
            ds->x[i * 6 + j] = v;
            s[j % 3] += v;
        }
        ds->y[i] = s[0] > s[1] ? (s[0] > s[2] ? 0 : 2) : (s[1] > s[2] ? 1 : 2);
    }
    ds->num_classes = 3;
    return ds;
}

static float max_abs_diff(const float *a, const float *b, size_t n)
{
    float m = 0;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        m = d > m || isnan(d) ? d : m;
    }
    return m;
}

/* Ranks >= servers of comm as their own communicator (MPI_COMM_NULL on servers). */
static MPI_Comm worker_comm(MPI_Comm comm, int servers)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm wc;
    MPI_Comm_split(comm, rank >= servers ? 0 : MPI_UNDEFINED, rank, &wc);
    return wc;
}

/* ------------------------------------------------ 1. equals kd_train */

/* `servers` = 1 on comm; every worker trains on its part with batch B; the
 * reference is kd_train alone with batch B * W on the whole data. */
static void run_match(MPI_Comm comm, const char *spec, const kd_optim_config *oc, int epochs, const char *label)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int W = size - 1, B = 16;
    kd_dataset *ds = make_data(192); /* 192 = 16 * 12: every part is equal for W = 1, 2, 3 */
    kd_net *net = NULL;
    CHECK_OK(kd_net_create(spec, 7, &net));
    if (!net || !ds)
        return;
    size_t n = kd_net_param_count(net);
    kd_ps_config pc = {1, 0, 0, g_protocol};
    kd_ps *ps = NULL;
    CHECK_OK(kd_ps_create(comm, &pc, n, oc, kd_net_params(net), NULL, &ps));
    if (!ps)
        return;
    if (kd_ps_is_server(ps)) {
        CHECK_OK(kd_ps_serve(ps));
    } else {
        kd_exchange ex = kd_ps_exchange(ps);
        kd_optim *opt_w = NULL;
        CHECK_OK(kd_optim_create(oc, n, &opt_w));
        kd_train_config cfg = kd_train_config_default();
        cfg.epochs = epochs;
        cfg.batch_size = B;
        cfg.seed = 99;
        cfg.exchange = &ex;
        cfg.part_index = rank - 1;
        cfg.part_count = W;
        kd_train_state st;
        kd_train_state_init(&st);
        CHECK_OK(kd_train(net, opt_w, ds, &cfg, &st));
        CHECK_OK(kd_ps_worker_finish(ps));

        /* The reference, computed here on the worker. */
        kd_net *ref = NULL;
        kd_optim *opt_ref = NULL;
        CHECK_OK(kd_net_create(spec, 7, &ref));
        CHECK_OK(kd_optim_create(oc, n, &opt_ref));
        kd_train_config rc = cfg;
        rc.exchange = NULL;
        rc.batch_size = B * W;
        rc.part_index = 0;
        rc.part_count = 1;
        kd_train_state rs;
        kd_train_state_init(&rs);
        CHECK_OK(kd_train(ref, opt_ref, ds, &rc, &rs));
        float d = max_abs_diff(kd_net_params(net), kd_net_params(ref), n);
        CHECK(d <= 1e-5f, "%s, %d worker(s): PS params differ from single-process by %g", label, W, d);
        CHECK(st.step == rs.step && st.step == (int64_t)epochs * 192 / (B * W), "%s: steps %lld vs %lld", label,
              (long long)st.step, (long long)rs.step);
        CHECK(kd_optim_steps(opt_w) == kd_optim_steps(opt_ref), "%s: worker optimizer follows the server: %lld vs %lld",
              label, (long long)kd_optim_steps(opt_w), (long long)kd_optim_steps(opt_ref));
        CHECK(kd_ps_version(ps) == st.step, "%s: server version %lld after %lld rounds", label,
              (long long)kd_ps_version(ps), (long long)st.step);
        /* The loss differs in summation order only when W > 1. */
        if (W == 1 && st.history_len > 0 && rs.history_len > 0)
            CHECK_NEAR(st.history[0].train_loss, rs.history[0].train_loss, 1e-6);
        /* Moved at all (the comparison is not between two untouched nets). */
        kd_net *init = NULL;
        kd_net_create(spec, 7, &init);
        CHECK(init && max_abs_diff(kd_net_params(init), kd_net_params(net), n) > 1e-3f, "%s: training moved", label);
        kd_net_free(init);
        kd_train_state_clear(&st);
        kd_train_state_clear(&rs);
        kd_optim_free(opt_w);
        kd_optim_free(opt_ref);
        kd_net_free(ref);
    }
    kd_ps_free(ps);
    kd_net_free(net);
    kd_dataset_free(ds);
}

static void test_match_single_process(void)
{
    kd_optim_config mom = kd_optim_config_default();
    mom.kind = KD_OPT_MOMENTUM;
    mom.lr = 0.1;
    mom.nesterov = 1;
    kd_optim_config adam = kd_optim_config_default();
    adam.kind = KD_OPT_ADAM;
    adam.lr = 0.01;
    adam.weight_decay = 0.01;
    adam.schedule = KD_SCHED_STEP;
    adam.step_size = 10;
    adam.gamma = 0.5;

    /* Ranks (0,1), then (2,3): 1 server + 1 worker, same batches as alone.
     * One pair after the other: Open MPI 4.1.4's osc/rdma names its shared
     * segment by communicator id alone, and two disjoint communicators can
     * share an id, so windows created on both at once collide (seen here:
     * MPI_ERR_WIN, or two servers counting each other's pushes). */
    for (int pair_index = 0; pair_index < g_size / 2 && pair_index < 2; pair_index++) {
        MPI_Comm pair;
        MPI_Comm_split(MPI_COMM_WORLD, g_rank / 2 == pair_index ? 0 : MPI_UNDEFINED, g_rank, &pair);
        if (pair != MPI_COMM_NULL) {
            if (pair_index == 0)
                run_match(pair, DROPOUT_SPEC, &mom, 3, "1+1 momentum/nesterov, dropout");
            else
                run_match(pair, MLP_SPEC, &adam, 3, "1+1 adam, step schedule");
            MPI_Comm_free(&pair);
        }
        MPI_Barrier(MPI_COMM_WORLD);
    }
    /* 1 server + all other ranks as workers on data parts. */
    run_match(MPI_COMM_WORLD, MLP_SPEC, &mom, 2, "1+W momentum on parts");
    run_match(MPI_COMM_WORLD, MLP_SPEC, &adam, 2, "1+W adam on parts");
}

/* -------------------------------------------- 2. every gradient arrives */

/* Worker w's gradient in round r: integers times W, so every partial sum
 * and the division by W are exact in float whatever the order. */
static float known_grad(int W, int w, int r, size_t i) { return (float)(W * ((w + 1) + (r % 3) + (int)(i % 5))); }

static void test_sums(int servers, int k, size_t chunk)
{
    int W = g_size - servers, R = 7;
    kd_net *net = NULL;
    CHECK_OK(kd_net_create(WIDE_SPEC, 1, &net));
    if (!net)
        return;
    size_t n = kd_net_param_count(net);
    float *p0 = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        p0[i] = (float)(i % 97);
    kd_optim_config oc = kd_optim_config_default(); /* SGD */
    oc.lr = 1.0;
    kd_ps_config pc = {servers, k, chunk, g_protocol};
    kd_ps *ps = NULL;
    CHECK_OK(kd_ps_create(MPI_COMM_WORLD, &pc, n, &oc, p0, NULL, &ps));
    MPI_Comm wc = worker_comm(MPI_COMM_WORLD, servers);
    if (ps && kd_ps_is_server(ps)) {
        CHECK_OK(kd_ps_serve(ps));
    } else if (ps) {
        int w = g_rank - servers;
        kd_exchange ex = kd_ps_exchange(ps);
        for (int r = 0; r < R; r++) {
            float *g = kd_net_grads(net);
            for (size_t i = 0; i < n; i++)
                g[i] = known_grad(W, w, r, i);
            CHECK_OK(ex.step(ex.ctx, net, NULL, &ONE_STEP));
        }
        CHECK(kd_ps_clock(ps) == R, "clock %lld after %d pushes", (long long)kd_ps_clock(ps), R);
        /* Every push counted before anyone asks for the final state. */
        MPI_Barrier(wc);
        if (w == 0)
            CHECK_OK(kd_ps_gather(ps, got, NULL));
        MPI_Barrier(wc);
        CHECK_OK(kd_ps_pull(ps, kd_net_params(net)));
        size_t bad = 0, first_bad = 0;
        float want_bad = 0, got_bad = 0;
        for (size_t i = 0; i < n; i++) {
            float sum = 0;
            for (int v = 0; v < W; v++)
                for (int r = 0; r < R; r++)
                    sum += known_grad(W, v, r, i) / (float)W;
            float want = p0[i] - sum;
            float have = kd_net_params(net)[i];
            if (have != want || (w == 0 && got[i] != want)) {
                if (!bad++) {
                    first_bad = i;
                    want_bad = want;
                    got_bad = have;
                }
            }
        }
        CHECK(bad == 0, "%d server(s), %d worker(s), staleness %d, chunk %zu: %zu of %zu params wrong, first [%zu] %g want %g",
              servers, W, k, chunk, bad, n, first_bad, got_bad, want_bad);
        if (k == 0)
            CHECK(kd_ps_version(ps) == R, "synchronous: %lld steps for %d rounds", (long long)kd_ps_version(ps), R);
        CHECK_OK(kd_ps_worker_finish(ps));
        CHECK_OK(kd_ps_worker_finish(ps)); /* idempotent */
        CHECK_FAILS(kd_ps_pull(ps, got), KD_ERR_STATE, "after kd_ps_worker_finish");
    }
    if (wc != MPI_COMM_NULL)
        MPI_Comm_free(&wc);
    kd_ps_free(ps);
    kd_net_free(net);
    free(p0);
    free(got);
}

/* ------------------------------------------- 3. gather, state, resume */

static float adam_grad(int w, int r, size_t i) { return (float)((int)((i * 7 + (size_t)w * 13 + (size_t)r * 3) % 19) - 9) * 0.1f; }

/* R rounds of known gradients through `servers` servers (synchronous).
 * The first worker checks against `sim` (a full-vector optimizer stepped
 * with the same means), gathers into params/opt_full. */
static void adam_rounds(int servers, int R, int r0, const kd_optim_config *oc, size_t n, float *params, kd_optim *opt_full,
                        kd_optim *sim, float *sim_params, int resume)
{
    int W = g_size - servers;
    kd_ps_config pc = {servers, 0, 1000, g_protocol};
    kd_ps *ps = NULL;
    kd_net *net = NULL;
    CHECK_OK(kd_net_create(WIDE_SPEC, 1, &net));
    CHECK_OK(kd_ps_create(MPI_COMM_WORLD, &pc, n, oc, params, resume ? opt_full : NULL, &ps));
    if (!ps || !net) {
        kd_net_free(net);
        return;
    }
    if (kd_ps_is_server(ps)) {
        CHECK_OK(kd_ps_serve(ps));
    } else {
        int w = g_rank - servers;
        kd_exchange ex = kd_ps_exchange(ps);
        for (int r = r0; r < r0 + R; r++) {
            for (size_t i = 0; i < n; i++)
                kd_net_grads(net)[i] = adam_grad(w, r, i);
            CHECK_OK(ex.step(ex.ctx, net, NULL, &ONE_STEP));
        }
        if (w == 0) {
            float *mean = malloc(sizeof(float) * n);
            for (int r = r0; r < r0 + R; r++) {
                for (size_t i = 0; i < n; i++) {
                    float s = 0;
                    for (int v = 0; v < W; v++)
                        s += adam_grad(v, r, i);
                    mean[i] = s / (float)W;
                }
                kd_optim_step(sim, sim_params, mean);
            }
            free(mean);
            CHECK_OK(kd_ps_gather(ps, params, opt_full));
            CHECK(memcmp(params, kd_net_params(net), sizeof(float) * n) == 0,
                  "gather returns the parameters the last pull returned (max diff %g)",
                  max_abs_diff(params, kd_net_params(net), n));
            float dp = max_abs_diff(params, sim_params, n);
            CHECK(dp <= 1e-5f, "%d server(s): params differ from the full-vector optimizer by %g", servers, dp);
            size_t cnt = 0, cnt_sim = 0;
            float *st = kd_optim_state(opt_full, &cnt), *st_sim = kd_optim_state(sim, &cnt_sim);
            CHECK(cnt == 2 * n && cnt_sim == cnt, "state sizes %zu, %zu", cnt, cnt_sim);
            float dm = max_abs_diff(st, st_sim, n), dv = max_abs_diff(st + n, st_sim + n, n);
            CHECK(dm <= 1e-6f && dv <= 1e-6f, "%d server(s): gathered m/v differ from the full optimizer's by %g/%g",
                  servers, dm, dv);
            /* Not all zero: the slots really were sent. */
            CHECK(st[n - 1] != 0 && st[n + n / 2] != 0, "state pieces present");
            CHECK(kd_optim_steps(opt_full) == kd_optim_steps(sim), "gathered steps %lld, want %lld",
                  (long long)kd_optim_steps(opt_full), (long long)kd_optim_steps(sim));
            /* Wrong-size optimizer: refused before any message. */
            kd_optim *wrong = NULL;
            kd_optim_create(oc, n - 1, &wrong);
            CHECK_FAILS(kd_ps_gather(ps, params, wrong), KD_ERR_SHAPE, "optimizer is for");
            kd_optim_free(wrong);
        }
        CHECK_OK(kd_ps_worker_finish(ps));
    }
    kd_ps_free(ps);
    kd_net_free(net);
}

static void test_gather_and_resume(void)
{
    kd_net *net = NULL;
    CHECK_OK(kd_net_create(WIDE_SPEC, 1, &net));
    if (!net)
        return;
    size_t n = kd_net_param_count(net);
    kd_optim_config oc = kd_optim_config_default();
    oc.kind = KD_OPT_ADAM;
    oc.lr = 0.01;
    oc.weight_decay = 0.01;
    float *params = malloc(sizeof(float) * n), *sim_params = malloc(sizeof(float) * n);
    memcpy(params, kd_net_params(net), sizeof(float) * n);
    memcpy(sim_params, params, sizeof(float) * n);
    kd_optim *opt_full = NULL, *sim = NULL;
    CHECK_OK(kd_optim_create(&oc, n, &opt_full));
    CHECK_OK(kd_optim_create(&oc, n, &sim));
    /* 2 servers, then resume on 1 (the shards move). On ranks other than
     * the first worker params/opt_full are stale; only it sends them. */
    int S1 = g_size >= 4 ? 2 : 1, S2 = g_size >= 4 ? 1 : 2;
    adam_rounds(S1, 4, 0, &oc, n, params, opt_full, sim, sim_params, 0);
    /* The gatherer (first worker of run 1) hands the checkpoint and its
     * reference to everyone; run 2's first worker is another rank. */
    int64_t steps[2] = {kd_optim_steps(opt_full), kd_optim_steps(sim)};
    MPI_Bcast(params, (int)n, MPI_FLOAT, S1, MPI_COMM_WORLD);
    MPI_Bcast(sim_params, (int)n, MPI_FLOAT, S1, MPI_COMM_WORLD);
    MPI_Bcast(kd_optim_state(opt_full, NULL), (int)(2 * n), MPI_FLOAT, S1, MPI_COMM_WORLD);
    MPI_Bcast(kd_optim_state(sim, NULL), (int)(2 * n), MPI_FLOAT, S1, MPI_COMM_WORLD);
    MPI_Bcast(steps, 2, MPI_INT64_T, S1, MPI_COMM_WORLD);
    kd_optim_set_steps(opt_full, steps[0]);
    kd_optim_set_steps(sim, steps[1]);
    CHECK(steps[0] == 4, "steps after 4 rounds: %lld", (long long)steps[0]);
    adam_rounds(S2, 3, 4, &oc, n, params, opt_full, sim, sim_params, 1);
    if (g_rank == S2)
        CHECK(kd_optim_steps(opt_full) == 7, "steps after resume: %lld", (long long)kd_optim_steps(opt_full));
    kd_optim_free(opt_full);
    kd_optim_free(sim);
    free(params);
    free(sim_params);
    kd_net_free(net);
}

/* --------------------------------------------- 4. the staleness bound */

static void test_staleness(int k)
{
    enum { R = 6 };
    const double nap = 0.12;
    kd_net *net = NULL;
    CHECK_OK(kd_net_create(MLP_SPEC, 1, &net));
    if (!net)
        return;
    size_t n = kd_net_param_count(net);
    kd_optim_config oc = kd_optim_config_default();
    kd_ps_config pc = {1, k, 0, g_protocol};
    kd_ps *ps = NULL;
    CHECK_OK(kd_ps_create(MPI_COMM_WORLD, &pc, n, &oc, kd_net_params(net), NULL, &ps));
    MPI_Comm wc = worker_comm(MPI_COMM_WORLD, 1);
    if (ps && kd_ps_is_server(ps)) {
        CHECK_OK(kd_ps_serve(ps));
    } else if (ps) {
        int w = g_rank - 1, W = g_size - 1;
        kd_exchange ex = kd_ps_exchange(ps);
        double t[2 * R]; /* before push r, after step r */
        memset(kd_net_grads(net), 0, sizeof(float) * n);
        for (int r = 0; r < R; r++) {
            if (w == 0 && r >= 1) {
                struct timespec ts = {0, (long)(nap * 1e9)};
                nanosleep(&ts, NULL); /* the straggler */
            }
            t[2 * r] = now();
            CHECK_OK(ex.step(ex.ctx, net, NULL, &ONE_STEP));
            t[2 * r + 1] = now();
        }
        double *all = malloc(sizeof(double) * 2 * R * (size_t)W);
        MPI_Allgather(t, 2 * R, MPI_DOUBLE, all, 2 * R, MPI_DOUBLE, wc);
        if (w != 0) {
            const double *slow = all; /* worker 0 */
            if (k >= 0) {
                /* Step r (clock r + 1) returns only once the straggler has
                 * pushed clock r + 1 - k, i.e. started push r - k. */
                int bad = 0;
                for (int r = k; r < R; r++)
                    bad += t[2 * r + 1] < slow[2 * (r - k)];
                CHECK(bad == 0, "staleness %d: %d step(s) ran ahead of the bound", k, bad);
            } else {
                CHECK(t[2 * R - 1] < slow[2 * 2], "async: a fast worker waited for the straggler (done %.3f, push 3 at %.3f)",
                      t[2 * R - 1], slow[2 * 2]);
            }
        }
        free(all);
        MPI_Barrier(wc);
        CHECK_OK(kd_ps_worker_finish(ps));
    }
    if (wc != MPI_COMM_NULL)
        MPI_Comm_free(&wc);
    kd_ps_free(ps);
    kd_net_free(net);
}

/* The bound also covers what a worker reads: with k > 0 the parameters a
 * worker pulls at clock c hold every worker's first c - k pushes, even when
 * the server falls behind (here it starts serving late, as a server rank
 * descheduled on a busy host does). Every push is a gradient of ones with
 * SGD at lr 1, so a parameter started at 0 reads -(pushes applied) / W. */
static void test_fresh_reads(int k)
{
    enum { R = 8 };
    kd_net *net = NULL;
    CHECK_OK(kd_net_create(MLP_SPEC, 1, &net));
    if (!net)
        return;
    size_t n = kd_net_param_count(net);
    float *p0 = calloc(n, sizeof(float));
    kd_optim_config oc = kd_optim_config_default(); /* SGD */
    oc.lr = 1.0;
    kd_ps_config pc = {1, k, 0, g_protocol};
    kd_ps *ps = NULL;
    CHECK_OK(kd_ps_create(MPI_COMM_WORLD, &pc, n, &oc, p0, NULL, &ps));
    MPI_Comm wc = worker_comm(MPI_COMM_WORLD, 1);
    if (ps && kd_ps_is_server(ps)) {
        struct timespec late = {0, 250000000L};
        nanosleep(&late, NULL);
        CHECK_OK(kd_ps_serve(ps));
    } else if (ps) {
        int W = g_size - 1, bad = 0;
        long first_seen = 0, first_due = 0;
        kd_exchange ex = kd_ps_exchange(ps);
        for (int r = 0; r < R; r++) {
            float *g = kd_net_grads(net);
            for (size_t i = 0; i < n; i++)
                g[i] = 1.0f;
            CHECK_OK(ex.step(ex.ctx, net, NULL, &ONE_STEP));
            long seen = lround(-(double)kd_net_params(net)[0] * W), due = (long)W * (r + 1 - k);
            if (seen < due && !bad++) {
                first_seen = seen;
                first_due = due;
            }
        }
        CHECK(bad == 0, "staleness %d: %d pull(s) older than the bound, first holding %ld pushes where %ld were due", k, bad,
              first_seen, first_due);
        MPI_Barrier(wc);
        CHECK_OK(kd_ps_worker_finish(ps));
    }
    if (wc != MPI_COMM_NULL)
        MPI_Comm_free(&wc);
    kd_ps_free(ps);
    kd_net_free(net);
    free(p0);
}

/* ------------------------------------------------------------ 5. errors */

static void test_errors(void)
{
    kd_optim_config oc = kd_optim_config_default();
    float p[8] = {0};
    kd_ps *ps = (kd_ps *)&ps; /* must be reset to NULL on failure */
    kd_ps_config pc = {g_size, 0, 0, g_protocol};
    CHECK_FAILS(kd_ps_create(MPI_COMM_WORLD, &pc, 8, &oc, p, NULL, &ps), KD_ERR_INVALID, "leave no worker rank");
    CHECK(ps == NULL, "out reset on failure");
    pc.servers = 0;
    CHECK_FAILS(kd_ps_create(MPI_COMM_WORLD, &pc, 8, &oc, p, NULL, &ps), KD_ERR_INVALID, "at least 1 server");
    pc.servers = 2;
    CHECK_FAILS(kd_ps_create(MPI_COMM_WORLD, &pc, 1, &oc, p, NULL, &ps), KD_ERR_INVALID,
                "every server needs at least one parameter");
    pc.servers = 1;
    pc.max_staleness = -2;
    CHECK_FAILS(kd_ps_create(MPI_COMM_WORLD, &pc, 8, &oc, p, NULL, &ps), KD_ERR_INVALID, "max staleness");
    pc.max_staleness = 0;
    /* Only the first worker must have the initial parameters; every rank fails together. */
    CHECK_FAILS(kd_ps_create(MPI_COMM_WORLD, &pc, 8, &oc, g_rank == 1 ? NULL : p, NULL, &ps), KD_ERR_INVALID,
                g_rank == 1 ? "must pass the initial parameters" : "failed on rank 1");
    kd_optim_config mom = oc;
    mom.kind = KD_OPT_MOMENTUM;
    kd_optim *opt0 = NULL;
    kd_optim_create(&mom, 8, &opt0);
    CHECK_FAILS(kd_ps_create(MPI_COMM_WORLD, &pc, 8, &oc, p, opt0, &ps), KD_ERR_INVALID,
                g_rank == 1 ? "state slot" : "failed on rank 1");
    kd_optim_free(opt0);
    kd_optim_config badlr = oc;
    badlr.lr = -1;
    CHECK_FAILS(kd_ps_create(MPI_COMM_WORLD, &pc, 8, &badlr, p, NULL, &ps), KD_ERR_INVALID, "learning rate");

    /* Role mistakes on a working server. */
    CHECK_OK(kd_ps_create(MPI_COMM_WORLD, &pc, 8, &oc, p, NULL, &ps));
    if (ps && kd_ps_is_server(ps)) {
        kd_exchange ex = kd_ps_exchange(ps);
        kd_net *net = NULL;
        kd_net_create(MLP_SPEC, 1, &net);
        CHECK_FAILS(ex.step(ex.ctx, net, NULL, &ONE_STEP), KD_ERR_STATE, "is a server");
        CHECK_FAILS(kd_ps_pull(ps, p), KD_ERR_STATE, "is a server");
        kd_net_free(net);
        CHECK_OK(kd_ps_serve(ps));
    } else if (ps) {
        CHECK_FAILS(kd_ps_serve(ps), KD_ERR_STATE, "is a worker");
        kd_net *net = NULL;
        kd_net_create(MLP_SPEC, 1, &net); /* not 8 parameters */
        kd_exchange ex = kd_ps_exchange(ps);
        CHECK_FAILS(ex.step(ex.ctx, net, NULL, &ONE_STEP), KD_ERR_SHAPE, "the network has");
        kd_net_free(net);
        float q[8];
        CHECK_OK(kd_ps_pull(ps, q));
        CHECK(memcmp(p, q, sizeof q) == 0, "a fresh server publishes the seeded parameters");
        CHECK_OK(kd_ps_worker_finish(ps));
    }
    kd_ps_free(ps);
}

/* ------------------------------------------------------------------ main */

static void test_shard_ranges(void)
{
    size_t total = 0, off, cnt;
    for (int s = 0; s < 3; s++) {
        kd_ps_shard_range(10, 3, s, &off, &cnt);
        CHECK(off == total, "shard %d starts at %zu", s, off);
        total += cnt;
        CHECK(cnt == (s == 0 ? 4u : 3u), "shard %d has %zu", s, cnt);
    }
    CHECK(total == 10, "shards cover the vector");
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    kd_set_threads(1);
    CHECK(g_size >= 3, "run with at least 3 ranks (mpirun -np 4), got %d", g_size);
    if (g_size >= 3)
        test_shard_ranges();
    const kd_ps_protocol protocols[] = {KD_PS_RMA, KD_PS_MSG};
    for (int p = 0; p < 2 && g_size >= 3; p++) {
        g_protocol = protocols[p];
        if (g_rank == 0)
            printf("protocol %s\n", g_protocol == KD_PS_RMA ? "rma" : "msg");
        test_errors();
        test_match_single_process();
        for (int k = -1; k <= 1; k++) {
            test_sums(1, k, 0);
            test_sums(2, k, 700);
        }
        test_gather_and_resume();
        test_staleness(1);
        test_staleness(0);
        test_staleness(-1);
        test_fresh_reads(1);
        test_fresh_reads(2);
    }
    int failed = check_failed_, any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (g_rank == 0)
        printf("all ranks: %d failure(s)\n", any);
    int rc = check_summary();
    MPI_Finalize();
    return rc;
}
