"""Spool files in numpy: how a Spark task hands its partition's rows to
its Kindling rank. Byte for byte the format of io/spool.c (read there by
kd_dataset_load_spool, e.g. `kindling train --train-spool F`):

    offset size  field
         0    8  magic    b"KDSPOOL1"
         8    4  version  u32, 1
        12    4  rank     u32, rank of the per-sample shape, 1..3
        16   12  dims     u32[3]; dims[i] >= 1 for i < rank, 0 beyond it
        28    4  flags    u32; bit 0: the file has labels; other bits 0
        32    8  count    u64, samples (0 is valid: an empty partition)
        40    8  crc32    u64; zlib crc32 of the payload in the low 32 bits
        48   16  reserved zero
        64       features count * prod(dims) float32, sample after sample
                 labels   count int32 (>= 0), only when flags bit 0 is set

All little-endian; the file ends after the payload.

SpoolWriter streams batches (the count and CRC go into the header when it
closes) into a temporary file, then fsyncs and renames it (files.AtomicFile),
so the final name only ever holds a complete file. write_rows() turns the
rows of a Spark partition ((label, features) pairs, Rows, LabeledPoints,
vectors or arrays) into a spool with a clear error for the first bad row
(the row parser is data.py's).
"""
import collections
import os
import struct
import zlib

import numpy as np

from . import data
from .files import AtomicFile

MAGIC = b"KDSPOOL1"
VERSION = 1
HEADER_BYTES = 64
FLAG_LABELS = 1
MAX_RANK = 3

# magic, version, rank, dims[3], flags, count, crc32 (as u64); 16 reserved bytes follow.
_HEADER = struct.Struct("<8sIIIIIIQQ")
assert _HEADER.size == 48

_F32 = np.dtype("<f4")
_I32 = np.dtype("<i4")

SpoolData = collections.namedtuple("SpoolData", "features labels shape")
SpoolData.__doc__ = """features (n, *shape) float32; labels (n,) int32 or None; shape (per sample)."""


class SpoolFormatError(ValueError):
    """A spool file that is not what the format says (names file, field, offset)."""


def _check_shape(shape):
    shape = tuple(int(d) for d in shape)
    if not 1 <= len(shape) <= MAX_RANK or any(d < 1 for d in shape):
        raise ValueError(f"spool sample shape {shape}: needs 1..{MAX_RANK} dimensions, each >= 1")
    if any(d > 0x7FFFFFFF for d in shape):
        raise ValueError(f"spool sample shape {shape}: dimensions must fit in int32")
    return shape


def pack_header(shape, count, has_labels, crc):
    """The 64 header bytes."""
    shape = _check_shape(shape)
    dims = list(shape) + [0] * (MAX_RANK - len(shape))
    head = _HEADER.pack(MAGIC, VERSION, len(shape), *dims, FLAG_LABELS if has_labels else 0, int(count),
                        crc & 0xFFFFFFFF)
    return head + bytes(HEADER_BYTES - len(head))


class SpoolWriter:
    """Streams samples of one shape into a spool file.

        with SpoolWriter(path, (784,), labelled=True) as w:
            w.append(x_batch, y_batch)    # x (k, 784) or (k, 1, 28, 28)

    On an exception inside the `with`, or abort(), the temporary file is
    removed and `path` is left as it was (files.AtomicFile). Labels are
    kept in memory (4 bytes a sample) because the format puts them after
    every feature."""

    def __init__(self, path, shape, labelled=True):
        self.path = os.fspath(path)
        self.shape = _check_shape(shape)
        self.size = int(np.prod(self.shape))
        self.labelled = bool(labelled)
        self.count = 0
        self._crc = 0
        self._labels = []
        self._out = AtomicFile(self.path)
        self._f = self._out.file
        try:
            self._f.write(bytes(HEADER_BYTES))  # the real header is written on close
        except BaseException:
            self.abort()
            raise

    def append(self, features, labels=None):
        """Append k samples: features (k, *shape) or (k, size) numbers, and
        k labels (integers >= 0) when the file is labelled."""
        if self._f is None:
            raise ValueError(f"{self.path}: spool writer is closed")
        x = np.asarray(features, dtype=_F32)
        k = x.shape[0] if x.ndim else 0
        if x.ndim == 0 or int(np.prod(x.shape[1:])) != self.size:
            raise ValueError(f"{self.path}: samples of shape {x.shape[1:] if x.ndim else ()} do not fit the "
                             f"spool's sample shape {self.shape} ({self.size} features)")
        if self.labelled:
            if labels is None:
                raise ValueError(f"{self.path}: the spool is labelled but no labels were given")
            try:
                y = data.labels(np.asarray(labels).reshape(-1), None, self.count, owner=None)
            except data.RowError as e:
                raise ValueError(f"sample {e.index}: {e.problem}") from None
            if y.shape != (k,):
                raise ValueError(f"{self.path}: {k} samples but {y.shape[0] if y.ndim else 0} labels")
            self._labels.append(y)
        elif labels is not None:
            raise ValueError(f"{self.path}: the spool is unlabelled but labels were given")
        payload = np.ascontiguousarray(x.reshape(k, self.size)).data
        self._crc = zlib.crc32(payload, self._crc)
        self._f.write(payload)
        self.count += k

    def close(self):
        """Finish the file: labels, header, fsync, rename. Returns the count."""
        if self._f is None:
            return self.count
        try:
            if self.labelled and self._labels:
                raw = np.concatenate(self._labels).astype(_I32).tobytes()
                self._crc = zlib.crc32(raw, self._crc)
                self._f.write(raw)
            self._f.seek(0)
            self._f.write(pack_header(self.shape, self.count, self.labelled, self._crc))
        except BaseException:
            self.abort()
            raise
        self._f = None
        self._out.commit()
        return self.count

    def abort(self):
        if self._f is not None:
            self._f = None
            self._out.abort()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def write_spool(path, features, labels=None, shape=None):
    """Write arrays as one spool file. features (n, *shape) or (n, size)
    with `shape`; labels None (unlabelled) or n whole numbers >= 0.
    Returns the sample count."""
    x = np.asarray(features, dtype=_F32)
    if x.ndim < 1:
        raise ValueError("write_spool: features must be an array of samples")
    if shape is None:
        shape = x.shape[1:] if x.ndim > 1 else (1,)
    with SpoolWriter(path, shape, labelled=labels is not None) as w:
        w.append(x, labels)
    return w.count


# ---------------------------------------------------------------- row input
def write_rows(path, rows, shape, labelled=True, batch_rows=4096):
    """Write an iterator of rows as one spool file; returns the count.

    Labelled rows are whatever data.as_pair reads ((label, features)
    pairs, LabeledPoints, Rows with label/features fields, arrays [label,
    features...]); unlabelled rows are the features alone. Features may be
    pyspark vectors, lists or numpy arrays of prod(shape) numbers. The
    first bad row (wrong length, null, NaN or non-numeric features, null
    or non-class label) raises ValueError naming its index."""
    shape = _check_shape(shape)
    size = int(np.prod(shape))
    note = f"sample shape {'x'.join(map(str, shape))}"
    with SpoolWriter(path, shape, labelled=labelled) as w:
        chunk = []

        def flush():
            if not chunk:
                return
            try:
                if labelled:
                    y, x = data.labelled_block(chunk, size, None, w.count, owner=None, note=note)
                else:
                    y, x = None, data.features_block(chunk, size, w.count, note)
            except data.RowError as e:
                raise ValueError(str(e)) from None
            w.append(x, y)
            chunk.clear()

        for row in rows:
            chunk.append(row)
            if len(chunk) >= batch_rows:
                flush()
        flush()
    return w.count


# ------------------------------------------------------------------- read
def read_spool(path):
    """Read a spool file, checking it as thoroughly as the C loader does.
    Returns SpoolData(features, labels or None, shape)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < HEADER_BYTES:
            raise SpoolFormatError(f"{path}: file has {size} bytes, shorter than the {HEADER_BYTES}-byte "
                                   f"spool header")
        head = f.read(HEADER_BYTES)
        magic, version, rank, d0, d1, d2, flags, count, crc = _HEADER.unpack_from(head)
        if magic != MAGIC:
            raise SpoolFormatError(f"{path}: offset 0 (magic): bad magic {magic!r}; not a Kindling spool "
                                   f"file (expected {MAGIC!r})")
        if version != VERSION:
            raise SpoolFormatError(f"{path}: offset 8 (version): unsupported spool version {version} "
                                   f"(this package reads version {VERSION})")
        if not 1 <= rank <= MAX_RANK:
            raise SpoolFormatError(f"{path}: offset 12 (rank): sample rank {rank}, expected 1..{MAX_RANK}")
        dims = (d0, d1, d2)
        for i, d in enumerate(dims):
            if i < rank and not 1 <= d <= 0x7FFFFFFF:
                raise SpoolFormatError(f"{path}: offset {16 + 4 * i} (dims[{i}]): dimension {d}, expected "
                                       f"1..{0x7FFFFFFF}")
            if i >= rank and d != 0:
                raise SpoolFormatError(f"{path}: offset {16 + 4 * i} (dims[{i}]): {d} beyond rank {rank}, "
                                       f"expected 0")
        if flags & ~FLAG_LABELS:
            raise SpoolFormatError(f"{path}: offset 28 (flags): unknown flag bits {flags & ~FLAG_LABELS:#x}")
        if crc >> 32:
            raise SpoolFormatError(f"{path}: offset 40 (crc32): high 32 bits are {crc >> 32:#010x}, expected 0")
        for i in range(48, HEADER_BYTES):
            if head[i]:
                raise SpoolFormatError(f"{path}: offset {i} (reserved): byte {head[i]:#04x}, expected 0")
        shape = dims[:rank]
        has_labels = bool(flags & FLAG_LABELS)
        per = int(np.prod(shape))
        after = size - HEADER_BYTES
        fbytes = count * per * 4
        lbytes = count * 4 if has_labels else 0
        if after < fbytes:
            raise SpoolFormatError(f"{path}: offset 64 (features): expected {fbytes} bytes of features "
                                   f"({count} samples of shape {'x'.join(map(str, shape))}), file has {after}")
        if after - fbytes < lbytes:
            raise SpoolFormatError(f"{path}: offset {HEADER_BYTES + fbytes} (labels): expected {lbytes} bytes "
                                   f"of labels, file has {after - fbytes}")
        if after != fbytes + lbytes:
            raise SpoolFormatError(f"{path}: offset {HEADER_BYTES + fbytes + lbytes}: "
                                   f"{after - fbytes - lbytes} unexpected bytes after the "
                                   f"{'labels' if has_labels else 'features'}")
        fdata = f.read(fbytes)
        ldata = f.read(lbytes)
    got = zlib.crc32(ldata, zlib.crc32(fdata))
    if got != crc:
        raise SpoolFormatError(f"{path}: payload corrupt: CRC32 of the {fbytes + lbytes} payload bytes from "
                               f"offset 64 is {got:#010x}, the header (offset 40, crc32) says {crc:#010x}")
    x = np.frombuffer(fdata, dtype=_F32).astype(np.float32).reshape((count,) + shape)
    y = None
    if has_labels:
        y = np.frombuffer(ldata, dtype=_I32).astype(np.int32)
        neg = np.flatnonzero(y < 0)
        if neg.size:
            i = int(neg[0])
            raise SpoolFormatError(f"{path}: offset {HEADER_BYTES + fbytes + 4 * i} (label of sample {i}): "
                                   f"{y[i]}; labels must be >= 0")
    return SpoolData(x, y, shape)
