"""Fashion-MNIST through Spark in local mode, as the example does it
(IDX files -> DataFrame -> KindlingClassifier -> save -> load ->
transform): the MLP reaches at least 0.87 test accuracy, and the training
curves are saved beside the model. Run as a program, the example is quiet:
Spark logs no INFO line, and Kindling's epoch lines (with validation figures
and ETA) and summary reach the console."""
import importlib.util
import os
import re
import subprocess
import sys

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
    curves = re.search(r"^training curves: (.*)$", out, re.M)
    assert curves and curves.group(1) == str(tmp_path / "model") + "-curves.png", out
    assert open(curves.group(1), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    print(f"Fashion-MNIST test accuracy through Spark: {acc:.4f}")
    assert acc >= 0.87, out


def test_the_main_job_is_quiet(tmp_path, no_strays):
    """The example starts its own Spark (a fresh JVM): only warnings from
    Spark, every epoch line and the summary from Kindling."""
    if not os.path.exists(os.path.join(DATA, "train-images-idx3-ubyte.gz")):
        pytest.skip(f"Fashion-MNIST not found in {DATA} (package dataset-fashion-mnist)")
    pytest.importorskip("pyarrow")
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, OPENBLAS_NUM_THREADS="1")
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    r = subprocess.run([sys.executable, str(REPO / "examples" / "fashion_mnist_spark.py"), "--data", DATA,
                        "--mode", "sync", "--epochs", "2", "--max-samples", "2000", "--model",
                        str(tmp_path / "model")], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    err = r.stderr.splitlines()
    spark_info = [line for line in err if re.search(r"\bINFO\b", line) and "kindling" not in line]
    assert not spark_info, spark_info[:10]
    assert not any("log4j" in line for line in err), err[:10]   # no "Using Spark's default log4j profile"
    assert not any(re.search(r"\[Stage \d+:", line) for line in err)  # no console progress bar
    epochs = [line for line in err if re.search(r"\bepoch [12]/2 .*val_loss .*val_acc .*eta ", line)]
    assert len(epochs) == 2, err[-20:]
    assert any("final validation accuracy" in line for line in err), err[-20:]
    assert "loaded model: test accuracy" in r.stdout
    assert os.path.getsize(str(tmp_path / "model") + "-curves.png") > 10_000
