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
#   4. peak RSS per rank for the MLP and LeNet, single process, sync and
#      async, against PyTorch (MEM=0 skips it, MEM_ONLY=1 runs only it).
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
source "$ROOT/ci/venv.sh" # $KD_PYTHON: the project's Python
MPIRUN=(mpirun --oversubscribe)
LOG=$(mktemp -d "${TMPDIR:-/tmp}/kd_bench_mpi.XXXXXX")
trap 'rm -rf "$LOG"' EXIT

echo "# Kindling MPI benchmark"
echo
echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(mpirun --version 2>/dev/null | head -1), build $BUILD"
echo
if [ "${MEM_ONLY:-0}" != 1 ]; then
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
"$KD_PYTHON" - "$LOG/ps.txt" <<'PY'
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
        sps=$("$KD_PYTHON" -c "print(f'{$rate * 64 * $w:.0f}')")
        echo "| $mode | $w | $np | $steps | $secs | $rate | $sps | $ex | $share |"
    done
done

fi

# ---------------------------------------------------------------- memory
# Peak resident memory of every rank (getrusage ru_maxrss of the rank
# process, taken by a wrapper that runs it as its child), for the MLP and
# LeNet on Fashion-MNIST: one process, 2 workers sync, 2 workers + 1 server
# async; the data read from the gzip IDX files (loaded into malloc'd
# float32) and from spool files (memory-mapped; the resident pages of the
# mapping count in RSS too, but are page cache shared by the ranks of a
# host and can be dropped under memory pressure). PyTorch is the peer: the
# same network trained for the same epoch(s) on the same float32 data held
# in a tensor, one process and DistributedDataParallel (gloo) with 2
# processes. MEM=0 skips this section.
if [ "${MEM:-1}" != 0 ]; then
    PY=$KD_PYTHON
    FM=${KD_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
    "$CLI" convert -q --images "$FM/train-images-idx3-ubyte.gz" --labels "$FM/train-labels-idx1-ubyte.gz" -o "$LOG/train.spool"
    "$CLI" convert -q --images "$FM/t10k-images-idx3-ubyte.gz" --labels "$FM/t10k-labels-idx1-ubyte.gz" -o "$LOG/test.spool"
    # rss.py OUT CMD...: run CMD, append "rank=R role=... peak_mib=M" for this rank to OUT.
    cat > "$LOG/rss.py" <<'PY'
import os, resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
rank = os.environ.get("OMPI_COMM_WORLD_RANK", "0")
with open(sys.argv[1], "a") as f:
    f.write(f"rank={rank} peak_mib={kib / 1024:.1f}\n")
sys.exit(rc)
PY
    cat > "$LOG/torch_peer.py" <<'PY'
# PyTorch peer: same network, same data as float32 tensors, SGD momentum,
# batch 64 per process, EPOCHS epochs; prints this process's peak RSS.
import gzip, os, resource, sys
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
net_name, epochs, fm = sys.argv[1], int(sys.argv[2]), sys.argv[3]
world = int(os.environ.get("WORLD_SIZE", "1")); rank = int(os.environ.get("RANK", "0"))
torch.set_num_threads(1)
if world > 1:
    import torch.distributed as dist
    dist.init_process_group("gloo", rank=rank, world_size=world)
def idx(name, off):
    with gzip.open(os.path.join(fm, name)) as f:
        return np.frombuffer(f.read(), np.uint8, offset=off)
x = torch.from_numpy((idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28) / 255.0).astype(np.float32))
y = torch.from_numpy(idx("train-labels-idx1-ubyte.gz", 8).astype(np.int64))
xt = torch.from_numpy((idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28) / 255.0).astype(np.float32))
if net_name == "mlp":
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
else:
    model = nn.Sequential(nn.Conv2d(1, 20, 5), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.Tanh(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 500), nn.Tanh(), nn.Linear(500, 10))
if world > 1:
    model = nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
g = torch.Generator().manual_seed(42)
for _ in range(epochs):
    order = torch.randperm(len(x), generator=g)[rank::world]
    for i in range(0, len(order), 64):
        b = order[i:i + 64]
        opt.zero_grad(); F.cross_entropy(model(x[b]), y[b]).backward(); opt.step()
with torch.no_grad():
    model.eval(); [model(xt[i:i + 256]) for i in range(0, len(xt), 256)]
print(f"rank={rank} peak_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
PY
    echo
    echo "## Peak memory per rank (Fashion-MNIST, batch 64 per worker, $EPOCHS epoch(s))"
    echo
    echo "Peak RSS (ru_maxrss) of every rank in MiB, in rank order; async: the server first. The"
    echo "data set alone is 60000 x 784 float32 = 179.4 MiB for training plus 29.9 MiB for testing."
    echo
    echo "| network | run | ranks | Kindling, IDX data | Kindling, spool data (mmap) | PyTorch peer |"
    echo "|---|---|---:|---|---|---|"
    for net in mlp lenet; do
        for run in single sync async; do
            case $run in
            single) np=1; extra=(); label="1 process" ;;
            sync) np=2; extra=(--dist sync); label="2 workers, sync" ;;
            async) np=3; extra=(--dist async --servers 1); label="2 workers + 1 server, async" ;;
            esac
            cells=()
            for src in idx spool; do
                data=()
                [ $src = spool ] && data=(--train-spool "$LOG/train.spool" --test-spool "$LOG/test.spool")
                rm -f "$LOG/rss.txt"
                if [ $np = 1 ]; then
                    "$PY" "$LOG/rss.py" "$LOG/rss.txt" "$CLI" train -q --net $net --epochs "$EPOCHS" --batch-size 64 \
                        "${data[@]}" > "$LOG/run.txt" 2>&1
                else
                    "${MPIRUN[@]}" -np $np "$PY" "$LOG/rss.py" "$LOG/rss.txt" "$CLI" train -q --net $net \
                        --epochs "$EPOCHS" --batch-size 64 "${extra[@]}" "${data[@]}" > "$LOG/run.txt" 2>&1
                fi || { echo "bench_mpi: memory run $net $run $src failed:" >&2; cat "$LOG/run.txt" >&2; exit 1; }
                cells+=("$(sort -t= -k2 -n "$LOG/rss.txt" | sed -E 's/.*peak_mib=//' | paste -sd/ | sed 's#/# / #g')")
            done
            case $run in
            single) peer=$("$PY" "$LOG/torch_peer.py" $net "$EPOCHS" "$FM" | sed -E 's/.*peak_mib=//') ;;
            sync)
                rm -f "$LOG/peer.txt"
                for r in 0 1; do
                    MASTER_ADDR=127.0.0.1 MASTER_PORT=29533 WORLD_SIZE=2 RANK=$r \
                        "$PY" "$LOG/torch_peer.py" $net "$EPOCHS" "$FM" >> "$LOG/peer.txt" &
                done
                wait
                peer="$(sort "$LOG/peer.txt" | sed -E 's/.*peak_mib=//' | paste -sd/ | sed 's#/# / #g') (DDP, gloo)" ;;
            async) peer="n/a (no parameter server)" ;;
            esac
            echo "| $net | $label | $np | ${cells[0]} | ${cells[1]} | $peer |"
        done
    done
fi
