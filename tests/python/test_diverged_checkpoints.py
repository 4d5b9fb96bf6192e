"""A model whose training diverged is refused wherever it is used: a
checkpoint holding NaN or Inf does not load (eval, predict, resume), and a
checkpoint whose weights are finite but overflow (outputs NaN) makes eval
and predict fail naming the sample, instead of printing NaN probabilities
with exit 0. The checkpoints are damaged with h5py, as a diverged run left
them before saves were checked."""
import os
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def cli(kd):
    path = os.environ.get("KD_CLI") or str(pathlib.Path(__file__).resolve().parents[2] / "build" / "kindling")
    if not pathlib.Path(path).is_file():
        pytest.skip(f"the kindling CLI is not built ({path}; set KD_CLI)")
    return path


@pytest.fixture(scope="module")
def model(cli, tmp_path_factory):
    d = tmp_path_factory.mktemp("diverged")
    rng = np.random.default_rng(1)
    y = np.arange(60) % 10
    x = rng.random((60, 784)) * 0.4 + (np.arange(784)[None, :] % 10 == y[:, None]) * 0.6
    np.savetxt(d / "rows.csv", np.column_stack([y, x]), delimiter=",", fmt="%.4g")
    r = subprocess.run([cli, "train", "--net", "mlp", "--epochs", "1", "--train-csv", str(d / "rows.csv"),
                        "--checkpoint", str(d / "good.h5"), "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return d


def damaged(model, name, change):
    path = model / name
    shutil.copy(model / "good.h5", path)
    with h5py.File(path, "r+") as f:
        change(f)
    return path


def run(cli, *args):
    return subprocess.run([cli, *map(str, args)], capture_output=True, text=True)


def set_nan(f):
    w = f["layers/dense_2/weight"]
    a = w[:]
    a[3, 5] = np.nan
    w[...] = a


def set_inf_momentum(f):
    m = f["optimizer/m"]
    a = m[:]
    a[7] = np.inf
    m[...] = a


def overflow(f):
    for name in ("dense_1", "dense_2", "dense_3"):
        f[f"layers/{name}/weight"][...] = f[f"layers/{name}/weight"][:] * np.float32(1e30)


# eval and predict read no optimizer state, so only the resume meets the second.
@pytest.mark.parametrize("change, needle, commands", [
    (set_nan, "layer 'dense_2' weight holds NaN (element", ("eval", "predict", "train")),
    (set_inf_momentum, "optimizer state 'm' holds Inf (element 7)", ("train",))])
def test_a_checkpoint_with_nan_or_inf_does_not_load(cli, model, change, needle, commands):
    path = damaged(model, f"{change.__name__}.h5", change)
    argv = {"eval": ["eval", "--model", path, "--csv", model / "rows.csv"],
            "predict": ["predict", "--model", path, "--csv", model / "rows.csv"],
            "train": ["train", "--resume", path, "--epochs", "2", "--train-csv", model / "rows.csv", "-q"]}
    for args in (argv[c] for c in commands):
        r = run(cli, *args)
        assert r.returncode == 1 and needle in r.stderr and "diverged" in r.stderr, (args[0], r.stderr)
        assert "nan" not in r.stdout.lower(), r.stdout


@pytest.mark.parametrize("every", [None, 1])
def test_divergence_stops_training_and_saves_nothing_diverged(cli, model, tmp_path, every):
    """With SGD at lr 1e6 the weights overflow within a few steps: training
    stops naming the epoch and step and suggesting a lower learning rate,
    and a checkpoint it leaves (from before the divergence) evaluates to
    finite numbers."""
    ck = tmp_path / "run.h5"
    args = ["train", "--net", "mlp", "--optimizer", "sgd", "--lr", "1e6", "--epochs", "3", "--train-csv",
            model / "rows.csv", "--checkpoint", ck, "-q"] + (["--checkpoint-every", str(every)] if every else [])
    r = run(cli, *args)
    assert r.returncode == 1, r.stderr
    assert re.search(r"epoch \d+, step \d+.*training diverged.*try a lower learning rate", r.stderr), r.stderr
    if ck.exists():
        e = run(cli, "eval", "--model", ck, "--csv", model / "rows.csv")
        assert e.returncode == 0 and "nan" not in e.stdout.lower() and "inf" not in e.stdout.lower(), e.stdout
    assert not list(tmp_path.glob("run.h5.tmp*"))


def test_overflowing_weights_fail_eval_and_predict(cli, model):
    path = damaged(model, "overflow.h5", overflow)
    for args in (["eval", "--model", path, "--csv", model / "rows.csv"],
                 ["predict", "--model", path, "--csv", model / "rows.csv", "--output", model / "p.csv"]):
        r = run(cli, *args)
        assert r.returncode == 1 and "sample 0: the network's output is" in r.stderr, (args[0], r.stderr)
        assert "lower learning rate" in r.stderr
    assert not (model / "p.csv").exists()
    # The undamaged checkpoint still evaluates: the check does not fire on a sound model.
    assert run(cli, "eval", "--model", model / "good.h5", "--csv", model / "rows.csv").returncode == 0
