"""KindlingModel: a trained Kindling network as a pyspark.ml Model.

The model is the bytes of its HDF5 checkpoint (the file `kindling train`
writes) plus the training history. Prediction never involves MPI: the
checkpoint is broadcast once, and each partition rebuilds the network with
the C library (native.NativeNet, cached per Python worker) and runs its
forward pass over batches of rows. On Spark >= 4.1 with pyarrow, transform
is one Arrow UDF over the features column (no Python object per row);
otherwise it maps the partitions' rows.

    model = KindlingModel.from_checkpoint("model.h5")
    model.predict(x)                          # numpy batch -> (n, classes), on this process
    model.predict(points)                     # iterable of LabeledPoints, (label, vector),
    model.predict_classes(points)             #   vectors, lists, arrays -> probabilities / argmax
    model.transform(df)                       # adds probability, prediction
    model.write().overwrite().save(path)      # ML persistence (a directory)
    KindlingModel.load(path)
    model.save(sc, path)                      # the seed's forms: the same directory
    KindlingModel.load(sc, path)
    bc = sc.broadcast(model)                  # then, in mapPartitions: bc.value.predict(points)
    model.save_checkpoint("copy.h5")          # the bare checkpoint file

Saved layout (readable by DefaultParamsReader.loadMetadata, so a Pipeline
holding a KindlingModel saves and loads too):
    <path>/metadata/part-00000   one line of JSON: class, uid, sparkVersion,
                                 paramMap, defaultParamMap, kindling (format,
                                 checkpoint file, its sha256, shape, classes,
                                 history)
    <path>/metadata/_SUCCESS
    <path>/data/model.h5         the checkpoint, as `kindling` reads it
Local and file:// paths (and scheme-less ones when Spark's default file
system is local, or there is no Spark session) use plain file IO, written
into a temporary sibling directory and renamed into place; other schemes go
through the Hadoop FileSystem of the active SparkSession.
"""
import hashlib
import json
import os
import shutil
import time
import urllib.parse
import uuid

import numpy as np
from pyspark import keyword_only
from pyspark.ml import Model
from pyspark.ml.linalg import VectorUDT
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasFeaturesCol, HasLabelCol, HasPredictionCol, HasProbabilityCol
from pyspark.ml.util import MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql.types import ArrayType, DoubleType, NumericType, StructField, StructType

from . import data, files, history, native
from .predict import ModelPayload, arrow_predictions, predict_batches, transform_rows  # noqa: F401

FORMAT = "kindling-spark-model"
FORMAT_VERSION = 1
CHECKPOINT_FILE = "data/model.h5"
METADATA_FILE = "metadata/part-00000"


class KindlingModelParams(HasFeaturesCol, HasLabelCol, HasProbabilityCol, HasPredictionCol):
    """Params shared by KindlingModel and the estimator that fits it."""

    predictBatchSize = Param(Params._dummy(), "predictBatchSize",
                             "rows per forward pass when predicting (>= 1)", typeConverter=TypeConverters.toInt)

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(predictBatchSize=256)

    def getPredictBatchSize(self):
        return self.getOrDefault(self.predictBatchSize)


def _arrow_udf_available():
    try:
        from pyspark.sql.functions import arrow_udf  # noqa: F401  (Spark >= 4.1)
    except ImportError:
        return False
    return data.arrow_available()


def _is_vector(v):
    """A pyspark.ml or mllib vector (dense or sparse)."""
    return hasattr(v, "toArray") and hasattr(v, "size") and not isinstance(v, np.ndarray)


def _point_features(point, column="features"):
    """The features of one point given to predict: a LabeledPoint's or a
    Row's features, the vector of a (label, vector) pair, or the point itself
    (a vector, list or array of features)."""
    fields = getattr(point, "__fields__", None)  # pyspark Row
    if fields is not None:
        return point[column] if column in fields else point
    if not isinstance(point, np.ndarray) and hasattr(point, "label") and hasattr(point, "features"):
        return point.features  # mllib LabeledPoint
    if isinstance(point, (tuple, list)) and len(point) == 2 and isinstance(point[0], (int, float, np.number)) \
            and (_is_vector(point[1]) or isinstance(point[1], (np.ndarray, list, tuple))):
        return point[1]  # (label, vector): the seed's pairs; a tuple of two numbers stays features
    return point


# ------------------------------------------------------------------- model
class KindlingModel(Model, KindlingModelParams, MLWritable, MLReadable):
    """A trained Kindling network. transform(df) adds `probabilityCol`
    (a DenseVector of class probabilities) and `predictionCol` (the most
    probable class, as a double); set either to "" to leave it out."""

    @keyword_only
    def __init__(self, *, checkpoint=None, history=None, featuresCol="features", labelCol="label",
                 probabilityCol="probability", predictionCol="prediction", predictBatchSize=256):
        super().__init__()
        if checkpoint is None:
            raise ValueError("KindlingModel needs the bytes of a checkpoint (or use "
                             "KindlingModel.from_checkpoint(path))")
        kwargs = dict(self._input_kwargs)
        kwargs.pop("checkpoint", None)
        kwargs.pop("history", None)
        if int(kwargs.get("predictBatchSize", 1)) < 1:
            raise ValueError(f"predictBatchSize must be >= 1, got {kwargs['predictBatchSize']}")
        self._set(**kwargs)
        self._payload = ModelPayload(checkpoint)
        self._broadcast = None
        info = self._info()  # validates the checkpoint now, on the driver
        self._history = list(history) if history is not None else info["history"]

    @keyword_only
    def setParams(self, *, featuresCol="features", labelCol="label", probabilityCol="probability",
                  predictionCol="prediction", predictBatchSize=256):
        return self._set(**self._input_kwargs)

    def setFeaturesCol(self, value):
        return self._set(featuresCol=value)

    def setLabelCol(self, value):
        return self._set(labelCol=value)

    def setProbabilityCol(self, value):
        return self._set(probabilityCol=value)

    def setPredictionCol(self, value):
        return self._set(predictionCol=value)

    def setPredictBatchSize(self, value):
        if int(value) < 1:
            raise ValueError(f"predictBatchSize must be >= 1, got {value}")
        return self._set(predictBatchSize=value)

    @classmethod
    def from_checkpoint(cls, path, history=None, **params):
        """Wrap a checkpoint file written by `kindling train`. A file that is
        missing or not a checkpoint raises native.KindlingError naming it."""
        path = os.fspath(path)
        native.checkpoint_info(path)  # checked where it is, so errors name the user's file
        with open(path, "rb") as f:
            return cls(checkpoint=f.read(), history=history, **params)

    # ---------------------------------------------------------- describing
    def _info(self):
        info = getattr(self, "_info_cache", None)
        if info is None:
            info = self._info_cache = _checkpoint_info(self._payload.checkpoint)
        return info

    @property
    def checkpoint(self):
        """The HDF5 checkpoint file's bytes."""
        return self._payload.checkpoint

    @property
    def spec_json(self):
        return self._info()["spec_json"]

    @property
    def spec(self):
        """The fully resolved network spec (dict)."""
        return json.loads(self.spec_json)

    @property
    def input_shape(self):
        return tuple(self._info()["input_shape"])

    @property
    def input_size(self):
        return int(np.prod(self.input_shape))

    @property
    def num_classes(self):
        return self._info()["num_classes"]

    @property
    def history(self):
        """The training history, one row per epoch: a pandas DataFrame
        indexed by epoch with columns train_loss, train_accuracy, val_loss,
        val_accuracy, test_loss, test_accuracy, seconds, learning_rate (NaN
        where an epoch has no such figure) when pandas is installed, else
        history_records."""
        return history.as_frame(self._history)

    @property
    def history_records(self):
        """The training history as a list of dicts, one per epoch (every
        column, None where not measured)."""
        return history.records(self._history)

    @property
    def best_epoch(self):
        """(epoch, monitored figure, value) of the best epoch by the rule
        patience and keepBest follow (lowest validation loss, else training
        loss), or None without history."""
        return history.best_epoch(self._history)

    def plot_history(self, path=None, ax=None, title=None):
        """Loss and accuracy curves per epoch (training, validation and test;
        the best epoch dashed) with matplotlib, an optional dependency
        (ImportError naming it when missing). With `path` the picture is
        saved there (.png, .svg, .pdf). Returns the matplotlib Figure."""
        return history.plot(self._history, path=path, ax=ax, title=title)

    def __repr__(self):
        return (f"KindlingModel(uid={self.uid}, input_shape={self.input_shape}, num_classes={self.num_classes}, "
                f"epochs={len(self._history)})")

    # ----------------------------------------------------------- predicting
    def predict(self, x):
        """Class probabilities, one row per input, as float32 (n, num_classes).

        x is a numpy batch (n, *input_shape) or (n, input_size) (one sample of
        input_size features is a batch of one), or, as in the seed's
        `brModel.value.predict(points)` inside mapPartitions, an iterable or
        iterator of points: LabeledPoints, (label, vector) pairs, Rows with a
        features column, pyspark.ml / mllib vectors, lists or numpy arrays.
        Labels are ignored. Points are read predictBatchSize at a time, so an
        iterator over a partition is never held in memory whole; an empty one
        (an empty partition) gives (0, num_classes)."""
        if isinstance(x, np.ndarray):
            return self._predict_array(x)
        if _is_vector(x) or isinstance(x, (str, bytes)) or not hasattr(x, "__iter__"):
            raise TypeError(f"KindlingModel.predict takes a numpy batch or an iterable of points "
                            f"(LabeledPoints, (label, vector) pairs, vectors, lists or arrays), got "
                            f"{type(x).__name__}; for one vector v use predict([v])")
        column = self.getFeaturesCol()
        values = (_point_features(p, column) for p in x)
        probs = list(predict_batches(self._payload, values, self.getPredictBatchSize(), column=None))
        if not probs:
            return np.zeros((0, self.num_classes), np.float32)
        return np.stack(probs)

    def _predict_array(self, x):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1 and x.shape[0] == self.input_size:
            x = x.reshape(1, -1)
        if x.ndim < 2 or int(np.prod(x.shape[1:])) != self.input_size:
            raise ValueError(f"KindlingModel.predict: samples of shape {x.shape[1:]} have "
                             f"{int(np.prod(x.shape[1:]))} features; the model expects {self.input_size} "
                             f"(input shape {'x'.join(map(str, self.input_shape))}); pass a batch "
                             f"(n, {self.input_size})")
        if x.shape[0] == 0:
            return np.zeros((0, self.num_classes), np.float32)
        return self._payload.net().predict(x)

    def predict_classes(self, x):
        """The most probable class of each input (int64), for the same inputs as predict."""
        return np.argmax(self.predict(x), axis=1)

    def broadcast(self, sc):
        """The payload broadcast to sc's executors (made once per SparkContext)."""
        bc = self._broadcast
        if bc is None or bc[0] is not sc:
            bc = self._broadcast = (sc, sc.broadcast(self._payload))
        return bc[1]

    def _transform(self, dataset):
        column = self.getFeaturesCol()
        prob_col, pred_col = self.getProbabilityCol(), self.getPredictionCol()
        schema = dataset.schema
        if column not in schema.names:
            raise ValueError(f"KindlingModel: features column '{column}' is not in the DataFrame "
                             f"(columns: {', '.join(schema.names)})")
        ftype = schema[column].dataType
        if not (isinstance(ftype, VectorUDT) or
                (isinstance(ftype, ArrayType) and isinstance(ftype.elementType, NumericType))):
            raise TypeError(f"KindlingModel: features column '{column}' has type {ftype.simpleString()}; "
                            f"expected a vector (VectorUDT) or an array of numbers")
        outputs = []
        for name, kind in ((prob_col, VectorUDT()), (pred_col, DoubleType())):
            if name:
                if name in schema.names:
                    raise ValueError(f"KindlingModel: output column '{name}' already exists in the DataFrame")
                outputs.append(StructField(name, kind, False))
        if not outputs:
            return dataset

        spark = dataset.sparkSession
        bc = self.broadcast(spark.sparkContext)
        col_index = schema.names.index(column)
        batch_size = self.getPredictBatchSize()
        want_prob, want_pred = bool(prob_col), bool(pred_col)

        if _arrow_udf_available():
            return self._transform_arrow(dataset, bc, column, batch_size)

        def run(rows):  # captures only plain values and the broadcast
            return transform_rows(bc.value, rows, col_index, column, batch_size, want_prob, want_pred)

        out_schema = StructType(schema.fields + outputs)
        return spark.createDataFrame(dataset.rdd.mapPartitions(run, preservesPartitioning=True), out_schema,
                                     verifySchema=False)

    def _transform_arrow(self, dataset, bc, column, batch_size):
        """transform through one Arrow UDF: only the features column goes to
        Python (a vector column as an array, converted in the JVM), and the
        probabilities come back as arrays that the JVM makes vectors."""
        from typing import Iterator

        import pyarrow as pa
        from pyspark.ml.functions import array_to_vector, vector_to_array
        from pyspark.sql import functions as F
        from pyspark.sql.functions import arrow_udf

        prob_col, pred_col = self.getProbabilityCol(), self.getPredictionCol()
        want_prob, want_pred = bool(prob_col), bool(pred_col)
        result_type = StructType(([StructField("probability", ArrayType(DoubleType(), False), False)] if want_prob
                                  else []) + ([StructField("prediction", DoubleType(), False)] if want_pred else []))

        def predict(arrays: Iterator[pa.Array]) -> Iterator[pa.Array]:  # captures plain values and the broadcast
            return arrow_predictions(bc.value, arrays, column, batch_size, want_prob, want_pred)

        udf = arrow_udf(predict, result_type)
        feats = F.col(column)
        if isinstance(dataset.schema[column].dataType, VectorUDT):
            feats = vector_to_array(feats, "float32")
        result = f"__kindling_{uuid.uuid4().hex[:8]}"
        out = dataset.withColumn(result, udf(feats))
        added = ([array_to_vector(F.col(result)["probability"]).alias(prob_col)] if want_prob else []) + \
            ([F.col(result)["prediction"].alias(pred_col)] if want_pred else [])
        return out.select(*[F.col("`" + c.replace("`", "``") + "`") for c in dataset.columns], *added)

    def copy(self, extra=None):
        that = super().copy(extra)
        that._broadcast = None
        return that

    def __getstate__(self):
        # A broadcast and a built network belong to one process.
        state = dict(self.__dict__)
        state["_broadcast"] = None
        return state

    # ---------------------------------------------------------- persistence
    def save_checkpoint(self, path):
        """Write the checkpoint as a plain HDF5 file (temporary file, then
        rename), usable by `kindling eval/predict/inspect`."""
        files.write_atomic(os.fspath(path), self.checkpoint)

    def write(self):
        return KindlingModelWriter(self)

    @classmethod
    def read(cls):
        return KindlingModelReader(cls)

    def save(self, *args):
        """model.save(path) (pyspark.ml) or model.save(sc, path) (the seed's
        form, as mllib's Saveable): the same directory either way, through
        sc's Hadoop configuration when sc is given. An existing path is an
        error; model.write().overwrite().save(path) replaces it."""
        sc, path = _context_and_path("save", args)
        writer = self.write()
        if sc is not None:
            writer._sc = sc
        writer.save(path)

    @classmethod
    def load(cls, *args):
        """KindlingModel.load(path) (pyspark.ml) or KindlingModel.load(sc,
        path) (the seed's form): a directory written by either save."""
        sc, path = _context_and_path("load", args)
        reader = cls.read()
        if sc is not None:
            reader._sc = sc
        return reader.load(path)


def _context_and_path(verb, args):
    """(SparkContext or None, path) from (path,) or (sc, path)."""
    from pyspark import SparkContext

    if len(args) == 2 and isinstance(args[0], SparkContext):
        sc, path = args
    elif len(args) == 1 and not isinstance(args[0], SparkContext):
        sc, path = None, args[0]
    else:
        got = ", ".join(type(a).__name__ for a in args)
        raise TypeError(f"KindlingModel.{verb} takes (path) or (sc, path) with sc a SparkContext; got ({got})")
    if not isinstance(path, str):
        raise TypeError(f"path should be a string, got {type(path).__name__}")
    return sc, path


def _checkpoint_info(checkpoint):
    with native.NativeNet.from_bytes(checkpoint) as net:
        return {"spec_json": net.spec_json, "input_shape": net.input_shape, "num_classes": net.num_classes,
                "history": net.history}


# ------------------------------------------------------------ file systems
class _LocalFS:
    """Plain file IO for local paths."""

    def __init__(self, path):
        parsed = urllib.parse.urlparse(path)
        self.path = urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else path

    def exists(self):
        return os.path.lexists(self.path)

    def write_dir(self, contents, overwrite):
        """Write {relative name: bytes} as a new directory at self.path."""
        target = os.path.abspath(self.path)
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        tmp = f"{target}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            for name, content in contents.items():
                full = os.path.join(tmp, name)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                files.write_synced(full, content)
            old = None
            if os.path.lexists(target):
                if not overwrite:
                    raise FileExistsError(_exists_message(self.path))
                old = f"{target}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                os.rename(target, old)
            os.rename(tmp, target)
            tmp = None
            files.fsync_dir(target)
            if old:
                shutil.rmtree(old) if os.path.isdir(old) and not os.path.islink(old) else os.unlink(old)
        finally:
            if tmp and os.path.exists(tmp):
                shutil.rmtree(tmp)

    def read(self, name):
        full = os.path.join(self.path, name)
        try:
            with open(full, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: no saved KindlingModel here ({name} is missing)") from None


class _HadoopFS:
    """The Hadoop FileSystem of a SparkContext (hdfs://, s3a://, ...)."""

    def __init__(self, path, sc):
        self._jvm = sc._jvm
        self.path = path
        self._root = self._jvm.org.apache.hadoop.fs.Path(path)
        self._fs = self._root.getFileSystem(sc._jsc.hadoopConfiguration())

    def _p(self, path, name=None):
        return self._jvm.org.apache.hadoop.fs.Path(path if name is None else f"{path.rstrip('/')}/{name}")

    def exists(self):
        return bool(self._fs.exists(self._root))

    def write_dir(self, contents, overwrite):
        tmp = f"{self.path.rstrip('/')}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            for name, content in contents.items():
                out = self._fs.create(self._p(tmp, name), True)
                try:
                    out.write(bytearray(content))
                finally:
                    out.close()
            if self._fs.exists(self._root):
                if not overwrite:
                    raise FileExistsError(_exists_message(self.path))
                self._fs.delete(self._root, True)
            if not self._fs.rename(self._p(tmp), self._root):
                raise OSError(f"{self.path}: cannot rename {tmp} into place")
            tmp = None
        finally:
            if tmp:
                self._fs.delete(self._p(tmp), True)

    def read(self, name):
        p = self._p(self.path, name)
        if not self._fs.exists(p):
            raise FileNotFoundError(f"{self.path}: no saved KindlingModel here ({name} is missing)")
        stream = self._fs.open(p)
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()


def _exists_message(path):
    return f"Path {path} already exists. To overwrite it, use model.write().overwrite().save(path)"


def _filesystem(path, sc_getter, sc=None):
    """Where path lives: plain file IO for local paths, else the Hadoop
    FileSystem of sc (given: model.save(sc, path)) or of sc_getter()."""
    scheme = urllib.parse.urlparse(path).scheme
    if scheme == "file" or len(scheme) <= 1:  # "" or a Windows drive letter
        if scheme == "":
            if sc is None:
                from pyspark.sql import SparkSession

                spark = SparkSession.getActiveSession()
                sc = spark.sparkContext if spark is not None else None
            if sc is not None:
                default_fs = sc._jsc.hadoopConfiguration().get("fs.defaultFS", "file:///")
                if not str(default_fs).startswith("file:"):
                    return _HadoopFS(path, sc)
        return _LocalFS(path)
    return _HadoopFS(path, sc if sc is not None else sc_getter())


def _spark_version():
    import pyspark

    return pyspark.__version__


class KindlingModelWriter(MLWriter):
    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def save(self, path):
        if not isinstance(path, str):
            raise TypeError(f"path should be a string, got {type(path).__name__}")
        m = self.instance
        ckpt = m.checkpoint
        metadata = {
            "class": type(m).__module__ + "." + type(m).__name__,
            "timestamp": int(round(time.time() * 1000)),
            "sparkVersion": _spark_version(),
            "uid": m.uid,
            "paramMap": {p.name: v for p, v in m._paramMap.items()},
            "defaultParamMap": {p.name: v for p, v in m._defaultParamMap.items()},
            "kindling": {
                "format": FORMAT,
                "formatVersion": FORMAT_VERSION,
                "kindlingVersion": native.version(),
                "checkpoint": CHECKPOINT_FILE,
                "checkpointBytes": len(ckpt),
                "checkpointSha256": hashlib.sha256(ckpt).hexdigest(),
                "inputShape": list(m.input_shape),
                "numClasses": m.num_classes,
                "history": m.history_records,
            },
        }
        contents = {
            METADATA_FILE: (json.dumps(metadata, separators=(",", ":")) + "\n").encode(),
            "metadata/_SUCCESS": b"",
            CHECKPOINT_FILE: ckpt,
        }
        _filesystem(path, lambda: self.sparkSession.sparkContext, getattr(self, "_sc", None)).write_dir(
            contents, self.shouldOverwrite)

    def saveImpl(self, path):
        self.save(path)


class KindlingModelReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path):
        if not isinstance(path, str):
            raise TypeError(f"path should be a string, got {type(path).__name__}")
        fs = _filesystem(path, lambda: self.sparkSession.sparkContext, getattr(self, "_sc", None))
        raw = fs.read(METADATA_FILE)
        try:
            metadata = json.loads(raw.decode())
            info = metadata["kindling"]
        except (ValueError, KeyError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: {METADATA_FILE} is not KindlingModel metadata ({e})") from None
        if info.get("format") != FORMAT or info.get("formatVersion") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported model format {info.get('format')!r} version "
                             f"{info.get('formatVersion')!r} (this package reads {FORMAT!r} {FORMAT_VERSION})")
        ckpt = fs.read(info["checkpoint"])
        digest = hashlib.sha256(ckpt).hexdigest()
        if len(ckpt) != info["checkpointBytes"] or digest != info["checkpointSha256"]:
            raise ValueError(f"{path}: {info['checkpoint']} is corrupt: {len(ckpt)} bytes with sha256 {digest}, "
                             f"the metadata says {info['checkpointBytes']} bytes with sha256 "
                             f"{info['checkpointSha256']}")
        model = self.cls(checkpoint=ckpt, history=info.get("history"))
        model._resetUid(metadata["uid"])
        for name, value in metadata.get("defaultParamMap", {}).items():
            if model.hasParam(name):
                model._setDefault(**{name: value})
        for name, value in metadata.get("paramMap", {}).items():
            if model.hasParam(name):
                model._set(**{name: value})
        return model
