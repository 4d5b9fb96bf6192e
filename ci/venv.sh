# Sourced by ci/*.sh, fuzz/run.sh and bench/*.sh: the project's Python
# environment. Every Python call of the tests and scripts goes through
# $KD_PYTHON, never a bare python3 (a new machine's python3 has no numpy).
VENV="${KD_VENV:-/opt/kindling-venv}"
KD_PYTHON="$VENV/bin/python"
export KD_VENV="$VENV" KD_PYTHON
