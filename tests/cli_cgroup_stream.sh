#!/usr/bin/env bash
# A data set larger than a rank's memory, for real: inside a memory cgroup
# whose limit is below the data's float32 size, `kindling convert` streams
# IDX to a spool file and training on the (memory-mapped) spool succeeds,
# while loading the same IDX files is refused with a message naming the
# cgroup limit. Needs a writable memory cgroup (v1 or v2) as root; skipped
# (exit 77) otherwise, and in sanitizer builds (ASan's shadow memory does
# not fit such a limit).
set -u

CLI=${KD_CLI:?KD_CLI must name the kindling binary}
: "${KD_PYTHON:?KD_PYTHON must name the Python of the project environment (made by ci/install-deps.sh)}"
if ldd "$CLI" 2>/dev/null | grep -q libasan || nm "$CLI" 2>/dev/null | grep -q __asan_init; then
    echo "SKIP: $CLI is a sanitizer build"
    exit 77
fi
LIMIT_MB=64
CG=""
if [ -w /sys/fs/cgroup/memory ] && [ -e /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
    CG=/sys/fs/cgroup/memory/kd_stream_$$ # v1
    mkdir "$CG" 2>/dev/null && echo $((LIMIT_MB << 20)) >"$CG/memory.limit_in_bytes" 2>/dev/null || CG=""
elif [ -w /sys/fs/cgroup ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    CG=/sys/fs/cgroup/kd_stream_$$ # v2
    mkdir "$CG" 2>/dev/null && echo $((LIMIT_MB << 20)) >"$CG/memory.max" 2>/dev/null || CG=""
fi
if [ -z "$CG" ]; then
    echo "SKIP: no writable memory cgroup (needs root and cgroup v1 memory or v2 with the memory controller)"
    exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/kd_cgroup.XXXXXX")
cleanup() {
    rm -rf "$T"
    rmdir "$CG" 2>/dev/null
}
trap cleanup EXIT
export OPENBLAS_NUM_THREADS=1 KD_BLAS_AUTO=0

passed=0
failed=0
check() { # check NAME CONDITION-RESULT
    if [ "$2" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $1"; sed 's/^/    /' "$T/err" | tail -5; fi
}
# in_cgroup COMMAND...: run in the limited cgroup, stdout/stderr to $T/out, $T/err.
in_cgroup() {
    bash -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CG" "$@" >"$T/out" 2>"$T/err"
}

# 20000 samples of 1x32x32 uint8: 19.5 MiB as IDX, 78 MiB as float32 > 64 MiB.
"$KD_PYTHON" - "$T" <<'PY'
import struct, sys, random
t, n = sys.argv[1], 20000
random.seed(1)
with open(f"{t}/images.idx", "wb") as f:
    f.write(struct.pack(">IIII", 0x0803, n, 32, 32))
    for i in range(n):
        c = i % 4
        row = bytearray(random.getrandbits(6) for _ in range(1024))
        for j in range(c * 256, c * 256 + 256):
            row[j] += 150
        f.write(row)
with open(f"{t}/labels.idx", "wb") as f:
    f.write(struct.pack(">II", 0x0801, n) + bytes(i % 4 for i in range(n)))
PY
echo '{"input": [1024], "layers": [{"type": "dense", "units": 4}, {"type": "softmax"}]}' >"$T/net.json"

in_cgroup "$CLI" train --net "$T/net.json" --train-images "$T/images.idx" --train-labels "$T/labels.idx" --epochs 1
rc=$?
grep -qE "needs 78\.[0-9] MiB" "$T/err" && grep -q "cgroup" "$T/err" && grep -q "kindling convert" "$T/err"
check "IDX load in a ${LIMIT_MB} MiB cgroup is refused, naming the cgroup limit (exit $rc)" $(( rc == 1 ? $? : 1 ))

in_cgroup "$CLI" convert --images "$T/images.idx" --labels "$T/labels.idx" -o "$T/data.spool"
check "convert streams IDX to a spool inside the cgroup" $?
size=$(stat -c %s "$T/data.spool" 2>/dev/null || echo 0)
check "the spool ($((size >> 20)) MiB) is larger than the limit" $(( size > (LIMIT_MB << 20) ? 0 : 1 ))

# Let the training run read the file through its own (limited) page cache.
"$KD_PYTHON" -c "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)" "$T/data.spool"
in_cgroup "$CLI" train --net "$T/net.json" --train-spool "$T/data.spool" --epochs 1 --batch-size 64 --lr 0.01
rc=$?
acc=$(grep -o 'final train accuracy [0-9.]*' "$T/out" | awk '{print $4}')
check "training on the mapped spool in the cgroup finishes (exit $rc)" $rc
check "and learns (train accuracy ${acc:-none} >= 0.9)" "$("$KD_PYTHON" -c "print(0 if float('${acc:-0}') >= 0.9 else 1)")"
peak=$(grep -o 'peak RSS [0-9.]* MiB' "$T/err" | awk '{print $3}')
echo "limit ${LIMIT_MB} MiB, spool $((size >> 20)) MiB, training peak RSS ${peak:-?} MiB (mapped pages reclaimed as needed)"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
