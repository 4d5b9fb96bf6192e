#!/usr/bin/env bash
# The CLI paths under valgrind memcheck (Release build): train with every
# layer type and checkpoints, resume, eval, predict, inspect, convert, and
# the error paths for bad input. Each run must report no memory error
# (invalid read/write, use of uninitialised values, bad free) and no
# definitely or indirectly lost block. Still-reachable memory (libhdf5's and
# OpenBLAS's caches that live until exit) is not counted.
#
# This complements the ASan+UBSan ctest pass: memcheck sees uses of
# uninitialised memory, which ASan does not. Skipped (exit 77) in a
# sanitizer build or without valgrind.
set -u

CLI=${KD_CLI:?KD_CLI must name the kindling binary}
: "${KD_PYTHON:?KD_PYTHON must name the Python of the project environment (made by ci/install-deps.sh)}"
if ! command -v valgrind >/dev/null 2>&1; then
    echo "SKIP: valgrind not installed (apt-get install valgrind)"
    exit 77
fi
if ldd "$CLI" 2>/dev/null | grep -q libasan || nm "$CLI" 2>/dev/null | grep -q __asan_init; then
    echo "SKIP: $CLI is a sanitizer build (valgrind and ASan do not mix)"
    exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/kd_cli_valgrind.XXXXXX")
trap 'rm -rf "$T"' EXIT
# One BLAS thread, default kernels: valgrind's virtual CPU has no AVX-512.
export OPENBLAS_NUM_THREADS=1 KD_BLAS_AUTO=0

passed=0
failed=0
# vg NAME EXPECTED_EXIT COMMAND...: run the CLI under memcheck.
vg() {
    local name=$1 want=$2
    shift 2
    valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect \
        --errors-for-leak-kinds=definite,indirect --track-origins=yes --log-file="$T/vg.log" \
        "$CLI" "$@" >"$T/out" 2>"$T/err"
    local got=$?
    if [[ $got -eq $want && ! -s $T/vg.log ]]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $name: exit $got (want $want)"
        sed 's/^/    valgrind: /' "$T/vg.log" | head -40
        sed 's/^/    stderr: /' "$T/err" | head -5
    fi
}

"$KD_PYTHON" - "$T" <<'PY'
import json, random, sys
t = sys.argv[1]
random.seed(5)
with open(f"{t}/img.csv", "w") as f:
    for i in range(96):
        c = i % 3
        f.write(",".join([str(c)] + [f"{random.random() * 0.5 + (0.5 if j % 3 == c else 0):.3f}" for j in range(36)]) + "\n")
with open(f"{t}/nan.csv", "w") as f:
    f.write("0," + ",".join(["0.1"] * 35 + ["nan"]) + "\n")
with open(f"{t}/label.csv", "w") as f:
    f.write("7," + ",".join(["0.1"] * 36) + "\n")
with open(f"{t}/a.svm", "w") as f:
    for i in range(60):
        f.write(f"{i % 3} {1 + i % 3}:1.0 {4 + i % 5}:0.5\n")
spec = {"input": [1, 6, 6], "layers": [
    {"type": "conv2d", "filters": 3, "kernel": 3, "padding": 1}, {"type": "batchnorm"}, {"type": "relu"},
    {"type": "maxpool", "size": 2}, {"type": "conv2d", "filters": 4, "kernel": 2}, {"type": "tanh"},
    {"type": "avgpool", "size": 2}, {"type": "flatten"}, {"type": "dropout", "rate": 0.2},
    {"type": "dense", "units": 8}, {"type": "sigmoid"}, {"type": "dense", "units": 3}, {"type": "softmax"}]}
json.dump(spec, open(f"{t}/conv.json", "w"))
json.dump({"input": [8], "layers": [{"type": "dense", "units": 3}, {"type": "softmax"}]}, open(f"{t}/svm.json", "w"))
json.dump({"input": [36], "layers": [{"type": "conv2d", "filters": 2, "kernel": 3}]}, open(f"{t}/bad.json", "w"))
PY
head -c 700 /dev/urandom >"$T/garbage.h5"

# Success paths.
vg "train conv net (sgd momentum, step schedule, checkpoints)" 0 train --net "$T/conv.json" --train-csv "$T/img.csv" \
    --test-csv "$T/img.csv" --epochs 2 --batch-size 16 --optimizer momentum --nesterov --schedule step --step-size 1 \
    --checkpoint "$T/c.h5" --checkpoint-every 3 -q
vg "resume (adamw)" 0 train --resume "$T/c.h5" --train-csv "$T/img.csv" --epochs 3 -q
vg "train adam cosine on libsvm" 0 train --net "$T/svm.json" --train-libsvm "$T/a.svm" --epochs 2 --batch-size 8 \
    --optimizer adamw --weight-decay 0.01 --checkpoint "$T/s.h5" -q
vg "eval" 0 eval --model "$T/c.h5" --csv "$T/img.csv"
vg "predict" 0 predict --model "$T/c.h5" --csv "$T/img.csv" --output "$T/pred.csv"
vg "inspect" 0 inspect "$T/c.h5"
vg "validation, early stopping, copies, metrics, warmup, subset" 0 train --net "$T/conv.json" --train-csv "$T/img.csv" \
    --test-csv "$T/img.csv" --epochs 3 --batch-size 16 --val-split 0.25 --patience 1 --min-delta 10 \
    --checkpoint "$T/v.h5" --keep-best "$T/vb.h5" --keep-last 1 --metrics "$T/m.jsonl" --metrics-every 2 \
    --warmup-steps 3 --max-samples 60 -q
vg "inspect --json" 0 inspect "$T/v.h5" --json
vg "eval --json" 0 eval --model "$T/v.h5" --csv "$T/img.csv" --json
awk -F, 'BEGIN { OFS = "," } { print "r" NR, $0 }' "$T/img.csv" >"$T/ids.csv"
vg "predict --id-col" 0 predict --model "$T/v.h5" --csv "$T/ids.csv" --id-col 0 --label-col 1
vg "plot" 0 plot "$T/v.h5" -o "$T/v.svg"
if "$CLI" convert --help >/dev/null 2>&1; then
    vg "convert csv to spool" 0 convert --csv "$T/img.csv" --output "$T/img.spool"
    vg "train on the spool" 0 train --net "$T/conv.json" --train-spool "$T/img.spool" --epochs 1 -q
fi

# Error paths: a clear message and no leak on the way out.
vg "bad network spec" 1 train --net "$T/bad.json" --train-csv "$T/img.csv" --epochs 1
vg "NaN feature" 1 train --net "$T/conv.json" --train-csv "$T/nan.csv" --epochs 1
vg "label out of range" 1 train --net "$T/conv.json" --train-csv "$T/label.csv" --epochs 1
vg "missing data file" 1 train --net "$T/conv.json" --train-csv "$T/none.csv" --epochs 1
vg "corrupt checkpoint (inspect)" 1 inspect "$T/garbage.h5"
vg "corrupt checkpoint (resume)" 1 train --resume "$T/garbage.h5" --train-csv "$T/img.csv" --epochs 3
vg "bad flag" 2 train --epochs nope

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
