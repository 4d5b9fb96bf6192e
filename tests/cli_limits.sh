#!/usr/bin/env bash
# Resource limits through the CLI: `kindling convert` round trips (training
# on the spool gives the same losses and accuracy as training on the CSV),
# KD_MEMORY_LIMIT makes the CSV load refuse with a message that names the
# file, the size and the way out, while the memory-mapped spool still
# trains under the same limit; the peak RSS line; convert's usage errors.
set -u

CLI=${KD_CLI:?KD_CLI must name the kindling binary}
T=$(mktemp -d "${TMPDIR:-/tmp}/kd_cli_limits.XXXXXX")
trap 'rm -rf "$T"' EXIT

source "$(dirname "$0")/lib_cli.sh"

make_csv "$T/train.csv" 300 1
make_csv "$T/test.csv" 60 2

# convert, then train on both and compare what training reports.
expect 0 "convert train.csv" "$CLI" convert --csv "$T/train.csv" --shape 1x28x28 -o "$T/train.spool"
has "convert summary" "$T/out" "^converted 300 samples from .*train.csv to .*train.spool$"
expect 0 "convert test.csv" "$CLI" convert --csv "$T/test.csv" --output "$T/test.spool" -q
[ ! -s "$T/out" ] && ok || bad "convert -q printed something"
COMMON=(--net lenet --epochs 2 --batch-size 32 --seed 7)
expect 0 "train on CSV" "$CLI" train "${COMMON[@]}" --train-csv "$T/train.csv" --test-csv "$T/test.csv"
grep -oE "loss [0-9.]+  acc [0-9.]+  test_loss [0-9.]+  test_acc [0-9.]+" "$T/err" >"$T/csv.epochs"
cp "$T/out" "$T/csv.out"
has "peak RSS line" "$T/err" "^kindling train: peak RSS [0-9.]+ MiB$"
expect 0 "train on spool" "$CLI" train "${COMMON[@]}" --train-spool "$T/train.spool" --test-spool "$T/test.spool"
grep -oE "loss [0-9.]+  acc [0-9.]+  test_loss [0-9.]+  test_acc [0-9.]+" "$T/err" >"$T/spool.epochs"
if [ "$(wc -l <"$T/csv.epochs")" -eq 2 ] && cmp -s "$T/csv.epochs" "$T/spool.epochs" && cmp -s "$T/csv.out" "$T/out"; then
    ok
else
    bad "training on the spool differs from training on the CSV"
    paste "$T/csv.epochs" "$T/spool.epochs" | head -3
fi

# A budget too small for the CSV: refused with the file, the sizes and the way out.
expect 1 "CSV over KD_MEMORY_LIMIT" env KD_MEMORY_LIMIT=256K "$CLI" train --epochs 1 --train-csv "$T/train.csv"
has "refusal names the file" "$T/err" "train.csv: loading the samples"
has "refusal names the limit" "$T/err" "only 256.0 KiB|only 262144 bytes"
has "refusal suggests convert" "$T/err" "kindling convert"
# The spool is mapped, not loaded: it trains under the same budget.
expect 0 "spool under KD_MEMORY_LIMIT" env KD_MEMORY_LIMIT=256K "$CLI" train --epochs 1 \
    --train-spool "$T/train.spool" --test-spool "$T/test.spool"
has "spool run finished" "$T/out" "^final test accuracy [0-9.]+ \(60 samples\)$"
expect 2 "bad KD_MEMORY_LIMIT" env KD_MEMORY_LIMIT=lots "$CLI" train --epochs 1
has "bad KD_MEMORY_LIMIT message" "$T/err" "KD_MEMORY_LIMIT: expected bytes"

# LibSVM with a huge index: converting writes a sparse-wide spool only on request;
# loading it refuses before any allocation.
printf '1 2147483647:1\n' >"$T/huge.svm"
expect 1 "huge LibSVM index" env KD_MEMORY_LIMIT=1G "$CLI" train --epochs 1 --train-libsvm "$T/huge.svm" --features 2147483647
has "huge index refused" "$T/err" "huge.svm: loading 1 samples x 2147483647 features"

# convert's usage errors.
expect 2 "convert without output" "$CLI" convert --csv "$T/train.csv"
has "no output message" "$T/err" "--output"
expect 2 "convert two inputs" "$CLI" convert --csv "$T/train.csv" --libsvm "$T/huge.svm" -o "$T/x.spool"
expect 2 "convert bad shape" "$CLI" convert --csv "$T/train.csv" --shape 0x3 -o "$T/x.spool"
expect 1 "convert missing file" "$CLI" convert --csv "$T/nope.csv" -o "$T/x.spool"
has "missing file message" "$T/err" "nope.csv: cannot open"
[ ! -e "$T/x.spool" ] && ok || bad "a failed convert left its output"
expect 0 "convert --help" "$CLI" convert --help
has "help mentions spool" "$T/out" "--train-spool"

finish
