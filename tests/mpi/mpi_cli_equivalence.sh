#!/bin/bash
# Through the CLI under mpirun: sync with 2 and 3 workers equals one process
# on the merged batch; the parameter server with 1 worker (and with 2 on
# equal parts) at staleness 0 equals one process; a run resumed with a
# different number of workers (epoch boundary) continues exactly (constant
# learning rate: a cosine schedule spans --epochs, which a resume changes).
source "$(dirname "$0")/lib_mpi.sh"

make_blobs "$WORK/d.csv" 300 1
make_spec "$WORK/spec.json"
COMMON=(--net "$WORK/spec.json" --train-csv "$WORK/d.csv" --optimizer momentum --lr 0.1 --schedule constant --seed 5 -q)
TOL=1e-5

train1() { "$KD_CLI" train "${COMMON[@]}" "$@" > /dev/null; }
traind() { local np=$1; shift; kd_mpirun -np "$np" "$KD_CLI" train "${COMMON[@]}" "$@" > "$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt" >&2; return 1; }; }

check "single process, batch 24" train1 --epochs 3 --batch-size 24 --checkpoint "$WORK/single24.h5"
check "single process, batch 12" train1 --epochs 3 --batch-size 12 --checkpoint "$WORK/single12.h5"
d=$(ckpt_diff "$WORK/single24.h5" "$WORK/single12.h5")
check "control: batch 12 and 24 give different weights ($d)" less_than 1e-3 "$d"

for w in 2 3; do
    b=$((24 / w))
    check "sync, $w workers x $b" traind "$w" --dist sync --epochs 3 --batch-size "$b" --checkpoint "$WORK/sync$w.h5"
    d=$(ckpt_diff "$WORK/sync$w.h5" "$WORK/single24.h5")
    check "sync $w x $b equals one process with batch 24 (max diff $d)" less_than "$d" $TOL
    check "sync $w x $b checkpoint records the global batch" test "$(ckpt_attr batch_size "$WORK/sync$w.h5")" = 24
done
check "only the writer reports" test "$(grep -c 'final train accuracy' "$WORK/out.txt")" = 1

check "async, 1 server + 1 worker, staleness 0" \
    traind 2 --dist async --servers 1 --max-staleness 0 --epochs 3 --batch-size 24 --checkpoint "$WORK/ps1.h5"
d=$(ckpt_diff "$WORK/ps1.h5" "$WORK/single24.h5")
check "PS with 1 worker at staleness 0 equals one process (max diff $d)" less_than "$d" $TOL

# 300 samples in global batches of 24: every step splits into equal parts, so the mean of the pushes is the batch mean.
check "async, 2 servers + 2 workers, staleness 0" \
    traind 4 --dist async --servers 2 --max-staleness 0 --epochs 3 --batch-size 12 --checkpoint "$WORK/ps2.h5"
d=$(ckpt_diff "$WORK/ps2.h5" "$WORK/single24.h5")
check "PS with 2 workers at staleness 0 equals one process with the merged batch (max diff $d)" less_than "$d" $TOL

# Resume: 1 epoch with 2 workers x 12, then 2 more with 3 workers x 8 (the global batch stays 24).
check "sync 2 x 12, first epoch" traind 2 --dist sync --epochs 1 --batch-size 12 --checkpoint "$WORK/r.h5"
check "sync resumed with 3 workers" traind 3 --dist sync --epochs 3 --resume "$WORK/r.h5"
d=$(ckpt_diff "$WORK/r.h5" "$WORK/single24.h5")
check "2 -> 3 workers resume equals one uninterrupted process (max diff $d)" less_than "$d" $TOL
check "resume reached epoch 3" test "$(ckpt_attr epoch "$WORK/r.h5")" = 3

# The same with the parameter server: 2 workers, then 3 workers on 1 server (shards re-split).
check "async 2 servers x 2 workers, first epoch" \
    traind 4 --dist async --servers 2 --max-staleness 0 --epochs 1 --batch-size 12 --checkpoint "$WORK/rp.h5"
check "async resumed on 1 server x 3 workers" \
    traind 4 --dist async --servers 1 --max-staleness 0 --epochs 3 --resume "$WORK/rp.h5"
d=$(ckpt_diff "$WORK/rp.h5" "$WORK/single24.h5")
check "PS resume with other shards and workers equals one process (max diff $d)" less_than "$d" $TOL

# Across modes: a sync checkpoint resumed by the parameter server (1 server, 2 workers x 12).
check "sync 3 x 8, first epoch" traind 3 --dist sync --epochs 1 --batch-size 8 --checkpoint "$WORK/rx.h5"
check "resumed in async mode" traind 3 --dist async --servers 1 --max-staleness 0 --epochs 3 --resume "$WORK/rx.h5"
d=$(ckpt_diff "$WORK/rx.h5" "$WORK/single24.h5")
check "sync -> async resume equals one process (max diff $d)" less_than "$d" $TOL

finish
