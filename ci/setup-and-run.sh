#!/usr/bin/env bash
# Install dependencies, build, and run the main job: a Spark job in local
# mode that loads Fashion-MNIST into a DataFrame, trains the MLP with 2
# workers and 1 parameter server (one MPI rank per barrier task), saves the
# model, loads it back, predicts the test set and prints the accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install-deps.sh
bash ci/build.sh build
source ci/venv.sh
export KINDLING_CLI="$PWD/build/kindling" KINDLING_LIB="$PWD/build/libkindling.so" PYSPARK_PYTHON="$KD_PYTHON"
"$VENV/bin/spark-submit" --master 'local[4]' \
    --driver-java-options "-Dlog4j2.configurationFile=file:$PWD/examples/log4j2-quiet.properties" \
    --conf spark.ui.showConsoleProgress=false examples/fashion_mnist_spark.py "$@"
