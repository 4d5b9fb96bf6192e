"""A small ctypes wrapper of libkindling.so for the Python tests and the
benchmark.

The library is found via $KD_LIB, else beside $KD_CLI, else
<repo>/build/libkindling.so. load() raises LibraryMissing (with every path
it tried) when none exists, so tests can skip with that reason. Every call
that returns a kd_status is checked; a failure raises
RuntimeError(kd_last_error()).

The Structures mirror include/kindling.h field by field, in order.
"""
import ctypes
import os
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent

c_int, c_int32, c_int64, c_uint64 = ctypes.c_int, ctypes.c_int32, ctypes.c_int64, ctypes.c_uint64
c_double, c_size_t, c_char_p, c_void_p = ctypes.c_double, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p
F32P = ctypes.POINTER(ctypes.c_float)
I32P = ctypes.POINTER(ctypes.c_int32)

KD_MAX_RANK = 4

# kd_net_to_host buffers
KD_NET_PARAMS, KD_NET_GRADS, KD_NET_STATE = 1, 2, 4

# kd_optim_kind / kd_schedule_kind
KD_OPT_SGD, KD_OPT_MOMENTUM, KD_OPT_ADAM, KD_OPT_ADAMW = 0, 1, 2, 3
KD_SCHED_CONSTANT, KD_SCHED_STEP, KD_SCHED_COSINE = 0, 1, 2


class Shape(ctypes.Structure):
    _fields_ = [("rank", c_int), ("dim", c_int * KD_MAX_RANK)]

    def dims(self):
        return tuple(self.dim[: self.rank])


class Dataset(ctypes.Structure):
    _fields_ = [
        ("n", c_int64),
        ("shape", Shape),
        ("x", F32P),
        ("y", I32P),
        ("num_classes", c_int),
    ]


class LayerInfo(ctypes.Structure):
    _fields_ = [
        ("index", c_int),
        ("name", c_char_p),
        ("type", c_char_p),
        ("in_", Shape),
        ("out", Shape),
        ("weight_offset", c_size_t),
        ("weight_count", c_size_t),
        ("weight_rank", c_int),
        ("weight_dims", c_int * KD_MAX_RANK),
        ("bias_offset", c_size_t),
        ("bias_count", c_size_t),
        ("state_offset", c_size_t),
        ("state_count", c_size_t),
    ]


class OptimConfig(ctypes.Structure):
    _fields_ = [
        ("kind", c_int),
        ("lr", c_double),
        ("momentum", c_double),
        ("nesterov", c_int),
        ("beta1", c_double),
        ("beta2", c_double),
        ("eps", c_double),
        ("weight_decay", c_double),
        ("schedule", c_int),
        ("step_size", c_int64),
        ("gamma", c_double),
        ("total_steps", c_int64),
        ("lr_min", c_double),
    ]


class EpochRecord(ctypes.Structure):
    _fields_ = [
        ("epoch", c_int32),
        ("train_loss", c_double),
        ("train_accuracy", c_double),
        ("test_loss", c_double),
        ("test_accuracy", c_double),
        ("seconds", c_double),
        ("learning_rate", c_double),
    ]


class TrainState(ctypes.Structure):
    _fields_ = [
        ("epoch", c_int32),
        ("step", c_int64),
        ("seed", c_uint64),
        ("batch_size", c_int32),
        ("history_len", c_int32),
        ("history", ctypes.POINTER(EpochRecord)),
    ]


class TrainConfig(ctypes.Structure):
    _fields_ = [
        ("epochs", c_int32),
        ("batch_size", c_int32),
        ("seed", c_uint64),
        ("shuffle", c_int),
        ("test", ctypes.POINTER(Dataset)),
        ("checkpoint_path", c_char_p),
        ("checkpoint_every", c_int64),
        ("progress", c_void_p),  # kd_progress_fn; unused here (NULL)
        ("progress_user", c_void_p),
        ("progress_interval", c_double),
        ("exchange", c_void_p),  # NULL = local optimizer
        ("part_index", c_int32),
        ("part_count", c_int32),
        ("steps_per_epoch", c_int64),
        ("local_data", c_int),
        ("save", c_void_p),  # kd_save_fn; NULL = save to checkpoint_path
        ("save_user", c_void_p),
        ("stop", c_void_p),  # kd_stop_fn; NULL = never stop early
        ("stop_user", c_void_p),
    ]


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


def _declare(L):
    """argtypes/restype for every function used (64-bit sizes and pointers
    must not go through ctypes' default int)."""
    S = c_int  # kd_status
    sigs = {
        "kd_last_error": (c_char_p, []),
        "kd_status_name": (c_char_p, [c_int]),
        "kd_version": (c_char_p, []),
        "kd_set_threads": (None, [c_int]),
        "kd_dataset_alloc": (S, [c_int64, ctypes.POINTER(Shape), ctypes.POINTER(ctypes.POINTER(Dataset))]),
        "kd_dataset_free": (None, [ctypes.POINTER(Dataset)]),
        "kd_net_create": (S, [c_char_p, c_uint64, ctypes.POINTER(c_void_p)]),
        "kd_net_free": (None, [c_void_p]),
        "kd_net_spec_json": (c_char_p, [c_void_p]),
        "kd_preset_json": (c_char_p, [c_char_p]),
        "kd_net_input_shape": (Shape, [c_void_p]),
        "kd_net_num_classes": (c_int, [c_void_p]),
        "kd_net_param_count": (c_size_t, [c_void_p]),
        "kd_net_to_host": (S, [c_void_p, ctypes.c_uint]),
        "kd_net_params": (F32P, [c_void_p]),
        "kd_net_grads": (F32P, [c_void_p]),
        "kd_net_num_layers": (c_int, [c_void_p]),
        "kd_net_layer_info": (S, [c_void_p, c_int, ctypes.POINTER(LayerInfo)]),
        "kd_net_forward": (S, [c_void_p, F32P, c_int, c_int]),
        "kd_net_output": (F32P, [c_void_p]),
        "kd_net_loss": (S, [c_void_p, I32P, ctypes.POINTER(c_double), ctypes.POINTER(c_int)]),
        "kd_net_backward": (S, [c_void_p, I32P]),
        "kd_net_set_noise_seed": (None, [c_void_p, c_uint64, c_int64]),
        "kd_net_predict": (S, [c_void_p, F32P, c_int64, F32P]),
        "kd_optim_config_default": (OptimConfig, []),
        "kd_optim_create": (S, [ctypes.POINTER(OptimConfig), c_size_t, ctypes.POINTER(c_void_p)]),
        "kd_optim_free": (None, [c_void_p]),
        "kd_optim_step": (S, [c_void_p, F32P, F32P]),
        "kd_optim_steps": (c_int64, [c_void_p]),
        "kd_optim_current_lr": (c_double, [c_void_p]),
        "kd_train_config_default": (TrainConfig, []),
        "kd_train_state_init": (None, [ctypes.POINTER(TrainState)]),
        "kd_train_state_clear": (None, [ctypes.POINTER(TrainState)]),
        "kd_train": (S, [c_void_p, c_void_p, ctypes.POINTER(Dataset), ctypes.POINTER(TrainConfig),
                         ctypes.POINTER(TrainState)]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(L, name)
        f.restype = res
        f.argtypes = args


def load():
    """The library, loaded once. Raises LibraryMissing naming the paths tried."""
    global _LIB
    if _LIB is not None:
        return _LIB
    tried = library_candidates()
    for p in tried:
        if p.exists():
            L = ctypes.CDLL(str(p))
            _declare(L)
            _LIB = L
            return L
    raise LibraryMissing("libkindling.so not found (set KD_LIB or KD_CLI); looked at "
                         + ", ".join(str(p) for p in tried))


def check(status, what=""):
    if status != 0:
        L = load()
        msg = L.kd_last_error().decode()
        raise RuntimeError(f"{what}: {L.kd_status_name(status).decode()}: {msg}" if what else msg)


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
