#!/bin/bash
# Resuming through the CLI, alone and under mpirun (sync): a resume to more
# epochs than first planned keeps training (the cosine schedule is
# re-planned over the new --epochs: the learning rate stays above 0 and the
# weights change). Preemption under mpirun (sync): SIGTERM to one rank stops
# every rank at the same step boundary, the writer saves that position,
# every rank exits 143, and the resumed run ends with the unbroken run's
# weights bit for bit; the same when mpirun itself gets the SIGTERM.
source "$(dirname "$0")/lib_mpi.sh"

make_blobs "$WORK/d.csv" 300 1
make_spec "$WORK/spec.json"
COMMON=(--net "$WORK/spec.json" --train-csv "$WORK/d.csv" --optimizer adam --lr 0.01 --schedule cosine --seed 5 -q)

train1() { "$KD_CLI" train "${COMMON[@]}" "$@" > "$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt" >&2; return 1; }; }
traind() { local np=$1; shift; kd_mpirun -np "$np" "$KD_CLI" train "${COMMON[@]}" "$@" > "$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt" >&2; return 1; }; }
# lr_of FILE EPOCH: the learning rate recorded at the end of EPOCH (1-based).
lr_of() {
    "$KD_PYTHON" -c "import h5py, sys
h = h5py.File(sys.argv[1])['training/history']
cols = h.attrs['columns']
cols = (cols.decode() if isinstance(cols, bytes) else cols).split(',')
print(h[int(sys.argv[2]) - 1, cols.index('learning_rate')])" "$1" "$2"
}
differ() { local d; d=$(ckpt_diff "$1" "$2"); less_than 1e-6 "$d"; }

for mode in single sync; do
    if [ "$mode" = single ]; then run=(train1); else run=(traind 2 --dist sync); fi
    b=$([ "$mode" = single ] && echo 24 || echo 12)
    check "$mode: 2 epochs" "${run[@]}" --epochs 2 --batch-size "$b" --checkpoint "$WORK/$mode.h5"
    cp "$WORK/$mode.h5" "$WORK/$mode-2.h5"
    check "$mode: the 2-epoch run ends at lr 0 (cosine)" test "$(lr_of "$WORK/$mode-2.h5" 2)" = "0.0"
    check "$mode: resumed to 4 epochs" "${run[@]}" --epochs 4 --resume "$WORK/$mode.h5"
    check "$mode: the resume says the schedule was re-planned" grep -q "cosine schedule was planned over" "$WORK/out.txt"
    check "$mode: epoch 3 trains at lr > 0 ($(lr_of "$WORK/$mode.h5" 3))" less_than 1e-6 "$(lr_of "$WORK/$mode.h5" 3)"
    check "$mode: the weights changed after the resume" differ "$WORK/$mode.h5" "$WORK/$mode-2.h5"
    check "$mode: the checkpoint has 4 epochs" test "$(ckpt_attr epoch "$WORK/$mode.h5")" = 4

done

same() { test "$(ckpt_diff "$1" "$2")" = "0.0"; }
P=(--net "$WORK/spec.json" --train-csv "$WORK/d.csv" --optimizer momentum --lr 0.05 --schedule constant --seed 5 -q
   --dist sync --batch-size 4)
# Long enough (seconds of training) that a signal relayed by a busy mpirun
# still arrives before the end.
EPOCHS=1000
# The unbroken run, timed from its first checkpoint (training runs) to its
# end: the kill below lands within the first 40 % of that span, so it comes
# before the end however long MPI takes to start.
kd_mpirun -np 2 "$KD_CLI" train "${P[@]}" --epochs "$EPOCHS" --checkpoint "$WORK/pfull.h5" > "$WORK/pfull.out" 2>&1 &
pid=$!
for i in $(seq 600); do [ -e "$WORK/pfull.h5" ] && break; sleep 0.05; done
t0=$(date +%s%N)
wait "$pid"
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
check "sync: unbroken $EPOCHS epochs (exit $rc)" test "$rc" = 0
for target in rank mpirun; do
    rm -f "$WORK/p.h5"
    env --default-signal=INT,TERM "$KD_MPIEXEC" --oversubscribe -np 2 "$KD_CLI" train "${P[@]}" --epochs "$EPOCHS" \
        --checkpoint "$WORK/p.h5" > "$WORK/p.out" 2>&1 &
    pid=$!
    # Once training runs (the first epoch's checkpoint is there), at a random
    # point of the rest.
    for i in $(seq 600); do [ -e "$WORK/p.h5" ] && break; sleep 0.05; done
    delay=$((ms * (RANDOM % 41) / 100))
    sleep "$((delay / 1000)).$(printf %03d $((delay % 1000)))"
    if [ "$target" = rank ]; then
        kill -TERM $(pgrep -P "$pid" | tail -1) # one rank (not the writer's, rank 0)
    else
        kill -TERM "$pid"
    fi
    wait "$pid"
    rc=$?
    [ "$target" = rank ] && check "SIGTERM to one rank: mpirun exits 143 (got $rc)" test "$rc" = 143
    check "SIGTERM to $target: the writer says where it stopped" grep -q "stopped by SIGTERM at epoch" "$WORK/p.out"
    check "SIGTERM to $target: no temporary left" test -z "$(ls "$WORK" | grep 'p.h5.tmp')"
    check "SIGTERM to $target: resumed" kd_mpirun -np 2 "$KD_CLI" train "${P[@]}" --epochs "$EPOCHS" --resume "$WORK/p.h5"
    check "SIGTERM to $target: the resumed run equals the unbroken one bit for bit" same "$WORK/pfull.h5" "$WORK/p.h5"
done
finish
