"""The seed's flow as written, in local[4]: Kindling() fit on an RDD of
mllib LabeledPoints, model.save(sc, path), KindlingModel.load(sc, path),
sc.broadcast(model) and brModel.value.predict(points) inside mapPartitions,
with the accuracy of the loaded model checked on held-out points and its
predictions equal to the trained model's; an empty RDD is a clear error."""
import numpy as np
import pytest
from conftest import SPEC, make_blobs

from kindling_spark.errors import DataError
from kindling_spark.estimator import Kindling
from kindling_spark.model import KindlingModel


def seed_builder():
    return (Kindling().setNetwork(SPEC).setDimension((8,)).setNumEpoch(4).setBatchSize(16)
            .setNumWorker(2).setNumServer(1).setContext("cpu").setLabelName("label")
            .setMaxStaleness(0).setOptimizer("momentum", lr=0.05).setSchedule("constant").setSeed(3))


def test_seed_flow_on_labeled_points(spark, tmp_path, no_strays):
    from pyspark.mllib.regression import LabeledPoint

    sc = spark.sparkContext
    x, y = make_blobs(800, seed=1)
    tx, ty = make_blobs(600, seed=99)
    train = sc.parallelize([LabeledPoint(float(a), b.tolist()) for a, b in zip(y, x)], 3)
    model = seed_builder().fit(train)

    path = str(tmp_path / "seed-model")
    model.save(sc, path)
    loaded = KindlingModel.load(sc, path)
    assert loaded.checkpoint == model.checkpoint

    br = sc.broadcast(loaded)
    points = sc.parallelize([LabeledPoint(float(a), b.tolist()) for a, b in zip(ty, tx)], 4)

    def predict_partition(it):
        pts = list(it)
        return zip([p.label for p in pts], br.value.predict_classes(iter(pts)), br.value.predict(iter(pts)))

    out = points.mapPartitions(predict_partition).collect()
    labels = np.array([o[0] for o in out])
    classes = np.array([o[1] for o in out])
    probs = np.stack([o[2] for o in out])
    assert len(out) == len(ty) and np.array_equal(labels, ty)
    np.testing.assert_allclose(probs, model.predict(tx), atol=1e-6)
    assert np.mean(classes == labels) >= 0.9, np.mean(classes == labels)


def test_seed_fit_on_an_empty_rdd_is_clear(spark, no_strays):
    empty = spark.sparkContext.parallelize([], 2)
    with pytest.raises(DataError, match="the training data is empty"):
        seed_builder().fit(empty)
