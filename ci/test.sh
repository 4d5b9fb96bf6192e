#!/usr/bin/env bash
# The whole test suite: install dependencies, build (Release and an
# ASan+UBSan build), run every C test with ctest, the fuzzers, and the
# Python tests with pytest. Every stage runs even when an earlier one
# failed; a summary of the failed stages ends the output, and the exit
# status is non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
source ci/venv.sh
bash ci/install-deps.sh || { echo "ci/test: installing the dependencies failed; nothing else can run" >&2; exit 1; }
export OPENBLAS_NUM_THREADS=1
# From here on a bare python3 or python fails loudly (ci/no-bare-python):
# tests and scripts must use $KD_PYTHON, as on a new machine whose system
# Python has no numpy or h5py.
export PATH="$PWD/ci/no-bare-python:$PATH"

failed=()
# stage NAME COMMAND...: run one stage, remember it if it fails.
stage() {
  local name=$1
  shift
  echo "== $name"
  local t0=$SECONDS
  if "$@"; then
    echo "== $name: passed ($((SECONDS - t0)) s)"
  else
    echo "== $name: FAILED (exit $?, $((SECONDS - t0)) s)"
    failed+=("$name")
  fi
}

stage "build (Release, -Werror)" bash ci/build.sh build
stage "ctest (Release)" ctest --test-dir build --output-on-failure -j2

stage "build (ASan + UBSan)" bash ci/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DKINDLING_SANITIZE=ON
export UBSAN_OPTIONS=print_stacktrace=1
# The long accuracy runs stay in the Release pass.
stage "ctest (ASan + UBSan)" env ASAN_OPTIONS=detect_leaks=1 \
  ctest --test-dir build-asan --output-on-failure -j2 -E 'test_fashion_mnist|^mpi_'
# Open MPI keeps allocations until exit; only its libraries are suppressed.
stage "ctest MPI (ASan + UBSan)" env ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0 \
  LSAN_OPTIONS="suppressions=$PWD/tests/mpi/lsan.supp" OMPI_MCA_mca_base_component_disable_dlclose=1 \
  ctest --test-dir build-asan --output-on-failure -R '^mpi_' -E 'mpi_cli_async_fmnist'

stage "fuzz (regression inputs, then each harness for a bounded time)" \
  env FUZZ_SECONDS="${FUZZ_SECONDS:-20}" bash fuzz/run.sh

stage "pytest" env KD_LIB="$PWD/build/libkindling.so" KD_CLI="$PWD/build/kindling" \
  "$KD_PYTHON" -m pytest -q tests/python
# A Spark standalone master and two workers whose executors run only the
# installed kindling-spark wheel (built here by CMake through scikit-build-core).
stage "Spark standalone cluster (the kindling-spark wheel)" bash tests/cluster/standalone.sh

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "ci/test: ${#failed[@]} stage(s) failed:"
  printf '  - %s\n' "${failed[@]}"
  exit 1
fi
echo "ci/test: every stage passed"
