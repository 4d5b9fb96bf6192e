"""Kindling checkpoints are plain HDF5 that other tools can use.

Creates networks through the C library (ctypes), saves checkpoints, then
reads them with h5py only and recomputes the predictions in numpy from the
stored weights and spec, comparing with kd_net_predict on Fashion-MNIST
test images. Also checks the attributes, the optimizer and training
groups, and that h5dump reads the file.

Finds the library through kdlib (KD_LIB, else beside KD_CLI, else
<repo>/build/libkindling.so); skips (with the reason) when it is missing.
"""
import ctypes
import gzip
import json
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
# kdlib (on sys.path via conftest.py) locates the library and declares its
# functions with the one mirror of kindling.h; conftest's `kd` fixture skips
# with kdlib's reason when the library is missing.
from kdlib import EpochRecord, F32P, KD_OPT_ADAM, TrainState

h5py = pytest.importorskip("h5py")

FASHION_IMAGES = pathlib.Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


# ------------------------------------------------------------------ ctypes
@pytest.fixture(scope="module")
def lib(kd):
    return kd.load()  # every function is declared by the mirror (kindling_spark/capi.py)


def _ok(lib, status, what):
    assert status == 0, f"{what}: status {status}: {lib.kd_last_error().decode()}"


class Net:
    def __init__(self, lib, spec, seed):
        self.lib = lib
        self.ptr = ctypes.c_void_p()
        _ok(lib, lib.kd_net_create(spec.encode(), seed, ctypes.byref(self.ptr)), f"create {spec}")

    def predict(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        classes = self.lib.kd_net_num_classes(self.ptr)
        out = np.empty((len(x), classes), dtype=np.float32)
        _ok(self.lib, self.lib.kd_net_predict(self.ptr, x.ctypes.data_as(F32P), len(x),
                                              out.ctypes.data_as(F32P)), "predict")
        return out

    def save(self, path, opt=None, state=None):
        _ok(self.lib, self.lib.kd_checkpoint_save(str(path).encode(), self.ptr, opt, state), "save")

    def free(self):
        self.lib.kd_net_free(self.ptr)


@pytest.fixture(scope="module")
def images():
    if not FASHION_IMAGES.exists():
        pytest.skip(f"{FASHION_IMAGES} missing (package dataset-fashion-mnist)")
    with gzip.open(FASHION_IMAGES, "rb") as f:
        raw = f.read()
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16)
    return (pixels[: 100 * 784].reshape(100, 1, 28, 28) / 255.0).astype(np.float32)


# ------------------------------------------------------------ numpy model
def _text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def _pair(v, default):
    if v is None:
        v = default
    return (int(v[0]), int(v[1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


def _conv2d(x, w, b, stride, pad):
    n, c, h, wd = x.shape
    oc, ic, kh, kw = w.shape
    assert c == ic
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    win = win[:, :, :: stride[0], :: stride[1]]  # n, c, oh, ow, kh, kw
    y = np.einsum("ncijkl,ockl->noij", win, w, optimize=True)
    return y + (b[None, :, None, None] if b is not None else 0.0)


def _maxpool(x, size, stride, pad):
    if pad != (0, 0):
        x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(x, size, axis=(2, 3))
    return win[:, :, :: stride[0], :: stride[1]].max(axis=(4, 5))


def numpy_forward(h5, x):
    """Inference with only the file: the spec for the layer sequence, the
    groups (found by their "index") for the tensors."""
    spec = json.loads(_text(h5.attrs["spec"]))
    layers = h5["layers"]
    by_index = {int(layers[_text(n)].attrs["index"]): layers[_text(n)] for n in layers.attrs["order"]}
    x = x.astype(np.float64)
    for i, L in enumerate(spec["layers"]):
        t, g = L["type"], by_index.get(i)
        if t == "flatten":
            x = x.reshape(len(x), -1)
        elif t == "dense":
            x = x @ g["weight"][()].astype(np.float64).T
            if "bias" in g:
                x = x + g["bias"][()]
        elif t == "conv2d":
            x = _conv2d(x, g["weight"][()].astype(np.float64),
                        g["bias"][()].astype(np.float64) if "bias" in g else None,
                        _pair(L.get("stride"), 1), _pair(L.get("padding", L.get("pad")), 0))
        elif t == "maxpool":
            size = _pair(L.get("size", L.get("kernel")), 2)
            x = _maxpool(x, size, _pair(L.get("stride"), size), _pair(L.get("padding", L.get("pad")), 0))
        elif t == "relu":
            x = np.maximum(x, 0.0)
        elif t == "tanh":
            x = np.tanh(x)
        elif t == "sigmoid":
            x = 1.0 / (1.0 + np.exp(-x))
        elif t == "dropout":
            pass  # identity at inference
        elif t == "softmax":
            e = np.exp(x - x.max(axis=1, keepdims=True))
            x = e / e.sum(axis=1, keepdims=True)
        else:
            pytest.fail(f"no numpy reference for layer type {t!r}")
    return x


# ------------------------------------------------------------------ tests
def test_mlp_attributes_and_numpy_predictions(lib, images, tmp_path):
    net = Net(lib, "mlp", 1)
    path = tmp_path / "mlp.h5"
    try:
        net.save(path)
        expected = net.predict(images)
    finally:
        net.free()

    with h5py.File(path, "r") as h5:
        assert _text(h5.attrs["format"]) == "kindling-checkpoint"
        assert int(h5.attrs["format_version"]) == 2
        assert _text(h5.attrs["kindling_version"]).count(".") == 2
        spec = json.loads(_text(h5.attrs["spec"]))
        assert [L["type"] for L in spec["layers"]] == [
            "flatten", "dense", "relu", "dense", "relu", "dense", "softmax"]
        assert list(h5.attrs["input_shape"]) == [1, 28, 28]
        assert int(h5.attrs["num_classes"]) == 10
        order = [_text(n) for n in h5["layers"].attrs["order"]]
        assert order == ["dense_1", "dense_2", "dense_3"]
        assert [int(h5["layers"][n].attrs["index"]) for n in order] == [1, 3, 5]
        assert all(_text(h5["layers"][n].attrs["type"]) == "dense" for n in order)
        # PyTorch layout [out, in], float32.
        assert [h5["layers"][n]["weight"].shape for n in order] == [(128, 784), (64, 128), (10, 64)]
        assert all(h5["layers"][n]["weight"].dtype == np.float32 for n in order)
        assert [h5["layers"][n]["bias"].shape for n in order] == [(128,), (64,), (10,)]
        assert "optimizer" not in h5 and "training" not in h5

        # Plain numpy, spelled out for the MLP: x @ W.T + b, relu, softmax.
        x = images.reshape(100, -1).astype(np.float64)
        for k, n in enumerate(order):
            x = x @ h5["layers"][n]["weight"][()].T + h5["layers"][n]["bias"][()]
            if k < len(order) - 1:
                x = np.maximum(x, 0.0)
        e = np.exp(x - x.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
        generic = numpy_forward(h5, images)

    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(generic, expected, rtol=0, atol=1e-5)
    # Not a vacuous comparison: the network gives varied, non-uniform outputs.
    assert len(set(expected.argmax(axis=1))) > 1 and expected.max() > 0.2


def test_lenet_numpy_predictions(lib, images, tmp_path):
    net = Net(lib, "lenet", 1)
    path = tmp_path / "lenet.h5"
    try:
        net.save(path)
        expected = net.predict(images)
    finally:
        net.free()
    with h5py.File(path, "r") as h5:
        order = [_text(n) for n in h5["layers"].attrs["order"]]
        assert [h5["layers"][n]["weight"].shape for n in order] == [
            (20, 1, 5, 5), (50, 20, 5, 5), (500, 800), (10, 500)]
        got = numpy_forward(h5, images)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert len(set(expected.argmax(axis=1))) > 1


def test_optimizer_and_training_groups(lib, tmp_path):
    net = Net(lib, "mlp", 2)
    opt = ctypes.c_void_p()
    state = TrainState()
    path = tmp_path / "full.h5"
    try:
        cfg = lib.kd_optim_config_default()
        cfg.kind = KD_OPT_ADAM
        cfg.lr = 0.002
        n = lib.kd_net_param_count(net.ptr)
        _ok(lib, lib.kd_optim_create(ctypes.byref(cfg), n, ctypes.byref(opt)), "optim create")
        rng = np.random.default_rng(0)
        for _ in range(2):
            g = rng.standard_normal(n).astype(np.float32)
            _ok(lib, lib.kd_optim_step(opt, lib.kd_net_params(net.ptr), g.ctypes.data_as(F32P)), "step")
        count = ctypes.c_size_t()
        slots = lib.kd_optim_state(opt, ctypes.byref(count))
        opt_state = np.ctypeslib.as_array(slots, shape=(count.value,)).copy()

        lib.kd_train_state_init(ctypes.byref(state))
        state.epoch, state.step, state.seed, state.batch_size = 2, 2, 2**63 + 5, 64
        for e in (1, 2):
            rec = EpochRecord(e, 1.0 / e, 0.5 + e / 10, float("nan"), float("nan"), 3.5, 0.002, 1.1 / e, 0.4 + e / 10)
            _ok(lib, lib.kd_train_state_append(ctypes.byref(state), ctypes.byref(rec)), "append")
        net.save(path, opt, ctypes.byref(state))
    finally:
        lib.kd_train_state_clear(ctypes.byref(state))
        lib.kd_optim_free(opt)
        net.free()

    with h5py.File(path, "r") as h5:
        o = h5["optimizer"]
        assert _text(o.attrs["kind"]) == "adam"
        assert float(o.attrs["lr"]) == 0.002
        assert int(o.attrs["steps"]) == 2
        assert _text(o.attrs["schedule"]) == "constant"
        m, v = o["m"][()], o["v"][()]
        assert m.dtype == np.float32 and m.shape == (n,) and v.shape == (n,)
        np.testing.assert_array_equal(np.concatenate([m, v]), opt_state)
        assert np.any(m != 0) and np.all(v >= 0)

        t = h5["training"]
        assert int(t.attrs["epoch"]) == 2 and int(t.attrs["batch_size"]) == 64
        assert int(t.attrs["seed"]) == 2**63 + 5
        hist = t["history"]
        columns = _text(hist.attrs["columns"]).split(",")
        assert columns == [
            "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
            "seconds", "learning_rate"]
        h = hist[()]
        assert h.shape == (2, 9) and h.dtype == np.float64
        col = {name: h[:, i] for i, name in enumerate(columns)}
        np.testing.assert_array_equal(col["epoch"], [1, 2])
        np.testing.assert_array_equal(col["train_loss"], [1.0, 0.5])
        np.testing.assert_array_equal(col["val_loss"], [1.1, 0.55])
        np.testing.assert_array_equal(col["val_accuracy"], [0.4 + 1 / 10, 0.4 + 2 / 10])  # as written
        assert np.isnan(col["test_loss"]).all() and np.isnan(col["test_accuracy"]).all()
        np.testing.assert_array_equal(col["learning_rate"], [0.002, 0.002])


def test_empty_history_is_readable(lib, tmp_path):
    net = Net(lib, "mlp", 3)
    state = TrainState()
    lib.kd_train_state_init(ctypes.byref(state))
    path = tmp_path / "empty.h5"
    try:
        net.save(path, None, ctypes.byref(state))
    finally:
        net.free()
    with h5py.File(path, "r") as h5:
        h = h5["training/history"][()]
        assert h.shape == (0, 9)


def test_h5dump_reads_the_file(lib, tmp_path):
    h5dump = shutil.which("h5dump")
    if h5dump is None:
        pytest.skip("h5dump not installed (package hdf5-tools)")
    net = Net(lib, "lenet", 4)
    path = tmp_path / "lenet.h5"
    try:
        net.save(path)
    finally:
        net.free()
    out = subprocess.run([h5dump, "-H", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for needle in ('GROUP "layers"', 'GROUP "conv2d_1"', 'GROUP "dense_2"',
                   'DATASET "weight"', 'ATTRIBUTE "spec"', 'ATTRIBUTE "format"'):
        assert needle in out.stdout, f"{needle} not in h5dump -H output"
