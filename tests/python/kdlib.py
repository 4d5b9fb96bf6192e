"""A small ctypes wrapper of libkindling.so for the Python tests and the
benchmark.

The library is found via $KD_LIB, else beside $KD_CLI, else
<repo>/build/libkindling.so. load() raises LibraryMissing (with every path
it tried) when none exists, so tests can skip with that reason. Every call
that returns a kd_status is checked; a failure raises
RuntimeError(kd_last_error()).

Structs, constants and function signatures come from the package's one
mirror of include/kindling.h, kindling_spark/capi.py (checked against the C
compiler by test_capi_layout.py), imported from this checkout.
"""
import ctypes
import os
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
if str(ROOT / "spark-barrier") not in sys.path:
    sys.path.insert(0, str(ROOT / "spark-barrier"))

from kindling_spark import capi  # noqa: E402
from kindling_spark.capi import (F32P, I32P, KD_NET_GRADS, KD_NET_PARAMS, KD_NET_STATE,  # noqa: E402,F401
                                 KD_OPT_ADAM, KD_OPT_ADAMW, KD_OPT_MOMENTUM, KD_OPT_SGD, KD_SCHED_CONSTANT,
                                 KD_SCHED_COSINE, KD_SCHED_STEP, Dataset, EpochRecord, LayerInfo, OptimConfig,
                                 Shape, TrainConfig, TrainState)

c_int, c_double, c_void_p = ctypes.c_int, ctypes.c_double, ctypes.c_void_p


class LibraryMissing(RuntimeError):
    pass


def library_candidates():
    out = []
    if os.environ.get("KD_LIB"):
        out.append(pathlib.Path(os.environ["KD_LIB"]))
    if os.environ.get("KD_CLI"):
        out.append(pathlib.Path(os.environ["KD_CLI"]).parent / "libkindling.so")
    out.append(ROOT / "build" / "libkindling.so")
    return out


_LIB = None


def load():
    """The library, loaded once. Raises LibraryMissing naming the paths tried."""
    global _LIB
    if _LIB is not None:
        return _LIB
    tried = library_candidates()
    for p in tried:
        if p.exists():
            L = capi.declare(ctypes.CDLL(str(p)))
            _LIB = L
            return L
    raise LibraryMissing("libkindling.so not found (set KD_LIB or KD_CLI); looked at "
                         + ", ".join(str(p) for p in tried))


def check(status, what=""):
    if status != 0:
        L = load()
        msg = L.kd_last_error().decode()
        raise RuntimeError(f"{what}: {capi.status_name(L, status)}: {msg}" if what else msg)


def set_threads(n):
    load().kd_set_threads(int(n))


def _f32(a):
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a, a.ctypes.data_as(F32P)


def _i32(a):
    a = np.ascontiguousarray(a, dtype=np.int32)
    return a, a.ctypes.data_as(I32P)


class Net:
    """A kd_net. params()/grads() are live numpy views of the flat buffers."""

    def __init__(self, spec, seed=1):
        self.lib = load()
        self.ptr = c_void_p()
        check(self.lib.kd_net_create(spec.encode(), seed, ctypes.byref(self.ptr)), f"kd_net_create({spec[:40]})")
        self.count = self.lib.kd_net_param_count(self.ptr)
        self.classes = self.lib.kd_net_num_classes(self.ptr)
        self.input_shape = self.lib.kd_net_input_shape(self.ptr).dims()
        self._x = None  # the net keeps a pointer to the last forward's input

    def __del__(self):
        self.close()

    def close(self):
        if getattr(self, "ptr", None) and self.ptr.value:
            self.lib.kd_net_free(self.ptr)
            self.ptr = c_void_p()

    def spec_json(self):
        return self.lib.kd_net_spec_json(self.ptr).decode()

    def params_ptr(self):
        check(self.lib.kd_net_to_host(self.ptr, KD_NET_PARAMS), "kd_net_to_host")
        return self.lib.kd_net_params(self.ptr)

    def grads_ptr(self):
        check(self.lib.kd_net_to_host(self.ptr, KD_NET_GRADS), "kd_net_to_host")
        return self.lib.kd_net_grads(self.ptr)

    def params(self):
        return np.ctypeslib.as_array(self.params_ptr(), shape=(self.count,))

    def grads(self):
        return np.ctypeslib.as_array(self.grads_ptr(), shape=(self.count,))

    def num_layers(self):
        return self.lib.kd_net_num_layers(self.ptr)

    def layer_info(self, i):
        info = LayerInfo()
        check(self.lib.kd_net_layer_info(self.ptr, i, ctypes.byref(info)), f"layer_info({i})")
        return info

    def layers(self):
        return [self.layer_info(i) for i in range(self.num_layers())]

    def weight(self, info, buf=None):
        """The layer's weight (shaped by weight_dims) and bias as views into
        the params buffer, or into `buf` (e.g. grads())."""
        buf = self.params() if buf is None else buf
        dims = tuple(info.weight_dims[: info.weight_rank])
        w = buf[info.weight_offset: info.weight_offset + info.weight_count].reshape(dims)
        b = buf[info.bias_offset: info.bias_offset + info.bias_count] if info.bias_count else None
        return w, b

    def forward(self, x, training=1):
        x, xp = _f32(x)
        self._x = x
        check(self.lib.kd_net_forward(self.ptr, xp, len(x), int(training)), "kd_net_forward")
        self._batch = len(x)

    def output(self):
        out = self.lib.kd_net_output(self.ptr)
        return np.ctypeslib.as_array(out, shape=(self._batch, self.classes)).copy()

    def loss(self, y):
        y, yp = _i32(y)
        loss, correct = c_double(), c_int()
        check(self.lib.kd_net_loss(self.ptr, yp, ctypes.byref(loss), ctypes.byref(correct)), "kd_net_loss")
        return loss.value, correct.value

    def backward(self, y):
        y, yp = _i32(y)
        check(self.lib.kd_net_backward(self.ptr, yp), "kd_net_backward")

    def predict(self, x):
        x, xp = _f32(x)
        out = np.empty((len(x), self.classes), dtype=np.float32)
        check(self.lib.kd_net_predict(self.ptr, xp, len(x), out.ctypes.data_as(F32P)), "kd_net_predict")
        return out


def optim_config(kind, **fields):
    """kd_optim_config_default() with `fields` overridden."""
    cfg = load().kd_optim_config_default()
    cfg.kind = kind
    for k, v in fields.items():
        if not hasattr(cfg, k):
            raise AttributeError(f"kd_optim_config has no field {k}")
        setattr(cfg, k, v)
    return cfg


class Optim:
    def __init__(self, config, n):
        self.lib = load()
        self.ptr = c_void_p()
        self.config = config
        check(self.lib.kd_optim_create(ctypes.byref(config), n, ctypes.byref(self.ptr)), "kd_optim_create")

    def __del__(self):
        self.close()

    def close(self):
        if getattr(self, "ptr", None) and self.ptr.value:
            self.lib.kd_optim_free(self.ptr)
            self.ptr = c_void_p()

    def step(self, params_ptr, grads_ptr):
        check(self.lib.kd_optim_step(self.ptr, params_ptr, grads_ptr), "kd_optim_step")

    def step_net(self, net):
        self.step(net.params_ptr(), net.grads_ptr())

    def steps(self):
        return self.lib.kd_optim_steps(self.ptr)


class KdDataset:
    """A kd_dataset owned by the library, filled from numpy arrays."""

    def __init__(self, x, y, shape):
        self.lib = load()
        s = Shape()
        s.rank = len(shape)
        for i, d in enumerate(shape):
            s.dim[i] = d
        self.ptr = ctypes.POINTER(Dataset)()
        check(self.lib.kd_dataset_alloc(len(x), ctypes.byref(s), ctypes.byref(self.ptr)), "kd_dataset_alloc")
        ds = self.ptr.contents
        per = int(np.prod(shape))
        np.ctypeslib.as_array(ds.x, shape=(len(x), per))[:] = np.asarray(x, dtype=np.float32).reshape(len(x), per)
        np.ctypeslib.as_array(ds.y, shape=(len(x),))[:] = np.asarray(y, dtype=np.int32)
        ds.num_classes = int(np.max(y)) + 1

    def __del__(self):
        if getattr(self, "ptr", None):
            self.lib.kd_dataset_free(self.ptr)
            self.ptr = None


def train(net, opt, dataset, **fields):
    """kd_train with kd_train_config_default() overridden by `fields`;
    returns the epoch records as a list of dicts."""
    L = load()
    cfg = L.kd_train_config_default()
    for k, v in fields.items():
        if not hasattr(cfg, k):
            raise AttributeError(f"kd_train_config has no field {k}")
        setattr(cfg, k, v)
    st = TrainState()
    L.kd_train_state_init(ctypes.byref(st))
    try:
        check(L.kd_train(net.ptr, opt.ptr, dataset.ptr, ctypes.byref(cfg), ctypes.byref(st)), "kd_train")
        return [{k: getattr(st.history[i], k) for k, _ in EpochRecord._fields_} for i in range(st.history_len)]
    finally:
        L.kd_train_state_clear(ctypes.byref(st))
