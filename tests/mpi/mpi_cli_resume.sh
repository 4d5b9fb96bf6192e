#!/bin/bash
# Resuming through the CLI, alone and under mpirun (sync): a resume to more
# epochs than first planned keeps training (the cosine schedule is
# re-planned over the new --epochs: the learning rate stays above 0 and the
# weights change).
source "$(dirname "$0")/lib_mpi.sh"

make_blobs "$WORK/d.csv" 300 1
make_spec "$WORK/spec.json"
COMMON=(--net "$WORK/spec.json" --train-csv "$WORK/d.csv" --optimizer adam --lr 0.01 --schedule cosine --seed 5 -q)

train1() { "$KD_CLI" train "${COMMON[@]}" "$@" > "$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt" >&2; return 1; }; }
traind() { local np=$1; shift; kd_mpirun -np "$np" "$KD_CLI" train "${COMMON[@]}" "$@" > "$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt" >&2; return 1; }; }
# lr_of FILE EPOCH: the learning rate recorded at the end of EPOCH (1-based).
lr_of() {
    "$KD_PYTHON" -c "import h5py, sys; print(h5py.File(sys.argv[1])['training/history'][int(sys.argv[2]) - 1, 6])" "$1" "$2"
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
finish
