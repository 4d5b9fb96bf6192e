"""The exchange share of an asynchronous parameter-server step, on paper,
for sizing `numServers` (docs/benchmarks.md has the tables).

The model follows the two-sided protocol ranks on several hosts use
(mpi/ps_msg.c), in steady state:

  inputs   P parameters (float32), W workers, S servers, `compute` seconds
           of forward + backward per worker step, a transport with alpha
           seconds per message and `bw` bytes/s per direction of a link
           (full duplex), and `opt` seconds of the server's optimizer per
           parameter and push (Adam).
  worker   one exchange per step: its gradients out and the parameters back
           at the same time, S shards over its one link:
               t_link = alpha + 4 P / bw
  server   per push: the shard's gradients come in while the parameters go
           out, then the optimizer runs on the shard:
               t_push = alpha + 4 (P / S) / bw + (P / S) opt
           W workers push once per step each, so a server is busy
           rho = W t_push / T of every step of length T, and a push waits
           for the other workers' pushes before it (the mean wait of a
           queue with fixed service time, M/D/1, for the W - 1 others; a
           worker's own previous push is done while it computes):
               w = (W - 1) / W  rho t_push / (2 (1 - rho)).
  step     T = compute + t_link + w, solved for T (w depends on T); when
           no T satisfies it (rho would reach 1) the servers set the pace:
           T = W t_push.
  share    exchange share = (T - compute) / T.

It leaves out what a real cluster adds or removes: switch contention (a
non-blocking fabric is assumed), stragglers, several workers per host
sharing a link, and the staleness bound's waits. Measured inputs come from
bench/bench_exchange.c (MPI_Sendrecv of a small message and of the model's
size gives alpha and bw at that size; it prints the Adam cost per
parameter).

    python bench/ps_cost_model.py --alpha 30e-6 --compute 0.4e-3   # the sizing table
"""
import argparse


def step_time(P, W, S, compute, alpha, bw, opt):
    """(step seconds, exchange seconds, server utilisation) of one worker step."""
    t_link = alpha + 4.0 * P / bw
    shard = P / S
    t_push = alpha + 4.0 * shard / bw + shard * opt
    # Fixed point of T = compute + t_link + w(T); w grows as T shrinks.
    T = compute + t_link
    for _ in range(200):
        rho = W * t_push / T
        if rho >= 1.0:
            T = W * t_push
            return T, T - compute, 1.0
        w = (W - 1) / W * rho * t_push / (2.0 * (1.0 - rho))
        T_new = compute + t_link + w
        if abs(T_new - T) < 1e-12:
            break
        T = T_new
    return T, T - compute, W * t_push / T


def share(P, W, S, compute, alpha, bw, opt):
    T, ex, _ = step_time(P, W, S, compute, alpha, bw, opt)
    return ex / T


def servers_needed(P, W, compute, alpha, bw, opt, limit=0.15, max_servers=64):
    """The fewest servers that keep the exchange share under `limit`
    (None: not even max_servers do; the worker's own link is the bound)."""
    for S in range(1, max_servers + 1):
        if S <= P and share(P, W, S, compute, alpha, bw, opt) < limit:
            return S
    return None


def sizing_table(P, compute, alpha, opt, workers=(8, 64, 256), servers=(1, 2, 4, 8, 16), gbits=(10, 100)):
    """Markdown rows: exchange share per (network, workers, servers) and the
    servers needed for < 15%."""
    lines = ["| network | workers | " + " | ".join(f"{s} server{'s' if s > 1 else ''}" for s in servers)
             + " | servers for < 15% |",
             "|---|---:|" + "---:|" * len(servers) + "---:|"]
    for g in gbits:
        bw = g * 1e9 / 8
        for W in workers:
            cells = [f"{100 * share(P, W, S, compute, alpha, bw, opt):.0f}%" for S in servers]
            need = servers_needed(P, W, compute, alpha, bw, opt)
            lines.append(f"| {g} Gb/s | {W} | " + " | ".join(cells) + f" | {need if need else '> 64 (link-bound)'} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=int, default=109386, help="parameters (default: the MLP preset's)")
    ap.add_argument("--compute", type=float, default=0.4e-3, help="seconds of compute per worker step")
    ap.add_argument("--alpha", type=float, default=30e-6, help="seconds per message")
    ap.add_argument("--opt", type=float, default=1.5e-9, help="server optimizer seconds per parameter and push")
    args = ap.parse_args()
    print(sizing_table(args.params, args.compute, args.alpha, args.opt))


if __name__ == "__main__":
    main()
