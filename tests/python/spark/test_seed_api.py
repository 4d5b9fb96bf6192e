"""The seed's ("MXNet on Spark") flow as written, in PySpark:
model.save(sc, path) / KindlingModel.load(sc, path) beside the pyspark.ml
forms (one directory layout for both), sc.broadcast(model) and
bc.value.predict(points) inside mapPartitions, predict over iterators of
points in every form a user has (LabeledPoint, (label, vector) pairs, ml and
mllib vectors, lists, numpy rows, Rows), predict_classes, and clear errors
for bad input. Every prediction is checked against the numpy-batch forward
pass, which test_model.py checks against a numpy reference."""
import json

import numpy as np
import pytest

pytest.importorskip("pyspark", reason="pyspark is not installed (pip install pyspark)")

from pyspark.ml.linalg import Vectors as MLVectors  # noqa: E402
from pyspark.mllib.linalg import Vectors as MLlibVectors  # noqa: E402
from pyspark.mllib.regression import LabeledPoint  # noqa: E402
from pyspark.sql import Row  # noqa: E402

from kdspark_data import NUM_CLASSES, NUM_FEATURES, make_blobs  # noqa: E402
from kindling_spark.model import KindlingModel  # noqa: E402


@pytest.fixture(scope="module")
def model(trained):
    return KindlingModel.from_checkpoint(str(trained.path))


@pytest.fixture(scope="module")
def test_set():
    return make_blobs(90, seed=3)


def sparse(row):
    nz = np.flatnonzero(row)
    return MLlibVectors.sparse(len(row), nz.tolist(), row[nz].tolist())


POINT_FORMS = {
    "LabeledPoint": lambda y, r: LabeledPoint(float(y), r.tolist()),
    "LabeledPoint-sparse": lambda y, r: LabeledPoint(float(y), sparse(r)),
    "pair-ml-vector": lambda y, r: (float(y), MLVectors.dense(r.tolist())),
    "pair-mllib-vector": lambda y, r: (int(y), MLlibVectors.dense(r.tolist())),
    "pair-numpy": lambda y, r: (int(y), r),
    "pair-list": lambda y, r: [float(y), r.tolist()],
    "ml-vector": lambda y, r: MLVectors.dense(r.tolist()),
    "mllib-sparse-vector": lambda y, r: sparse(r),
    "list": lambda y, r: r.tolist(),
    "numpy-row": lambda y, r: r,
    "Row": lambda y, r: Row(label=float(y), features=MLVectors.dense(r.tolist())),
}


@pytest.mark.parametrize("form", sorted(POINT_FORMS))
def test_predict_over_points_equals_the_batch(model, test_set, form):
    x, y = test_set
    x = x.copy()
    x[::7, 3] = 0.0  # some zeros, so the sparse forms are really sparse
    points = [POINT_FORMS[form](label, row) for label, row in zip(y, x)]
    want = model.predict(x)
    # An iterator (as mapPartitions hands over), a list, and small batches.
    got = model.predict(iter(points))
    assert got.shape == (len(x), NUM_CLASSES) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(model.copy().setPredictBatchSize(4).predict(points), want, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    classes = model.predict_classes(p for p in points)
    assert np.array_equal(classes, np.argmax(want, axis=1))
    assert (classes == y).mean() >= 0.9  # three well separated blobs


def test_predict_empty_and_single(model, test_set):
    x, _ = test_set
    assert model.predict(iter([])).shape == (0, NUM_CLASSES)
    assert model.predict([]).shape == (0, NUM_CLASSES)
    assert model.predict(np.zeros((0, NUM_FEATURES), np.float32)).shape == (0, NUM_CLASSES)
    assert model.predict_classes([]).shape == (0,)
    np.testing.assert_allclose(model.predict([x[0]]), model.predict(x[:1]), atol=1e-6)
    np.testing.assert_allclose(model.predict(x[0]), model.predict(x[:1]), atol=1e-6)


def test_predict_bad_points_are_named(model, test_set):
    x, _ = test_set
    short = [r.tolist() for r in x[:5]] + [x[5, :5].tolist()]
    with pytest.raises(ValueError, match=r"point 5: 5 features, expected 8"):
        model.predict(iter(short))
    with pytest.raises(ValueError, match=r"point 1: .*features must be finite"):
        model.predict([LabeledPoint(0, x[0].tolist()), LabeledPoint(1, [float("nan")] * NUM_FEATURES)])
    with pytest.raises(ValueError, match=r"point 0: features are not numbers"):
        model.predict([["a"] * NUM_FEATURES])
    with pytest.raises(ValueError, match=r"point 0: features are null"):
        model.predict([Row(label=1.0, features=None)])
    with pytest.raises(TypeError, match=r"for one vector v use predict\(\[v\]\)"):
        model.predict(MLVectors.dense(x[0].tolist()))
    with pytest.raises(TypeError, match="numpy batch or an iterable of points"):
        model.predict(3.0)
    with pytest.raises(TypeError, match="numpy batch or an iterable of points"):
        model.predict("1,2,3")
    with pytest.raises(ValueError, match=r"the model expects 8 .*pass a batch \(n, 8\)"):
        model.predict(np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="the model expects 8"):
        model.predict(np.zeros((0,), np.float32))


# ------------------------------------------------------------- persistence
def test_save_and_load_with_a_spark_context(spark, model, test_set, tmp_path):
    sc = spark.sparkContext
    x, _ = test_set
    m = model.copy().setPredictBatchSize(17)
    seed_path = str(tmp_path / "seed-form")
    m.save(sc, seed_path)
    # The layout of write().save(path): metadata JSON with a "kindling" section and the checkpoint.
    metadata = json.loads((tmp_path / "seed-form" / "metadata" / "part-00000").read_text())
    assert metadata["class"] == "kindling_spark.model.KindlingModel" and metadata["uid"] == m.uid
    assert metadata["kindling"]["checkpoint"] == "data/model.h5"
    assert (tmp_path / "seed-form" / "data" / "model.h5").read_bytes() == m.checkpoint
    ml_path = str(tmp_path / "ml-form")
    m.write().save(ml_path)
    for a, b in (("metadata/part-00000", "metadata/part-00000"), ("data/model.h5", "data/model.h5")):
        da = (tmp_path / "seed-form" / a).read_bytes()
        db = (tmp_path / "ml-form" / b).read_bytes()
        if a.endswith(".h5"):
            assert da == db
        else:
            ja, jb = json.loads(da), json.loads(db)
            ja.pop("timestamp"), jb.pop("timestamp")
            assert ja == jb

    # Every pairing of the two writers and the two readers.
    for path in (seed_path, ml_path, "file://" + seed_path):
        for loaded in (KindlingModel.load(sc, path), KindlingModel.load(path)):
            assert loaded.uid == m.uid and loaded.getPredictBatchSize() == 17
            assert loaded.checkpoint == m.checkpoint and loaded.history_records == m.history_records
            np.testing.assert_array_equal(loaded.predict(x), m.predict(x))

    # mllib's Saveable semantics: an existing path is not replaced silently.
    with pytest.raises(FileExistsError, match="already exists.*overwrite"):
        m.save(sc, seed_path)
    with pytest.raises(FileNotFoundError, match="no saved KindlingModel here"):
        KindlingModel.load(sc, str(tmp_path / "nothing"))


def test_save_and_load_argument_errors(spark, model, tmp_path):
    sc = spark.sparkContext
    with pytest.raises(TypeError, match=r"takes \(path\) or \(sc, path\).*got \(str, SparkContext\)"):
        model.save(str(tmp_path / "m"), sc)
    with pytest.raises(TypeError, match=r"takes \(path\) or \(sc, path\)"):
        KindlingModel.load(sc)
    with pytest.raises(TypeError, match=r"takes \(path\) or \(sc, path\)"):
        KindlingModel.load("a", "b")
    with pytest.raises(TypeError, match="path should be a string, got PosixPath"):
        model.save(sc, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_broadcast_model_predicts_in_map_partitions(spark, model, test_set):
    """The seed: brModel = sc.broadcast(model); points.mapPartitions(it =>
    brModel.value.predict(it)), with an empty partition among them."""
    sc = spark.sparkContext
    x, y = test_set
    points = sc.parallelize([LabeledPoint(float(a), b.tolist()) for a, b in zip(y, x)], 3)
    points = points.union(sc.parallelize([], 1))  # an empty partition
    br = sc.broadcast(model)
    probs = points.mapPartitions(lambda it: br.value.predict(it)).collect()
    assert len(probs) == len(x)
    np.testing.assert_allclose(np.stack(probs), model.predict(x), atol=1e-6)
    pairs = points.mapPartitions(
        lambda it: zip(*((lambda pts: ([p.label for p in pts], br.value.predict_classes(pts)))(list(it))))).collect()
    accuracy = np.mean([label == cls for label, cls in pairs])
    assert accuracy >= 0.9
    br.unpersist()
