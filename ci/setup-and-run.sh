#!/usr/bin/env bash
# Install dependencies, build, and run the main job: train the MLP on
# Fashion-MNIST for 5 epochs and write model.h5.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install-deps.sh
bash ci/build.sh build
./build/kindling train --net mlp --epochs 5 --threads 2 --checkpoint model.h5
./build/kindling inspect model.h5
