#!/usr/bin/env bash
# Builds the fuzz harnesses, replays every saved crash input under
# fuzz/regressions/<harness>/, then fuzzes each harness for a bounded time.
#
#   bash fuzz/run.sh [harness ...]
#
# Default: every fuzz/fuzz_*.c except fuzz_*_raw, which feed corrupt files
# to a third-party parser (libhdf5) that crashes and hangs on them within
# seconds; name one to run it (fuzz/README.md).
#
# Environment:
#   FUZZ_SECONDS    seconds of fuzzing per harness (default 30; 0 = replay only)
#   KD_FUZZ_BUILD   build and work directory (default build-fuzz/)
#   KD_FUZZ_SKIP    harnesses to leave out, space separated
#
# The seed corpora in fuzz/corpus/ are read, never written: new inputs go to
# $KD_FUZZ_BUILD/corpus/<harness>/ and crash inputs to
# $KD_FUZZ_BUILD/artifacts/<harness>/. Exits non-zero if any regression input
# or any fuzzing run crashed, leaked, timed out or ran out of memory.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${KD_FUZZ_BUILD:-$root/build-fuzz}"
secs="${FUZZ_SECONDS:-30}"
skip=" ${KD_FUZZ_SKIP:-} "

bash "$root/fuzz/build.sh"

# A hostile header may ask for gigabytes: such allocations fail (NULL, so
# the library's out-of-memory paths run) instead of ending the run, while
# libFuzzer still reports anything that gets past that as an OOM.
export ASAN_OPTIONS="allocator_may_return_null=1:max_allocation_size_mb=512:detect_leaks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export OPENBLAS_NUM_THREADS=1
export TMPDIR="$out/tmp" # the checkpoint harness's temporary files
mkdir -p "$TMPDIR"
common=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024)

if [ $# -gt 0 ]; then
  harnesses=("$@")
else
  harnesses=()
  for h in "$root"/fuzz/fuzz_*.c "$root"/fuzz/fuzz_*.py; do
    case "$h" in *_raw.c) continue ;; esac
    h="$(basename "$h")"
    harnesses+=("${h%.*}")
  done
fi
# Python harnesses (atheris) run in the project's venv.
source "$root/ci/venv.sh"

failed=()
for h in "${harnesses[@]}"; do
  if [[ "$skip" == *" $h "* ]]; then
    echo "== $h: skipped (KD_FUZZ_SKIP)"
    continue
  fi
  if [ -f "$root/fuzz/$h.py" ]; then
    bin=("$KD_PYTHON" "$root/fuzz/$h.py")
  else
    bin=("$out/$h")
    [ -x "${bin[0]}" ] || { echo "fuzz/run.sh: no harness $h" >&2; exit 2; }
  fi
  mkdir -p "$out/corpus/$h" "$out/artifacts/$h"
  dict=()
  [ -f "$root/fuzz/dicts/$h.dict" ] && dict=(-dict="$root/fuzz/dicts/$h.dict")

  regs=()
  if [ -d "$root/fuzz/regressions/$h" ]; then
    while IFS= read -r -d '' f; do regs+=("$f"); done \
      < <(find "$root/fuzz/regressions/$h" -type f ! -name '*.md' -print0 | sort -z)
  fi
  if [ ${#regs[@]} -gt 0 ]; then
    echo "== $h: replaying ${#regs[@]} regression inputs"
    if ! "${bin[@]}" "${common[@]}" "${regs[@]}" >"$out/$h.regressions.log" 2>&1; then
      tail -n 40 "$out/$h.regressions.log"
      echo "== $h: REGRESSION input crashes again (log: $out/$h.regressions.log)"
      failed+=("$h(regression)")
      continue
    fi
  fi

  [ "$secs" -gt 0 ] || continue
  echo "== $h: fuzzing for ${secs}s"
  if "${bin[@]}" "${common[@]}" "${dict[@]}" -max_total_time="$secs" -print_final_stats=1 \
       -artifact_prefix="$out/artifacts/$h/" "$out/corpus/$h" "$root/fuzz/corpus/$h" \
       >"$out/$h.log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$out/$h.log" | tail -n 2 || true
  else
    tail -n 60 "$out/$h.log"
    echo "== $h: CRASH (log: $out/$h.log; input saved in $out/artifacts/$h/)"
    failed+=("$h")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz/run.sh: failed: ${failed[*]}"
  exit 1
fi
echo "fuzz/run.sh: all harnesses passed"
