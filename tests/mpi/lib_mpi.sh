# Sourced by tests/mpi/mpi_*.sh: environment, a scratch directory, small
# data sets and assertions. Needs KD_CLI (the kindling binary); KD_MPIEXEC
# defaults to mpirun.
set -u
: "${KD_CLI:?KD_CLI must name the kindling binary}"
: "${KD_PYTHON:?KD_PYTHON must name the Python of the project environment (made by ci/install-deps.sh)}"
KD_MPIEXEC=${KD_MPIEXEC:-mpirun}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kd_mpi_test.XXXXXX")
PASS=0
FAIL=0
trap 'rm -rf "$WORK"' EXIT

pass() { PASS=$((PASS + 1)); echo "ok: $*"; }
fail() { FAIL=$((FAIL + 1)); echo "FAIL: $*" >&2; }
check() { # check "description" command...
    local what=$1; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
finish() { echo "$PASS passed, $FAIL failed"; [ "$FAIL" -eq 0 ]; }

kd_mpirun() { "$KD_MPIEXEC" --oversubscribe "$@"; }

# Three noisy blobs in 10-D as CSV (label first): make_blobs FILE N SEED
make_blobs() {
    "$KD_PYTHON" - "$1" "$2" "$3" <<'PY'
import sys
import numpy as np
path, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(seed)
y = np.arange(n) % 3
x = rng.uniform(-0.5, 0.5, (n, 10)) + (np.arange(10)[None, :] % 3 == y[:, None]) * 1.0
np.savetxt(path, np.column_stack([y, x]), fmt=["%d"] + ["%.6f"] * 10, delimiter=",")
PY
}

# A network without random layers: a worker's share of a batch computes
# exactly what the merged batch computes.
make_spec() {
    cat > "$1" <<'JSON'
{"input": [10], "layers": [{"type": "dense", "units": 16}, {"type": "tanh"},
 {"type": "dense", "units": 3}, {"type": "softmax"}]}
JSON
}

ckpt_diff() { "$KD_PYTHON" "$HERE/ckpt_diff.py" "$1" "$2"; }
ckpt_attr() { "$KD_PYTHON" "$HERE/ckpt_diff.py" --attr "$1" "$2"; }
# less_than A B: A < B as floats
less_than() { "$KD_PYTHON" -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$1" "$2"; }
