#!/bin/bash
# --local-data: every worker trains on its own file ("%w" = worker index),
# as a Spark partition per worker does. Identical shares must reproduce one
# process exactly (sync and parameter server); uneven shares must stay in
# step (the shorter worker takes empty steps) and finish.
source "$(dirname "$0")/lib_mpi.sh"

make_blobs "$WORK/d.csv" 300 1
head -n 100 "$WORK/d.csv" > "$WORK/short.csv"
make_spec "$WORK/spec.json"
cp "$WORK/d.csv" "$WORK/same-0.csv"
cp "$WORK/d.csv" "$WORK/same-1.csv"
cp "$WORK/d.csv" "$WORK/uneven-0.csv"
cp "$WORK/short.csv" "$WORK/uneven-1.csv"
COMMON=(--net "$WORK/spec.json" --optimizer momentum --lr 0.1 --schedule constant --seed 5 -q --epochs 3 --batch-size 24)
TOL=1e-5
traind() { local np=$1; shift; kd_mpirun -np "$np" "$KD_CLI" train "${COMMON[@]}" "$@" > "$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt" >&2; return 1; }; }

check "single process on the whole file" "$KD_CLI" train "${COMMON[@]}" --train-csv "$WORK/d.csv" --checkpoint "$WORK/single.h5"

check "sync, 2 workers with identical local files" \
    traind 2 --dist sync --local-data --train-csv "$WORK/same-%w.csv" --checkpoint "$WORK/sync.h5"
d=$(ckpt_diff "$WORK/sync.h5" "$WORK/single.h5")
check "identical shares in sync mode equal one process (max diff $d)" less_than "$d" $TOL

check "async, 1 server + 2 workers at staleness 0 with identical local files" \
    traind 3 --dist async --servers 1 --max-staleness 0 --local-data --train-csv "$WORK/same-%w.csv" --checkpoint "$WORK/ps.h5"
d=$(ckpt_diff "$WORK/ps.h5" "$WORK/single.h5")
check "identical shares through the parameter server equal one process (max diff $d)" less_than "$d" $TOL

check "sync with uneven shares (300 and 100 samples) finishes" \
    timeout 120 "$KD_MPIEXEC" --oversubscribe -np 2 "$KD_CLI" train "${COMMON[@]}" --dist sync --local-data \
    --train-csv "$WORK/uneven-%w.csv" --checkpoint "$WORK/uneven.h5"
check "uneven shares: 3 epochs of the longest share's 13 steps" test "$(ckpt_attr step "$WORK/uneven.h5")" = 39
d=$(ckpt_diff "$WORK/uneven.h5" "$WORK/sync.h5")
check "uneven shares train on different data than identical ones ($d)" less_than 1e-4 "$d"

if kd_mpirun -np 2 "$KD_CLI" train "${COMMON[@]}" --dist sync --local-data --train-csv "$WORK/missing-%w.csv" \
    > "$WORK/err.txt" 2>&1; then
    fail "a missing local file must fail"
else
    check "a missing local file is named" grep -q "missing-0.csv\|missing-1.csv" "$WORK/err.txt"
fi
check "--local-data without --dist is a usage error" \
    bash -c "'$KD_CLI' train --local-data --train-csv '$WORK/d.csv' 2>&1 | grep -q 'only applies with --dist'"
finish
