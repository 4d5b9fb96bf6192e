#!/usr/bin/env bash
# End to end through the kindling CLI on a tiny generated CSV set: train
# with a checkpoint, inspect it, evaluate, predict, and resume.
set -u

CLI=${KD_CLI:?KD_CLI must name the kindling binary}
T=$(mktemp -d "${TMPDIR:-/tmp}/kd_cli_smoke.XXXXXX")
trap 'rm -rf "$T"' EXIT

source "$(dirname "$0")/lib_cli.sh"

make_csv "$T/train.csv" 200 1
make_csv "$T/test.csv" 50 2
DATA=(--train-csv "$T/train.csv" --test-csv "$T/test.csv" --batch-size 16)

# ---------------------------------------------------------------- train
# A constant learning rate: a cosine schedule's length depends on the
# planned epochs, so only a constant one makes 1+1 epochs equal 2.
SCHED=(--optimizer momentum --schedule constant)
run "train 1 epoch" "$CLI" train --net mlp --epochs 1 "${DATA[@]}" "${SCHED[@]}" --checkpoint "$T/one.h5"
has "progress line" "$T/err" "^epoch 1/1  loss [0-9.]+  acc [0-9.]+  test_loss [0-9.]+  test_acc [0-9.]+"
has "summary" "$T/out" "^final test accuracy [0-9.]+ \(50 samples\)$"
has "summary names the checkpoint" "$T/out" "one.h5"
[[ -s "$T/one.h5" ]] && ok || bad "checkpoint written"

# --------------------------------------------------------------- inspect
# history_rows FILE: rows of the history table (lines after its header
# whose first field is an epoch number).
history_rows() { awk '/train_loss/ { t = 1; next } t && $1 ~ /^[0-9]+$/ { n++ } END { print n + 0 }' "$1"; }
run "inspect" "$CLI" inspect "$T/one.h5"
has "inspect shows dense layers" "$T/out" "dense"
has "inspect shows the parameter total" "$T/out" "^total parameters [1-9][0-9]*"
has "inspect shows the optimizer" "$T/out" "^optimizer +momentum +lr 0.01"
[[ $(history_rows "$T/out") -eq 1 ]] && ok || bad "inspect: want 1 history row, got $(history_rows "$T/out")"
# The per-layer parameter counts add up to the total.
sum=$(awk '/^ *[0-9]+  / && /->/ { s += $NF } END { print s + 0 }' "$T/out")
total=$(awk '/^total parameters/ { print $3 }' "$T/out")
[[ "$sum" == "$total" ]] && ok || bad "layer params sum $sum != total $total"

# ------------------------------------------------------------------ eval
run "eval" "$CLI" eval --model "$T/one.h5" --csv "$T/test.csv"
has "eval sample count" "$T/out" "^samples +50$"
has "eval accuracy" "$T/out" "^accuracy +[0-9.]+$"
# Per-class rows (class samples predicted precision recall f1) up to the macro row.
rows=$(awk '/^class/ { t = 1; next } /^macro/ { t = 0 } t && NF == 6 && $1 ~ /^[0-9]+$/ { n++ } END { print n + 0 }' "$T/out")
[[ $rows -eq 10 ]] && ok || bad "eval: want 10 per-class rows, got $rows"
per_class=$(awk '/^class/ { t = 1; next } /^macro/ { t = 0 } t && NF == 6 { n += $2; p += $3 } END { print n + 0, p + 0 }' "$T/out")
[[ $per_class == "50 50" ]] && ok || bad "eval: per-class samples and predictions add to $per_class, not 50 50"
# The confusion matrix: 10 rows of 10 counts adding up to 50, its diagonal the hits.
cm=$(awk '/^true.pred/ { t = 1; next } t && NF == 11 { r++; for (i = 2; i <= 11; i++) { s += $i; if (i - 2 == $1) d += $i } }
          END { print r + 0, s + 0, d + 0 }' "$T/out")
acc=$(awk '/^accuracy/ { print $2 }' "$T/out")
read -r cm_rows cm_sum cm_diag <<<"$cm"
[[ $cm_rows -eq 10 && $cm_sum -eq 50 ]] && ok || bad "eval: confusion matrix has $cm_rows rows adding to $cm_sum"
awk -v d="$cm_diag" -v a="$acc" 'BEGIN { exit !(sprintf("%.4f", d / 50) == a) }' && ok ||
    bad "eval: confusion diagonal $cm_diag/50 is not the accuracy $acc"
# Precision and recall of each class from the matrix (recall: hits / row sum; precision: hits / column sum).
awk '/^class/ { t = 1; next } /^macro/ { t = 0 } t && NF == 6 && $1 ~ /^[0-9]+$/ { pr[$1] = $4; re[$1] = $5 }
     /^true.pred/ { m = 1; next } m && NF == 11 { for (i = 2; i <= 11; i++) { c[$1, i - 2] = $i; row[$1] += $i; col[i - 2] += $i } }
     END { for (k = 0; k < 10; k++) {
             want_re = row[k] ? sprintf("%.4f", c[k, k] / row[k]) : "-"
             want_pr = col[k] ? sprintf("%.4f", c[k, k] / col[k]) : "-"
             if (re[k] != want_re || pr[k] != want_pr) { print "class " k ": " pr[k] "/" re[k] " vs " want_pr "/" want_re; bad = 1 } }
           exit bad }' "$T/out" && ok || bad "eval: precision or recall disagrees with the confusion matrix"
run "eval --json" "$CLI" eval --model "$T/one.h5" --csv "$T/test.csv" --json
"$KD_PYTHON" - "$T/out" "$acc" <<'PY' && ok || bad "eval --json disagrees with the text output"
import json, sys
d = json.load(open(sys.argv[1]))
cm = d["confusion"]
assert d["samples"] == 50 and len(cm) == 10 and all(len(r) == 10 for r in cm)
assert sum(map(sum, cm)) == 50 and f"{d['accuracy']:.4f}" == sys.argv[2]
assert sum(cm[k][k] for k in range(10)) == round(d["accuracy"] * 50)
for c in d["classes"]:
    k = c["class"]
    assert c["samples"] == sum(cm[k]) and c["predicted"] == sum(r[k] for r in cm)
    assert c["recall"] == (cm[k][k] / c["samples"] if c["samples"] else None)
PY

# --------------------------------------------------------------- predict
run "predict to a file" "$CLI" predict --model "$T/one.h5" --csv "$T/test.csv" --output "$T/pred.csv"
[[ ! -e "$T/pred.csv.tmp" ]] && ok || bad "predict left its temporary file"
head -1 "$T/pred.csv" | grep -qx "index,class,p0,p1,p2,p3,p4,p5,p6,p7,p8,p9" && ok || bad "predict header"
[[ $(wc -l <"$T/pred.csv") -eq 51 ]] && ok || bad "predict: want 51 lines, got $(wc -l <"$T/pred.csv")"
# Every row: 12 fields, index in order, probabilities sum to 1, class is the argmax.
bad_rows=$(awk -F, 'NR > 1 {
    s = 0; best = 3
    for (i = 3; i <= NF; i++) { s += $i; if ($i > $best) best = i }
    if (NF != 12 || $1 != NR - 2 || s < 0.999 || s > 1.001 || $2 != best - 3) n++
} END { print n + 0 }' "$T/pred.csv")
[[ -s "$T/pred.csv" && $bad_rows -eq 0 ]] && ok || bad "predict: $bad_rows rows malformed, unnormalised or with a wrong class"
run "predict to stdout" "$CLI" predict --model "$T/one.h5" --csv "$T/test.csv"
[[ -s "$T/out" ]] && cmp -s "$T/out" "$T/pred.csv" && ok || bad "predict to stdout differs from --output"
# The accuracy the predictions imply is the one eval reported.
run "eval again" "$CLI" eval --model "$T/one.h5" --csv "$T/test.csv"
cp "$T/out" "$T/eval.txt"
pred_acc=$(paste -d, <(tail -n +2 "$T/pred.csv") <(cut -d, -f1 "$T/test.csv") |
    awk -F, '{ if ($2 == $NF) c++ } END { printf "%.4f", c / NR }')
eval_acc=$(awk '/^accuracy/ { print $2 }' "$T/eval.txt")
[[ -n "$eval_acc" && "$pred_acc" == "$eval_acc" ]] && ok || bad "predict accuracy $pred_acc != eval accuracy $eval_acc"

# ---------------------------------------------------------------- resume
run "resume to 2 epochs" "$CLI" train --resume "$T/one.h5" --epochs 2 "${DATA[@]}" --checkpoint "$T/resumed.h5"
has "resume progress" "$T/err" "^epoch 2/2 "
run "inspect resumed" "$CLI" inspect "$T/resumed.h5"
[[ $(history_rows "$T/out") -eq 2 ]] && ok || bad "resumed: want 2 history rows, got $(history_rows "$T/out")"
has "resumed state" "$T/out" "^epoch 2  step 26 "
loss1=$(awk '/train_loss/ { t = 1; next } t && $1 == 1 { print $2 }' "$T/out")
loss2=$(awk '/train_loss/ { t = 1; next } t && $1 == 2 { print $2 }' "$T/out")
awk -v a="$loss1" -v b="$loss2" 'BEGIN { exit !(b < a) }' && ok || bad "train loss did not fall: $loss1 -> $loss2"
# Resuming continues exactly: 1 + 1 epochs predict the same as 2 straight.
run "train 2 epochs straight" "$CLI" train --net mlp --epochs 2 "${DATA[@]}" "${SCHED[@]}" --quiet --checkpoint "$T/two.h5"
run "predict after 2 epochs" "$CLI" predict --model "$T/two.h5" --csv "$T/test.csv" --output "$T/two.csv"
run "predict after resume" "$CLI" predict --model "$T/resumed.h5" --csv "$T/test.csv" --output "$T/resumed.csv"
[[ -s "$T/two.csv" ]] && cmp -s "$T/two.csv" "$T/resumed.csv" && ok || bad "resumed run differs from an uninterrupted one"
# The input checkpoint of a resume with --checkpoint elsewhere is not modified.
run "inspect original" "$CLI" inspect "$T/one.h5"
[[ $(history_rows "$T/out") -eq 1 ]] && ok || bad "resume altered its input checkpoint"

finish
