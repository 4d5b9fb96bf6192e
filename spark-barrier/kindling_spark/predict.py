"""The executor side of prediction: what a Spark task runs for
KindlingModel.transform and for predict_batches in mapPartitions. It
imports numpy and the C library only, not pyspark.ml (about a second per
Python worker, paid by every task of a cold session), so the functions a
transform ships refer to this module, not to model.py.
"""
import threading
import uuid

import numpy as np

from . import data, native


class ModelPayload:
    """What is broadcast to executors: the checkpoint bytes and a key
    naming this model in the per-worker cache of built networks."""

    def __init__(self, checkpoint, key=None):
        self.checkpoint = bytes(checkpoint)
        self.key = key or uuid.uuid4().hex

    def net(self):
        """The network built from the checkpoint, cached per thread (a
        kd_net is not thread-safe) so a reused Python worker builds it once."""
        cache = _net_cache()
        net = cache.get(self.key)
        if net is None:
            if len(cache) >= _NET_CACHE_SIZE:
                cache.pop(next(iter(cache))).close()
            net = cache[self.key] = native.NativeNet.from_bytes(self.checkpoint)
        return net


_NET_CACHE_SIZE = 4
_thread_nets = threading.local()


def _net_cache():
    if not hasattr(_thread_nets, "nets"):
        _thread_nets.nets = {}
    return _thread_nets.nets


def _task_threads():
    """Inside a Spark task, use the cores Spark gave it (spark.task.cpus)."""
    try:
        from pyspark import TaskContext

        tc = TaskContext.get()
        return max(1, int(tc.cpus())) if tc is not None else None
    except Exception:  # older Spark without TaskContext.cpus
        return None


def _task_net(payload):
    """The payload's network, with the C library on the task's cores."""
    threads = _task_threads()
    if threads:
        native.set_threads(threads)
    return payload.net()


def features_array(value, index, column, net):
    """One row's features as float32 (input_size,), or a ValueError that
    names the row, the column and what the model expects (data.features
    is the parser)."""
    try:
        return data.features(value, net.input_size, f"input shape {'x'.join(map(str, net.input_shape))}")
    except ValueError as e:
        where = f"point {index}" if column is None else f"row {index} of the partition, column '{column}'"
        raise ValueError(f"KindlingModel: {where}: {e}") from None


def predict_batches(payload, features, batch_size=256, column="features", first_index=0):
    """Probabilities for an iterator of feature values (vectors, lists or
    arrays), one numpy row per input, computed batch_size rows at a time.
    This is the executor side of KindlingModel.transform; call it inside
    mapPartitions with a broadcast payload:
        bc = model.broadcast(sc)
        rdd.mapPartitions(lambda it: predict_batches(bc.value, it))"""
    net = _task_net(payload)
    batch = []
    for i, value in enumerate(features, first_index):
        batch.append(features_array(value, i, column, net))
        if len(batch) >= batch_size:
            yield from net.predict(np.stack(batch))
            batch = []
    if batch:
        yield from net.predict(np.stack(batch))


def transform_rows(payload, rows, col_index, column, batch_size, want_prob, want_pred):
    """KindlingModel.transform's row route (Spark < 4.1 or no pyarrow): the
    partition's rows with the probability vector and the class added."""
    from pyspark.ml.linalg import DenseVector

    rows = iter(rows)
    done = 0
    while True:
        chunk = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= batch_size:
                break
        if not chunk:
            return
        probs = predict_batches(payload, (r[col_index] for r in chunk), batch_size, column, done)
        done += len(chunk)
        for row, p in zip(chunk, probs):
            extra = ()
            if want_prob:
                extra += (DenseVector(p.astype(np.float64)),)
            if want_pred:
                extra += (float(np.argmax(p)),)
            yield tuple(row) + extra


def arrow_predictions(payload, arrays, column, batch_size, want_prob, want_pred):
    """The executor side of KindlingModel.transform on Spark >= 4.1 (an
    Arrow UDF over one partition): each Arrow batch of feature arrays (a
    list of numbers per row) becomes one struct array (probability
    list<double>, prediction double), with no Python object per row. A
    batch with a null, a wrong length or a non-finite value goes row by row
    to name the first bad row, as the row path does."""
    import pyarrow as pa

    net = _task_net(payload)
    size = net.input_size
    done = 0
    for arr in arrays:
        n = len(arr)
        x = data.arrow_matrix(arr, size)
        if x is None:  # name the first bad row (features_array raises for it)
            x = np.stack([features_array(v, done + i, column, net) for i, v in enumerate(arr.to_pylist())])
        probs = np.concatenate([net.predict(x[i:i + batch_size]) for i in range(0, n, batch_size)]) if n else \
            np.zeros((0, net.num_classes), np.float32)
        done += n
        fields, names = [], []
        if want_prob:
            fields.append(pa.ListArray.from_arrays(pa.array(np.arange(0, probs.size + 1, probs.shape[1], dtype=np.int32)),
                                                   pa.array(probs.reshape(-1).astype(np.float64))))
            names.append("probability")
        if want_pred:
            fields.append(pa.array(np.argmax(probs, axis=1).astype(np.float64) if n else np.zeros(0)))
            names.append("prediction")
        yield pa.StructArray.from_arrays(fields, names=names)
