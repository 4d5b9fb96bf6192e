#!/usr/bin/env bash
# Data files as users have them: CSV with a byte order mark, ';' or tab
# between columns (the same training as the comma file), other delimiters
# with --delimiter; the hints a failed load gives (--header, --delimiter,
# --label-col -1); predict --input reads by content whatever the name; and
# LibSVM has one width rule in convert and train (so a converted spool fits
# the network).
set -u

CLI=${KD_CLI:?KD_CLI must name the kindling binary}
T=$(mktemp -d "${TMPDIR:-/tmp}/kd_cli_data_formats.XXXXXX")
trap 'rm -rf "$T"' EXIT

source "$(dirname "$0")/lib_cli.sh"

make_csv "$T/rows.csv" 60 3
TRAIN=(train --net mlp --epochs 1 --batch-size 20 --seed 5)
run "comma CSV" "$CLI" "${TRAIN[@]}" --train-csv "$T/rows.csv" --checkpoint "$T/ck.h5"
grep -E "^final" "$T/out" >"$T/comma.out"

# Same rows in the dialects spreadsheets write: each trains exactly like the comma file.
{ printf '\xef\xbb\xbf'; cat "$T/rows.csv"; } >"$T/bom.csv"
tr ',' ';' <"$T/rows.csv" >"$T/semi.csv"
tr ',' '\t' <"$T/rows.csv" >"$T/tab.tsv"
{ printf '\xef\xbb\xbf'; tr ',' ';' <"$T/rows.csv"; } >"$T/bom_semi.csv"
for f in bom.csv semi.csv tab.tsv bom_semi.csv; do
    run "train on $f" "$CLI" "${TRAIN[@]}" --train-csv "$T/$f"
    grep -E "^final" "$T/out" | cmp -s - "$T/comma.out" && ok || bad "$f trains differently from the comma file"
done

# Another delimiter: a hint to name it, then --delimiter reads it.
tr ',' '|' <"$T/rows.csv" >"$T/pipe.csv"
expect 1 "pipe-separated without --delimiter" "$CLI" "${TRAIN[@]}" --train-csv "$T/pipe.csv"
has "one-column hint" "$T/err" "single column.*--delimiter"
run "pipe-separated with --delimiter '|'" "$CLI" "${TRAIN[@]}" --train-csv "$T/pipe.csv" --delimiter '|'
grep -E "^final" "$T/out" | cmp -s - "$T/comma.out" && ok || bad "--delimiter '|' trains differently"
run "tab named with --delimiter tab" "$CLI" "${TRAIN[@]}" --train-csv "$T/tab.tsv" --delimiter tab
expect 2 "a delimiter that is part of numbers" "$CLI" "${TRAIN[@]}" --train-csv "$T/rows.csv" --delimiter .
has "bad delimiter message" "$T/err" "--delimiter: expected one character"
expect 2 "a two-character delimiter" "$CLI" "${TRAIN[@]}" --train-csv "$T/rows.csv" --delimiter ';;'
run "convert with --delimiter" "$CLI" convert --csv "$T/pipe.csv" --delimiter '|' -o "$T/pipe.spool" -q
expect 2 "--delimiter without a CSV in convert" "$CLI" convert --images "$T/x" --delimiter ';' -o "$T/x.spool"

# A header line without --header.
{ printf 'label'; for i in $(seq 784); do printf ';px%d' "$i"; done; echo; cat "$T/semi.csv"; } >"$T/header.csv"
expect 1 "header without --header" "$CLI" "${TRAIN[@]}" --train-csv "$T/header.csv"
has "header hint" "$T/err" "line 1 looks like a header.*use --header"
expect 1 "convert of a header file without --header" "$CLI" convert --csv "$T/header.csv" -o "$T/x.spool" -q
has "convert's header hint" "$T/err" "use --header"
run "header with --header" "$CLI" "${TRAIN[@]}" --train-csv "$T/header.csv" --header
grep -E "^final" "$T/out" | cmp -s - "$T/comma.out" && ok || bad "the header file trains differently"

# Rows without labels: predict says to use --label-col -1, then reads them.
cut -d, -f2- "$T/rows.csv" >"$T/unlabelled.csv"
expect 1 "predict on unlabelled rows" "$CLI" predict --model "$T/ck.h5" --csv "$T/unlabelled.csv"
has "label-col hint" "$T/err" "use --label-col -1"
run "predict with --label-col -1" "$CLI" predict --model "$T/ck.h5" --csv "$T/unlabelled.csv" --label-col -1
cp "$T/out" "$T/pred_csv.out"
run "predict on the labelled rows" "$CLI" predict --model "$T/ck.h5" --csv "$T/rows.csv"
cmp -s "$T/out" "$T/pred_csv.out" && ok || bad "labelled and unlabelled rows predict differently"
[ "$(wc -l <"$T/out")" -eq 61 ] && ok || bad "predict wrote $(wc -l <"$T/out") lines, wanted 61"
# predict --batch-size: the same probabilities (to float rounding) in any batching.
run "predict --batch-size 7" "$CLI" predict --model "$T/ck.h5" --csv "$T/rows.csv" --batch-size 7
if [ "$(wc -l <"$T/out")" -eq 61 ] && paste -d, "$T/out" "$T/pred_csv.out" | awk -F, 'NR > 1 {
        n = NF / 2; if ($2 != $(n + 2)) exit 1
        for (j = 3; j <= n; j++) { d = $j - $(n + j); if (d > 1e-5 || d < -1e-5) exit 1 } }'; then
    ok
else
    bad "--batch-size 7 predicts differently"
fi
expect 2 "predict --batch-size 0" "$CLI" predict --model "$T/ck.h5" --csv "$T/rows.csv" --batch-size 0

# predict --input: the content decides, not the name.
cp "$T/unlabelled.csv" "$T/UNLABELLED.CSV"
cp "$T/unlabelled.csv" "$T/unlabelled.txt"
for f in UNLABELLED.CSV unlabelled.txt; do
    run "predict --input $f" "$CLI" predict --model "$T/ck.h5" --input "$T/$f" --label-col -1
    cmp -s "$T/out" "$T/pred_csv.out" && ok || bad "--input $f predicts differently from --csv"
done
run "convert to a spool" "$CLI" convert --csv "$T/rows.csv" -o "$T/rows.spool" -q
cp "$T/rows.spool" "$T/rows.dat"
run "predict --input of a spool named .dat" "$CLI" predict --model "$T/ck.h5" --input "$T/rows.dat"
cmp -s "$T/out" "$T/pred_csv.out" && ok || bad "--input spool predicts differently"
expect 1 "predict --input of a checkpoint" "$CLI" predict --model "$T/ck.h5" --input "$T/ck.h5"
has "checkpoint is not data" "$T/err" "an HDF5 file"
expect 2 "--input with another data flag" "$CLI" predict --model "$T/ck.h5" --input "$T/rows.csv" \
    --csv "$T/rows.csv"

# A file given to the wrong reader: the message names the reader it needs.
expect 1 "a CSV file as --train-spool" "$CLI" "${TRAIN[@]}" --train-spool "$T/rows.csv"
has "spool flag, CSV content" "$T/err" "the file holds CSV data: use --train-csv"
expect 1 "a spool as --test-csv" "$CLI" "${TRAIN[@]}" --train-csv "$T/rows.csv" --test-csv "$T/rows.spool"
has "CSV flag, spool content" "$T/err" "the file holds spool data: use --test-spool"
expect 1 "a CSV file as --images" "$CLI" predict --model "$T/ck.h5" --images "$T/rows.csv"
has "IDX flag, CSV content" "$T/err" "the file holds CSV data: use --csv"

# LibSVM: one width rule. Sparse rows whose last features are zero (the
# largest index is below 784) convert at the network's input size and train
# like the same rows read directly.
awk -F, '{ line = $1; for (j = 2; j <= NF - 10; j++) if ($j + 0 > 0.5) line = line " " (j - 1) ":" $j; print line }' \
    "$T/rows.csv" >"$T/rows.svm"
run "train on LibSVM" "$CLI" "${TRAIN[@]}" --train-libsvm "$T/rows.svm"
grep -E "^final" "$T/out" >"$T/svm.out"
expect 2 "convert LibSVM without a width" "$CLI" convert --libsvm "$T/rows.svm" -o "$T/svm.spool"
has "width hint" "$T/err" "--features N or --net"
run "convert LibSVM with --net" "$CLI" convert --libsvm "$T/rows.svm" --net mlp -o "$T/svm.spool"
run "train on the converted spool" "$CLI" "${TRAIN[@]}" --train-spool "$T/svm.spool"
grep -E "^final" "$T/out" | cmp -s - "$T/svm.out" && ok || bad "the converted spool trains differently"
run "convert LibSVM with --features" "$CLI" convert --libsvm "$T/rows.svm" --features 784 -o "$T/svm2.spool" -q
cmp -s "$T/svm.spool" "$T/svm2.spool" && ok || bad "--net and --features 784 convert differently"
expect 1 "LibSVM as --train-csv" "$CLI" "${TRAIN[@]}" --train-csv "$T/rows.svm"
has "CSV flag, LibSVM content" "$T/err" "the file holds LibSVM data: use --train-libsvm"
expect 2 "convert with --features and --net" "$CLI" convert --libsvm "$T/rows.svm" --features 784 --net mlp \
    -o "$T/x.spool"

finish
