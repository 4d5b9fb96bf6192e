#!/bin/bash
# Start-up errors of distributed runs through the CLI: ranks launched with
# different settings (an MPMD command line) fail at start-up naming the
# setting and the ranks; too few workers, more servers than parameters and
# bad flags give clear errors; divergence stops every rank naming the epoch
# and step; every case ends quickly with a non-zero exit.
source "$(dirname "$0")/lib_mpi.sh"

make_blobs "$WORK/d.csv" 120 2
make_spec "$WORK/spec.json"
cat > "$WORK/tiny.json" <<'JSON'
{"input": [1], "layers": [{"type": "dense", "units": 2, "bias": false}, {"type": "softmax"}]}
JSON
# Two parameters (1 input, 2 units, no bias), so its own one-feature data.
"$KD_PYTHON" -c "print('\n'.join(['0,0.5', '1,-0.5'] * 10))" > "$WORK/tiny.csv"
ARGS=(--net "$WORK/spec.json" --train-csv "$WORK/d.csv" --epochs 1 -q)

# run_fails NAME EXPECTED_TEXT mpirun-args... : non-zero within 60 s, message present.
run_fails() {
    local name=$1 text=$2; shift 2
    local t0=$SECONDS rc=0
    timeout 60 "$@" > "$WORK/out.txt" 2>&1 || rc=$?
    local dt=$((SECONDS - t0))
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -qF -- "$text" "$WORK/out.txt"; then
        pass "$name: exit $rc in ${dt}s with '$text'"
    else
        fail "$name: exit $rc in ${dt}s, wanted the message '$text'; output:"
        sed 's/^/    /' "$WORK/out.txt" >&2
    fi
}

run_fails "MPMD batch sizes 32 / 64" "ranks disagree on the batch size: 32 on ranks 0, 1; 64 on rank 2" \
    "$KD_MPIEXEC" --oversubscribe -np 2 "$KD_CLI" train "${ARGS[@]}" --dist sync --batch-size 32 : \
              -np 1 "$KD_CLI" train "${ARGS[@]}" --dist sync --batch-size 64
check "the mismatch is reported once, not by every rank" test "$(grep -c 'disagree' "$WORK/out.txt")" = 1

run_fails "MPMD learning rates" "ranks disagree on the optimizer settings" \
    "$KD_MPIEXEC" --oversubscribe -np 1 "$KD_CLI" train "${ARGS[@]}" --dist async --servers 1 --lr 0.1 : \
              -np 2 "$KD_CLI" train "${ARGS[@]}" --dist async --servers 1 --lr 0.2

run_fails "MPMD server counts" "ranks disagree on the server count (--servers): 1 on ranks 0, 1; 2 on rank 2" \
    "$KD_MPIEXEC" --oversubscribe -np 2 "$KD_CLI" train "${ARGS[@]}" --dist async --servers 1 : \
              -np 1 "$KD_CLI" train "${ARGS[@]}" --dist async --servers 2

run_fails "no worker left (N - S < 1)" "the number of ranks minus servers must be >= 1" \
    "$KD_MPIEXEC" --oversubscribe -np 2 "$KD_CLI" train "${ARGS[@]}" --dist async --servers 2

run_fails "more servers than parameters" "3 servers for 2 parameters:" \
    "$KD_MPIEXEC" --oversubscribe -np 4 "$KD_CLI" train --net "$WORK/tiny.json" --train-csv "$WORK/tiny.csv" --epochs 1 -q \
    --dist async --servers 3 --batch-size 4
run_fails "flag: --servers with sync" "--servers" "$KD_CLI" train "${ARGS[@]}" --dist sync --servers 1
run_fails "flag: --max-staleness without async" "--max-staleness" "$KD_CLI" train "${ARGS[@]}" --max-staleness 2
run_fails "flag: --max-staleness -2" "--max-staleness" "$KD_CLI" train "${ARGS[@]}" --dist async --max-staleness -2
run_fails "flag: --dist bogus" "--dist" "$KD_CLI" train "${ARGS[@]}" --dist bogus
# A set-up failure on every rank (bad spec) ends all ranks cleanly, without MPI_Abort.
run_fails "bad spec on every rank" "is neither a spec file nor a preset" \
    "$KD_MPIEXEC" --oversubscribe -np 3 "$KD_CLI" train --net nosuchnet --train-csv "$WORK/d.csv" --dist sync
check "set-up failures do not abort" bash -c "! grep -q MPI_ABORT '$WORK/out.txt'"

# A failure on one rank mid-run (the writer cannot save: its directory is
# removed once the first checkpoint is there; the destination was fine when
# checked at the start): that rank names itself and ends the job.
mkdir -p "$WORK/no/such/dir"
"$KD_MPIEXEC" --oversubscribe -np 3 "$KD_CLI" train --net "$WORK/spec.json" --train-csv "$WORK/d.csv" --epochs 5000 -q \
    --dist async --servers 1 --checkpoint "$WORK/no/such/dir/c.h5" > "$WORK/out.txt" 2>&1 &
pid=$!
for i in $(seq 300); do [ -e "$WORK/no/such/dir/c.h5" ] && break; sleep 0.1; done
# Moved away in one rename: an `rm -rf` raced the writer's next temporary
# and could leave the directory in place (then the run just finished).
mv "$WORK/no" "$WORK/gone"
timeout 60 tail --pid="$pid" -f /dev/null
wait "$pid"
rc=$?
check "writer cannot save its checkpoint: exit $rc, the writer names itself" \
    bash -c "[ $rc -ne 0 ] && grep -qF 'worker 0 (rank 1): saving checkpoint' '$WORK/out.txt'"
# Open MPI's own "MPI_ABORT was invoked on rank 1" help text is sometimes lost
# in 4.1.4 (show_help unpack error), so only the job's end is checked here.
check "... and no rank of that job is left running" bash -c "! pgrep -f '$WORK/[n]o/such/dir' >/dev/null"
rm -rf "$WORK/gone"

# Without mpirun the program is a one-rank world: sync training just works.
# No leak check here: in an MPI singleton LeakSanitizer's stop-the-world
# tracer sometimes crashes at exit ("Tracer caught signal 11", seen in about
# one CI run in four) on Open MPI's own threads; the same run under mpirun
# is leak-checked by the other cases.
check "--dist sync as a singleton" env ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" "$KD_CLI" train "${ARGS[@]}" --dist sync
# The writer checks the checkpoint's destination before anything trains.
run_fails "sync into a missing directory" "no_such_dir: No such file or directory" \
    "$KD_MPIEXEC" --oversubscribe -np 2 "$KD_CLI" train "${ARGS[@]}" --dist sync --checkpoint "$WORK/no_such_dir/x.h5"
check "the destination is reported by the writer alone" test "$(grep -c 'no_such_dir' "$WORK/out.txt")" = 1
check "no epoch ran" bash -c "! grep -q 'saving checkpoint' '$WORK/out.txt'"

# Divergence under mpirun: the worker that meets it names the epoch and the
# step and suggests a lower learning rate; no diverged checkpoint is saved.
# (ReLU layers: tanh would saturate instead of overflowing.)
cat > "$WORK/relu.json" <<'JSON'
{"input": [10], "layers": [{"type": "dense", "units": 16}, {"type": "relu"}, {"type": "dense", "units": 16},
 {"type": "relu"}, {"type": "dense", "units": 3}, {"type": "softmax"}]}
JSON
rm -f "$WORK/div.h5"
run_fails "sync run diverging at lr 1e6" "try a lower learning rate" \
    "$KD_MPIEXEC" --oversubscribe -np 2 "$KD_CLI" train --net "$WORK/relu.json" --train-csv "$WORK/d.csv" --epochs 3 -q \
    --dist sync --optimizer sgd --lr 1e6 --checkpoint "$WORK/div.h5" --checkpoint-every 1
check "the divergence names the epoch and step" grep -qE "epoch [0-9]+, step [0-9]+" "$WORK/out.txt"
if [ -e "$WORK/div.h5" ]; then
    check "the checkpoint left behind predates the divergence" "$KD_CLI" eval --model "$WORK/div.h5" --csv "$WORK/d.csv"
fi

finish
