#!/usr/bin/env bash
# Configure and build into $1 (default build/) with extra CMake flags after it.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}"
shift || true
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DKINDLING_WERROR=ON "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
