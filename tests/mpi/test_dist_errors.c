/* Start-up errors of distributed runs, detected on every rank with the
 * same message: bad rank counts, ranks that disagree on the roles or on
 * the configuration (the message names the setting and the ranks), more
 * servers than parameters. Needs 4 ranks. */
#include <stdio.h>

#include "dist_test_util.h"

#define TINY_SPEC "{\"input\": [1], \"layers\": [{\"type\": \"dense\", \"units\": 2, \"bias\": false}, {\"type\": \"softmax\"}]}"

static kd_dist_config cfg_of(kd_dist_mode mode, int servers)
{
    kd_dist_config dc = kd_dist_config_default();
    dc.mode = mode;
    dc.servers = servers;
    return dc;
}

/* kd_dist_create must fail on every rank with `needle` in the message. */
static void create_fails(const kd_dist_config *dc, const char *needle)
{
    kd_dist *d = NULL;
    CHECK_FAILS(kd_dist_create(MPI_COMM_WORLD, dc, &d), KD_ERR_INVALID, needle);
    CHECK(d == NULL, "no object on failure");
    kd_dist_free(d);
}

/* Builds a run where rank `odd` differs by `tweak`; check_config must fail. */
typedef struct setup {
    const char *spec;
    int batch, epochs;
    double lr;
    int64_t n;
} setup;

static kd_status check_with(const setup *s, int servers)
{
    kd_net *net = NULL;
    kd_optim *opt = NULL;
    kd_dist *d = NULL;
    kd_train_state st;
    kd_train_state_init(&st);
    kd_optim_config oc = dist_momentum();
    oc.lr = s->lr;
    kd_dist_config dc = cfg_of(servers ? KD_DIST_ASYNC : KD_DIST_SYNC, servers);
    kd_status r = kd_net_create(s->spec, 7, &net);
    if (r == KD_OK)
        r = kd_optim_create(&oc, kd_net_param_count(net), &opt);
    if (r == KD_OK)
        r = kd_dist_create(MPI_COMM_WORLD, &dc, &d);
    if (r == KD_OK) {
        kd_train_config tc = kd_train_config_default();
        tc.batch_size = s->batch;
        tc.epochs = s->epochs;
        r = kd_dist_check_config(d, net, opt, &tc, &st, s->n);
    }
    kd_dist_free(d);
    kd_optim_free(opt);
    kd_net_free(net);
    return r;
}

int main(int argc, char **argv)
{
    int rank, size = dist_test_begin(&argc, &argv, &rank);
    if (!size)
        return 1;
    CHECK(size == 4, "run with 4 ranks, got %d", size);
    if (size == 4) {
        kd_dist_config dc = cfg_of(KD_DIST_ASYNC, 4);
        create_fails(&dc, "leave no worker");
        dc = cfg_of(KD_DIST_ASYNC, 0);
        create_fails(&dc, "at least one parameter server");
        dc = cfg_of(KD_DIST_SYNC, 1);
        create_fails(&dc, "sync mode has no parameter servers");
        dc = cfg_of(KD_DIST_ASYNC, -1);
        create_fails(&dc, "must be >= 0");
        dc = cfg_of(KD_DIST_ASYNC, 1);
        dc.max_staleness = -2;
        create_fails(&dc, "staleness bound");
        /* Ranks disagreeing on the roles: rank 3 thinks there are 2 servers. */
        dc = cfg_of(KD_DIST_ASYNC, rank == 3 ? 2 : 1);
        create_fails(&dc, "server count (--servers): 1 on ranks 0, 1, 2; 2 on rank 3");
        dc = cfg_of(rank == 0 ? KD_DIST_SYNC : KD_DIST_ASYNC, rank == 0 ? 0 : 1);
        create_fails(&dc, "distribution mode (--dist): sync on rank 0; async on ranks 1, 2, 3");

        /* A good configuration passes (the control for the cases below). */
        setup good = {DIST_SPEC, 32, 2, 0.1, 100};
        CHECK_OK(check_with(&good, 0));
        CHECK_OK(check_with(&good, 1));

        setup s = good;
        s.batch = rank == 2 ? 64 : 32;
        CHECK_FAILS(check_with(&s, 0), KD_ERR_INVALID, "batch size: 32 on ranks 0, 1, 3; 64 on rank 2");
        s = good;
        s.spec = rank == 1 ? TINY_SPEC : DIST_SPEC;
        CHECK_FAILS(check_with(&s, 0), KD_ERR_INVALID, "network spec");
        s = good;
        s.lr = rank == 3 ? 0.5 : 0.1;
        CHECK_FAILS(check_with(&s, 1), KD_ERR_INVALID, "optimizer settings");
        s = good;
        s.epochs = rank == 0 ? 3 : 2;
        CHECK_FAILS(check_with(&s, 1), KD_ERR_INVALID, "epochs: 3 on rank 0; 2 on ranks 1, 2, 3");
        /* Workers must share the training set; a server's (none) does not count. */
        s = good;
        s.n = rank == 0 ? 0 : 100;
        CHECK_OK(check_with(&s, 1));
        s.n = rank == 1 ? 99 : 100;
        CHECK_FAILS(check_with(&s, 1), KD_ERR_INVALID, "training-set size");
        /* 3 servers for 2 parameters. */
        s = good;
        s.spec = TINY_SPEC;
        CHECK_FAILS(check_with(&s, 3), KD_ERR_INVALID, "3 servers for 2 parameters");
    }
    return dist_test_end();
}
