"""Rows to arrays: the one parser of training and prediction rows, shared
by the launcher (rows -> blocks for the ranks), spool.write_rows and
KindlingModel's prediction.

A row is (label, features): a pair, an mllib LabeledPoint, a Row (by
field name) or a 1-D numpy array [label, feature...]. Features are a
pyspark vector (dense or sparse), a list/tuple of numbers or a numpy
array; labels are whole numbers 0..classes-1. Blocks of rows convert in
bulk; when a block does not, the rows are looked at one by one so the
error names the first bad one (RowError: its index and the problem).
"""
import math

import numpy as np

BLOCK_ROWS = 4096  # rows per block shipped from the map stage to a worker (RDD input)
LABEL_LIMIT = 0x7FFFFFFF  # labels are int32 and 1 + label (the class count) must fit too


class RowError(ValueError):
    """Row `index` (counted from the start of its partition or file) is bad."""

    def __init__(self, index, problem):
        self.index, self.problem = index, problem
        super().__init__(f"row {index}: {problem}")


def as_pair(row, label_name="label", features_name="features"):
    """(label, features) from a pair, a LabeledPoint, a Row (by field name)
    or a 1-D numpy array [label, features...]."""
    if isinstance(row, np.ndarray):
        if row.ndim != 1 or row.shape[0] < 2:
            raise ValueError(f"an array row must be 1-D [label, features...], got shape {row.shape}")
        return row[0], row[1:]
    fields = getattr(row, "__fields__", None)  # pyspark Row
    if fields is not None and label_name in fields and features_name in fields:
        return row[label_name], row[features_name]
    if fields is None and hasattr(row, "label") and hasattr(row, "features"):  # LabeledPoint
        return row.label, row.features
    if isinstance(row, (tuple, list)) and len(row) == 2:
        return row[0], row[1]
    raise ValueError(f"a training row must be (label, features), a LabeledPoint, a Row with fields "
                     f"{label_name!r} and {features_name!r}, or an array [label, features...]; got "
                     f"{type(row).__name__}")


# ------------------------------------------------------------------ one row
def features(value, size, note=None):
    """One row's features as float32 (size,); ValueError naming the problem.
    `note` says where the size comes from ("sample shape 2x2")."""
    if value is None:
        raise ValueError("features are null")
    to_array = getattr(value, "toArray", None)  # pyspark.ml / mllib DenseVector and SparseVector
    if to_array is None and isinstance(value, (list, tuple)):
        nulls = [j for j, v in enumerate(value) if v is None]
        if nulls:
            raise ValueError(f"features have a null element (feature {nulls[0]})")
    try:
        x = np.asarray(to_array() if to_array is not None else value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"features are not numbers ({type(value).__name__} {str(value)[:60]!r})") from None
    if x.shape[0] != size:
        raise ValueError(f"{x.shape[0]} features, expected {size}" + (f" ({note})" if note else ""))
    if not np.isfinite(x).all():
        j = int(np.flatnonzero(~np.isfinite(x))[0])
        raise ValueError(f"feature {j} is {x[j]}; features must be finite")
    return x


def _class_range(classes):
    return f"whole numbers 0..{(classes or LABEL_LIMIT) - 1}"


def label(value, classes=None, owner="the network"):
    """One label as an int; ValueError naming the problem. classes None:
    any label int32 can hold."""
    if value is None:
        raise ValueError("label is null")
    if isinstance(value, (bool, np.bool_, str, bytes)) or not hasattr(value, "__float__"):
        shown = value.item() if isinstance(value, np.generic) else value
        raise ValueError(f"label {shown!r} is not a number")
    v = float(value)
    if not math.isfinite(v) or v != int(v) or not 0 <= v < (classes or LABEL_LIMIT):
        shown = value.item() if isinstance(value, np.generic) else value
        of = f" of {owner}" if classes and owner else ""
        raise ValueError(f"label {shown!r} is not a class{of} ({_class_range(classes)})")
    return int(v)


# ------------------------------------------------------------------- blocks
def labels(values, classes=None, first=0, owner="the network"):
    """int32 labels; RowError (index first + i) for the first bad one."""
    y = np.asarray(values)
    if y.ndim == 1 and y.dtype.kind in "iuf":
        yf = y.astype(np.float64)
        ok = np.isfinite(yf) & (yf == np.floor(yf)) & (yf >= 0) & (yf < (classes or LABEL_LIMIT))
        if ok.all():
            return yf.astype(np.int32)
    # The values themselves, not y: np.asarray([1, "three"]) makes every label a string.
    for i, v in enumerate(values if isinstance(values, (list, tuple)) else y.reshape(-1) if y.ndim else [values]):
        try:
            label(v, classes, owner)
        except ValueError as e:
            raise RowError(first + i, str(e)) from None
    raise RowError(first, "labels could not be converted together")  # not reached: some label failed


def features_block(values, size, first=0, note=None):
    """float32 [k, size] for k feature values; RowError for the first bad one."""
    if len(values) == 0:
        return np.zeros((0, size), np.float32)
    try:
        if all(isinstance(f, np.ndarray) for f in values):
            x = np.stack([f.reshape(-1) for f in values]).astype(np.float32, copy=False)
        elif all(hasattr(f, "toArray") for f in values):
            x = np.stack([f.toArray() for f in values]).astype(np.float32)
        else:
            x = np.asarray(values, dtype=np.float32)
        if x.ndim == 2 and x.shape[1] == size and np.isfinite(x).all():
            return x
    except (TypeError, ValueError):
        pass
    for i, v in enumerate(values):
        try:
            features(v, size, note)
        except ValueError as e:
            raise RowError(first + i, str(e)) from None
    raise RowError(first, f"rows {first}..{first + len(values) - 1} could not be converted together")


def labelled_block(rows, size, classes=None, first=0, label_name="label", features_name="features",
                   owner="the network", note=None):
    """(int32 labels, float32 [k, size] features) for k rows of any form
    as_pair reads; RowError for the first bad row (the lowest index, label
    or features)."""
    pairs = []
    for i, r in enumerate(rows):
        try:
            pairs.append(as_pair(r, label_name, features_name))
        except ValueError as e:
            raise RowError(first + i, str(e)) from None
    bad = []
    y = x = None
    try:
        y = labels([p[0] for p in pairs], classes, first, owner)
    except RowError as e:
        bad.append(e)
    try:
        x = features_block([p[1] for p in pairs], size, first, note)
    except RowError as e:
        bad.append(e)
    if bad:
        raise min(bad, key=lambda e: e.index)
    return y, x


# ------------------------------------------------------------ rows to ranks
def make_blocks(cfg, input_partitions, label_name="label", features_name="features"):
    """The map-side function: each input partition's rows, checked, as
    numpy blocks (labels int32, features float32 [k, size]) keyed by the
    barrier task (rank) that trains on them. With `workers` input
    partitions, partition w goes whole and in order to worker w; otherwise
    rows are dealt round-robin. A bad row becomes a single ("error",
    message) block, which the barrier task reports as a DataError (an
    exception here would look like a lost task and be retried)."""
    S, W, size, classes = cfg.server_ranks, cfg.workers, cfg.input_size, cfg.num_classes
    same = W == input_partitions

    def blocks(index, first, chunk):
        try:
            y, x = labelled_block(chunk, size, classes, first, label_name, features_name,
                                  note="the network's input size")
        except RowError as e:
            raise ValueError(f"input partition {index}, row {e.index}: {e.problem}") from None
        if same:
            return [(S + index, ("block", y, x))]
        owner = (index + np.arange(first, first + len(chunk))) % W
        return [(S + w, ("block", y[owner == w], x[owner == w])) for w in range(W) if (owner == w).any()]

    def run(index, rows):
        chunk, first = [], 0
        try:
            for row in rows:
                chunk.append(row)
                if len(chunk) >= BLOCK_ROWS:
                    yield from blocks(index, first, chunk)
                    first += len(chunk)
                    chunk = []
            if chunk:
                yield from blocks(index, first, chunk)
        except ValueError as e:
            yield S, ("error", str(e))

    return run


def partition_for_ranks(rdd, cfg, label_name="label", features_name="features", direct=False):
    """The rows as cfg.ranks partitions of blocks: partitions 0..S-1 empty
    (servers), S+w holding worker w's rows. `direct` (sync mode with one
    input partition per worker) skips the shuffle: the barrier stage then
    runs on the input partitions themselves, which Spark allows unless the
    input's last stage narrows partitions (union, coalesce)."""
    run = make_blocks(cfg, rdd.getNumPartitions(), label_name, features_name)
    keyed = rdd.mapPartitionsWithIndex(run)
    if direct:
        return keyed.map(lambda kv: kv[1], preservesPartitioning=True)
    return keyed.partitionBy(cfg.ranks, lambda k: k).values()


# ------------------------------------------------------- DataFrames, Arrow
def arrow_available():
    """DataFrame.mapInArrow needs pyarrow and pandas (pyspark[sql])."""
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def training_frame(df, label_name, features_name):
    """The DataFrame as (label double, features array<float>): vectors
    (dense or sparse) become arrays in the JVM, so Python sees Arrow."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F

    ftype = df.schema[features_name].dataType
    feats = (vector_to_array(F.col(features_name), "float32") if isinstance(ftype, VectorUDT)
             else F.col(features_name).cast("array<float>"))
    return df.select(F.col(label_name).cast("double").alias("label"), feats.alias("features"))


def arrow_matrix(features, size):
    """float32 [n, size] of an Arrow list array of numbers (one row each)
    without a Python object per row, or None when a row is null, has a
    null, the wrong length or a non-finite value (the caller then goes row
    by row to name it)."""
    import pyarrow.compute as pc

    if features.null_count:
        return None
    lengths = pc.list_value_length(features).to_numpy(zero_copy_only=False)
    values = features.flatten()
    if values.null_count or not (lengths == size).all():
        return None
    x = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(features), size)
    return x if np.isfinite(x).all() else None


def arrow_arrays(batch, size, classes, first, note):
    """(int32 labels, float32 [n, size]) of an Arrow batch (label double,
    features list<float>) without a Python object per row; RowError for
    the first bad row (found row by row, then)."""
    label_col, feat_col = batch.column(0), batch.column(1)
    if label_col.null_count == 0:
        x = arrow_matrix(feat_col, size)
        if x is not None:
            return labels(label_col.to_numpy(zero_copy_only=False), classes, first), x
    # Something is off: name the row.
    rows = list(zip(label_col.to_pylist(), feat_col.to_pylist()))
    return labelled_block(rows, size, classes, first, note=note)


def frame_partitions(df):
    """How many partitions a DataFrame has: from its physical plan when the
    plan knows (a repartition says so without running), else from its RDD
    (which may run the shuffles before it: seconds for a big one)."""
    try:
        n = int(df._jdf.queryExecution().sparkPlan().outputPartitioning().numPartitions())
    except Exception:  # noqa: BLE001 - an internal API; the RDD always answers
        n = 0
    return n if n > 0 else df.rdd.getNumPartitions()


def spark_hash_int(value, seed=42):
    """functions.hash of one int column: Spark's Murmur3_x86_32.hashInt
    (seed 42), as a signed 32-bit int. Computed here, so finding the keys
    costs no Spark job (about a second before the first step)."""
    m = 0xFFFFFFFF

    def rotl(x, r):
        return ((x << r) | (x >> (32 - r))) & m

    k1 = rotl((value & m) * 0xCC9E2D51 & m, 15) * 0x1B873593 & m
    h1 = (rotl((seed & m) ^ k1, 13) * 5 + 0xE6546B64) & m
    h1 ^= 4
    h1 ^= h1 >> 16
    h1 = h1 * 0x85EBCA6B & m
    h1 ^= h1 >> 13
    h1 = h1 * 0xC2B2AE35 & m
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 >= 1 << 31 else h1


def keys_for_partitions(n):
    """key_of[p]: an int whose rows `repartition(n, key)` puts in partition
    p. Spark's hash partitioning sends a row to pmod(hash(key), n), the
    Murmur3 of functions.hash (spark_hash_int; a test checks it against
    Spark's own)."""
    key_of = {}
    for k in range(64 * n):
        key_of.setdefault(spark_hash_int(k) % n, k)  # Python's % is pmod
        if len(key_of) == n:
            return [key_of[p] for p in range(n)]
    raise RuntimeError(f"kindling: found no key for partitions {sorted(set(range(n)) - set(key_of))} of {n}")


def frame_for_ranks(df, cfg, label_name="label", features_name="features", direct=False):
    """The DataFrame the barrier stage runs on (mapInArrow, barrier=True):
    (label, features, origin) rows that reach each task as Arrow batches,
    converted to numpy there and written straight into its spool file.
    direct (sync mode, one input partition per worker): the input's own
    partitions. Otherwise one shuffle, all in the JVM, deals the rows as
    make_blocks deals them (partition w whole to worker w when there are
    `workers` input partitions, else round-robin) into cfg.ranks
    partitions, partition r holding rank r's rows (servers: none). `origin`
    (monotonically_increasing_id: input partition << 33 | row) names a bad
    row. None without pyarrow and pandas (then the rows go as an RDD)."""
    if not arrow_available():
        return None
    from pyspark.sql import functions as F

    frame = training_frame(df, label_name, features_name).withColumn("origin", F.monotonically_increasing_id())
    if direct:
        return frame
    S, W = cfg.server_ranks, cfg.workers
    part = F.spark_partition_id()
    row = F.col("origin").bitwiseAND(F.lit((1 << 33) - 1))
    rank = F.lit(S) + (part % W if frame_partitions(frame) == W else (part + row) % W)
    key_of = F.array(*[F.lit(k) for k in keys_for_partitions(cfg.ranks)])
    return frame.withColumn("key", key_of[rank.cast("int")]).repartition(cfg.ranks, "key").drop("key")


def blocks_from_arrow(batches, cfg):
    """The barrier task's side of frame_for_ranks: its Arrow batches as the
    ("block", labels, features) / ("error", message) items the spool writer
    takes. A bad row is named by its input partition and row there."""
    size, classes = cfg.input_size, cfg.num_classes
    for batch in batches:
        if batch.num_rows == 0:
            continue
        try:
            y, x = arrow_arrays(batch, size, classes, 0, "the network's input size")
        except RowError as e:
            origin = batch.column(2)[e.index].as_py()
            yield "error", f"input partition {origin >> 33}, row {origin & ((1 << 33) - 1)}: {e.problem}"
            return
        yield "block", y, x


# ------------------------------------------------------- validation data set
def validation_shares(data, cfg, label_name="label", features_name="features"):
    """A validation data set (an RDD of rows as_pair reads, or a DataFrame's
    label and features columns) collected on the driver and dealt in
    contiguous shares, one (int32 labels, float32 [k, size]) per worker (a
    share may be empty: the workers add their figures up). Validation sets
    are meant to be small next to the training data: they pass through the
    driver. ValueError naming the first bad row."""
    from pyspark.sql import DataFrame

    size, classes = cfg.input_size, cfg.num_classes
    note = "the network's input size"
    if isinstance(data, DataFrame):
        for name in (label_name, features_name):
            if name not in data.schema.names:
                raise ValueError(f"column {name!r} is not in the validation DataFrame (columns: "
                                 f"{', '.join(data.schema.names)})")
        rows = [(r[0], r[1]) for r in training_frame(data, label_name, features_name).collect()]
    elif hasattr(data, "collect"):
        rows = data.collect()
    else:
        raise TypeError(f"validation data must be a DataFrame or an RDD, got {type(data).__name__}")
    if not rows:
        raise ValueError("the validation data set has no rows")
    try:
        y, x = labelled_block(rows, size, classes, 0, label_name, features_name, note=note)
    except RowError as e:
        raise ValueError(f"validation data, row {e.index}: {e.problem}") from None
    bounds = np.linspace(0, len(y), cfg.workers + 1).astype(int)
    return [(y[a:b], x[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
