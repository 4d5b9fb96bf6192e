#!/usr/bin/env bash
# Bad input to the kindling CLI: every case must fail with the documented
# exit code (2 usage error, 1 runtime failure) and a message that names the
# problem, and a failed run must leave an existing checkpoint untouched.
set -u

CLI=${KD_CLI:?KD_CLI must name the kindling binary}
FM_DIR=${KD_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
T=$(mktemp -d "${TMPDIR:-/tmp}/kd_cli_errors.XXXXXX")
trap 'rm -rf "$T"' EXIT

passed=0
failed=0

# expect NAME CODE NEEDLE... -- COMMAND...
# Runs COMMAND; passes when it exits with CODE and stderr holds every NEEDLE
# (and no sanitizer report).
expect() {
    local name=$1 code=$2
    shift 2
    local needles=()
    while [[ $# -gt 0 && $1 != -- ]]; do
        needles+=("$1")
        shift
    done
    shift # --
    "$@" >"$T/stdout" 2>"$T/stderr"
    local got=$? ok=1 missing=""
    [[ $got -eq $code ]] || ok=0
    for n in "${needles[@]}"; do
        if ! grep -qF -- "$n" "$T/stderr"; then
            ok=0
            missing+=" '$n'"
        fi
    done
    # A sanitizer build reports memory errors on stderr, even on failure paths.
    if grep -qE "Sanitizer|runtime error:" "$T/stderr"; then
        ok=0
        missing+=" (it has a sanitizer report)"
    fi
    if [[ $ok -eq 1 ]]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $name: exit $got (want $code)${missing:+, stderr lacks$missing}"
        sed 's/^/    stderr: /' "$T/stderr" | head -5
    fi
}

# check NAME CONDITION-COMMAND...: passes when the command succeeds.
check() {
    local name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $name"
    fi
}

# ---------------------------------------------------------------- test data
# make_csv FILE N LABEL_EXPR [VALUE_EXPR]: N rows of "label,784 features".
make_csv() {
    awk -v n="$2" -v lab="$3" -v bad="${4:-}" 'BEGIN {
        srand(7)
        for (i = 0; i < n; i++) {
            label = (lab == "cycle") ? i % 10 : lab
            if (lab == "cycle-but-last" ) label = (i == n - 1) ? 12 : i % 10
            line = label
            for (j = 0; j < 784; j++) {
                v = sprintf("%.3f", rand())
                if (bad != "" && i == 3 && j == 5) v = bad
                line = line "," v
            }
            print line
        }
    }' >"$1"
}
make_csv "$T/tiny.csv" 20 cycle
make_csv "$T/bad_label.csv" 20 cycle-but-last
make_csv "$T/has_nan.csv" 20 cycle nan
awk 'BEGIN { for (i = 0; i < 20; i++) { l = i % 10; for (j = 0; j < 10; j++) l = l ",0.5"; print l } }' >"$T/narrow.csv"

printf '{"input": [1, 28, 28], "layers": [{"type": "flatten"}, {"type": "frobnicate"}, {"type": "softmax"}]}\n' \
    >"$T/unknown_layer.json"
# A 40x40 convolution cannot slide over a 28x28 image.
printf '{"input": [1, 28, 28], "layers": [{"type": "conv2d", "filters": 4, "kernel": 40}, {"type": "flatten"}, {"type": "dense", "units": 10}, {"type": "softmax"}]}\n' \
    >"$T/bad_shapes.json"
head -c 5000 "$FM_DIR/train-images-idx3-ubyte.gz" >"$T/truncated-images.gz"
echo "this is not an HDF5 checkpoint" >"$T/not_a_checkpoint.h5"

TRAIN_TINY=(train --epochs 1 --batch-size 8 --quiet --train-csv "$T/tiny.csv")

# ------------------------------------------------------------ usage errors
expect "unknown flag" 2 "kindling train: unknown option '--frobnicate'" "try 'kindling train --help'" -- \
    "$CLI" train --frobnicate
expect "unknown command" 2 "unknown command 'frobnicate'" -- "$CLI" frobnicate
expect "no command" 2 "usage: kindling" -- "$CLI"
expect "batch size 0" 2 "--batch-size: must be an integer >= 1, got '0'" -- "$CLI" train --batch-size 0
expect "negative lr" 2 "--lr: must be a number > 0, got '-0.1'" -- "$CLI" train --lr -0.1
expect "non-numeric epochs" 2 "--epochs: must be an integer >= 1, got 'abc'" -- "$CLI" train --epochs abc
expect "trailing junk in a number" 2 "--momentum: must be a number in [0, 1), got '0.9x'" -- \
    "$CLI" train --momentum 0.9x
expect "nan is not a number" 2 "--lr: must be a number > 0, got 'nan'" -- "$CLI" train --lr nan
expect "missing value" 2 "--epochs: missing value" -- "$CLI" train --epochs
expect "flag without value given one" 2 "--header: takes no value" -- "$CLI" train --header=1
expect "unknown preset" 2 "resnet9000" "presets: mlp, lenet" -- "$CLI" train --net resnet9000
expect "unknown optimizer" 2 "--optimizer: unknown optimizer 'lbfgs'" "adamw" -- "$CLI" train --optimizer lbfgs
expect "momentum flag with adam" 2 "--momentum: only applies to --optimizer momentum" -- \
    "$CLI" train --optimizer adam --momentum 0.5
expect "step schedule without step size" 2 "--schedule step needs --step-size" -- "$CLI" train --schedule step
expect "images without labels" 2 "--train-images needs --train-labels" -- \
    "$CLI" train --train-images "$FM_DIR/train-images-idx3-ubyte.gz"
expect "two training sources" 2 "choose one source for the training data" -- \
    "$CLI" train --train-csv "$T/tiny.csv" --train-libsvm "$T/x.svm"
expect "eval without model" 2 "kindling eval: --model is required" -- "$CLI" eval
expect "inspect without file" 2 "kindling inspect: missing the checkpoint file" -- "$CLI" inspect
expect "inspect --model and an argument" 2 "unexpected argument 'b.h5'" -- "$CLI" inspect --model a.h5 b.h5
expect "predict extra argument" 2 "unexpected argument 'extra'" -- "$CLI" predict --model m.h5 extra

# ---------------------------------------------------------- runtime errors
expect "spec with unknown layer type" 1 "kindling: " "frobnicate" -- \
    "$CLI" "${TRAIN_TINY[@]}" --net "$T/unknown_layer.json"
expect "spec whose shapes do not fit" 1 "kindling: " "conv2d" -- \
    "$CLI" "${TRAIN_TINY[@]}" --net "$T/bad_shapes.json"
expect "missing data file" 1 "kindling: " "no_such_file.csv" -- \
    "$CLI" train --epochs 1 --train-csv "$T/no_such_file.csv"
expect "truncated IDX" 1 "kindling: " "truncated-images.gz" -- \
    "$CLI" train --epochs 1 --train-images "$T/truncated-images.gz" \
    --train-labels "$FM_DIR/train-labels-idx1-ubyte.gz"
expect "CSV label outside the classes" 1 "bad_label.csv" "12" -- \
    "$CLI" train --epochs 1 --train-csv "$T/bad_label.csv"
expect "CSV with nan" 1 "has_nan.csv" -- "$CLI" train --epochs 1 --train-csv "$T/has_nan.csv"
expect "features do not fit the network" 1 "narrow.csv" "10 features" "784" -- \
    "$CLI" train --epochs 1 --train-csv "$T/narrow.csv"
expect "inspect a non-checkpoint" 1 "kindling: " "not_a_checkpoint.h5" -- "$CLI" inspect "$T/not_a_checkpoint.h5"
expect "eval a non-checkpoint" 1 "kindling: " "not_a_checkpoint.h5" -- \
    "$CLI" eval --model "$T/not_a_checkpoint.h5" --csv "$T/tiny.csv"
expect "resume from a missing file" 1 "kindling: " "missing.h5" -- \
    "$CLI" "${TRAIN_TINY[@]}" --resume "$T/missing.h5"

# A GPU this machine does not have: exit 2 (no retry helps), the CUDA reason named.
"$CLI" "${TRAIN_TINY[@]}" --context gpu >/dev/null 2>&1
if [[ $? -ne 0 ]]; then
    expect "--context gpu without a device" 2 "kindling: --context gpu: " -- "$CLI" "${TRAIN_TINY[@]}" --context gpu
    check "the reason is CUDA's" grep -qE "no CUDA device|built without CUDA" "$T/stderr"
fi

# ------------------------------------------- failures leave files untouched
expect "tiny run saves a checkpoint" 0 -- "$CLI" "${TRAIN_TINY[@]}" --checkpoint "$T/ck.h5"
cp "$T/ck.h5" "$T/ck_before.h5"
expect "failing run with --checkpoint" 1 "bad_label.csv" -- \
    "$CLI" train --epochs 1 --quiet --train-csv "$T/bad_label.csv" --checkpoint "$T/ck.h5"
check "failed run left the checkpoint unchanged" cmp -s "$T/ck.h5" "$T/ck_before.h5"
# Counts of one are singular.
expect "resume with nothing left to train" 0 -- "$CLI" "${TRAIN_TINY[@]}" --resume "$T/ck.h5" --checkpoint "$T/ck2.h5"
check "the note says '1 epoch'" grep -q "already has 1 epoch (--epochs 1)" "$T/stderr"
head -1 "$T/tiny.csv" >"$T/one.csv"
expect "convert one row" 0 -- "$CLI" convert --csv "$T/one.csv" -o "$T/one.spool"
check "convert says '1 sample'" grep -q "^converted 1 sample from" "$T/stdout"
# inspect takes the checkpoint as an argument or, like eval and predict, as --model.
expect "inspect PATH" 0 -- "$CLI" inspect "$T/ck.h5"
cp "$T/stdout" "$T/inspect_arg.out"
expect "inspect --model PATH" 0 -- "$CLI" inspect --model "$T/ck.h5"
check "inspect --model prints the same" cmp -s "$T/stdout" "$T/inspect_arg.out"
expect "failing resume with --checkpoint" 1 "has_nan.csv" -- \
    "$CLI" train --epochs 2 --quiet --train-csv "$T/has_nan.csv" --resume "$T/ck.h5" --checkpoint "$T/ck.h5"
check "failed resume left the checkpoint unchanged" cmp -s "$T/ck.h5" "$T/ck_before.h5"
expect "failing run with a new checkpoint path" 1 "has_nan.csv" -- \
    "$CLI" train --epochs 1 --quiet --train-csv "$T/has_nan.csv" --checkpoint "$T/new.h5"
check "failed run created no checkpoint" test ! -e "$T/new.h5"
expect "predict into a missing directory" 1 "no_dir/out.csv" -- \
    "$CLI" predict --model "$T/ck.h5" --csv "$T/tiny.csv" --output "$T/no_dir/out.csv"
expect "predict with a non-checkpoint" 1 "not_a_checkpoint.h5" -- \
    "$CLI" predict --model "$T/not_a_checkpoint.h5" --csv "$T/tiny.csv" --output "$T/out.csv"
check "failed predict wrote no output" bash -c "! ls '$T'/out.csv* 2>/dev/null"

# ------------------------------------------------------- help and version
expect "--help exits 0" 0 -- "$CLI" --help
check "--help lists the commands" grep -q "inspect" "$T/stdout"
for cmd in train eval predict inspect; do
    expect "$cmd --help exits 0" 0 -- "$CLI" "$cmd" --help
    check "$cmd --help prints usage to stdout" grep -q "usage: kindling $cmd" "$T/stdout"
done
expect "--version exits 0" 0 -- "$CLI" --version
check "--version prints the version" grep -qE "^kindling [0-9]+\.[0-9]+\.[0-9]+" "$T/stdout"
# On an AVX-512/AVX2 CPU the CLI never runs OpenBLAS's generic SSE3 kernels
# (unless the user pinned OPENBLAS_CORETYPE themselves).
if [[ -z "${OPENBLAS_CORETYPE:-}" ]] && grep -qw avx2 /proc/cpuinfo; then
    check "--version: OpenBLAS uses the CPU's vector kernels" bash -c "! grep -q 'kernels: Prescott' '$T/stdout'"
fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
