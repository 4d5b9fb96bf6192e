#!/usr/bin/env bash
# Install everything Kindling needs on Debian 12 (run as root). Idempotent:
# packages already present and a Python environment already set up are kept.
set -euo pipefail

APT_PACKAGES=(build-essential cmake pkg-config libopenblas-dev libhdf5-dev hdf5-tools clang libclang-rt-14-dev valgrind
              libcjson-dev zlib1g-dev dataset-fashion-mnist openmpi-bin libopenmpi-dev
              python3 python3-venv python3-pip librsvg2-bin openjdk-17-jdk-headless)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ci/install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# PySpark needs a Java runtime (17 on Debian 12); keep any Java already on PATH.
if ! command -v java >/dev/null 2>&1; then
  echo "ci/install-deps: installing a Java runtime for PySpark"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq default-jre-headless >/dev/null
fi

# Python tools in their own virtual environment (Debian's Python refuses
# system-wide pip installs). torch is only a test reference (CPU use);
# pandas and matplotlib are optional for users (model.history as a
# DataFrame, model.plot_history()), installed here so the tests cover them.
# scikit-build-core is the PEP 517 backend of the kindling-spark wheel
# (spark-barrier/pyproject.toml), used without build isolation in CI.
source "$(dirname "$0")/venv.sh"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import numpy, h5py, pytest, torch, pyspark, pyarrow, atheris, pandas, matplotlib, scikit_build_core" 2>/dev/null; then
  echo "ci/install-deps: installing Python packages into $VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q numpy h5py pytest torch pyspark pyarrow atheris "pandas>=2.2,<3" matplotlib scikit-build-core
fi
