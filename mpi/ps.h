/* Asynchronous parameter server on MPI-3 one-sided RMA.
 *
 * The flat parameter vector is cut into `servers` contiguous shards balanced
 * by size (a big layer may span servers). Server ranks own their shard's
 * parameters and optimizer state and expose one RMA window each; worker
 * ranks push gradients with MPI_Accumulate (chunked: it is atomic per
 * element only), bump counters with MPI_Accumulate and pull parameters with
 * MPI_Get from a double-buffered copy the server is not writing (checked
 * afterwards; see ps_internal.h), so a server's window holds two copies of
 * its shard plus the accumulator. A stale-synchronous clock bounds how far
 * a worker may run ahead of the others and how old the parameters it reads
 * may be (k > 0: they hold every worker's pushes up to k clocks back).
 *
 * What one optimizer step applies (the "mean"):
 *   max_staleness == 0 (synchronous rounds): the server waits for one push
 *     from every worker that has not finished, then steps once with their
 *     mean. With one worker this is exactly single-process training; with W
 *     workers on equal data parts it is a single process with a W-times
 *     larger batch.
 *   max_staleness != 0 (asynchronous): the server steps on whatever pushes
 *     have arrived, with (sum of those pushes) / W. A fixed divisor makes
 *     each push move the parameters by the same amount however the server
 *     happens to batch pushes (which depends on timing), and one round of W
 *     pushes moves them as far as one synchronous step.
 *
 * Lifecycle (every rank of comm): kd_ps_create; servers kd_ps_serve, workers
 * train through kd_ps_exchange, then kd_ps_worker_finish; every rank
 * kd_ps_free. A final checkpoint in asynchronous mode: workers finish
 * training, synchronise among themselves (so every push is counted), the
 * root worker calls kd_ps_gather (servers apply pending pushes before they
 * answer), then all workers call kd_ps_worker_finish.
 *
 * Two protocols, picked per run (kd_ps_config.protocol, default: by where
 * the ranks are):
 *   KD_PS_RMA (every rank on one host): the one-sided protocol above, in a
 *     window allocated in shared memory (MPI_Win_allocate_shared, so Open
 *     MPI's osc/sm: workers push and pull without the server taking part).
 *     Measured 0.07 ms per MLP step against 0.15-0.2 ms for osc/rdma,
 *     which Open MPI picks for MPI_Win_allocate on one host.
 *   KD_PS_MSG (ranks on several hosts): two-sided messages (ps_msg.c).
 *     One-sided RMA across hosts over TCP runs on osc/pt2pt, where every
 *     accumulate, get and flush waits for the server to enter MPI: 6+ round
 *     trips per step, 14.8 ms per MLP step between two network namespaces
 *     against ~0.5 ms for an MPI_Sendrecv of the same bytes. With messages
 *     a step is one exchange per server (gradients out, parameters back, at
 *     the same time), like the MPI_Sendrecv. osc/ucx gave correct results
 *     but ~25 ms per accumulate call here.
 * KD_PS_RMA may also be forced across hosts (then osc/pt2pt: slow, but the
 * reference the tests compare with). osc/rdma names its shared segment by
 * communicator id only: never create two parameter servers at once on
 * disjoint communicators of one job on one host (they share memory or fail
 * with MPI_ERR_WIN). Every MPI error is returned (MPI_ERRORS_RETURN on the
 * window and on a private duplicate of comm) as a kd_status whose message
 * names the rank, its role and the call.
 *
 * Internal to mpi/; the driver (mpi/dist_train.c) uses it. */
#ifndef KD_PS_H
#define KD_PS_H

#include <mpi.h>

#include "kindling.h"
#include "kindling_mpi.h" /* kd_ps_protocol */

typedef struct kd_ps kd_ps;

typedef struct kd_ps_config {
    int servers;         /* ranks [0, servers) of comm serve; the rest work */
    int max_staleness;   /* -1 = unbounded async; k >= 0 = SSP bound (0: synchronous rounds) */
    size_t chunk;        /* elements per RMA call (0 = KD_PS_DEFAULT_CHUNK) */
    kd_ps_protocol protocol;
} kd_ps_config;

/* 64K elements (256 KB of floats) per call. Measured with bench_ps (1
 * server, 1 worker, 1-100 MB vectors, Open MPI 4.1.4, one host): osc/sm is
 * flat from 2K to 1M elements, osc/rdma is up to ~25% slower at 2K (a lock
 * per call) and flat from 16K; osc/pt2pt moves 2-5x more per second at
 * 16K-1M than at 2K (one message per call, each waiting for the server's
 * progress). One default fits all three. BlueFog chunked at 2000 elements
 * after deadlocks with big accumulates; the MPI tests pass at this size
 * under sm, rdma and pt2pt, and a 4-worker stress with 2M-element calls
 * under all three did not hang. */
#define KD_PS_DEFAULT_CHUNK 65536

/* Shard s covers [offset[s], offset[s] + count[s]) of the flat vector:
 * contiguous, sizes differ by at most one, earlier shards take the extra. */
void kd_ps_shard_range(size_t n, int servers, int s, size_t *offset, size_t *count);

/* Collective over comm (all ranks pass the same pc, n_params and oc).
 * Servers create their optimizer over their shard from `oc`.
 * params0: the initial full parameter vector; REQUIRED on the first worker
 * rank (rank pc->servers), which sends each server its shard, so servers
 * need no network. Other ranks may pass NULL (their values are ignored).
 * opt0 (resume): NULL for a fresh start; otherwise a full-size optimizer
 * whose state slots (slot-major [slots][n_params]) and step count seed the
 * servers' optimizers; read on the first worker rank only, and its slot
 * count must match oc's kind.
 * Fails on every rank (with a message) if servers < 1, no rank is left to
 * work, servers > n_params, max_staleness < -1, or params0 is missing. */
kd_status kd_ps_create(MPI_Comm comm, const kd_ps_config *pc, size_t n_params,
                       const kd_optim_config *oc, const float *params0,
                       const kd_optim *opt0, kd_ps **out);
/* Collective over comm (frees the window). NULL is accepted (on every rank). */
void kd_ps_free(kd_ps *ps);
int kd_ps_is_server(const kd_ps *ps);

/* Server ranks: apply pushes and publish parameters until every worker has
 * called kd_ps_worker_finish and every push is applied; keeps calling into
 * MPI for progress (sleeping briefly between idle polls so an
 * oversubscribed host is not starved). Also answers gather requests. */
kd_status kd_ps_serve(kd_ps *ps);

/* Worker ranks: the exchange for kd_train (push grads, respect the
 * staleness bound, pull fresh params into kd_net_params). If kd_train
 * passes an optimizer, its step count is set to server 0's, so learning
 * rates reported and checkpointed by the worker follow the servers. */
kd_exchange kd_ps_exchange(kd_ps *ps);
/* Worker ranks: pull the current parameters (full length). */
kd_status kd_ps_pull(kd_ps *ps, float *params);
/* Worker ranks: the smallest server version (optimizer steps applied by a
 * server in this run) seen at this worker's last pull. */
int64_t kd_ps_version(const kd_ps *ps);
/* Worker ranks: pushes this worker has made (its clock). */
int64_t kd_ps_clock(const kd_ps *ps);
/* Worker ranks: samples pushed by every worker, as server 0 had counted
 * them at this worker's last pull (global samples/s for progress lines). */
int64_t kd_ps_samples(const kd_ps *ps);
/* The protocol this run uses (KD_PS_RMA or KD_PS_MSG, never AUTO) and how
 * it moves data, e.g. "one-sided RMA in shared memory". */
kd_ps_protocol kd_ps_get_protocol(const kd_ps *ps);
const char *kd_ps_describe(const kd_ps *ps);
/* One worker rank (any) gathers the full parameters (n_params floats) and,
 * if opt_full is non-NULL (created over n_params with the same kind), the
 * full optimizer state: each server's slot j lands at slot j, offset of its
 * shard. opt_full's step count becomes server 0's (servers' counts agree in
 * synchronous mode; in asynchronous mode each server steps on its own
 * schedule). Only that worker calls it; servers answer inside kd_ps_serve
 * after applying any pushes they may (in synchronous mode: the last
 * complete round). */
kd_status kd_ps_gather(kd_ps *ps, float *params, kd_optim *opt_full);
/* Worker ranks: tell the servers this worker is done (after its last push).
 * Idempotent; exchange and pull fail afterwards. */
kd_status kd_ps_worker_finish(kd_ps *ps);

#endif
