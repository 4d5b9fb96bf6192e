#!/bin/bash
# Validation data and early stopping under mpirun (issue 14). The epoch's
# training and validation figures are added up over the workers, so a sync
# run records what one process with the merged batch records; early
# stopping ends every rank after the same epoch (no rank left waiting in a
# collective), in sync and async mode, with the writer alone writing the
# metrics file and the checkpoint copies; ranks that disagree on patience
# are stopped at start-up.
source "$(dirname "$0")/lib_mpi.sh"

make_blobs "$WORK/d.csv" 300 1
make_blobs "$WORK/v.csv" 90 2
make_spec "$WORK/spec.json"
cp "$WORK/d.csv" "$WORK/same-0.csv"
cp "$WORK/d.csv" "$WORK/same-1.csv"
COMMON=(--net "$WORK/spec.json" --optimizer momentum --lr 0.1 --schedule constant --seed 5 -q --epochs 3)
traind() { local np=$1; shift; timeout 300 "$KD_MPIEXEC" --oversubscribe -np "$np" "$KD_CLI" train "${COMMON[@]}" "$@" \
    > "$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt" >&2; return 1; }; }
# same_history A.h5 B.h5: the per-epoch training and validation figures agree.
same_history() {
    "$KD_PYTHON" - "$1" "$2" <<'PY'
import h5py, sys
import numpy as np
def hist(p):
    with h5py.File(p) as f:
        h = f["training/history"]
        cols = h.attrs["columns"]
        cols = (cols.decode() if isinstance(cols, bytes) else cols).split(",")
        return {c: h[:, i] for i, c in enumerate(cols)}
a, b = hist(sys.argv[1]), hist(sys.argv[2])
for c in ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"):
    if not np.allclose(a[c], b[c], rtol=1e-5, atol=1e-7, equal_nan=False):
        sys.exit(f"{c}: {a[c]} vs {b[c]}")
PY
}

check "single process, --val-split 0.2, batch 48" "$KD_CLI" train "${COMMON[@]}" --batch-size 48 --train-csv "$WORK/d.csv" \
    --val-split 0.2 --checkpoint "$WORK/single.h5"
check "sync, 2 workers of 24, --val-split 0.2" traind 2 --dist sync --batch-size 24 --train-csv "$WORK/d.csv" \
    --val-split 0.2 --checkpoint "$WORK/sync.h5"
check "sync records the single process's training and validation figures" same_history "$WORK/sync.h5" "$WORK/single.h5"
# Local data: each worker holds out 20% of its own file and scores it; two
# identical shares give the figures of one.
check "sync, local data, each worker holds out its own share" traind 2 --dist sync --batch-size 48 --local-data \
    --train-csv "$WORK/same-%w.csv" --val-split 0.2 --checkpoint "$WORK/local.h5"
check "identical local shares record the single process's figures" same_history "$WORK/local.h5" "$WORK/single.h5"
check "async, --val-csv" traind 3 --dist async --servers 1 --batch-size 24 --train-csv "$WORK/d.csv" \
    --val-csv "$WORK/v.csv" --checkpoint "$WORK/async.h5"
check "async records validation figures for every epoch" "$KD_PYTHON" -c "
import h5py, sys, numpy as np
with h5py.File(sys.argv[1]) as f:
    h = f['training/history']
    cols = h.attrs['columns']
    cols = (cols.decode() if isinstance(cols, bytes) else cols).split(',')
    v = h[:, cols.index('val_loss')]
sys.exit(0 if len(v) == 3 and np.all(v > 0) else 1)" "$WORK/async.h5"

# Early stopping: no epoch beats the first by more than 100, so patience 1
# ends every rank after epoch 2, in either mode, within the timeout.
for mode in sync async; do
    if [ "$mode" = sync ]; then np=2; extra=(--dist sync); else np=3; extra=(--dist async --servers 1); fi
    check "$mode: early stopping ends every rank" traind "$np" "${extra[@]}" --epochs 10 --batch-size 24 \
        --train-csv "$WORK/d.csv" --val-split 0.2 --patience 1 --min-delta 100 --checkpoint "$WORK/es-$mode.h5" \
        --keep-best "$WORK/best-$mode.h5" --keep-last 1 --metrics "$WORK/m-$mode.jsonl"
    check "$mode: stopped after epoch 2" test "$(ckpt_attr epoch "$WORK/es-$mode.h5")" = 2
    check "$mode: the best copy holds epoch 1" test "$(ckpt_attr epoch "$WORK/best-$mode.h5")" = 1
    check "$mode: --keep-last 1 kept epoch 2's checkpoint only" \
        bash -c "[ -s '$WORK/es-$mode-epoch002.h5' ] && [ ! -e '$WORK/es-$mode-epoch001.h5' ]"
    check "$mode: one metrics line per epoch, written once" test "$(grep -c '"event":"epoch"' "$WORK/m-$mode.jsonl")" = 2
done

# Ranks that disagree on the patience stop at start-up, naming it.
if timeout 120 "$KD_MPIEXEC" --oversubscribe -np 1 "$KD_CLI" train "${COMMON[@]}" --dist sync --batch-size 24 \
    --train-csv "$WORK/d.csv" --patience 2 : -np 1 "$KD_CLI" train "${COMMON[@]}" --dist sync --batch-size 24 \
    --train-csv "$WORK/d.csv" --patience 3 > "$WORK/err.txt" 2>&1; then
    fail "ranks with different --patience must not train"
else
    check "different --patience is named" grep -q "ranks disagree on the early-stopping patience (--patience): 2 on rank 0; 3 on rank 1" "$WORK/err.txt"
fi
finish
