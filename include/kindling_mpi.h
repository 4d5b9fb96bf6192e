/* Kindling over MPI: distributed training with the same network, optimizers
 * and training loop as kindling.h.
 *
 * Every rank of the communicator calls the same functions with the same
 * settings (checked at start-up). Two modes:
 *   - KD_DIST_SYNC: every rank is a worker; gradients are averaged with
 *     allreduce (weighted by each worker's share of the global batch) and
 *     every worker applies the same optimizer step, so W workers with batch b
 *     train exactly like one process with batch W*b.
 *   - KD_DIST_ASYNC: ranks [0, servers) are parameter servers (each owns a
 *     contiguous shard of the flat parameter vector and its optimizer state),
 *     the rest are workers that push gradients and pull parameters through
 *     MPI one-sided RMA, at most max_staleness steps ahead of the slowest.
 * Worker 0 is the only rank that writes checkpoints.
 *
 * Built only when MPI is found (library kindling_mpi). */
#ifndef KINDLING_MPI_H
#define KINDLING_MPI_H

#include <mpi.h>

#include "kindling.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Start MPI for Kindling (MPI_THREAD_FUNNELED) unless it is already
 * started. Before MPI_Init it sets the Open MPI defaults the program needs
 * (the one-sided component list, so windows work on one host and across
 * hosts over TCP) without overriding what the user set. */
kd_status kd_mpi_init(int *argc, char ***argv);
/* MPI_Finalize if kd_mpi_init started MPI and it is not finalized yet. */
void kd_mpi_finalize(void);
/* End every rank of MPI_COMM_WORLD now (after a rank-local failure). */
void kd_mpi_abort(int code);
/* Rank in MPI_COMM_WORLD (0 before init). */
int kd_mpi_world_rank(void);

typedef enum kd_dist_mode { KD_DIST_SYNC = 0, KD_DIST_ASYNC = 1 } kd_dist_mode;

/* How ASYNC workers talk to the servers. AUTO: RMA when every rank shares
 * one host's memory (a shared-memory window), else MSG (ranks on several
 * hosts, where one-sided RMA over TCP waits for the server at every call). */
typedef enum kd_ps_protocol {
    KD_PS_AUTO = 0,
    KD_PS_RMA = 1, /* one-sided: accumulate the gradients, get the parameters */
    KD_PS_MSG = 2  /* two-sided: one exchange of messages per server and step */
} kd_ps_protocol;

typedef struct kd_dist_config {
    kd_dist_mode mode;
    int servers;          /* ASYNC: the first `servers` ranks serve (>= 1) */
    int max_staleness;    /* ASYNC: -1 unbounded, k >= 0 stale-synchronous */
    size_t bucket_bytes;  /* SYNC: allreduce bucket size (0 = 4 MiB) */
    int overlap;          /* SYNC on the CPU: start each bucket's allreduce while backward
                           * still runs, as soon as its gradients are final (default 1) */
    /* 0: every worker holds the whole training set and takes its part of
     * each global batch. 1: every worker holds only its own share (a file
     * per rank, e.g. one Spark partition each); steps per epoch are the
     * most any worker needs, and workers that run out take empty steps. */
    int local_data;
    kd_ps_protocol ps_protocol; /* ASYNC: KD_PS_AUTO unless forced */
} kd_dist_config;

kd_dist_config kd_dist_config_default(void);
const char *kd_dist_mode_name(kd_dist_mode m);

/* A distributed run over a communicator: roles and the data split. */
typedef struct kd_dist kd_dist;

/* Collective over comm (duplicated inside). Checks the rank counts
 * (workers = size - servers >= 1, servers >= 0). */
kd_status kd_dist_create(MPI_Comm comm, const kd_dist_config *dc, kd_dist **out);
/* Collective. Call before kd_dist_free's MPI_Finalize. */
void kd_dist_free(kd_dist *d);

int kd_dist_is_server(const kd_dist *d);
int kd_dist_num_workers(const kd_dist *d);
int kd_dist_num_servers(const kd_dist *d);
/* 0..workers-1 on worker ranks, -1 on servers. */
int kd_dist_worker_index(const kd_dist *d);
/* The one rank that writes checkpoints and reports results (worker 0). */
int kd_dist_is_writer(const kd_dist *d);
/* "worker 2 (rank 4)" / "server 0 (rank 0)" into buf; returns buf. */
const char *kd_dist_role_str(const kd_dist *d, char *buf, size_t len);

/* Collective start-up check that every rank runs the same configuration:
 * an FNV-1a hash of the resolved network spec, the optimizer settings,
 * batch size, epochs, seed, the resume position and the distribution
 * settings (and, among workers, the training-set size). On a mismatch
 * every rank gets the same error, naming the setting and the ranks that
 * disagree. Also checks servers <= parameter count. `train_n` is the
 * training-set size (ignored on servers). */
kd_status kd_dist_check_config(kd_dist *d, const kd_net *net, const kd_optim *opt,
                               const kd_train_config *cfg, const kd_train_state *st,
                               int64_t train_n);

/* Collective over every rank of the run: the steps per epoch for a
 * per-worker batch of batch_size, with train_n this worker's training-set
 * size (ignored on servers). The whole set cut into global batches of
 * batch_size * workers, or with local_data the most steps any worker's
 * share needs (kd_steps_per_epoch). Every rank gets the same result, or the
 * same error when there is nothing to train on. kd_dist_train uses the same
 * rule; a caller needs it first to size learning-rate schedules. */
kd_status kd_dist_steps_per_epoch(kd_dist *d, int64_t train_n, int batch_size, int64_t *out);

/* Train on every rank. Workers run kd_train on their part of each global
 * batch (cfg->batch_size samples each, so a step covers batch_size *
 * workers samples); servers serve until the workers are done. `train` may
 * be NULL on servers. cfg->checkpoint_path / checkpoint_every are honoured
 * by the writer (worker 0), which saves the global batch size in the
 * checkpoint; cfg->exchange, part_index/part_count, local_data,
 * steps_per_epoch and the save hook are set here.
 * Resuming: pass the loaded net/opt/state on every rank; `st->batch_size`
 * from the checkpoint is the global batch, and a run with the same global
 * batch continues mid-epoch exactly, whatever the number of workers.
 * On return the writer's net holds the final parameters (gathered from the
 * servers in async mode) and `opt` the final optimizer state. */
kd_status kd_dist_train(kd_dist *d, kd_net *net, kd_optim *opt, const kd_dataset *train,
                        const kd_train_config *cfg, kd_train_state *st);

/* What this rank spent, for reports and the benchmark. */
typedef struct kd_dist_stats {
    int64_t steps;           /* optimizer steps this worker took (0 on servers) */
    double train_seconds;    /* wall time inside kd_dist_train */
    double exchange_seconds; /* of which in the gradient exchange (network + waiting; an allreduce
                              * overlapped with backward counts only what backward did not hide) */
    int64_t early_buckets;   /* sync: allreduce buckets started while backward still ran */
    double global_samples_per_sec; /* every worker's samples per second in the epoch so far, as
                              * this worker last saw them (updated before each progress call) */
    int hosts;               /* hosts the ranks run on (ranks sharing memory count as one) */
    int local_ranks;         /* ranks on this rank's host, itself included */
    const char *exchange;    /* how gradients travel, e.g. "allreduce" or the parameter server's
                              * protocol ("one-sided RMA in shared memory"); static text */
} kd_dist_stats;
kd_dist_stats kd_dist_get_stats(const kd_dist *d);

#ifdef __cplusplus
}
#endif
#endif /* KINDLING_MPI_H */
