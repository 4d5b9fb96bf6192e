#!/usr/bin/env bash
# A real Spark standalone cluster on this machine, with executors that see
# only the installed kindling-spark wheel:
#   1. build the wheel (spark-barrier/pyproject.toml: scikit-build-core + CMake);
#   2. a fresh venv for the executors and the driver: the wheel, numpy,
#      pyarrow and pandas (pyspark itself comes from the Spark distribution,
#      as on any cluster); no KINDLING_CLI / KINDLING_LIB, no PYTHONPATH;
#   3. a master and two workers from the pyspark distribution (spark-class),
#      each worker with its own work directory, on free ports;
#   4. spark-submit --master spark://... --total-executor-cores 3
#      --executor-cores 1 of tests/cluster/seed_flow.py (the seed's flow:
#      fit on LabeledPoints, save(sc, path), load(sc, path), broadcast,
#      predict in mapPartitions, accuracy; it asserts where Kindling comes
#      from on the driver and every executor), of examples/fashion_mnist_spark.py,
#      and of a fit whose executors have no Open MPI on PATH (a clear error
#      naming the host);
#   5. everything started here is stopped by PID on exit, failed or not.
# Usage: tests/cluster/standalone.sh [WORKDIR]   (default build-cluster/)
# Env: KD_CLUSTER_TRAIN_ROWS, KD_CLUSTER_EPOCHS (small by default: 2 cores).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
source "$REPO/ci/venv.sh"
WORK=$(mkdir -p "${1:-$REPO/build-cluster}" && cd "${1:-$REPO/build-cluster}" && pwd)
SPARK_HOME=$("$KD_PYTHON" -c "import os, pyspark; print(os.path.dirname(pyspark.__file__))")
export SPARK_HOME
DATA=${KD_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
TRAIN_ROWS=${KD_CLUSTER_TRAIN_ROWS:-8000}
EPOCHS=${KD_CLUSTER_EPOCHS:-5}

skip() { echo "cluster test: SKIPPED: $*"; exit 0; }
command -v java >/dev/null || [ -x "${JAVA_HOME:-/nonexistent}/bin/java" ] || skip "no Java runtime (Spark needs Java 17)"
command -v mpirun >/dev/null || skip "no mpirun (apt-get install openmpi-bin)"
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || skip "Fashion-MNIST not in $DATA (apt-get install dataset-fashion-mnist)"

pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ -n "${netns_made:-}" ]; then ip netns delete "$NETNS" 2>/dev/null || true; fi
  if [ $rc -ne 0 ]; then
    for log in "$WORK"/logs/*.log; do echo "--- $log (last lines)"; tail -n 30 "$log"; done
  fi
  exit $rc
}
trap cleanup EXIT INT TERM

rm -rf "$WORK/dist" "$WORK/env" "$WORK/logs" "$WORK"/worker-* "$WORK/run" "$WORK/seed-model" "$WORK/example-model" \
  "$WORK/example.json" "$WORK/driver-tmp"
mkdir -p "$WORK/dist" "$WORK/logs" "$WORK/run"

echo "cluster test: building the wheel"
"$KD_PYTHON" -m pip wheel -q --no-build-isolation --no-deps -w "$WORK/dist" "$REPO/spark-barrier"
WHEEL=$(ls "$WORK"/dist/kindling_spark-*.whl)
echo "cluster test: $(basename "$WHEEL"): $("$KD_PYTHON" -m zipfile -l "$WHEEL" | grep -c _native/) native files"

echo "cluster test: executors' venv $WORK/env (the wheel, numpy, pyarrow, pandas)"
"$KD_PYTHON" -m venv "$WORK/env"
PY="$WORK/env/bin/python"
NUMPY=$("$KD_PYTHON" -c "import numpy; print(numpy.__version__)")
PYARROW=$("$KD_PYTHON" -c "import pyarrow; print(pyarrow.__version__)")
PANDAS=$("$KD_PYTHON" -c "import pandas; print(pandas.__version__)")
env -u PYTHONPATH "$WORK/env/bin/pip" install -q --no-deps "$WHEEL" "numpy==$NUMPY" "pyarrow==$PYARROW" \
  "pandas==$PANDAS" python-dateutil pytz tzdata six
env -u PYTHONPATH -u KINDLING_CLI -u KINDLING_LIB "$PY" -c "import kindling_spark.native as n; print('cluster test: the wheel finds', n.library_path(), n.cli_path())"

free_port() { "$KD_PYTHON" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }

# Worker 2 as another machine: its own network namespace (its own IP on a
# veth pair to this one), host name (UTS namespace) and mount namespace,
# where the driver's temporary directory is an empty tmpfs (a remote host
# does not have the driver's files). Open MPI and Spark then see two hosts
# and wire the ranks over TCP (this found that every orted needs mpirun's
# rsh agent at the same path on its own host). Without `ip netns` (no
# CAP_NET_ADMIN) or with KD_CLUSTER_NETNS=0 both workers share this
# namespace on 127.0.0.1 and the test says so.
NETNS=kd-cluster-w2-$$
VETH=kdclu$$
HOST=127.0.0.1
W2_HOST=127.0.0.1
W2_PREFIX=()
DRIVER_TMP="$WORK/driver-tmp"
mkdir -p "$DRIVER_TMP"
if [ "${KD_CLUSTER_NETNS:-1}" = 1 ] && ip netns add "$NETNS" 2>/dev/null; then
  netns_made=1
  net=10.213.$(( $$ % 250 ))
  ip link add "${VETH}h" type veth peer name "${VETH}w"
  ip link set "${VETH}w" netns "$NETNS"
  ip addr add "$net.1/24" dev "${VETH}h" && ip link set "${VETH}h" up
  ip netns exec "$NETNS" ip addr add "$net.2/24" dev "${VETH}w"
  ip netns exec "$NETNS" ip link set "${VETH}w" up
  ip netns exec "$NETNS" ip link set lo up
  HOST=$net.1
  W2_HOST=$net.2
  W2_PREFIX=(ip netns exec "$NETNS" unshare --mount --uts --propagation private)
  echo "cluster test: worker 2 in network namespace $NETNS ($W2_HOST), the rest on $HOST"
else
  echo "cluster test: NOTE: no network namespace (ip netns add failed or KD_CLUSTER_NETNS=0): both workers on $HOST"
fi
MASTER_PORT=$(free_port)
MASTER="spark://$HOST:$MASTER_PORT"
# The cluster's processes: no Kindling paths, no PYTHONPATH, the wheel's venv
# as the executors' Python; Open MPI's TCP on the cluster's network only.
clean_env=(env -u PYTHONPATH -u KINDLING_CLI -u KINDLING_LIB -u KD_LIB -u KD_CLI -u PYSPARK_PYTHON
           -u PYSPARK_DRIVER_PYTHON SPARK_HOME="$SPARK_HOME" SPARK_LOG_DIR="$WORK/logs" SPARK_PID_DIR="$WORK/run"
           OPENBLAS_NUM_THREADS=1)
[ "$HOST" != 127.0.0.1 ] && clean_env+=(OMPI_MCA_btl_tcp_if_include="$net.0/24" OMPI_MCA_oob_tcp_if_include="$net.0/24")

echo "cluster test: master $MASTER"
"${clean_env[@]}" "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
  --host "$HOST" --port "$MASTER_PORT" --webui-port "$(free_port)" > "$WORK/logs/master.log" 2>&1 &
pids+=($!)
mkdir -p "$WORK/worker-1" "$WORK/worker-2"
"${clean_env[@]}" "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker \
  --host "$HOST" --port "$(free_port)" --webui-port "$(free_port)" --cores 2 --memory 2g \
  --work-dir "$WORK/worker-1" "$MASTER" > "$WORK/logs/worker-1.log" 2>&1 &
pids+=($!)
# exec all the way down: the PID recorded is the worker's JVM.
# In the namespaces: its own host name too (resolvable there through a bind-
# mounted hosts file), since Open MPI takes one host name for one machine.
printf '127.0.0.1 localhost\n%s kd-cluster-w2\n%s %s\n' "$W2_HOST" "$HOST" "$(hostname)" > "$WORK/hosts-w2"
"${W2_PREFIX[@]}" "${clean_env[@]}" sh -c 'if [ "$0" != 127.0.0.1 ]; then
    mount -t tmpfs kd-cluster-tmp "$1" && mount --bind "$2" /etc/hosts && hostname kd-cluster-w2 || exit 1
  fi
  shift 2; exec "$@"' "$W2_HOST" "$DRIVER_TMP" "$WORK/hosts-w2" "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker \
  --host "$W2_HOST" --port 0 --webui-port 0 --cores 2 --memory 2g \
  --work-dir "$WORK/worker-2" "$MASTER" > "$WORK/logs/worker-2.log" 2>&1 &
pids+=($!)
for _ in $(seq 180); do
  n=0
  for i in 1 2; do grep -q "Successfully registered with master" "$WORK/logs/worker-$i.log" && n=$((n + 1)); done
  [ $n = 2 ] && break
  sleep 1
done
[ $n = 2 ] || { echo "cluster test: workers did not register"; exit 1; }
echo "cluster test: 2 workers registered"

submit() {  # submit NAME ARGS...: spark-submit with the seed's settings, output in logs/NAME.log
  local name=$1; shift
  (cd "$WORK" && "${clean_env[@]}" PYSPARK_PYTHON="$PY" PYSPARK_DRIVER_PYTHON="$PY" TMPDIR="$DRIVER_TMP" \
    timeout 900 "$SPARK_HOME/bin/spark-submit" --master "$MASTER" \
    --total-executor-cores 3 --executor-cores 1 --executor-memory 768m --driver-memory 1g \
    --conf spark.dynamicAllocation.enabled=false --conf spark.speculation=false \
    --conf spark.driver.host="$HOST" --conf spark.ui.enabled=false \
    --conf spark.pyspark.python="$PY" --conf spark.pyspark.driver.python="$PY" \
    "$@") > "$WORK/logs/$name.log" 2>&1
}

echo "cluster test: the seed's flow ($TRAIN_ROWS rows, $EPOCHS epochs)"
t0=$(date +%s)
if ! submit seed-flow "$REPO/tests/cluster/seed_flow.py" --data "$DATA" --train-rows "$TRAIN_ROWS" \
    --epochs "$EPOCHS" --test-rows 2000 --min-accuracy 0.78 --env-prefix "$WORK/env" \
    --forbid "$REPO/spark-barrier" --forbid "$REPO/build" --model "$WORK/seed-model"; then
  echo "cluster test: FAILED: the seed's flow"; tail -n 40 "$WORK/logs/seed-flow.log"; exit 1
fi
grep "^seed-flow: " "$WORK/logs/seed-flow.log"
[ -f "$WORK/seed-model/metadata/part-00000" ] && [ -f "$WORK/seed-model/data/model.h5" ]
echo "cluster test: seed flow passed in $(( $(date +%s) - t0 )) s"

echo "cluster test: examples/fashion_mnist_spark.py"
t0=$(date +%s)
if ! submit example "$REPO/examples/fashion_mnist_spark.py" --data "$DATA" --train-rows "$TRAIN_ROWS" \
    --test-rows 2000 --epochs "$EPOCHS" --model "$WORK/example-model" --json "$WORK/example.json"; then
  echo "cluster test: FAILED: the example"; tail -n 40 "$WORK/logs/example.log"; exit 1
fi
grep "test accuracy" "$WORK/logs/example.log"
"$KD_PYTHON" - "$WORK/example.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["test_accuracy"] >= 0.78, f"example: test accuracy {r['test_accuracy']} < 0.78"
assert any("ranks on 1 host" in line or "ranks on 2 host" in line for _, line in r["lines"]), "no launch line"
print(f"cluster test: example accuracy {r['test_accuracy']:.4f}")
PY
echo "cluster test: example passed in $(( $(date +%s) - t0 )) s"

echo "cluster test: executors without Open MPI on PATH"
NOMPI="$WORK/no-mpi-bin"
mkdir -p "$NOMPI"
if submit no-mpi --conf spark.executorEnv.PATH="$NOMPI" "$REPO/tests/cluster/seed_flow.py" --data "$DATA" \
    --train-rows 500 --epochs 1 --env-prefix "$WORK/env"; then
  echo "cluster test: FAILED: a fit without Open MPI on the executors succeeded"; exit 1
fi
if ! grep -q "executor host [^ ]* (task [0-9]*): Open MPI's .* is not on the PATH of the Spark executor (PATH=$NOMPI)" \
    "$WORK/logs/no-mpi.log"; then
  echo "cluster test: FAILED: no clear error for a missing mpirun/orted"; tail -n 30 "$WORK/logs/no-mpi.log"; exit 1
fi
grep -o "kindling: executor host [^)]*): Open MPI's [a-z /]* is not on the PATH" "$WORK/logs/no-mpi.log" | head -1
echo "cluster test: 3 passed, 0 failed"
