#!/usr/bin/env bash
# The JVM API end to end (issue 16): the seed's ClassificationExample in Java
# (java/src/org/kindling/spark/examples), run by spark-submit --class in
# local mode: Kindling.fit of the MLP and of LeNet on a slice of
# Fashion-MNIST (one barrier stage, 2 workers + 1 parameter server), save,
# load, broadcast prediction of the test slice, the accuracy checked. The
# LeNet model the JVM saved is then loaded by Python's KindlingModel and
# must score the same. Skips (77) without the jar, Java or the data.
set -euo pipefail
root="${KD_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
build="${KD_BUILD_DIR:-$(dirname "${KD_CLI:-$root/build/kindling}")}"
py="${KD_PYTHON:-/opt/kindling-venv/bin/python}"
data="${KD_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
jar="$build/kindling.jar"
[ -f "$jar" ] && [ -f "$build/libkindling_jni.so" ] || { echo "SKIP: $jar or libkindling_jni.so not built (javac 17 and pyspark's jars are needed)"; exit 77; }
command -v java >/dev/null || { echo "SKIP: java not found"; exit 77; }
[ -f "$data/train-images-idx3-ubyte.gz" ] || { echo "SKIP: Fashion-MNIST not in $data (apt-get install dataset-fashion-mnist)"; exit 77; }
SPARK_HOME="$("$py" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
export SPARK_HOME KINDLING_PYTHON="$py" PYSPARK_PYTHON="$py" OPENBLAS_NUM_THREADS=1
export PYTHONPATH="$root/spark-barrier${PYTHONPATH:+:$PYTHONPATH}" KINDLING_CLI="${KD_CLI:-$build/kindling}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

run() { # name, expected minimum accuracy, example options...
  local name=$1 min=$2
  shift 2
  echo "== $name"
  "$SPARK_HOME/bin/spark-submit" --master 'local[3]' --conf spark.ui.enabled=false --conf spark.driver.host=127.0.0.1 \
    --class org.kindling.spark.examples.ClassificationExample "$jar" --data "$data" --min-accuracy "$min" \
    --model "$tmp/$name" "$@" >"$tmp/$name.log" 2>&1 || { grep -v "^\s*at \| INFO \| WARN " "$tmp/$name.log" | tail -40; echo "FAIL: $name"; exit 1; }
  grep -E "^trained|test accuracy|final train" "$tmp/$name.log"
}
run mlp 0.70 --network mlp --epochs 5 --train-limit 6000 --test-limit 2000
run lenet 0.65 --network lenet --epochs 3 --train-limit 4000 --test-limit 1000

# The LeNet saved by the JVM, in Python: the same accuracy on the same test slice.
java_acc="$(sed -n 's/.*loaded model: test accuracy \([0-9.]*\).*/\1/p' "$tmp/lenet.log")"
"$py" - "$tmp/lenet" "$data" "$java_acc" <<'PY'
import gzip, sys
import numpy as np
from kindling_spark.model import KindlingModel
path, data, java_acc = sys.argv[1], sys.argv[2], float(sys.argv[3])
def idx(name):
    raw = gzip.open(f"{data}/{name}", "rb").read()
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)
x = idx("t10k-images-idx3-ubyte.gz")[:1000].reshape(1000, -1).astype(np.float32) / 255
y = idx("t10k-labels-idx1-ubyte.gz")[:1000]
model = KindlingModel.load(path)
acc = float((model.predict_classes(x) == y).mean())
print(f"== python: the JVM's LeNet loaded, test accuracy {acc:.4f} (JVM: {java_acc:.4f})")
assert abs(acc - java_acc) < 1e-9, "Python and the JVM disagree on the same model"
PY
echo "PASS"
