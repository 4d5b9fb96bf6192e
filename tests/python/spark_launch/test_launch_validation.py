"""Validation, early stopping and the best checkpoint from Spark (issue 14):
a validation DataFrame (setValidationData, or KindlingClassifier's
validationIndicatorCol) is scored every epoch by the workers, each on its
share, and the last epoch's figures are the final model's on the whole set;
validationFraction holds out rows of the training data; patience stops
every rank; keepBest writes the best epoch's checkpoint on the driver;
model.history is a pandas DataFrame and plot_history draws it."""
import json
import math

import numpy as np
import pytest
from conftest import SPEC, make_blobs

from kindling_spark.estimator import Kindling, KindlingClassifier
from kindling_spark.model import KindlingModel


def frame(spark, x, y, extra=None):
    from pyspark.ml.linalg import Vectors

    rows = [(int(a), Vectors.dense(b.tolist())) + ((bool(e),) if extra is not None else ())
            for a, b, e in zip(y, x, extra if extra is not None else [None] * len(y))]
    return spark.createDataFrame(rows, ["label", "features"] + (["is_val"] if extra is not None else []))


def figures_of(model, x, y):
    """Loss and accuracy of the model's own predictions (what validation should report)."""
    p = model.predict(x).astype(np.float64)
    return float(np.mean(-np.log(np.maximum(p[np.arange(len(y)), y], 1e-30)))), float(np.mean(p.argmax(1) == y))


def sync_builder(epochs=4):
    return (Kindling().setNetwork(SPEC).setNumEpoch(epochs).setBatchSize(16).setNumWorker(2).setMode("sync")
            .setSeed(3).setOptimizer("momentum", lr=0.05).setSchedule("constant"))


def test_validation_dataframe_and_keep_best(spark, tmp_path, no_strays):
    pd = pytest.importorskip("pandas")
    x, y = make_blobs(600, seed=1, spread=2.0)   # overlapping blobs: validation figures below 1
    vx, vy = make_blobs(203, seed=8, spread=2.0)  # does not split evenly over the 2 workers
    best = tmp_path / "best.h5"
    model = sync_builder().setValidationData(frame(spark, vx, vy)).setKeepBest(best).fit(frame(spark, x, y))
    h = model.history
    assert isinstance(h, pd.DataFrame) and list(h.index) == [1, 2, 3, 4]
    assert h["val_loss"].notna().all() and h["val_accuracy"].notna().all()
    # The workers' shares add up to the whole set, scored with the final weights.
    loss, acc = figures_of(model, vx, vy)
    assert h["val_accuracy"].iloc[-1] == pytest.approx(acc, abs=1e-12), (h["val_accuracy"].iloc[-1], acc)
    assert h["val_loss"].iloc[-1] == pytest.approx(loss, rel=1e-4)
    assert 0.6 < acc < 1.0
    # keepBest: the best epoch's checkpoint, copied to the driver's path.
    epoch, monitored, value = model.best_epoch
    assert monitored == "val_loss" and value == h["val_loss"].min()
    assert model.training_summary["best_checkpoint"] == str(best)
    kept = KindlingModel.from_checkpoint(str(best))
    assert [r["epoch"] for r in kept.history_records] == list(range(1, epoch + 1))
    if epoch == 4:
        assert kept.checkpoint == model.checkpoint or np.allclose(kept.predict(vx), model.predict(vx))
    else:
        assert figures_of(kept, vx, vy)[1] == pytest.approx(h["val_accuracy"].loc[epoch], abs=1e-12)


def test_validation_fraction_and_early_stopping(spark, no_strays):
    x, y = make_blobs(600, seed=2)
    clf = KindlingClassifier(network=json.dumps(SPEC), numEpochs=10, batchSize=16, numWorkers=2,
                             numServers=1, maxStaleness=0, optimizer="momentum", learningRate=0.05,
                             schedule="constant", seed=3, validationFraction=0.25, patience=2, minDelta=10.0)
    model = clf.fit(frame(spark, x, y))
    recs = model.history_records
    # No epoch improves on the first by more than 10: the run ends after epoch 1 + patience, on every rank.
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    assert all(r["val_loss"] is not None and 0 <= r["val_accuracy"] <= 1 for r in recs)
    assert recs[-1]["val_accuracy"] > 0.85
    lines = [line for *_, line in model.training_summary["lines"]]
    assert any("early stopping after epoch 3 of 10: val_loss has not improved by more than 10 for 2 epochs" in line
               for line in lines), lines[-8:]


def test_validation_indicator_column(spark, no_strays):
    x, y = make_blobs(500, seed=4, spread=2.0)
    flag = np.random.default_rng(5).random(len(y)) < 0.3
    clf = KindlingClassifier(network=json.dumps(SPEC), numEpochs=3, batchSize=16, numWorkers=2,
                             mode="sync", optimizer="momentum", learningRate=0.05, schedule="constant", seed=3,
                             validationIndicatorCol="is_val")
    model = clf.fit(frame(spark, x, y, flag))
    last = model.history_records[-1]
    loss, acc = figures_of(model, x[flag], y[flag])
    assert last["val_accuracy"] == pytest.approx(acc, abs=1e-12) and last["val_loss"] == pytest.approx(loss, rel=1e-4)


def test_settings_are_checked_before_any_job(spark, tmp_path):
    x, y = make_blobs(50, seed=1)
    df = frame(spark, x, y)
    with pytest.raises(ValueError, match=r"validationFraction must be a number in \[0, 1\)"):
        Kindling().setValidationFraction(1.0)
    with pytest.raises(ValueError, match="exclude each other"):
        sync_builder().setValidationFraction(0.2).setValidationData(df).fit(df)
    with pytest.raises(ValueError, match="minDelta only applies with patience or keepBest"):
        sync_builder().setMinDelta(0.1).fit(df)
    with pytest.raises(ValueError, match="does not exist or is not writable"):
        sync_builder().setKeepBest(tmp_path / "missing" / "best.h5").fit(df)
    with pytest.raises(ValueError, match="patience must be an integer >= 0"):
        Kindling().setPatience(-1)
    with pytest.raises(ValueError, match="validationIndicatorCol 'is_val' is not in the DataFrame"):
        KindlingClassifier(network=json.dumps(SPEC), validationIndicatorCol="is_val").fit(df)
    bad = spark.createDataFrame([(7, [0.0] * 8)], ["label", "features"])
    with pytest.raises(ValueError, match=r"validation data, row 0: label 7(\.0)? is not a class of the network"):
        sync_builder().setValidationData(bad).fit(df)


def test_plot_history(spark, tmp_path, monkeypatch, no_strays):
    pytest.importorskip("matplotlib")
    x, y = make_blobs(300, seed=6)
    model = sync_builder(epochs=2).setValidationFraction(0.2).fit(frame(spark, x, y))
    out = tmp_path / "curves.png"
    fig = model.plot_history(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [line.get_label() for line in fig.axes[1].get_lines()][:2] == ["training", "validation"]
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *a, **k):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib here")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"plot_history needs matplotlib \(pip install matplotlib\)"):
        model.plot_history(tmp_path / "x.png")
    assert not math.isnan(model.history_records[-1]["val_loss"])
