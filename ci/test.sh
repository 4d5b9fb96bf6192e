#!/usr/bin/env bash
# The whole test suite: install dependencies, build (Release and an
# ASan+UBSan build), run every C test with ctest and the Python tests with
# pytest. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install-deps.sh
VENV="${KD_VENV:-/opt/kindling-venv}"
export OPENBLAS_NUM_THREADS=1

echo "== build (Release, -Werror)"
bash ci/build.sh build
echo "== ctest (Release)"
(cd build && ctest --output-on-failure -j2)

echo "== build (ASan + UBSan)"
bash ci/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DKINDLING_SANITIZE=ON
echo "== ctest (ASan + UBSan; the long accuracy runs stay in the Release pass)"
export UBSAN_OPTIONS=print_stacktrace=1
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j2 -E 'test_fashion_mnist|^mpi_')
# Open MPI keeps allocations until exit; only its libraries are suppressed.
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0 \
   LSAN_OPTIONS="suppressions=$PWD/../tests/mpi/lsan.supp" OMPI_MCA_mca_base_component_disable_dlclose=1 \
   ctest --output-on-failure -R '^mpi_' -E 'mpi_cli_async_fmnist')

echo "== fuzz (regression inputs, then each harness for a bounded time)"
FUZZ_SECONDS=${FUZZ_SECONDS:-20} bash fuzz/run.sh

echo "== pytest"
export KD_LIB="$PWD/build/libkindling.so" KD_CLI="$PWD/build/kindling"
"$VENV/bin/python" -m pytest -q tests/python

