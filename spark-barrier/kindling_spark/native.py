"""ctypes binding of libkindling.so: prediction (a network rebuilt from a
checkpoint, run forward in inference mode) and spool files written or read
by the C library. No MPI here; training runs in `kindling` child processes.

Where things are found (first hit wins; every path tried is listed in the
error when nothing is found):
  library  $KINDLING_LIB, the package directory, <repo>/build/libkindling.so,
           then the system loader (ldconfig, after `cmake --install`)
  CLI      $KINDLING_CLI, the package directory, <repo>/build/kindling, $PATH
A variable that is set must name an existing file (no fallback then).
<repo> is the source tree this package was installed from (recorded at build
time in _build_info.py) or the tree this file sits in.

Each process loads the library once. Structs and signatures come from
capi.py, the package's one mirror of kindling.h. Every kd_status call is
checked; a failure raises KindlingError carrying the library's message.
"""
import ctypes
import ctypes.util
import math
import os
import pathlib
import shutil
import tempfile
import threading

import numpy as np

from . import capi
from .capi import F32P, Dataset, EpochRecord, Shape, TrainState

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


class KindlingError(RuntimeError):
    """A failed library call: `status`, the kd_status identifier (e.g.
    "KD_ERR_FORMAT"), `code` its number, and the library's message."""

    def __init__(self, status, message):
        self.code = int(status)
        self.status = capi.status_id(status)
        super().__init__(message)


class NotFound(RuntimeError):
    """The library or the CLI is missing; the message lists every path tried."""


# ---------------------------------------------------------------- locating
def repo_root():
    """The Kindling source tree: recorded at install time, else the tree
    this file is in (a checkout or an editable install); None if neither."""
    candidates = []
    try:
        from . import _build_info  # written by setup.py at build time

        candidates.append(pathlib.Path(_build_info.REPO_ROOT))
    except ImportError:
        pass
    candidates.append(PACKAGE_DIR.parent.parent)
    for c in candidates:
        if (c / "include" / "kindling.h").is_file():
            return c
    return None


def _candidates(env, name):
    if os.environ.get(env):
        # Named explicitly: that file or an error, never a silent fallback.
        p = pathlib.Path(os.environ[env])
        if not p.is_file():
            raise NotFound(f"{env}={p} does not exist (unset it to search the usual places)")
        return [p]
    out = []
    out.append(PACKAGE_DIR / name)
    root = repo_root()
    if root is not None:
        out.append(root / "build" / name)
    return out


def library_candidates():
    return _candidates("KINDLING_LIB", "libkindling.so")


def library_path():
    """Path of libkindling.so (or the soname the system loader resolves)."""
    tried = library_candidates()
    for p in tried:
        if p.is_file():
            return str(p)
    system = ctypes.util.find_library("kindling")
    if system:
        return system
    raise NotFound("libkindling.so not found; tried " + ", ".join(map(str, tried)) +
                   " and the system loader (ldconfig). Build it (cmake --build build) or set KINDLING_LIB.")


def cli_path():
    """Path of the `kindling` binary."""
    tried = _candidates("KINDLING_CLI", "kindling")
    for p in tried:
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    on_path = shutil.which("kindling")
    if on_path:
        return on_path
    raise NotFound("the kindling binary was not found; tried " + ", ".join(map(str, tried)) +
                   " and $PATH. Build it (cmake --build build) or set KINDLING_CLI.")


# ----------------------------------------------------------------- loading
_lib = None
_lib_lock = threading.Lock()


def _choose_blas_kernels():
    """Debian 12's OpenBLAS does not know CPUs newer than itself and falls back
    to generic SSE3 kernels, several times slower; it reads OPENBLAS_CORETYPE
    only when it loads. Like the kindling CLI, ask for the AVX-512 or AVX2
    kernel family the CPU supports unless the user chose (or KD_BLAS_AUTO=0)."""
    if "OPENBLAS_CORETYPE" in os.environ or os.environ.get("KD_BLAS_AUTO") == "0":
        return
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return
    if {"avx512f", "avx512bw", "avx512vl"} <= set(flags):
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    elif {"avx2", "fma"} <= set(flags):
        os.environ["OPENBLAS_CORETYPE"] = "Haswell"


def load():
    """The library, loaded once per process with every signature declared
    (64-bit sizes and pointers must not pass through ctypes' default int)."""
    global _lib
    with _lib_lock:
        if _lib is None:
            _choose_blas_kernels()
            # An older library still predicts; a missing call fails when used.
            _lib = capi.declare(ctypes.CDLL(library_path()), missing=_missing)
        return _lib


def _missing(lib, name):
    def call(*args):
        raise NotFound(f"{lib._name} has no {name}: the library is older than this package; rebuild it")
    return call


def check(status, what):
    if status != 0:
        lib = load()
        msg = lib.kd_last_error().decode("utf-8", "replace")
        raise KindlingError(status, f"{what}: {msg}" if msg else f"{what} failed ({capi.status_name(lib, status)})")


def version():
    return load().kd_version().decode()


def set_threads(n):
    """OpenBLAS threads for the matrix products in this process (0 leaves OpenBLAS's default)."""
    load().kd_set_threads(int(n))


def _path_bytes(path):
    return os.fsencode(os.fspath(path))


def _shape_struct(dims):
    s = Shape()
    s.rank = len(dims)
    for i, d in enumerate(dims):
        s.dim[i] = int(d)
    return s


# ---------------------------------------------------------------- networks
class NativeNet:
    """A network rebuilt from an HDF5 checkpoint by the C library.

    Not thread-safe (the forward pass keeps its buffers in the net): use one
    per thread. close() frees it; so does garbage collection."""

    def __init__(self, checkpoint_path):
        L = load()
        self._lib = L
        self._ptr = ctypes.c_void_p()
        state = TrainState()
        L.kd_train_state_init(ctypes.byref(state))
        try:
            check(L.kd_checkpoint_load(_path_bytes(checkpoint_path), ctypes.byref(self._ptr), None,
                                       ctypes.byref(state)), "loading the checkpoint")
            self.history = _history_of(state)
            self.epochs, self.steps = int(state.epoch), int(state.step)
        finally:
            L.kd_train_state_clear(ctypes.byref(state))
        self.spec_json = L.kd_net_spec_json(self._ptr).decode()
        self.input_shape = L.kd_net_input_shape(self._ptr).dims()
        self.input_size = int(np.prod(self.input_shape))
        self.num_classes = int(L.kd_net_num_classes(self._ptr))
        self.param_count = int(L.kd_net_param_count(self._ptr))

    @classmethod
    def from_bytes(cls, checkpoint, name=None):
        """From the bytes of a checkpoint file (the library reads files, so
        they pass through a private temporary file, removed at once).
        Errors name `name` (where the bytes came from) instead of that
        temporary file, which the user never saw."""
        fd, path = tempfile.mkstemp(prefix="kindling-model-", suffix=".h5")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(checkpoint)
            return cls(path)
        except KindlingError as e:
            label = name or f"the checkpoint ({len(checkpoint)} bytes)"
            raise KindlingError(e.code, str(e).replace(path, label)) from None
        finally:
            os.unlink(path)

    def predict(self, x):
        """Class probabilities (n, num_classes) float32 for n samples given
        as an array (n, *input_shape) or (n, input_size)."""
        if self._ptr is None:
            raise ValueError("this network was closed")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 0:
            raise ValueError("predict needs a batch of samples, got a scalar")
        n = x.shape[0]
        if int(np.prod(x.shape[1:])) != self.input_size:
            raise ValueError(f"samples have {int(np.prod(x.shape[1:]))} features (shape {x.shape[1:]}); "
                             f"the network expects {self.input_size} "
                             f"(input shape {'x'.join(map(str, self.input_shape))})")
        x = np.ascontiguousarray(x.reshape(n, self.input_size))
        out = np.empty((n, self.num_classes), dtype=np.float32)
        if n:
            check(self._lib.kd_net_predict(self._ptr, x.ctypes.data_as(F32P), n, out.ctypes.data_as(F32P)),
                  "predict")
        return out

    def close(self):
        if getattr(self, "_ptr", None):
            self._lib.kd_net_free(self._ptr)
        self._ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


def _nan_to_none(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def _history_of(state):
    """The epoch records as dicts (NaN, "no test set", becomes None)."""
    return [{name: _nan_to_none(getattr(state.history[i], name)) for name, _ in EpochRecord._fields_}
            for i in range(state.history_len)]


def checkpoint_info(path):
    """spec_json, input_shape, num_classes, param_count, epochs, steps and
    history of a checkpoint file, read by the C library."""
    with NativeNet(path) as net:
        return {"spec_json": net.spec_json, "input_shape": net.input_shape, "num_classes": net.num_classes,
                "param_count": net.param_count, "epochs": net.epochs, "steps": net.steps,
                "history": net.history}


# ------------------------------------------------------------------ spools
def save_spool(path, features, labels=None, shape=None):
    """Write a spool file with the C writer (kd_dataset_save_spool).
    features: (n, *shape) or (n, size) with `shape` given; labels: n ints
    >= 0, or None for an unlabelled file."""
    L = load()
    x = np.asarray(features, dtype=np.float32)
    n = x.shape[0]
    dims = tuple(shape) if shape is not None else tuple(x.shape[1:]) or (1,)
    ds = ctypes.POINTER(Dataset)()
    s = _shape_struct(dims)
    check(L.kd_dataset_alloc(n, ctypes.byref(s), ctypes.byref(ds)), f"{path}: allocating {n} samples")
    try:
        size = int(np.prod(dims))
        if n:
            np.ctypeslib.as_array(ds.contents.x, shape=(n, size))[:] = x.reshape(n, size)
            if labels is not None:
                np.ctypeslib.as_array(ds.contents.y, shape=(n,))[:] = np.asarray(labels, dtype=np.int32)
        check(L.kd_dataset_save_spool(_path_bytes(path), ds), "kd_dataset_save_spool")
    finally:
        L.kd_dataset_free(ds)


def load_spool(path):
    """Read a spool file with the C reader (kd_dataset_load_spool).
    Returns (features (n, *shape) float32, labels int32 or None, shape)."""
    L = load()
    ds = ctypes.POINTER(Dataset)()
    check(L.kd_dataset_load_spool(_path_bytes(path), ctypes.byref(ds)), "kd_dataset_load_spool")
    try:
        d = ds.contents
        shape = d.shape.dims()
        n = int(d.n)
        if n == 0:
            return np.zeros((0,) + shape, dtype=np.float32), None, shape
        x = np.ctypeslib.as_array(d.x, shape=(n,) + shape).copy()
        y = np.ctypeslib.as_array(d.y, shape=(n,)).copy()
        return x, (None if d.num_classes == 0 else y), shape
    finally:
        L.kd_dataset_free(ds)
