"""Fixtures for the kindling_spark tests: this checkout's package (in the
driver and in Spark's Python workers), the C library and CLI (skipped with
the paths tried when not built), a model trained by the CLI on a small
generated data set, and one local[2] SparkSession per test module (skipped
with the reason when pyspark or Java is missing)."""
import json
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # tests/python: sparkenv
from sparkenv import java_missing, use_this_checkout  # noqa: E402

use_this_checkout()

from kdspark_data import EPOCHS, SPEC, make_blobs  # noqa: E402
from kindling_spark import native  # noqa: E402


@pytest.fixture(scope="session")
def lib():
    try:
        native.load()
    except native.NotFound as e:
        pytest.skip(str(e))
    return native


@pytest.fixture(scope="session")
def cli(lib):
    try:
        return native.cli_path()
    except native.NotFound as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def trained(tmp_path_factory, cli):
    """A checkpoint written by `kindling train` (single process)."""
    d = tmp_path_factory.mktemp("kindling_model")
    x, y = make_blobs(400, seed=1)
    csv = d / "train.csv"
    np.savetxt(csv, np.column_stack([y, x]), delimiter=",", fmt="%.7g")
    spec = d / "spec.json"
    spec.write_text(json.dumps(SPEC))
    ckpt = d / "model.h5"
    cmd = [cli, "train", "--net", str(spec), "--train-csv", str(csv), "--epochs", str(EPOCHS),
           "--batch-size", "32", "--lr", "0.01", "--seed", "7", "--threads", "1", "--checkpoint", str(ckpt)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    return types.SimpleNamespace(path=ckpt, dir=d, x=x, y=y)


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark", reason="pyspark is not installed (pip install pyspark)")
    reason = java_missing()
    if reason:
        pytest.skip(reason)
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("kindling-spark-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
