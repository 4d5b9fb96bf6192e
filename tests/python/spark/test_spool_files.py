"""Spool files between Python (kindling_spark.spool, numpy) and C
(kd_dataset_save_spool / kd_dataset_load_spool through ctypes): the same
bytes from both writers, exact round trips, empty partitions, row
conversion with clear errors, and corrupt or truncated files rejected by
both readers with messages that say what is wrong."""
import os
import struct
import subprocess
import types
import zlib

import numpy as np
import pytest

from kindling_spark import native, spool


def leftovers(directory):
    return [n for n in os.listdir(directory) if ".tmp-" in n]


def awkward_floats(shape, n, seed):
    """Random values plus -0.0, a subnormal and extremes, to catch any
    conversion that is not bit for bit."""
    x = np.random.default_rng(seed).normal(size=(n,) + shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[:4] = [-0.0, np.float32(1e-40), np.float32(3.4e38), np.float32(-1.17549435e-38)]
    return x


@pytest.mark.parametrize("shape", [(5,), (2, 3), (1, 4, 3)])
@pytest.mark.parametrize("labelled", [True, False])
def test_python_writes_c_reads(lib, tmp_path, shape, labelled):
    x = awkward_floats(shape, 7, seed=len(shape))
    y = np.array([0, 9, 3, 3, 1, 0, 2147483646], dtype=np.int64) if labelled else None
    path = tmp_path / "py.spool"
    assert spool.write_spool(path, x, y) == 7
    X, Y, S = native.load_spool(path)
    assert S == shape
    assert X.dtype == np.float32 and X.tobytes() == x.tobytes()
    if labelled:
        assert Y.tolist() == y.tolist()
    else:
        assert Y is None
    assert leftovers(tmp_path) == []


def test_both_writers_produce_the_same_bytes(lib, tmp_path):
    x = awkward_floats((1, 3, 2), 11, seed=5)
    y = np.arange(11) % 4
    spool.write_spool(tmp_path / "py.spool", x, y)
    native.save_spool(tmp_path / "c.spool", x, y)
    py_bytes = (tmp_path / "py.spool").read_bytes()
    assert py_bytes == (tmp_path / "c.spool").read_bytes()
    # The header is the documented one, field by field.
    magic, version, rank, d0, d1, d2, flags, count, crc = struct.unpack_from("<8sIIIIIIQQ", py_bytes)
    assert (magic, version, rank, (d0, d1, d2), flags, count) == (b"KDSPOOL1", 1, 3, (1, 3, 2), 1, 11)
    assert py_bytes[48:64] == bytes(16) and len(py_bytes) == 64 + 11 * 6 * 4 + 11 * 4
    # Python reads what C wrote.
    back = spool.read_spool(tmp_path / "c.spool")
    assert back.shape == (1, 3, 2) and back.features.tobytes() == x.tobytes() and back.labels.tolist() == y.tolist()


def test_empty_partition(lib, tmp_path):
    path = tmp_path / "empty.spool"
    assert spool.write_rows(path, iter([]), shape=(784,)) == 0
    assert path.stat().st_size == 64
    X, Y, S = native.load_spool(path)
    assert X.shape == (0, 784) and S == (784,)
    back = spool.read_spool(path)
    assert back.features.shape == (0, 784) and back.labels is not None and back.labels.shape == (0,)


def test_write_rows_accepts_spark_row_forms(lib, tmp_path):
    pytest.importorskip("pyspark", reason="pyspark is not installed")
    from pyspark.ml.linalg import Vectors
    from pyspark.mllib.regression import LabeledPoint
    from pyspark.sql import Row

    rows = [
        (2, [1.0, 2.0, 3.0, 4.0]),
        (1.0, np.array([0.5, 0, 0, -1], dtype=np.float64)),
        LabeledPoint(0, [9.0, 8.0, 7.0, 6.0]),
        Row(label=3, features=Vectors.sparse(4, {1: 5.0})),
        types.SimpleNamespace(label=np.int64(1), features=Vectors.dense([1, 1, 1, 1])),
    ]
    path = tmp_path / "rows.spool"
    assert spool.write_rows(path, iter(rows), shape=(2, 2), batch_rows=2) == 5
    X, Y, S = native.load_spool(path)
    assert S == (2, 2)
    assert X.reshape(5, 4).tolist() == [[1, 2, 3, 4], [0.5, 0, 0, -1], [9, 8, 7, 6], [0, 5, 0, 0], [1, 1, 1, 1]]
    assert Y.tolist() == [2, 1, 0, 3, 1]
    # Unlabelled rows are the features alone.
    assert spool.write_rows(tmp_path / "u.spool", [Vectors.dense([1, 2]), [3, 4]], shape=(2,), labelled=False) == 2
    X, Y, _ = native.load_spool(tmp_path / "u.spool")
    assert X.tolist() == [[1, 2], [3, 4]] and Y is None


@pytest.mark.parametrize("bad_row, message", [
    ((1, [1.0, 2.0, 3.0]), "row 2: 3 features, expected 4 (sample shape 4)"),
    ((1, None), "row 2: features are null"),
    ((1, [1.0, float("nan"), 0.0, 0.0]), "row 2: feature 1 is nan"),
    ((1, ["a", "b", "c", "d"]), "row 2: features are not numbers"),
    ((None, [1.0, 2.0, 3.0, 4.0]), "row 2: label is null"),
    ((1.5, [1.0, 2.0, 3.0, 4.0]), "row 2: label 1.5 is not a class"),
    ((-1, [1.0, 2.0, 3.0, 4.0]), "row 2: label -1 is not a class"),
    (("cat", [1.0, 2.0, 3.0, 4.0]), "row 2: label 'cat' is not a number"),
    ((1, 2, 3), "row 2: a training row must be (label, features)"),
])
def test_write_rows_rejects_bad_rows(tmp_path, bad_row, message):
    path = tmp_path / "bad.spool"
    path.write_bytes(b"previous")
    rows = [(0, [0.0] * 4), (1, [1.0] * 4), bad_row, (2, [2.0] * 4)]
    with pytest.raises(ValueError) as e:
        spool.write_rows(path, iter(rows), shape=(4,))
    assert message in str(e.value)
    # The failed write left the previous file alone and no temporary behind.
    assert path.read_bytes() == b"previous" and leftovers(tmp_path) == []


def test_streaming_writer_is_all_or_nothing(tmp_path):
    path = tmp_path / "part.spool"
    spool.write_spool(path, np.ones((2, 3)), [0, 1])
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="task killed"):
        with spool.SpoolWriter(path, (3,), labelled=True) as w:
            w.append(np.zeros((5, 3)), [1] * 5)
            raise RuntimeError("task killed")
    assert path.read_bytes() == before and leftovers(tmp_path) == []
    with spool.SpoolWriter(path, (3,), labelled=True) as w:
        w.append(np.zeros((5, 3)), [1] * 5)
        w.append(np.ones((1, 1, 3)), [2])
        with pytest.raises(ValueError, match="do not fit the spool's sample shape"):
            w.append(np.ones((1, 4)), [2])
        with pytest.raises(ValueError, match="2 samples but 1 labels"):
            w.append(np.ones((2, 3)), [2])
    back = spool.read_spool(path)
    assert back.features.shape == (6, 3) and back.labels.tolist() == [1] * 5 + [2]


def _good_file(tmp_path, labelled):
    path = tmp_path / "good.spool"
    spool.write_spool(path, np.arange(24, dtype=np.float32).reshape(4, 6), [0, 1, 2, 1] if labelled else None)
    return path, path.read_bytes()


def _both_fail(path, *needles):
    """Both readers reject the file, naming the file and the problem."""
    with pytest.raises(native.KindlingError) as c_err:
        native.load_spool(path)
    with pytest.raises(spool.SpoolFormatError) as py_err:
        spool.read_spool(path)
    for msg in (str(c_err.value), str(py_err.value)):
        assert str(path) in msg
        for needle in needles:
            assert needle in msg, msg
    assert c_err.value.status == "KD_ERR_FORMAT"


def test_corrupt_payload(lib, tmp_path):
    path, data = _good_file(tmp_path, labelled=True)
    for off in (64 + 5, len(data) - 2):  # a feature byte, a label byte
        bad = bytearray(data)
        bad[off] ^= 0x10
        path.write_bytes(bytes(bad))
        _both_fail(path, "payload corrupt", "offset 40")


def test_truncated_files(lib, tmp_path):
    path, data = _good_file(tmp_path, labelled=False)
    feature_bytes = 4 * 6 * 4
    path.write_bytes(data[:-10])
    _both_fail(path, f"expected {feature_bytes} bytes of features", f"file has {feature_bytes - 10}")
    path, data = _good_file(tmp_path, labelled=True)
    path.write_bytes(data[:-3])
    _both_fail(path, f"offset {64 + feature_bytes} (labels): expected 16 bytes of labels, file has 13")
    path.write_bytes(data[:30])
    _both_fail(path, "file has 30 bytes, shorter than the 64-byte spool header")
    path.write_bytes(data + b"\0")
    _both_fail(path, "1 unexpected bytes after the labels")


def test_bad_header_fields(lib, tmp_path):
    path, data = _good_file(tmp_path, labelled=True)

    def patched(off, fmt, value):
        bad = bytearray(data)
        struct.pack_into(fmt, bad, off, value)
        path.write_bytes(bytes(bad))

    patched(0, "<8s", b"PAR1\0\0\0\0")
    _both_fail(path, "offset 0 (magic): bad magic")
    patched(8, "<I", 2)
    _both_fail(path, "offset 8 (version): unsupported spool version 2")
    patched(12, "<I", 4)
    _both_fail(path, "offset 12 (rank): sample rank 4")
    patched(20, "<I", 3)
    _both_fail(path, "offset 20 (dims[1]): 3 beyond rank 1, expected 0")
    patched(28, "<I", 5)
    _both_fail(path, "offset 28 (flags): unknown flag bits 0x4")
    patched(56, "<B", 1)
    _both_fail(path, "offset 56 (reserved)")
    # A negative label with a CRC that matches it is still refused, by position.
    x = np.zeros((3, 2), dtype=np.float32)
    y = np.array([1, -2, 0], dtype=np.int32)
    payload = x.tobytes() + y.astype("<i4").tobytes()
    path.write_bytes(spool.pack_header((2,), 3, True, zlib.crc32(payload)) + payload)
    _both_fail(path, f"offset {64 + 24 + 4} (label of sample 1): -2; labels must be >= 0")


def test_missing_file(lib, tmp_path):
    with pytest.raises(native.KindlingError) as e:
        native.load_spool(tmp_path / "nope.spool")
    assert e.value.status == "KD_ERR_IO" and "nope.spool: cannot open spool file" in str(e.value)


def test_cli_predicts_from_a_python_spool(trained, tmp_path):
    """`kindling predict --input F.spool` (the CLI's spool data source) on a
    file written by Python gives the probabilities of the C forward pass."""
    x = trained.x[:50]
    path = tmp_path / "rows.spool"
    spool.write_spool(path, x)  # unlabelled, as prediction input
    out = tmp_path / "p.csv"
    r = subprocess.run([native.cli_path(), "predict", "--model", str(trained.path), "--input", str(path),
                        "--output", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    table = np.loadtxt(out, delimiter=",", skiprows=1)
    with native.NativeNet(trained.path) as net:
        expected = net.predict(x)
    assert table.shape == (50, 2 + expected.shape[1])
    np.testing.assert_allclose(table[:, 2:], expected, atol=1e-5)
    assert table[:, 1].tolist() == np.argmax(expected, axis=1).tolist()
    # A corrupt spool stops the CLI with the loader's message.
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    r = subprocess.run([native.cli_path(), "predict", "--model", str(trained.path), "--input", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and f"{path}: payload corrupt" in r.stderr
