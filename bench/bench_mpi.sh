#!/bin/bash
# Distributed-training benchmark, in one run on this machine:
#   1. parameter-server push+pull bandwidth for 1, 10 and 100 MB vectors
#      against memcpy bandwidth (bench_ps: 1 server + 1 worker; median of
#      PS_RUNS=3 runs; the conventions are printed with the table);
#   2. steps/s of `kindling train` (MLP, Fashion-MNIST, batch 64 per worker)
#      with 1, 2 and 4 workers, sync (allreduce) and async (1 server);
#   3. the time per step each run spends in the gradient exchange
#      (network transfers plus waiting for peers or servers).
# Prints a Markdown table. Usage: bench/bench_mpi.sh [BUILD_DIR] (default
# build; configure with -DCMAKE_BUILD_TYPE=Release). EPOCHS=1 by default.
# On a machine with fewer cores than ranks the ranks share cores: the
# scaling columns then measure contention, not the network (see `nproc`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
CLI=$BUILD/kindling
PSB=$BUILD/mpi/kindling_bench_ps
EPOCHS=${EPOCHS:-1}
for f in "$CLI" "$PSB"; do
    [ -x "$f" ] || { echo "bench_mpi: $f not built (cmake --build $BUILD --target kindling_cli kindling_bench_ps)" >&2; exit 2; }
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
MPIRUN=(mpirun --oversubscribe)
LOG=$(mktemp -d "${TMPDIR:-/tmp}/kd_bench_mpi.XXXXXX")
trap 'rm -rf "$LOG"' EXIT

echo "# Kindling MPI benchmark"
echo
echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(mpirun --version 2>/dev/null | head -1), build $BUILD"
echo
PS_RUNS=${PS_RUNS:-3}
echo "## Parameter-server push+pull vs memcpy (1 server + 1 worker, one host, osc ${OMPI_MCA_osc:-default})"
echo
echo "Median of $PS_RUNS runs of bench_ps, each reporting its best repetition. A push+pull moves the"
echo "vector twice (worker gradients -> server accumulator, server parameters -> worker), so it is"
echo "compared with two memcpy's of the vector between four distinct buffers (memcpy x2); both"
echo "count 2x the vector's bytes. memcpy x1 (one copy, two buffers; L2-resident at 1 MB) and its"
echo "ratio are the convention of earlier runs. Back to back: steps without waiting for the server"
echo "to apply the previous push (see bench/bench_ps.c)."
echo
for i in $(seq "$PS_RUNS"); do
    "${MPIRUN[@]}" -np 2 "$PSB" >> "$LOG/ps.txt"
done
python3 - "$LOG/ps.txt" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    if line.startswith("ps_bandwidth "):
        kv = dict(f.split("=", 1) for f in line.split()[1:])
        for k, v in kv.items():
            runs[int(kv["MB"])][k].append(float(v))
print("| vector | push+pull step (median step) | push+pull GB/s | memcpy x2 GB/s | ratio | memcpy x1 GB/s | ratio x1 | back-to-back step |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for mb in sorted(runs):
    m = {k: statistics.median(v) for k, v in runs[mb].items()}
    print(f"| {mb} MB | {m['step_ms']:.3f} ms ({m['median_step_ms']:.3f}) | {m['pushpull_GBps']:.2f} | {m['memcpy_GBps']:.2f} "
          f"| {m['ratio']:.2f} | {m['memcpy1_GBps']:.2f} | {m['ratio1']:.2f} | {m['b2b_step_ms']:.3f} ms |")
PY
echo
echo "## Training steps/s (MLP, Fashion-MNIST, batch 64 per worker, $EPOCHS epoch(s))"
echo
echo "| mode | workers | ranks | steps | seconds | steps/s | samples/s | exchange ms/step | exchange share |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for mode in sync async; do
    for w in 1 2 4; do
        if [ $mode = sync ]; then np=$w; extra=(--dist sync); else np=$((w + 1)); extra=(--dist async --servers 1); fi
        "${MPIRUN[@]}" -np $np "$CLI" train --epochs "$EPOCHS" --batch-size 64 "${extra[@]}" > "$LOG/run.txt" 2>&1 ||
            { echo "bench_mpi: $mode with $w workers failed:" >&2; cat "$LOG/run.txt" >&2; exit 1; }
        # "... N steps in S s (R steps/s), exchange M ms/step (P% of the time)"
        line=$(grep -m1 ' steps in ' "$LOG/run.txt")
        steps=$(sed -E 's/.* ([0-9]+) steps in .*/\1/' <<< "$line")
        secs=$(sed -E 's/.* steps in ([0-9.]+) s.*/\1/' <<< "$line")
        rate=$(sed -E 's/.*\(([0-9.]+) steps\/s\).*/\1/' <<< "$line")
        ex=$(sed -E 's/.*exchange ([0-9.]+) ms\/step.*/\1/' <<< "$line")
        share=$(sed -E 's/.*\(([0-9.]+%) of the time\).*/\1/' <<< "$line")
        sps=$(python3 -c "print(f'{$rate * 64 * $w:.0f}')")
        echo "| $mode | $w | $np | $steps | $secs | $rate | $sps | $ex | $share |"
    done
done
