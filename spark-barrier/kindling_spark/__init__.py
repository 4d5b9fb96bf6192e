"""Kindling on Spark.

capi       the one ctypes mirror of include/kindling.h
native     ctypes binding of libkindling.so (prediction, spool files via C)
spool      the spool row format in numpy (Spark task -> training rank)
model      KindlingModel, a pyspark.ml Model with ML persistence
predict    the executor side of prediction (no pyspark.ml: cheap for cold workers)
estimator  Kindling (builder) and KindlingClassifier (pyspark.ml Estimator): fit
The launch, by role (as horovod.spark and xgboost.spark split theirs):
params     defaults, TrainConfig and the ranks' command line
data       the one row parser; rows to numpy blocks for the ranks
driver     the driver side of a fit: slots, the barrier stage, retries
task       the barrier task: spool its rows, wire and run the MPI ranks
rendezvous the job secret, the driver hub, the rsh agent's launch service
keeper     the safe process runner: nothing a task starts outlives it
files      the one atomic file write
errors     the errors a fit raises

`native` and `spool` need only numpy; `model` imports pyspark, so it is
loaded on first use of KindlingModel.
"""
from . import native, spool
from .native import KindlingError, NotFound
from .spool import SpoolFormatError, SpoolWriter, read_spool, write_rows, write_spool

__version__ = "0.1.0"

_LAZY = {"KindlingModel", "KindlingModelParams", "ModelPayload", "predict_batches", "model"}


_ESTIMATOR = {"Kindling", "KindlingClassifier"}


def __getattr__(name):
    if name in _ESTIMATOR:
        import importlib

        return getattr(importlib.import_module(__name__ + ".estimator"), name)
    if name in _LAZY:
        import importlib

        model = importlib.import_module(__name__ + ".model")
        return model if name == "model" else getattr(model, name)
    raise AttributeError(f"module 'kindling_spark' has no attribute {name!r}")


__all__ = ["native", "spool", "KindlingError", "NotFound", "SpoolFormatError", "SpoolWriter", "read_spool",
           "write_rows", "write_spool", "Kindling", "KindlingClassifier", "KindlingModel", "KindlingModelParams", "predict_batches"]
