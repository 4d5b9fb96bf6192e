#!/bin/bash
# Asynchronous parameter server on real data: 2 servers + 3 workers train
# the MLP preset on Fashion-MNIST (60k train, 10k test) and reach at least
# 0.87 test accuracy. Prints the wall time. Skips if the data set is absent.
source "$(dirname "$0")/lib_mpi.sh"

DATA=${KD_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ ! -e "$DATA/train-images-idx3-ubyte.gz" ]; then
    echo "SKIP: Fashion-MNIST not found in $DATA (apt-get install dataset-fashion-mnist)"
    exit 77
fi
# 8 epochs: at 5 the result (0.871-0.875 in runs on a loaded machine) sits too close to the bar.
EPOCHS=${KD_ASYNC_EPOCHS:-8}
t0=$(date +%s.%N)
check "async: 2 servers + 3 workers, MLP, $EPOCHS epochs" \
    bash -c "timeout 600 $KD_MPIEXEC --oversubscribe -np 5 '$KD_CLI' train --net mlp --epochs $EPOCHS --batch-size 32 \
             --optimizer adam --lr 0.002 --schedule cosine --dist async --servers 2 --checkpoint '$WORK/async.h5' \
             > '$WORK/out.txt' 2> '$WORK/err.txt' || { cat '$WORK/err.txt' >&2; exit 1; }"
secs=$("$KD_PYTHON" -c "import time; print(f'{time.time() - $t0:.1f}')")
cat "$WORK/err.txt"
acc=$(grep -o 'final test accuracy [0-9.]*' "$WORK/out.txt" | awk '{print $4}')
check "test accuracy ${acc:-none} >= 0.87 (wall time ${secs}s)" less_than 0.87 "${acc:-0}"
check "the writer saved the final checkpoint" test "$(ckpt_attr epoch "$WORK/async.h5")" = "$EPOCHS"
finish
