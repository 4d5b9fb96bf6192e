"""KindlingModel: a network trained by the `kindling` CLI, wrapped as a
pyspark.ml Model. Local prediction against a numpy forward pass of the
checkpoint's weights (read with h5py), transform() on vector and array
columns in a local[2] session, clear errors for bad input, broadcast
prediction in mapPartitions, and ML persistence round trips (local,
file://, Hadoop FileSystem, inside a PipelineModel)."""
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pyspark", reason="pyspark is not installed (pip install pyspark)")

from pyspark.ml import PipelineModel  # noqa: E402
from pyspark.ml.linalg import Vectors, VectorUDT  # noqa: E402
from pyspark.sql.types import ArrayType, DoubleType, FloatType, IntegerType, StructField, StructType  # noqa: E402

from kdspark_data import EPOCHS, NUM_CLASSES, NUM_FEATURES, make_blobs  # noqa: E402
from kindling_spark import native  # noqa: E402
from kindling_spark.model import KindlingModel, predict_batches  # noqa: E402


def numpy_forward(path, x):
    """The network of the checkpoint, evaluated with numpy from its HDF5 weights."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "r") as f:
        spec = json.loads(f.attrs["spec"])
        h = x.astype(np.float64)
        for layer in spec["layers"]:
            if layer["type"] == "dense":
                g = f["layers"][layer["name"]]
                h = h @ g["weight"][:].astype(np.float64).T + g["bias"][:]
            elif layer["type"] == "relu":
                h = np.maximum(h, 0)
            elif layer["type"] == "softmax":
                e = np.exp(h - h.max(axis=1, keepdims=True))
                h = e / e.sum(axis=1, keepdims=True)
            else:
                raise AssertionError(f"reference does not know layer {layer['type']}")
    return h


@pytest.fixture(scope="module")
def model(trained):
    return KindlingModel.from_checkpoint(str(trained.path))


@pytest.fixture(scope="module")
def test_set():
    return make_blobs(120, seed=2)


@pytest.fixture(params=["arrow", "rows"])
def route(request, monkeypatch):
    """transform's two executor routes: one Arrow UDF (Spark >= 4.1 with
    pyarrow), or Python rows (older Spark, or no pyarrow)."""
    import kindling_spark.model as m

    if request.param == "arrow" and not m._arrow_udf_available():
        pytest.skip("transform's Arrow route needs Spark >= 4.1 with pyarrow and pandas")
    if request.param == "rows":
        monkeypatch.setattr(m, "_arrow_udf_available", lambda: False)
    return request.param


def physical_plan(df):
    return df._jdf.queryExecution().executedPlan().toString()


def vector_df(spark, x, partitions=3):
    rows = [(i, Vectors.dense(r.tolist())) for i, r in enumerate(x)]
    return spark.createDataFrame(rows, ["id", "features"]).repartition(partitions)


def collect_sorted(df, prob_col="probability", pred_col="prediction"):
    rows = df.orderBy("id").collect()
    return (np.array([r[prob_col].toArray() for r in rows]), np.array([r[pred_col] for r in rows]))


# ------------------------------------------------------------------ local
def test_local_predict_matches_numpy_reference(model, trained, test_set):
    x, y = test_set
    p = model.predict(x)
    assert p.shape == (len(x), NUM_CLASSES) and p.dtype == np.float32
    np.testing.assert_allclose(p, numpy_forward(trained.path, x), atol=2e-6)
    # The CLI really trained it: well above the 1/3 of guessing on held-out blobs.
    assert (model.predict_classes(x) == y).mean() > 0.85
    assert model.input_shape == (NUM_FEATURES,) and model.num_classes == NUM_CLASSES
    assert [layer["type"] for layer in model.spec["layers"]] == ["dense", "relu", "dense", "softmax"]


def test_history_comes_from_the_checkpoint(model):
    h = model.history_records
    assert [r["epoch"] for r in h] == list(range(1, EPOCHS + 1))
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert h[0]["test_loss"] is None  # trained without a test set
    assert h[0]["val_loss"] is None and h[0]["val_accuracy"] is None  # and without validation data
    assert set(h[0]) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
                         "test_accuracy", "seconds", "learning_rate"}


def test_local_predict_wrong_shape(model):
    with pytest.raises(ValueError, match=r"have 5 features; the model expects 8 \(input shape 8\)"):
        model.predict(np.zeros((3, 5)))


def test_not_a_checkpoint(lib):
    with pytest.raises(native.KindlingError, match="loading the checkpoint") as e:
        KindlingModel(checkpoint=b"this is not HDF5")
    # The bytes pass through a private temporary file: the message does not name it.
    assert "kindling-model-" not in str(e.value) and "the checkpoint (16 bytes)" in str(e.value)


def test_a_diverged_checkpoint_is_refused(lib, trained, tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "diverged.h5"
    path.write_bytes(trained.path.read_bytes())
    with h5py.File(path, "r+") as f:
        name = next(iter(f["layers"]))
        w = f["layers"][name]["weight"]
        a = w[:]
        a.flat[2] = np.nan
        w[...] = a
    for load in (lambda: KindlingModel.from_checkpoint(str(path)),
                 lambda: KindlingModel(checkpoint=path.read_bytes())):
        with pytest.raises(native.KindlingError, match=rf"layer '{name}' weight holds NaN .*diverged"):
            load()


def test_from_checkpoint_names_the_users_file(lib, tmp_path):
    bad = tmp_path / "my-model.h5"
    bad.write_bytes(b"this is not HDF5")
    for path in (bad, tmp_path / "missing.h5"):
        with pytest.raises(native.KindlingError, match=path.name) as e:
            KindlingModel.from_checkpoint(str(path))
        assert "kindling-model-" not in str(e.value)


# ---------------------------------------------------------------- transform
def test_transform_vector_column(spark, model, test_set, route):
    x, _ = test_set
    out = model.transform(vector_df(spark, x))
    assert ("ArrowEvalPython" in physical_plan(out)) == (route == "arrow")
    assert isinstance(out.schema["probability"].dataType, VectorUDT)
    assert isinstance(out.schema["prediction"].dataType, DoubleType)
    assert out.columns == ["id", "features", "probability", "prediction"]
    probs, preds = collect_sorted(out)
    local = model.predict(x)
    np.testing.assert_allclose(probs, local, atol=1e-6)
    assert preds.tolist() == np.argmax(local, axis=1).astype(float).tolist()


@pytest.mark.parametrize("element", [FloatType(), DoubleType(), IntegerType()])
def test_transform_array_column_in_small_batches(spark, model, test_set, route, element):
    x, _ = test_set
    if isinstance(element, IntegerType):
        x = np.round(x)
    schema = StructType([StructField("id", IntegerType()), StructField("features", ArrayType(element))])
    cast = int if isinstance(element, IntegerType) else float
    df = spark.createDataFrame([(i, [cast(v) for v in r]) for i, r in enumerate(x)], schema).repartition(2)
    m = model.copy().setPredictBatchSize(7).setPredictionCol("cls").setProbabilityCol("p")
    probs, preds = collect_sorted(m.transform(df), "p", "cls")
    np.testing.assert_allclose(probs, model.predict(x), atol=1e-6)
    assert preds.tolist() == np.argmax(probs, axis=1).astype(float).tolist()


def test_transform_can_leave_out_an_output(spark, model, test_set, route):
    x, _ = test_set
    out = model.copy().setProbabilityCol("").transform(vector_df(spark, x[:10]))
    assert out.columns == ["id", "features", "prediction"]
    assert out.count() == 10


def test_transform_keeps_odd_column_names(spark, model, test_set, route):
    x, _ = test_set
    df = vector_df(spark, x[:6]).withColumnRenamed("id", "a.b`c")
    out = model.transform(df)
    assert out.columns == ["a.b`c", "features", "probability", "prediction"]
    rows = out.orderBy("`a.b``c`").collect()
    assert [r[0] for r in rows] == list(range(6))
    np.testing.assert_allclose(np.stack([r.probability.toArray() for r in rows]), model.predict(x[:6]), atol=1e-6)


def test_wrong_feature_length_is_clear(spark, model, route):
    df = spark.createDataFrame([(0, Vectors.dense([1.0] * 8)), (1, Vectors.dense([1.0] * 5))], ["id", "features"])
    with pytest.raises(Exception) as e:
        model.transform(df).collect()
    assert "column 'features': 5 features, expected 8 (input shape 8)" in str(e.value)


def test_null_features_are_clear(spark, model, route):
    schema = StructType([StructField("id", IntegerType()), StructField("features", ArrayType(DoubleType()))])
    df = spark.createDataFrame([(0, [0.0] * 8), (1, None)], schema)
    with pytest.raises(Exception) as e:
        model.transform(df).collect()
    assert "column 'features': features are null" in str(e.value)
    df = spark.createDataFrame([(0, [0.0] * 7 + [None])], schema)
    with pytest.raises(Exception) as e:
        model.transform(df).collect()
    assert "column 'features': features have a null element (feature 7)" in str(e.value)
    # Row numbers count across batches (batch size 2 here), and NaN is refused too.
    df = spark.createDataFrame([(i, [0.0] * 8) for i in range(3)] + [(3, [0.0] * 7 + [float("nan")])],
                               schema).coalesce(1)
    with pytest.raises(Exception) as e:
        model.copy().setPredictBatchSize(2).transform(df).collect()
    assert "row 3 of the partition, column 'features': feature 7 is nan" in str(e.value)


def test_bad_columns_fail_before_any_job(spark, model):
    df = spark.createDataFrame([(0, "x", Vectors.dense([0.0] * 8))], ["id", "text", "features"])
    with pytest.raises(ValueError, match="features column 'pixels' is not in the DataFrame"):
        model.copy().setFeaturesCol("pixels").transform(df)
    with pytest.raises(TypeError, match="features column 'text' has type string"):
        model.copy().setFeaturesCol("text").transform(df)
    with pytest.raises(ValueError, match="output column 'id' already exists"):
        model.copy().setPredictionCol("id").transform(df)


# --------------------------------------------------------------- broadcast
def test_map_partitions_with_broadcast_equals_local_predict(spark, model, test_set):
    x, _ = test_set
    sc = spark.sparkContext
    bc = model.broadcast(sc)
    assert model.broadcast(sc) is bc  # one broadcast per model and context
    rdd = sc.parallelize(list(x), 4)
    probs = rdd.mapPartitions(lambda rows: predict_batches(bc.value, rows, batch_size=16)).collect()
    assert len(probs) == len(x)
    np.testing.assert_allclose(np.stack(probs), model.predict(x), atol=1e-6)


# ------------------------------------------------------------- persistence
def test_save_load_round_trip(spark, model, trained, test_set, tmp_path):
    x, _ = test_set
    m = model.copy().setPredictionCol("cls").setPredictBatchSize(32)
    path = str(tmp_path / "saved")
    m.write().save(path)
    loaded = KindlingModel.load(path)
    assert loaded.uid == m.uid and loaded.getPredictionCol() == "cls" and loaded.getPredictBatchSize() == 32
    assert loaded.checkpoint == m.checkpoint and loaded.history_records == m.history_records

    df = vector_df(spark, x)
    before = collect_sorted(m.transform(df), pred_col="cls")
    after = collect_sorted(loaded.transform(df), pred_col="cls")
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])

    # The checkpoint inside is a normal Kindling checkpoint.
    r = subprocess.run([native.cli_path(), "inspect", str(tmp_path / "saved" / "data" / "model.h5")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    metadata = json.loads((tmp_path / "saved" / "metadata" / "part-00000").read_text())
    assert metadata["class"] == "kindling_spark.model.KindlingModel" and metadata["uid"] == m.uid

    # Saving over it needs overwrite(); file:// URIs are local paths.
    with pytest.raises(FileExistsError, match="already exists"):
        m.write().save(path)
    other = model.copy().setPredictionCol("other")
    other.write().overwrite().save("file://" + path)
    again = KindlingModel.load("file://" + path)
    assert again.getPredictionCol() == "other"
    assert np.array_equal(again.predict(x), m.predict(x))
    assert [n for n in (tmp_path).iterdir() if ".tmp-" in n.name or ".old-" in n.name] == []


def test_plain_checkpoint_file_round_trip(model, test_set, tmp_path):
    x, _ = test_set
    model.save_checkpoint(tmp_path / "copy.h5")
    again = KindlingModel.from_checkpoint(str(tmp_path / "copy.h5"))
    assert np.array_equal(again.predict(x), model.predict(x))


def test_load_rejects_damaged_saves(spark, model, tmp_path):
    path = tmp_path / "saved"
    model.write().save(str(path))
    ckpt = path / "data" / "model.h5"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="data/model.h5 is corrupt"):
        KindlingModel.load(str(path))
    with pytest.raises(FileNotFoundError, match="no saved KindlingModel here"):
        KindlingModel.load(str(tmp_path / "nothing"))


def test_hadoop_filesystem_persistence(spark, model, test_set, tmp_path, monkeypatch):
    """Paths with other schemes go through Spark's Hadoop FileSystem; here it
    is forced for a file: URI so the code path runs without HDFS."""
    import kindling_spark.model as model_module

    monkeypatch.setattr(model_module, "_filesystem",
                        lambda path, getter, sc=None: model_module._HadoopFS(path, spark.sparkContext))
    x, _ = test_set
    uri = "file://" + str(tmp_path / "hadoop")
    model.write().save(uri)
    with pytest.raises(FileExistsError):
        model.write().save(uri)
    model.write().overwrite().save(uri)
    loaded = KindlingModel.load(uri)
    assert np.array_equal(loaded.predict(x), model.predict(x))
    assert (tmp_path / "hadoop" / "data" / "model.h5").read_bytes() == model.checkpoint


def test_pipeline_model_persistence(spark, model, test_set, tmp_path):
    x, _ = test_set
    pipeline = PipelineModel(stages=[model])
    path = str(tmp_path / "pipeline")
    pipeline.write().save(path)
    loaded = PipelineModel.load(path)
    assert isinstance(loaded.stages[0], KindlingModel)
    df = vector_df(spark, x[:20])
    assert np.array_equal(collect_sorted(loaded.transform(df))[0], collect_sorted(pipeline.transform(df))[0])


def test_executor_side_does_not_import_pyspark_ml():
    # What a transform ships refers to kindling_spark.predict: a Python worker
    # that imports pyspark.ml pays about a second per task in a cold session.
    code = ("import sys, kindling_spark.predict; "
            "print(sorted(m for m in sys.modules if m.startswith('pyspark.ml') or m == 'kindling_spark.model'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
