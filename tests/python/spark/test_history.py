"""kindling_spark.history: a checkpoint's history as a pandas DataFrame (a
list of dicts without pandas), the best epoch by early stopping's rule, and
the matplotlib plot, against `kindling inspect --json` of the same file."""
import json
import math
import subprocess

import numpy as np
import pytest

from kdspark_data import make_blobs
from kindling_spark import history, native


@pytest.fixture(scope="module")
def run(tmp_path_factory, cli):
    """A checkpoint trained with 20% held out for validation, and its history per inspect --json."""
    d = tmp_path_factory.mktemp("history")
    x, y = make_blobs(300, seed=3)
    csv = d / "train.csv"
    np.savetxt(csv, np.column_stack([y, x]), delimiter=",", fmt="%.7g")
    test = d / "test.csv"
    xt, yt = make_blobs(60, seed=4)
    np.savetxt(test, np.column_stack([yt, xt]), delimiter=",", fmt="%.7g")
    spec = d / "spec.json"
    spec.write_text(json.dumps({"input": [x.shape[1]], "layers": [{"type": "dense", "units": 12}, {"type": "relu"},
                                                                  {"type": "dense", "units": 3}, {"type": "softmax"}]}))
    ckpt = d / "model.h5"
    subprocess.run([cli, "train", "--net", str(spec), "--train-csv", str(csv), "--test-csv", str(test), "--epochs", "4",
                    "--batch-size", "16", "--val-split", "0.2", "--checkpoint", str(ckpt), "-q"], check=True,
                   capture_output=True)
    inspected = json.loads(subprocess.run([cli, "inspect", str(ckpt), "--json"], check=True, capture_output=True,
                                          text=True).stdout)
    return ckpt, native.checkpoint_info(str(ckpt))["history"], inspected


def test_frame_has_every_column_indexed_by_epoch(run):
    pd = pytest.importorskip("pandas")
    _, hist, inspected = run
    frame = history.as_frame(hist)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == [1, 2, 3, 4] and frame.index.name == "epoch"
    assert list(frame.columns) == list(history.COLUMNS[1:])
    for rec in inspected["history"]:
        row = frame.loc[rec["epoch"]]
        for col in history.COLUMNS[1:]:
            want = rec[col]
            assert (math.isnan(row[col]) if want is None else row[col] == want), (rec["epoch"], col)
    # Validation every epoch, the test set after the last one only.
    assert frame["val_loss"].notna().all() and frame["test_accuracy"].isna().tolist() == [True, True, True, False]


def test_without_pandas_a_list_of_dicts(run, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_pandas(name, *a, **k):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("no pandas here")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    _, hist, inspected = run
    recs = history.as_frame(hist)
    assert isinstance(recs, list) and [r["epoch"] for r in recs] == [1, 2, 3, 4]
    assert recs == [{c: r[c] for c in history.COLUMNS} for r in inspected["history"]]


def test_best_epoch_follows_the_library_rule(run):
    _, hist, inspected = run
    epoch, monitored, value = history.best_epoch(hist)
    best = inspected["training"]["best"]
    assert (epoch, monitored, value) == (best["epoch"], best["monitor"], best["value"])
    recs = [{"epoch": 1, "train_loss": 2.0, "val_loss": None}, {"epoch": 2, "train_loss": 1.5, "val_loss": None},
            {"epoch": 3, "train_loss": 1.45, "val_loss": None}]
    assert history.best_epoch(recs) == (3, "train_loss", 1.45)
    assert history.best_epoch(recs, min_delta=0.1) == (2, "train_loss", 1.5)
    assert history.best_epoch([]) is None


def test_plot_saves_a_picture(run, tmp_path):
    pytest.importorskip("matplotlib")
    _, hist, _ = run
    out = tmp_path / "curves.png"
    fig = history.plot(hist, path=out, title="blobs")
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loss_ax, acc_ax = fig.axes
    labels = [l.get_label() for l in acc_ax.get_lines()]
    assert labels[:3] == ["training", "validation", "test"]
    # 4 epochs of training and validation figures, one test point, and the best epoch's line.
    assert [len(l.get_xdata()) for l in loss_ax.get_lines()] == [4, 4, 1, 2]
    svg = tmp_path / "curves.svg"
    history.plot(hist, path=svg)
    assert b"<svg" in svg.read_bytes()[:500]


def test_plot_without_history(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="no training history"):
        history.plot([], path=tmp_path / "x.png")
