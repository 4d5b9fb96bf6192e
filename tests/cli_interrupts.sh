#!/usr/bin/env bash
# Signals in the middle of saves: training that checkpoints every step,
# `convert` writing a spool and `predict --output` are interrupted with
# SIGINT or SIGTERM at random moments. Every run must end with the signal's
# status (130, 143), leave no temporary beside the output, and leave a
# checkpoint that is either absent or complete (it loads). Without the
# handler, 3 in 5 interrupted saves left "PATH.tmp-<host>-<pid>" behind.
# Preemption: SIGTERM (or SIGINT) stops training at the next step boundary
# with a checkpoint of that position, and the resumed run ends with the
# unbroken run's weights, bit for bit; a second signal ends it at once.
set -u

CLI=${KD_CLI:?KD_CLI must name the kindling binary}
T=$(mktemp -d "${TMPDIR:-/tmp}/kd_cli_interrupts.XXXXXX")
trap 'rm -rf "$T"' EXIT

source "$(dirname "$0")/lib_cli.sh"
ROUNDS=${KD_INTERRUPT_ROUNDS:-6}

make_csv "$T/train.csv" 200 1

# interrupt NAME SIGNAL MIN_MS SPAN_MS COMMAND...: start COMMAND, send SIGNAL
# after MIN_MS + a random part of SPAN_MS milliseconds, wait; $? of COMMAND in
# $got. (A background job of a script starts with SIGINT ignored; env
# --default-signal gives it the disposition a terminal's Ctrl-C meets.)
interrupt() {
    local name=$1 sig=$2 min=$3 span=$4
    shift 4
    env --default-signal=INT,TERM "$@" >"$T/out" 2>"$T/err" &
    local pid=$!
    local ms=$((min + RANDOM % span))
    sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
    kill "-$sig" "$pid" 2>/dev/null
    wait "$pid"
    got=$?
}
no_temporaries() {
    local left
    left=$(find "$T" -name '*.tmp*' | head -3)
    if [ -z "$left" ]; then ok; else bad "$1: temporaries left: $left"; rm -f $left; fi
}
status_is() { # NAME WANT: the run ended with WANT (the runs last longer than the delays)
    if [ "$got" -eq "$2" ]; then ok; else bad "$1: exit $got, wanted $2"; sed 's/^/    /' "$T/err" | head -3; fi
}

for round in $(seq "$ROUNDS"); do
    for sig in INT TERM; do
        want=$((128 + $(kill -l "$sig")))
        rm -f "$T/ck.h5"
        # One save per step: most of the run is spent saving.
        interrupt "train $sig $round" "$sig" 300 1500 "$CLI" train --net mlp --epochs 200 --batch-size 10 --quiet \
            --train-csv "$T/train.csv" --checkpoint "$T/ck.h5" --checkpoint-every 1
        status_is "train, SIG$sig, round $round" "$want"
        no_temporaries "train, SIG$sig, round $round"
        if [ -e "$T/ck.h5" ]; then
            "$CLI" inspect "$T/ck.h5" >/dev/null 2>&1 && ok || bad "train, SIG$sig, round $round: the checkpoint does not load"
        fi
    done
done

# Preemption: stop, save, resume exactly (constant schedule, seed fixed).
C=(train --net mlp --batch-size 10 --optimizer momentum --lr 0.01 --schedule constant --train-csv "$T/train.csv" -q)
t0=$(date +%s%N)
"$CLI" "${C[@]}" --epochs 150 --checkpoint "$T/full.h5" >/dev/null 2>&1 || bad "the unbroken run"
ms=$((($(date +%s%N) - t0) / 1000000)) # signals land at 20-70 % of this, however fast the machine
same_weights() { # A B: every tensor equal (ckpt_diff prints the largest difference)
    [ "$("$KD_PYTHON" "$(dirname "$0")/mpi/ckpt_diff.py" "$1" "$2")" = "0.0" ]
}
for sig in TERM INT; do
    want=$((128 + $(kill -l "$sig")))
    rm -f "$T/part.h5"
    interrupt "preempted by $sig" "$sig" $((ms / 5)) $((ms / 2)) "$CLI" "${C[@]}" --epochs 150 --checkpoint "$T/part.h5"
    status_is "preempted by SIG$sig" "$want"
    has "SIG$sig: where it stopped" "$T/err" "stopped by SIG$sig at epoch [0-9]+ of 150, step [0-9]+; .*part.h5 holds this position"
    no_temporaries "preempted by SIG$sig"
    run "resume after SIG$sig" "$CLI" train --epochs 150 --resume "$T/part.h5" --train-csv "$T/train.csv" -q
    same_weights "$T/full.h5" "$T/part.h5" && ok || bad "the run resumed after SIG$sig differs from the unbroken run"
done
# A second signal does not wait for the step boundary's save.
rm -f "$T/part.h5"
env --default-signal=INT,TERM "$CLI" "${C[@]}" --epochs 150 --checkpoint "$T/part.h5" >"$T/out" 2>"$T/err" &
pid=$!
sleep 0.5
kill -TERM "$pid" 2>/dev/null
kill -TERM "$pid" 2>/dev/null
wait "$pid"
got=$?
status_is "two SIGTERMs" 143
no_temporaries "two SIGTERMs"

# convert and predict --output, interrupted while they write.
for i in $(seq 80); do cat "$T/train.csv"; done >"$T/big.csv" # 16000 rows: seconds to convert or predict
"$CLI" train --net mlp --epochs 1 --quiet --train-csv "$T/train.csv" --checkpoint "$T/model.h5" >/dev/null 2>&1 ||
    bad "training the model for predict"
for round in $(seq "$ROUNDS"); do
    for sig in INT TERM; do
        want=$((128 + $(kill -l "$sig")))
        interrupt "convert $sig $round" "$sig" 50 900 "$CLI" convert --csv "$T/big.csv" -o "$T/big.spool" -q
        status_is "convert, SIG$sig, round $round" "$want"
        no_temporaries "convert, SIG$sig, round $round"
        rm -f "$T/big.spool"
        interrupt "predict $sig $round" "$sig" 50 900 "$CLI" predict --model "$T/model.h5" --csv "$T/big.csv" \
            --output "$T/pred.csv"
        status_is "predict, SIG$sig, round $round" "$want"
        no_temporaries "predict, SIG$sig, round $round"
        rm -f "$T/pred.csv"
    done
done

finish
