#!/bin/bash
# A rank killed mid-training (kill -9): a worker in async mode, a server in
# async mode, a worker in sync mode. mpirun must end within 60 s with a
# non-zero exit and a message naming the killed rank, and no process of the
# run may be left behind.
source "$(dirname "$0")/lib_mpi.sh"

# Long enough that training is still running when the rank is killed.
"$KD_PYTHON" - "$WORK/d.csv" <<'PY'
import sys
import numpy as np
rng = np.random.default_rng(3)
n = 20000
y = np.arange(n) % 3
x = rng.uniform(-0.5, 0.5, (n, 10)) + (np.arange(10)[None, :] % 3 == y[:, None]) * 1.0
np.savetxt(sys.argv[1], np.column_stack([y, x]), fmt=["%d"] + ["%.4f"] * 10, delimiter=",")
PY
make_spec "$WORK/spec.json"

# PID of world rank R among this run's processes (their argv names $WORK).
rank_pid() {
    local r=$1 pid
    for pid in $(pgrep -f -- "--train-csv $WORK/d.csv"); do
        if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$r"; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

# kill_case NAME RANK NP train-flags...
kill_case() {
    local name=$1 victim=$2 np=$3; shift 3
    local ck="$WORK/ck_$victim.h5"
    rm -f "$ck"
    local t0=$SECONDS
    timeout 60 "$KD_MPIEXEC" --oversubscribe -np "$np" "$KD_CLI" train --net "$WORK/spec.json" \
        --train-csv "$WORK/d.csv" --epochs 1000 --batch-size 8 --checkpoint "$ck" --checkpoint-every 50 -q "$@" \
        > "$WORK/out.txt" 2>&1 &
    local launcher=$!
    # Training is under way once the first periodic checkpoint exists.
    local waited=0
    while [ ! -e "$ck" ] && [ $waited -lt 300 ] && kill -0 $launcher 2>/dev/null; do sleep 0.1; waited=$((waited + 1)); done
    local pid
    pid=$(rank_pid "$victim") || { fail "$name: rank $victim not found (training never started?)"; wait $launcher; cat "$WORK/out.txt" >&2; return; }
    kill -9 "$pid"
    local rc=0
    wait $launcher || rc=$?
    local dt=$((SECONDS - t0))
    if [ $rc -ne 0 ] && [ $rc -ne 124 ]; then pass "$name: mpirun exited $rc after ${dt}s"; else fail "$name: mpirun exit $rc after ${dt}s"; fi
    if grep -q "rank $victim " "$WORK/out.txt"; then
        pass "$name: the message names rank $victim ($(grep -m1 "rank $victim " "$WORK/out.txt" | sed 's/^ *//'))"
    else
        fail "$name: no message names rank $victim:"; sed 's/^/    /' "$WORK/out.txt" >&2
    fi
    sleep 1
    local left
    left=$(pgrep -f -- "--train-csv $WORK/d.csv" | tr '\n' ' ')
    if [ -z "$left" ]; then pass "$name: no process left behind"; else fail "$name: processes left: $left"; kill -9 $left 2>/dev/null; fi
}

kill_case "async, worker killed" 2 4 --dist async --servers 1
kill_case "async, server killed" 0 4 --dist async --servers 2
kill_case "sync, worker killed" 1 3 --dist sync
finish
