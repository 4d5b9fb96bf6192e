"""Training from Spark: the seed-style builder `Kindling` and the pyspark.ml
Estimator `KindlingClassifier`; both run driver.run_training and return
a KindlingModel holding the writer rank's final checkpoint. Their defaults
are params.DEFAULTS.

    model = (Kindling().setNetwork("lenet").setDimension((1, 28, 28))
             .setNumEpoch(10).setBatchSize(128).setNumWorker(2).setNumServer(1)
             .setContext("cpu").setLabelName("label").setOptimizer("momentum", lr=0.01)
             .fit(rdd))            # (label, features) pairs, LabeledPoints, Rows or arrays

    clf = KindlingClassifier(featuresCol="features", labelCol="label", network="mlp", numEpochs=5)
    model = clf.fit(df)           # KindlingModel: transform(df), write().save(path), ...

Settings are checked when set and the network when fit() starts (on the
driver, by the C library), so a bad spec, shape or optimizer setting is a
ValueError before any Spark job runs.
"""
import ctypes
import json
import math
import numbers
import os

import numpy as np
from pyspark import keyword_only
from pyspark.ml import Estimator
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable

from . import driver, native
from .data import as_pair
from .errors import DataError, KindlingSparkError, NotEnoughSlotsError, TrainingCancelled, TrainingError
from .model import KindlingModel, KindlingModelParams
from .params import DEFAULTS, OPTIMIZER_SETTINGS as _OPT_KEYS, OPTIMIZERS, SCHEDULES, TrainConfig, default_optimizer


# ----------------------------------------------------------------- network
class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs):
    """json object hook: a key given twice is an error, as in the C library
    (json alone keeps the last, cJSON the first, so the two would differ)."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(f"bad network spec: key {key!r} appears more than once in an object "
                                f"(give each key once)")
        seen.add(key)
    return dict(pairs)


def resolve_network(network, dimension=None):
    """(CLI network argument, input shape, number of classes) for a preset
    name, a spec dict, JSON text or a .json file, checked by the C library.
    `dimension` fills a spec without "input" and must agree with one that
    has it (by feature count for presets)."""
    if isinstance(network, dict):
        spec = dict(network)
    elif isinstance(network, str) and network.lstrip().startswith("{"):
        try:
            spec = json.loads(network, object_pairs_hook=_no_duplicate_keys)
        except _DuplicateKey:
            raise
        except ValueError as e:
            raise ValueError(f"network spec is not valid JSON: {e}") from None
    elif isinstance(network, (str, os.PathLike)) and os.path.isfile(network):
        with open(network) as f:
            try:
                spec = json.load(f, object_pairs_hook=_no_duplicate_keys)
            except _DuplicateKey as e:
                raise ValueError(f"network spec {network}: {e}") from None
            except ValueError as e:
                raise ValueError(f"network spec {network}: not valid JSON: {e}") from None
    elif isinstance(network, str):
        spec = None
        lib = native.load()
        fn = lib.kd_preset_json
        fn.restype, fn.argtypes = ctypes.c_char_p, [ctypes.c_char_p]
        if not fn(network.encode()):
            raise ValueError(f"network {network!r} is neither a preset (mlp, lenet), a spec (dict or JSON "
                             f"text) nor a spec file")
    else:
        raise TypeError(f"network must be a preset name, a spec dict, JSON text or a file; got "
                        f"{type(network).__name__}")
    if spec is not None:
        if not isinstance(spec, dict):
            raise ValueError("network spec must be a JSON object with \"input\" and \"layers\"")
        if dimension is not None:
            if "input" not in spec:
                spec["input"] = list(dimension)
            elif [int(d) for d in spec["input"]] != list(dimension):
                raise ValueError(f"the network's input {spec['input']} differs from setDimension {tuple(dimension)}")
        text = json.dumps(spec)
    else:
        text = network
    shape, classes = _check_with_library(text)
    if spec is None and dimension is not None and int(np.prod(dimension)) != int(np.prod(shape)):
        raise ValueError(f"preset {network!r} takes input {'x'.join(map(str, shape))} "
                         f"({int(np.prod(shape))} features), not setDimension {tuple(dimension)}")
    return text, tuple(shape), classes


def _check_with_library(text):
    lib = native.load()
    create = lib.kd_net_create
    create.restype, create.argtypes = ctypes.c_int, [ctypes.c_char_p, ctypes.c_uint64, ctypes.POINTER(ctypes.c_void_p)]
    net = ctypes.c_void_p()
    status = create(text.encode(), 1, ctypes.byref(net))
    if status != 0:
        msg = lib.kd_last_error().decode("utf-8", "replace")
        raise ValueError(f"bad network spec: {msg}")
    try:
        return lib.kd_net_input_shape(net).dims(), int(lib.kd_net_num_classes(net))
    finally:
        lib.kd_net_free(net)


# -------------------------------------------------------------------- rows
def _rows_of(data, label_name, features_name):
    """The training rows: an RDD (each row is read by data.as_pair) or a
    DataFrame whose label and features columns are checked here (the
    launcher reads them through Arrow)."""
    from pyspark.sql import DataFrame

    if isinstance(data, DataFrame):
        from pyspark.ml.linalg import VectorUDT
        from pyspark.sql.types import ArrayType, NumericType

        schema = data.schema
        for name in (label_name, features_name):
            if name not in schema.names:
                raise DataError(f"kindling: column {name!r} is not in the DataFrame (columns: "
                                f"{', '.join(schema.names)})")
        ltype, ftype = schema[label_name].dataType, schema[features_name].dataType
        if not isinstance(ltype, NumericType):
            raise DataError(f"kindling: label column {label_name!r} has type {ltype.simpleString()}; "
                            f"labels must be numeric class indices 0..classes-1")
        if not (isinstance(ftype, VectorUDT) or (isinstance(ftype, ArrayType) and
                                                 isinstance(ftype.elementType, NumericType))):
            raise DataError(f"kindling: features column {features_name!r} has type {ftype.simpleString()}; "
                            f"expected a vector or an array of numbers")
        return data
    if not hasattr(data, "mapPartitions"):
        raise TypeError(f"fit needs an RDD or a DataFrame, got {type(data).__name__}")
    return data


# ----------------------------------------------------------------- builder
def _positive_int(name, v, minimum=1):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


class Kindling:
    """The seed-style builder: every setter checks its value and returns
    self; fit(data) trains through a Spark barrier stage and returns a
    KindlingModel. Defaults (params.DEFAULTS, those of `kindling train` and
    KindlingClassifier): mlp, 10 epochs, batch 64 per worker, 2 workers and 1
    parameter server (async, in synchronous rounds: maxStaleness 0), Adam
    (lr 0.002) with a cosine schedule. Messages name
    settings as the KindlingClassifier params do (numWorkers for
    setNumWorker)."""

    def __init__(self):
        self._network = DEFAULTS.network
        self._dimension = None
        self._epochs = DEFAULTS.epochs
        self._batch = DEFAULTS.batch_size
        self._workers = DEFAULTS.workers
        self._servers = DEFAULTS.servers
        self._mode = DEFAULTS.mode
        self._staleness = DEFAULTS.max_staleness
        self._context = DEFAULTS.context
        self._label, self._features = "label", "features"
        self._optimizer = default_optimizer()
        self._seed = DEFAULTS.seed
        self._threads = DEFAULTS.threads or None
        self._retries = DEFAULTS.max_retries
        self._ckpt_dir = None
        self._ckpt_every = DEFAULTS.checkpoint_every
        self._mpi_args = ()
        self._on_progress = None
        self._timeout = None
        self._spool_root = None
        self._val_fraction = DEFAULTS.validation_fraction
        self._val_data = None
        self._patience = DEFAULTS.patience
        self._min_delta = DEFAULTS.min_delta
        self._keep_best = None

    # --------------------------------------------------------- setters
    def setNetwork(self, network):
        """A preset ("mlp", "lenet"), a spec dict, JSON text or a spec file."""
        if not isinstance(network, (str, dict, os.PathLike)):
            raise TypeError(f"setNetwork takes a preset name, a spec dict, JSON text or a file path, got "
                            f"{type(network).__name__}")
        self._network = network
        return self

    def setDimension(self, shape):
        """Per-sample input shape, e.g. (1, 28, 28) or (784,)."""
        shape = tuple(shape) if not isinstance(shape, numbers.Integral) else (shape,)
        if not 1 <= len(shape) <= 3:
            raise ValueError(f"setDimension takes 1 to 3 dimensions, got {shape}")
        self._dimension = tuple(_positive_int("each dimension", d) for d in shape)
        return self

    def setNumEpoch(self, n):
        self._epochs = _positive_int("numEpochs", n)
        return self

    def setBatchSize(self, n):
        """Samples per worker per step (a step covers batch x workers)."""
        self._batch = _positive_int("batchSize", n)
        return self

    def setNumWorker(self, n):
        self._workers = _positive_int("numWorkers", n)
        return self

    def setNumServer(self, n):
        """Parameter-server ranks (async mode; 0 switches to sync allreduce)."""
        self._servers = _positive_int("numServers", n, 0)
        if self._servers == 0:
            self._mode = "sync"
        return self

    def setMode(self, mode):
        """"async" (parameter servers) or "sync" (allreduce; no servers)."""
        if mode not in ("sync", "async"):
            raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
        self._mode = mode
        return self

    def setMaxStaleness(self, k):
        """async: a worker runs at most k steps ahead of the slowest and reads
        parameters holding every push up to k steps back (-1: unbounded;
        default 0, synchronous rounds: unbounded staleness costs accuracy)."""
        self._staleness = _positive_int("maxStaleness", k, -1)
        return self

    def setContext(self, context):
        """"cpu" (default) or "gpu": each worker rank trains on one GPU (the
        one Spark assigned to its task through spark.task.resource.gpu.amount,
        else device 0 of its host); parameter servers stay on the CPU."""
        if context not in ("cpu", "gpu"):
            raise ValueError(f"context must be 'cpu' or 'gpu', got {context!r}")
        self._context = context
        return self

    def setLabelName(self, name):
        self._label = str(name)
        return self

    def setFeaturesName(self, name):
        self._features = str(name)
        return self

    def setOptimizer(self, name, **settings):
        """name: sgd, momentum, adam or adamw; settings: lr (learningRate),
        momentum, nesterov, beta1, beta2, eps, weightDecay."""
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r} (choose {', '.join(OPTIMIZERS)})")
        opt = {k: v for k, v in self._optimizer.items() if k in ("schedule", "step_size", "gamma", "lr_min")}
        opt["optimizer"] = name
        for key, value in settings.items():
            if key not in _OPT_KEYS:
                raise ValueError(f"unknown optimizer setting {key!r} (known: {', '.join(sorted(_OPT_KEYS))})")
            if key == "nesterov":
                opt["nesterov"] = bool(value)
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"optimizer setting {key} must be a finite number >= 0, got {value!r}")
            opt[_OPT_KEYS[key]] = float(value)
        self._optimizer = opt
        return self

    def setLearningRate(self, lr):
        return self.setOptimizer(self._optimizer["optimizer"], **{k: v for k, v in self._optimizer.items()
                                                                  if k in _OPT_KEYS}, lr=lr)

    def setSchedule(self, name, stepSize=None, gamma=None, lrMin=None):
        """constant, step (every stepSize epochs by gamma) or cosine (down to lrMin)."""
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r} (choose {', '.join(SCHEDULES)})")
        self._optimizer["schedule"] = name
        for key, v in (("step_size", stepSize), ("gamma", gamma), ("lr_min", lrMin)):
            self._optimizer.pop(key, None)
            if v is not None:
                self._optimizer[key] = int(v) if key == "step_size" else float(v)
        return self

    def setSeed(self, seed):
        self._seed = _positive_int("seed", seed, 0)
        return self

    def setThreadsPerRank(self, n):
        """BLAS threads per rank (default spark.task.cpus)."""
        self._threads = _positive_int("threadsPerRank", n)
        return self

    def setMaxRetries(self, n):
        """How many times a failed barrier stage starts again (resuming)."""
        self._retries = _positive_int("maxRetries", n, 0)
        return self

    def setCheckpointDir(self, path):
        """Where the job's checkpoint lives (default: a temporary directory
        on the driver, removed after fit). Across hosts it must be shared
        storage for a retry to resume."""
        self._ckpt_dir = None if path is None else os.fspath(path)
        return self

    def setCheckpointEvery(self, steps):
        """Also checkpoint every `steps` optimizer steps (0: per epoch only)."""
        self._ckpt_every = _positive_int("checkpointEvery", steps, 0)
        return self

    def setMpiArgs(self, args):
        """Extra mpirun options, e.g. ["--mca", "btl_tcp_if_include", "eth0"]."""
        self._mpi_args = tuple(str(a) for a in args)
        return self

    def setProgressCallback(self, fn):
        """fn(line) for every output line of the ranks, as it arrives."""
        self._on_progress = fn
        return self

    def setTimeout(self, seconds):
        """Kill an attempt that runs longer than this (default: none)."""
        self._timeout = None if seconds is None else float(seconds)
        return self

    def setSpoolDir(self, path):
        """Local directory (same path on every host) for the partitions' spool files."""
        self._spool_root = None if path is None else os.fspath(path)
        return self

    def setValidationFraction(self, fraction):
        """Hold out this fraction (0 <= f < 1; 0: none) of the training rows
        for validation, chosen at random from the seed (each worker from
        its own rows, as `kindling train --val-split` under --local-data).
        Every epoch then reports val_loss and val_accuracy, and early
        stopping and keepBest follow the validation loss."""
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 <= fraction < 1:
            raise ValueError(f"validationFraction must be a number in [0, 1), got {fraction!r}")
        self._val_fraction = float(fraction)
        return self

    def setValidationData(self, data):
        """A validation data set instead: a DataFrame (the same label and
        features columns as the training data) or an RDD of rows, scored
        every epoch (it is collected on the driver and dealt to the workers:
        meant for validation sets, not for a second training set). None
        removes it."""
        if data is not None and not hasattr(data, "collect"):
            raise TypeError(f"setValidationData takes a DataFrame or an RDD, got {type(data).__name__}")
        self._val_data = data
        return self

    def setPatience(self, epochs):
        """Early stopping: end training when the validation loss (the
        training loss without validation data) has not improved for this
        many epochs (0: train every epoch)."""
        self._patience = _positive_int("patience", epochs, 0)
        return self

    def setMinDelta(self, delta):
        """An improvement must be larger than this (patience and keepBest)."""
        if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not math.isfinite(delta) or delta < 0:
            raise ValueError(f"minDelta must be a finite number >= 0, got {delta!r}")
        self._min_delta = float(delta)
        return self

    def setKeepBest(self, path):
        """Also write the checkpoint of the best epoch so far (lowest
        validation loss, else training loss) to this path on the driver, a
        file `kindling eval` and KindlingModel.from_checkpoint read. None:
        do not keep it."""
        self._keep_best = None if path is None else os.fspath(path)
        return self

    # ------------------------------------------------------------- fit
    def _check_training_settings(self):
        if self._val_fraction and self._val_data is not None:
            raise ValueError("validationFraction and a validation data set exclude each other: hold out part "
                             "of the training data or give a validation set, not both")
        if self._min_delta and not (self._patience or self._keep_best):
            raise ValueError("minDelta only applies with patience or keepBest")
        if self._keep_best is not None:
            d = os.path.dirname(os.path.abspath(self._keep_best)) or "."
            if os.path.isdir(self._keep_best):
                raise ValueError(f"keepBest {self._keep_best} is a directory; name a file")
            if not os.path.isdir(d) or not os.access(d, os.W_OK):
                raise ValueError(f"keepBest {self._keep_best}: the directory {d} does not exist or is not "
                                 f"writable")

    def _config(self, sc):
        text, shape, classes = resolve_network(self._network, self._dimension)
        threads = self._threads or max(1, int(sc.getConf().get("spark.task.cpus", "1")))
        mode = self._mode
        return TrainConfig(
            network=text, input_size=int(np.prod(shape)), num_classes=classes, epochs=self._epochs,
            batch_size=self._batch, workers=self._workers, servers=self._servers if mode == "async" else 0,
            mode=mode, max_staleness=self._staleness, seed=self._seed, threads=threads,
            optimizer=dict(self._optimizer), checkpoint_every=self._ckpt_every, checkpoint_dir=self._ckpt_dir,
            max_retries=self._retries, mpi_args=self._mpi_args, spool_root=self._spool_root,
            context=self._context, val_split=self._val_fraction, patience=self._patience,
            min_delta=self._min_delta, keep_best=self._keep_best), shape

    def fit(self, data, **model_params):
        """Train on an RDD ((label, features) pairs, LabeledPoints, Rows,
        arrays [label, features...]) or a DataFrame (setLabelName /
        setFeaturesName columns). Returns a KindlingModel whose history is
        the checkpoint's; `model.training_summary` tells how it ran."""
        sc = data.context if hasattr(data, "context") else data.sparkSession.sparkContext
        self._check_training_settings()
        cfg, shape = self._config(sc)
        if cfg.mode == "async" and cfg.servers < 1:
            raise ValueError("async mode needs numServers >= 1 (setNumServer) or mode 'sync' (setMode('sync'))")
        rows = _rows_of(data, self._label, self._features)
        # KINDLING_CLI on the driver names the binary for every host; without
        # it each executor runs its own (the kindling-spark wheel's).
        ckpt, record = driver.run_training(sc, rows, cfg, os.environ.get("KINDLING_CLI") or None,
                                           on_line=self._on_progress,
                                           timeout=self._timeout, label_name=self._label,
                                           features_name=self._features, validation=self._val_data)
        params = {"featuresCol": self._features, "labelCol": self._label}
        params.update(model_params)
        model = KindlingModel(checkpoint=ckpt, **params)
        model.training_summary = record
        return model


# --------------------------------------------------------------- estimator
def _p(name, doc, conv):
    return Param(Params._dummy(), name, doc, typeConverter=conv)


class KindlingClassifier(Estimator, KindlingModelParams, DefaultParamsReadable, DefaultParamsWritable):
    """pyspark.ml Estimator: fit(df) trains through a barrier stage of
    numWorkers (+ numServers) MPI ranks and returns a KindlingModel."""

    network = _p("network", "preset name (mlp, lenet) or JSON spec text", TypeConverters.toString)
    inputShape = _p("inputShape", "per-sample input shape, e.g. [1, 28, 28] (default: the network's)",
                    TypeConverters.toListInt)
    numEpochs = _p("numEpochs", "epochs to train (>= 1)", TypeConverters.toInt)
    batchSize = _p("batchSize", "samples per worker per step (>= 1)", TypeConverters.toInt)
    numWorkers = _p("numWorkers", "worker ranks, one Spark partition each (>= 1)", TypeConverters.toInt)
    numServers = _p("numServers", "parameter-server ranks in async mode (>= 1)", TypeConverters.toInt)
    mode = _p("mode", "async (parameter servers) or sync (allreduce)", TypeConverters.toString)
    maxStaleness = _p("maxStaleness", "async: steps a worker may run ahead (-1 unbounded, default 0)",
                      TypeConverters.toInt)
    optimizer = _p("optimizer", "sgd, momentum, adam or adamw", TypeConverters.toString)
    learningRate = _p("learningRate", "learning rate (default per optimizer)", TypeConverters.toFloat)
    momentum = _p("momentum", "momentum optimizer: momentum", TypeConverters.toFloat)
    weightDecay = _p("weightDecay", "weight decay", TypeConverters.toFloat)
    schedule = _p("schedule", "constant, step or cosine", TypeConverters.toString)
    seed = _p("seed", "initialisation, data order and dropout seed", TypeConverters.toInt)
    maxRetries = _p("maxRetries", "restarts of a failed barrier stage, resuming from the checkpoint",
                    TypeConverters.toInt)
    checkpointDir = _p("checkpointDir", "job checkpoint directory (shared storage across hosts)",
                       TypeConverters.toString)
    checkpointEvery = _p("checkpointEvery", "checkpoint every N steps too (0: per epoch)", TypeConverters.toInt)
    threadsPerRank = _p("threadsPerRank", "BLAS threads per rank (0: spark.task.cpus)", TypeConverters.toInt)
    context = _p("context", "cpu or gpu", TypeConverters.toString)
    validationFraction = _p("validationFraction", "fraction of the training rows held out for validation, "
                            "seeded (0: none)", TypeConverters.toFloat)
    validationIndicatorCol = _p("validationIndicatorCol", "boolean column: true marks a validation row (as in "
                                "GBTClassifier)", TypeConverters.toString)
    patience = _p("patience", "early stopping: epochs without improvement of the validation loss (the training "
                  "loss without validation data) before training stops (0: off)", TypeConverters.toInt)
    minDelta = _p("minDelta", "an improvement must be larger than this (patience, keepBest)",
                  TypeConverters.toFloat)
    keepBest = _p("keepBest", "path on the driver for the checkpoint of the best epoch", TypeConverters.toString)

    @keyword_only
    def __init__(self, *, featuresCol="features", labelCol="label", probabilityCol="probability",
                 predictionCol="prediction", predictBatchSize=256, network=DEFAULTS.network, inputShape=None,
                 numEpochs=DEFAULTS.epochs, batchSize=DEFAULTS.batch_size, numWorkers=DEFAULTS.workers,
                 numServers=DEFAULTS.servers, mode=DEFAULTS.mode, maxStaleness=DEFAULTS.max_staleness,
                 optimizer=DEFAULTS.optimizer, learningRate=None, momentum=None, weightDecay=None,
                 schedule=DEFAULTS.schedule, seed=DEFAULTS.seed, maxRetries=DEFAULTS.max_retries, checkpointDir=None,
                 checkpointEvery=DEFAULTS.checkpoint_every, threadsPerRank=DEFAULTS.threads,
                 context=DEFAULTS.context, validationFraction=DEFAULTS.validation_fraction,
                 validationIndicatorCol=None, patience=DEFAULTS.patience, minDelta=DEFAULTS.min_delta,
                 keepBest=None):
        super().__init__()
        self._setDefault(network=DEFAULTS.network, numEpochs=DEFAULTS.epochs, batchSize=DEFAULTS.batch_size,
                         numWorkers=DEFAULTS.workers, numServers=DEFAULTS.servers, mode=DEFAULTS.mode,
                         maxStaleness=DEFAULTS.max_staleness, optimizer=DEFAULTS.optimizer,
                         schedule=DEFAULTS.schedule, seed=DEFAULTS.seed, maxRetries=DEFAULTS.max_retries,
                         checkpointEvery=DEFAULTS.checkpoint_every, threadsPerRank=DEFAULTS.threads,
                         context=DEFAULTS.context, validationFraction=DEFAULTS.validation_fraction,
                         patience=DEFAULTS.patience, minDelta=DEFAULTS.min_delta)
        self._set(**{k: v for k, v in self._input_kwargs.items() if v is not None})

    @keyword_only
    def setParams(self, **kwargs):
        return self._set(**{k: v for k, v in self._input_kwargs.items() if v is not None})

    def _get(self, param):
        return self.getOrDefault(param) if self.isDefined(param) else None

    def builder(self):
        """The equivalent Kindling builder."""
        k = (Kindling().setNetwork(self._get(self.network)).setNumEpoch(self._get(self.numEpochs))
             .setBatchSize(self._get(self.batchSize)).setNumWorker(self._get(self.numWorkers))
             .setMode(self._get(self.mode)).setMaxStaleness(self._get(self.maxStaleness))
             .setSeed(self._get(self.seed)).setMaxRetries(self._get(self.maxRetries))
             .setCheckpointDir(self._get(self.checkpointDir))
             .setCheckpointEvery(self._get(self.checkpointEvery)).setContext(self._get(self.context))
             .setLabelName(self.getLabelCol()).setFeaturesName(self.getFeaturesCol())
             .setValidationFraction(self._get(self.validationFraction)).setPatience(self._get(self.patience))
             .setMinDelta(self._get(self.minDelta)).setKeepBest(self._get(self.keepBest)))
        if self._get(self.mode) == "async":
            k.setNumServer(self._get(self.numServers))
        if self._get(self.inputShape):
            k.setDimension(self._get(self.inputShape))
        opt = {}
        for name, param in (("lr", self.learningRate), ("momentum", self.momentum),
                            ("weightDecay", self.weightDecay)):
            if self._get(param) is not None:
                opt[name] = self._get(param)
        k.setOptimizer(self._get(self.optimizer), **opt)
        k.setSchedule(self._get(self.schedule))
        if self._get(self.threadsPerRank):
            k.setThreadsPerRank(self._get(self.threadsPerRank))
        return k

    def _fit(self, dataset):
        k = self.builder()
        indicator = self._get(self.validationIndicatorCol)
        if indicator:
            from pyspark.sql import functions as F
            from pyspark.sql.types import BooleanType

            if indicator not in dataset.schema.names:
                raise ValueError(f"validationIndicatorCol {indicator!r} is not in the DataFrame (columns: "
                                 f"{', '.join(dataset.schema.names)})")
            if not isinstance(dataset.schema[indicator].dataType, BooleanType):
                raise ValueError(f"validationIndicatorCol {indicator!r} has type "
                                 f"{dataset.schema[indicator].dataType.simpleString()}; it must be boolean")
            flag = F.coalesce(F.col(indicator), F.lit(False))
            k.setValidationData(dataset.filter(flag))
            dataset = dataset.filter(~flag)
        return k.fit(dataset, probabilityCol=self.getProbabilityCol(),
                                  predictionCol=self.getPredictionCol(),
                                  predictBatchSize=self.getPredictBatchSize())


__all__ = ["Kindling", "KindlingClassifier", "resolve_network", "as_pair", "DataError", "KindlingSparkError",
           "NotEnoughSlotsError", "TrainingCancelled", "TrainingError"]
