#!/usr/bin/env bash
# What a deep-learning user expects around `kindling train` (issue 14),
# end to end on small generated CSV sets: validation data (--val-split,
# --val-csv), early stopping (--patience, --min-delta) and its resume,
# checkpoint copies (--keep-best, --keep-last), the metrics file, a
# training subset (--max-samples), warmup, inspect --json, predict --id-col,
# `kindling plot`, a checkpoint of format version 1, and the usage errors.
set -u

CLI=${KD_CLI:?KD_CLI must name the kindling binary}
PY=${KD_PYTHON:-/opt/kindling-venv/bin/python}
SRC=${KD_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
T=$(mktemp -d "${TMPDIR:-/tmp}/kd_cli_validation.XXXXXX")
trap 'rm -rf "$T"' EXIT

source "$(dirname "$0")/lib_cli.sh"

make_csv "$T/train.csv" 200 1
make_csv "$T/val.csv" 60 3
make_csv "$T/test.csv" 50 2
DATA=(--net mlp --train-csv "$T/train.csv" --test-csv "$T/test.csv" --batch-size 16)
# py SCRIPT ARGS...: a check in Python; passes when it exits 0.
py() { "$PY" - "$@"; }

# ------------------------------------------------------------- --val-split
run "val-split" "$CLI" train "${DATA[@]}" --epochs 3 --val-split 0.2 --checkpoint "$T/vs.h5" \
    --metrics "$T/vs.jsonl" --metrics-every 2
cp "$T/err" "$T/vs.err"
has "val figures in the progress line" "$T/vs.err" "^epoch 1/3  loss [0-9.]+  acc [0-9.]+  val_loss [0-9.]+  val_acc [0-9.]+  [0-9]+ samples/s"
[[ $(grep -c "test_loss" "$T/vs.err") -eq 1 ]] && grep -qE "^epoch 3/3 .*val_loss .*test_loss [0-9.]+  test_acc" "$T/vs.err" &&
    ok || bad "with validation data the test set is scored after the last epoch only"
run "inspect --json" "$CLI" inspect "$T/vs.h5" --json
cp "$T/out" "$T/vs.json"
py "$T/vs.json" <<'PY' && ok || bad "inspect --json: history with validation figures, test only at the end"
import json, sys
d = json.load(open(sys.argv[1]))
h = d["history"]
assert [e["epoch"] for e in h] == [1, 2, 3]
assert all(0 < e["val_loss"] and 0 <= e["val_accuracy"] <= 1 for e in h)
assert [e["test_loss"] is None for e in h] == [True, True, False]
assert d["training"]["epoch"] == 3 and d["training"]["step"] == 3 * 10  # 160 samples in batches of 16
assert d["training"]["best"]["monitor"] == "val_loss"
assert d["optimizer"]["kind"] == "adam" and d["num_classes"] == 10 and d["input_shape"] == [1, 28, 28]
assert sum(l["parameters"] for l in d["layers"]) == d["parameters"]
PY
# 20% of 200 held out: 160 training samples per epoch; the metrics say so.
py "$T/vs.jsonl" "$T/vs.json" <<'PY' && ok || bad "metrics file: lines, fields and figures"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
hist = json.load(open(sys.argv[2]))["history"]
epochs = [l for l in lines if l["event"] == "epoch"]
steps = [l for l in lines if l["event"] == "step"]
assert len(epochs) == 3 and len(steps) == 15, (len(epochs), len(steps))  # 30 steps, one line every 2
assert all(s["step"] % 2 == 0 and s["samples_per_epoch"] == 160 for s in steps)
for e, r in zip(epochs, hist):
    for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy", "learning_rate"):
        assert e[k] == r[k], (k, e[k], r[k])
    assert e["samples_per_sec"] > 0 and e["seconds"] > 0 and e["elapsed"] > 0 and e["time"].endswith("Z")
assert epochs[0]["test_loss"] is None and epochs[2]["test_accuracy"] is not None
PY
# The same seed holds out the same samples: a second run repeats the figures.
run "val-split again" "$CLI" train "${DATA[@]}" --epochs 3 --val-split 0.2 -q --checkpoint "$T/vs2.h5"
"$CLI" inspect "$T/vs2.h5" --json >"$T/vs2.json"
py "$T/vs.json" "$T/vs2.json" <<'PY' && ok || bad "val-split is not reproducible from the seed"
import json, sys
a, b = (json.load(open(p))["history"] for p in sys.argv[1:3])
assert [e["val_loss"] for e in a] == [e["val_loss"] for e in b]
PY
# Resuming appends to the metrics file.
run "resume with metrics" "$CLI" train --resume "$T/vs.h5" --epochs 4 "${DATA[@]}" --val-split 0.2 --metrics "$T/vs.jsonl"
[[ $(grep -c '"event":"epoch"' "$T/vs.jsonl") -eq 4 ]] && ok || bad "a resumed run did not append its epoch to --metrics"

# Without a test set the summary gives the last epoch's validation accuracy.
run "val-split without a test set" "$CLI" train --net mlp --train-csv "$T/train.csv" --batch-size 16 --epochs 1 \
    --val-split 0.2 --metrics "$T/nt.jsonl"
val1=$("$PY" -c 'import json, sys; print("%.4f" % json.loads(open(sys.argv[1]).readline())["val_accuracy"])' "$T/nt.jsonl")
has "summary: validation accuracy" "$T/out" "^final validation accuracy $val1$"

# ---------------------------------------------------------- --val-csv
run "val-csv" "$CLI" train "${DATA[@]}" --epochs 2 --val-csv "$T/val.csv" --checkpoint "$T/vc.h5" -q
"$CLI" inspect "$T/vc.h5" --json >"$T/vc.json"
run "eval on the validation file" "$CLI" eval --model "$T/vc.h5" --csv "$T/val.csv" --json
py "$T/vc.json" "$T/out" <<'PY' && ok || bad "the last epoch's validation figures are not eval's on --val-csv"
import json, sys
last = json.load(open(sys.argv[1]))["history"][-1]
ev = json.load(open(sys.argv[2]))
assert ev["samples"] == 60
assert abs(last["val_loss"] - ev["loss"]) < 1e-9 and abs(last["val_accuracy"] - ev["accuracy"]) < 1e-12, (last, ev)
PY

# ------------------------------------------- early stopping and copies
# No epoch can improve by more than 100: epoch 1 stays the best, patience 2
# ends the run after epoch 3.
run "patience" "$CLI" train "${DATA[@]}" --epochs 10 --val-split 0.2 --patience 2 --min-delta 100 \
    --checkpoint "$T/es.h5" --keep-best "$T/best.h5" --keep-last 2
has "early stopping said" "$T/err" "^kindling train: early stopping after epoch 3 of 10: val_loss has not improved by more than 100 for 2 epochs$"
has "best epoch said" "$T/err" "^kindling train: best epoch 1 \(val_loss [0-9.]+\)$"
has "best checkpoint named" "$T/out" "^best checkpoint $T/best.h5 \(epoch 1\)$"
has "test scored at the stop" "$T/err" "^epoch 3/10 .*test_acc"
"$CLI" inspect "$T/es.h5" --json >"$T/es.json"
"$CLI" inspect "$T/best.h5" --json >"$T/best.json"
py "$T/es.json" "$T/best.json" <<'PY' && ok || bad "--keep-best holds epoch 1's checkpoint, the run stopped at 3"
import json, sys
es, best = (json.load(open(p)) for p in sys.argv[1:3])
assert es["training"]["epoch"] == 3 and len(es["history"]) == 3
assert best["training"]["epoch"] == 1 and len(best["history"]) == 1
assert best["history"][0] == {**es["history"][0]}
PY
[[ ! -e "$T/es-epoch001.h5" && -s "$T/es-epoch002.h5" && -s "$T/es-epoch003.h5" ]] && ok ||
    bad "--keep-last 2: want es-epoch002.h5 and es-epoch003.h5 only, have: $(cd "$T" && ls es-epoch* 2>/dev/null | tr '\n' ' ')"
ep2=$("$CLI" inspect "$T/es-epoch002.h5" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["training"]["epoch"])')
[[ "$ep2" == 2 ]] && ok || bad "es-epoch002.h5 holds epoch $ep2"
ls "$T" | grep -q "tmp-" && bad "a temporary file was left: $(ls "$T" | grep tmp-)" || ok
# A resume with the same patience trains no further; without it, it goes on.
run "resume after early stopping" "$CLI" train --resume "$T/es.h5" --epochs 10 "${DATA[@]}" --val-split 0.2 \
    --patience 2 --min-delta 100
has "no further epoch" "$T/err" "^kindling train: early stopping after epoch 3 of 10"
grep -q "^epoch 4/10" "$T/err" && bad "the resumed run trained epoch 4 although its patience was spent" || ok
run "resume without patience" "$CLI" train --resume "$T/es.h5" --epochs 4 "${DATA[@]}" --val-split 0.2 -q
"$CLI" inspect "$T/es.h5" --json | "$PY" -c 'import json,sys; assert json.load(sys.stdin)["training"]["epoch"] == 4' &&
    ok || bad "a resume without --patience did not train epoch 4"
# On learnable data with min_delta 0 nothing stops early; without validation
# data the training loss is watched.
run "patience, no validation" "$CLI" train "${DATA[@]}" --epochs 3 --patience 1 --checkpoint "$T/tl.h5" --keep-best "$T/tlb.h5"
has "training loss watched" "$T/err" "^kindling train: best epoch 3 \(loss [0-9.]+\)$"
grep -q "early stopping" "$T/err" && bad "a run whose loss kept falling stopped early" || ok

# ---------------------------------------------------- --max-samples, warmup
run "max-samples" "$CLI" train "${DATA[@]}" --epochs 2 --max-samples 50 -q --checkpoint "$T/ms.h5" \
    --schedule constant --warmup-epochs 1 --lr 0.001
"$CLI" inspect "$T/ms.h5" --json >"$T/ms.json"
py "$T/ms.json" <<'PY' && ok || bad "--max-samples 50: 4 steps an epoch; --warmup-epochs 1: 4 warmup steps"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["training"]["step"] == 2 * 4  # ceil(50 / 16)
assert d["optimizer"]["warmup_steps"] == 4
# The rate after epoch 1 (the next step's) is the full one; warming up it was lr * (t + 1) / 4.
assert abs(d["history"][0]["learning_rate"] - 0.001) < 1e-15
PY
run "warmup-steps" "$CLI" train "${DATA[@]}" --epochs 1 -q --checkpoint "$T/ws.h5" --schedule constant --warmup-steps 40 \
    --lr 0.001
"$CLI" inspect "$T/ws.h5" --json | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
assert d["optimizer"]["warmup_steps"] == 40 and abs(d["history"][0]["learning_rate"] - 0.001 * 14 / 40) < 1e-15' &&
    ok || bad "--warmup-steps 40: after 13 steps the next rate is lr * 14 / 40"

# ------------------------------------------------------- predict --id-col
awk -F, 'BEGIN { OFS = "," } { print "row-" NR, $0 }' "$T/test.csv" >"$T/ids.csv"
run "predict --id-col" "$CLI" predict --model "$T/vc.h5" --csv "$T/ids.csv" --id-col 0 --label-col 1 -o "$T/ids.out"
run "predict without ids" "$CLI" predict --model "$T/vc.h5" --csv "$T/test.csv" -o "$T/plain.out"
head -1 "$T/ids.out" | grep -q "^id,class,p0," && ok || bad "predict --id-col: header"
[[ "$(tail -n +2 "$T/ids.out" | cut -d, -f1 | head -3 | tr '\n' ' ')" == "row-1 row-2 row-3 " ]] && ok ||
    bad "predict --id-col: ids not passed through in order"
cmp -s <(tail -n +2 "$T/ids.out" | cut -d, -f2-) <(tail -n +2 "$T/plain.out" | cut -d, -f2-) && ok ||
    bad "predict --id-col: the predictions differ from those without the id column"

# ----------------------------------------------------------------- plot
run "plot" "$CLI" plot "$T/vs.h5" -o "$T/curves.svg"
has "plot names its file" "$T/out" "^$T/curves.svg$"
py "$T/curves.svg" <<'PY' && ok || bad "plot: not an SVG with the loss, accuracy and learning-rate curves"
import sys, xml.etree.ElementTree as ET
ns = {"s": "http://www.w3.org/2000/svg"}
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "{http://www.w3.org/2000/svg}svg"
texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
for word in ("Loss", "Accuracy", "Learning rate", "training", "validation", "test", "best"):
    assert word in texts, word
lines = root.findall(".//s:polyline", ns)
# Training and validation in both panels and the learning rate: 4 epochs
# each; the test set, scored after epoch 3 (the first run's last) and 4.
assert sorted(len(l.get("points").split()) for l in lines) == [2, 2, 4, 4, 4, 4, 4], lines
PY
run "plot, default name" "$CLI" plot --model "$T/vs.h5"
[[ -s "$T/vs-curves.svg" ]] && ok || bad "plot without -o writes vs-curves.svg beside the checkpoint"
if command -v rsvg-convert >/dev/null; then
    rsvg-convert "$T/curves.svg" -o "$T/curves.png" && [[ -s "$T/curves.png" ]] && ok || bad "rsvg-convert cannot render the plot"
else
    echo "skip: rsvg-convert not installed (librsvg2-bin): the SVG is checked as XML only"
fi
"$CLI" plot "$T/vs.h5" -o - >"$T/stdout.svg" && grep -q "</svg>" "$T/stdout.svg" && ok || bad "plot -o - writes to stdout"
expect 2 "plot to .png" "$CLI" plot "$T/vs.h5" -o "$T/curves.png"
has "plot .png says what to do" "$T/err" "kindling draws SVG.*rsvg-convert"
expect 1 "plot a missing file" "$CLI" plot "$T/none.h5"

# ------------------------------------------------ checkpoint format version 1
V1="$SRC/tests/data/checkpoint_v1.h5"
awk 'BEGIN { srand(5); for (i = 0; i < 60; i++) { c = i % 3; l = c
             for (j = 0; j < 6; j++) l = l "," sprintf("%.3f", (j % 3 == c ? 0.8 : 0) + 0.3 * rand()); print l } }' >"$T/six.csv"
run "inspect a version 1 checkpoint" "$CLI" inspect "$V1" --json
py "$T/out" <<'PY' && ok || bad "version 1: history without validation figures"
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d["history"]) == 3 and all(e["val_loss"] is None and e["test_accuracy"] == 1 for e in d["history"])
assert d["optimizer"]["warmup_steps"] == 0
PY
run "resume a version 1 checkpoint" "$CLI" train --resume "$V1" --epochs 5 --train-csv "$T/six.csv" --val-split 0.25 \
    --checkpoint "$T/from_v1.h5" -q
py "$T/from_v1.h5" <<'PY' && ok || bad "the resumed version 1 run saves version 2 with its old and new epochs"
import h5py, math, sys
with h5py.File(sys.argv[1]) as f:
    assert int(f.attrs["format_version"]) == 2
    h = f["training/history"]
    cols = h.attrs["columns"]
    cols = (cols.decode() if isinstance(cols, bytes) else cols).split(",")
    rows = h[()]
    assert rows.shape == (5, 9)
    val = rows[:, cols.index("val_loss")]
    assert all(math.isnan(v) for v in val[:3]) and all(v > 0 for v in val[3:])
PY

# ------------------------------------------------------------ usage errors
expect 2 "keep-best without a checkpoint" "$CLI" train "${DATA[@]}" --keep-best "$T/b.h5"
has "keep-best says why" "$T/err" "--keep-best keeps copies of the checkpoint every epoch saves: give --checkpoint"
expect 2 "keep-best onto the checkpoint" "$CLI" train "${DATA[@]}" --checkpoint "$T/c.h5" --keep-best "$T/c.h5"
expect 2 "val-split out of range" "$CLI" train "${DATA[@]}" --val-split 1.5
has "val-split range" "$T/err" "--val-split: must be a number in \(0, 1\), got '1.5'"
expect 2 "val-split and a validation file" "$CLI" train "${DATA[@]}" --val-split 0.1 --val-csv "$T/val.csv"
expect 2 "metrics-every without metrics" "$CLI" train "${DATA[@]}" --metrics-every 5
expect 2 "both warmups" "$CLI" train "${DATA[@]}" --warmup-epochs 1 --warmup-steps 3
expect 2 "min-delta alone" "$CLI" train "${DATA[@]}" --min-delta 0.1
expect 2 "patience 0" "$CLI" train "${DATA[@]}" --patience 0
expect 2 "warmup as long as the cosine" "$CLI" train "${DATA[@]}" --epochs 2 --warmup-epochs 2
has "warmup too long says so" "$T/err" "warmup .* must be shorter than the cosine"
expect 1 "metrics into a missing directory" "$CLI" train "${DATA[@]}" --epochs 1 --metrics "$T/no/such/m.jsonl"
has "metrics path named" "$T/err" "--metrics $T/no/such/m.jsonl: cannot open it"
expect 2 "id-col on the label column" "$CLI" predict --model "$T/vc.h5" --csv "$T/ids.csv" --id-col 0
"$CLI" convert --csv "$T/test.csv" -o "$T/test.spool" >/dev/null
expect 2 "id-col on non-CSV data" "$CLI" predict --model "$T/vc.h5" --spool "$T/test.spool" --id-col 0
has "id-col names the format" "$T/err" "--id-col: only CSV data has an id column .*test.spool is spool data"
expect 1 "val-csv with the wrong width" "$CLI" train "${DATA[@]}" --val-csv "$T/six.csv"
has "val file named" "$T/err" "six.csv: samples have 6 features but the network expects 784"

finish
