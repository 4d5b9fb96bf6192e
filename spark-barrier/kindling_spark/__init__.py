"""Kindling on Spark.

native  ctypes binding of libkindling.so (prediction, spool files via C)
spool   the spool row format in numpy (Spark task -> training rank)
model   KindlingModel, a pyspark.ml Model with ML persistence

`native` and `spool` need only numpy; `model` imports pyspark, so it is
loaded on first use of KindlingModel.
"""
from . import native, spool
from .native import KindlingError, NotFound
from .spool import SpoolFormatError, SpoolWriter, read_spool, write_rows, write_spool

__version__ = "0.1.0"

_LAZY = {"KindlingModel", "KindlingModelParams", "ModelPayload", "predict_batches", "model"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        model = importlib.import_module(__name__ + ".model")
        return model if name == "model" else getattr(model, name)
    raise AttributeError(f"module 'kindling_spark' has no attribute {name!r}")


__all__ = ["native", "spool", "KindlingError", "NotFound", "SpoolFormatError", "SpoolWriter", "read_spool",
           "write_rows", "write_spool", "KindlingModel", "KindlingModelParams", "predict_batches"]
