"""Fashion-MNIST through Spark in local mode, as the example does it
(IDX files -> DataFrame -> KindlingClassifier -> save -> load ->
transform): the MLP reaches at least 0.87 test accuracy."""
import importlib.util
import os

import pytest
from conftest import REPO

DATA = os.environ.get("KD_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")


def load_example():
    spec = importlib.util.spec_from_file_location("fashion_mnist_spark", REPO / "examples" / "fashion_mnist_spark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fashion_mnist_mlp_through_spark(spark, tmp_path, capsys, no_strays):
    if not os.path.exists(os.path.join(DATA, "train-images-idx3-ubyte.gz")):
        pytest.skip(f"Fashion-MNIST not found in {DATA} (package dataset-fashion-mnist)")
    pytest.importorskip("pyarrow")
    example = load_example()
    # Sync allreduce keeps this test short; the example's default is 2 workers + 1 server.
    acc = example.main(["--data", DATA, "--mode", "sync", "--epochs", "8", "--model", str(tmp_path / "model")],
                       spark=spark)
    out = capsys.readouterr().out
    assert "loaded model: test accuracy" in out
    print(f"Fashion-MNIST test accuracy through Spark: {acc:.4f}")
    assert acc >= 0.87, out
