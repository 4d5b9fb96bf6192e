#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<harness>/ (standard library
only). Each seed is a small valid or deliberately broken input in the
harness's input layout (see the comment at the top of each fuzz_*.c).

The raw checkpoint seed is not made here but by the library itself:
build-fuzz/make_checkpoint_seed (fuzz/tools/make_checkpoint_seed.c, built by
fuzz/build.sh). fuzz_checkpoint's recipes are hand-made (see fuzz/README.md).

Run again after changing a harness's input layout; it overwrites the seeds
it owns and leaves other files alone."""
import gzip
import json
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def write(harness, name, data):
    d = os.path.join(HERE, "corpus", harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gz(data):
    # mtime 0: the same seed bytes on every run.
    return gzip.compress(data, mtime=0)


# ------------------------------------------------------------------ IDX
def idx(type_code, dims, payload):
    return bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload


def idx_input(flags, images, labels=b""):
    return bytes([flags]) + struct.pack("<H", len(images)) + images + labels


img3 = idx(0x08, [3, 2, 2], bytes(range(0, 240, 20)))
lab3 = idx(0x08, [3], bytes([0, 1, 2]))
write("fuzz_idx", "u8-rank3-labels", idx_input(1, img3, lab3))
write("fuzz_idx", "u8-rank3-labels-gz-by-harness", idx_input(1 | 2 | 4, img3, lab3))
write("fuzz_idx", "u8-rank3-labels-gz-in-file", idx_input(1, gz(img3), gz(lab3)))
write("fuzz_idx", "u8-rank3-nolabels", idx_input(0, img3))
write("fuzz_idx", "f32-rank2", idx_input(0, idx(0x0D, [2, 3], struct.pack(">6f", 0, 0.5, 1, -1, 2, 3))))
write("fuzz_idx", "u8-rank1", idx_input(1, idx(0x08, [2], b"\x00\xff"), idx(0x08, [2], b"\x01\x00")))
write("fuzz_idx", "u8-rank4", idx_input(0, idx(0x08, [1, 1, 2, 2], b"\x01\x02\x03\x04")))
write("fuzz_idx", "bad-magic", idx_input(0, b"\x00\x01\x08\x03" + img3[4:]))
write("fuzz_idx", "truncated", idx_input(0, img3[:-3]))
write("fuzz_idx", "truncated-gz", idx_input(0, gz(img3)[:-6]))
write("fuzz_idx", "count-mismatch", idx_input(1, img3, idx(0x08, [2], b"\x00\x01")))
write("fuzz_idx", "trailing-bytes", idx_input(0, img3 + b"\x00"))
# A few bytes of gzip whose header claims 1e9 bytes of images.
write("fuzz_idx", "gz-claims-1e9-bytes", idx_input(2, idx(0x08, [100000, 100, 100], bytes(1000))))
write("fuzz_idx", "int16-type", idx_input(0, idx(0x0B, [1, 2], b"\x00\x01\x00\x02")))

# ------------------------------------------------------------------ CSV
# byte 0: bits 0-2 label column (7 = none), bit 3 header, bit 4 gzip,
# bits 5-6 shape option; byte 1: n for the shape.
def csv_input(label_col, header, gzip_it, shape_opt, n, text):
    opt = (7 if label_col < 0 else label_col) | (header << 3) | (gzip_it << 4) | (shape_opt << 5)
    return bytes([opt, n]) + text.encode()


write("fuzz_csv", "label0-header", csv_input(0, 1, 0, 0, 0, "label,a,b\n1,0.5,2\n0,1e-3,-4\n"))
write("fuzz_csv", "nolabel", csv_input(-1, 0, 0, 0, 0, "1,2,3\n4,5,6\n"))
write("fuzz_csv", "label-last-crlf", csv_input(2, 0, 0, 0, 0, "1.5,2,3\r\n4,5,0\r\n"))
write("fuzz_csv", "shape-1x2x2", csv_input(0, 0, 0, 2, 4, "3,1,2,3,4\n2,5,6,7,8\n"))
write("fuzz_csv", "shape-flat", csv_input(-1, 0, 0, 1, 2, "1,2\n3,4\n"))
write("fuzz_csv", "gzip", csv_input(0, 1, 1, 0, 0, "y,x\n" + "".join(f"{i % 3},{i * 0.25}\n" for i in range(20))))
write("fuzz_csv", "blank-then-data", csv_input(0, 0, 0, 0, 0, "1,2\n\n3,4\n"))
write("fuzz_csv", "trailing-blank", csv_input(0, 0, 0, 0, 0, "1,2\n3,4\n\n  \n"))
write("fuzz_csv", "ragged", csv_input(0, 0, 0, 0, 0, "1,2,3\n4,5\n"))
write("fuzz_csv", "nan-inf-label-float", csv_input(0, 0, 0, 0, 0, "2.0,nan,inf\n1,-inf,1e39\n"))
write("fuzz_csv", "bad-label", csv_input(1, 0, 0, 0, 0, "1,-1\n"))
write("fuzz_csv", "nul-byte", csv_input(0, 0, 0, 0, 0, "1,2\x003\n"))

# ------------------------------------------------------------------ LibSVM
def svm_input(num_features, gzip_it, text):
    return bytes([num_features | (gzip_it << 7)]) + text.encode()


write("fuzz_libsvm", "basic", svm_input(0, 0, "1 1:0.5 3:2\n0 2:-1\n2 1:1 2:1 3:1\n"))
write("fuzz_libsvm", "comments", svm_input(0, 0, "# header\n1 1:1 # note\n\n0 4:1e-3\n"))
write("fuzz_libsvm", "fixed-width", svm_input(5, 0, "0 1:1\n1 5:2\n"))
write("fuzz_libsvm", "gzip", svm_input(0, 1, "".join(f"{i % 2} {i % 7 + 1}:{i}\n" for i in range(30))))
write("fuzz_libsvm", "label-only", svm_input(3, 0, "1\n0\n"))
write("fuzz_libsvm", "descending", svm_input(0, 0, "1 3:1 2:1\n"))
write("fuzz_libsvm", "index0", svm_input(0, 0, "1 0:1\n"))
write("fuzz_libsvm", "too-wide", svm_input(2, 0, "1 3:1\n"))
write("fuzz_libsvm", "tabs-crlf", svm_input(0, 0, "1\t1:1\t2:+3.5\r\n0 2:.5\r\n"))


# ------------------------------------------------------------------ spool
def spool(dims, count, features, labels=None, crc=None, version=1, flags=None):
    payload = struct.pack(f"<{len(features)}f", *features)
    if labels is not None:
        payload += struct.pack(f"<{len(labels)}i", *labels)
    if crc is None:
        crc = zlib.crc32(payload)
    if flags is None:
        flags = 1 if labels is not None else 0
    d = list(dims) + [0] * (3 - len(dims))
    head = (b"KDSPOOL1" + struct.pack("<II", version, len(dims)) + struct.pack("<3I", *d) +
            struct.pack("<I", flags) + struct.pack("<QQ", count, crc) + bytes(16))
    assert len(head) == 64
    return head + payload


def spool_input(fix_crc, data):
    return bytes([fix_crc]) + data


write("fuzz_spool", "labels", spool_input(1, spool([3], 2, [0, 1, 2, 3, 4, 5], [1, 0])))
write("fuzz_spool", "nolabels", spool_input(1, spool([3], 2, [0, 1, 2, 3, 4, 5])))
write("fuzz_spool", "rank3", spool_input(1, spool([1, 2, 2], 1, [1, 2, 3, 4], [3])))
write("fuzz_spool", "empty", spool_input(1, spool([4], 0, [])))
write("fuzz_spool", "empty-labels-flag", spool_input(1, spool([4], 0, [], [])))
write("fuzz_spool", "bad-crc", spool_input(0, spool([2], 1, [1, 2], [0], crc=12345)))
write("fuzz_spool", "negative-label", spool_input(1, spool([2], 1, [1, 2], [-3])))
write("fuzz_spool", "version2", spool_input(1, spool([2], 1, [1, 2], version=2)))
write("fuzz_spool", "short-payload", spool_input(1, spool([2], 2, [1, 2])))
write("fuzz_spool", "header-only", spool_input(0, spool([2], 0, [])[:40]))

# ------------------------------------------------------------------ spec
def spec(inp, layers):
    return json.dumps({"input": inp, "layers": layers})


write("fuzz_spec", "mlp", spec([1, 28, 28], [
    {"type": "flatten"}, {"type": "dense", "units": 128, "init": "he"}, {"type": "relu"},
    {"type": "dense", "units": 64, "init": "he"}, {"type": "relu"},
    {"type": "dense", "units": 10}, {"type": "softmax"}]))
write("fuzz_spec", "lenet", spec([1, 28, 28], [
    {"type": "conv2d", "filters": 20, "kernel": 5}, {"type": "tanh"}, {"type": "maxpool", "size": 2},
    {"type": "conv2d", "filters": 50, "kernel": 5}, {"type": "tanh"}, {"type": "maxpool", "size": 2},
    {"type": "flatten"}, {"type": "dense", "units": 500}, {"type": "tanh"},
    {"type": "dense", "units": 10}, {"type": "softmax"}]))
write("fuzz_spec", "every-layer", spec([2, 9, 8], [
    {"type": "conv2d", "filters": 3, "kernel": [3, 2], "stride": [2, 1], "padding": [1, 0],
     "bias": False, "init": "he", "name": "c1"},
    {"type": "batchnorm", "eps": 1e-3, "momentum": 0.2}, {"type": "sigmoid"},
    {"type": "avgpool", "size": [2, 3], "stride": 1, "padding": [1, 1]},
    {"type": "maxpool", "size": 2, "stride": [1, 2]},
    {"type": "dropout", "rate": 0.3}, {"type": "flatten"},
    {"type": "dense", "units": 5, "bias": True}, {"type": "batchnorm"}, {"type": "relu"},
    {"type": "dense", "units": 3}, {"type": "softmax", "name": "out"}]))
write("fuzz_spec", "scalar-input", '{"input": 4, "layers": [{"type": "dense", "units": 2}, {"type": "softmax"}]}')
write("fuzz_spec", "unknown-type", spec([4], [{"type": "densee", "units": 2}, {"type": "softmax"}]))
write("fuzz_spec", "no-softmax", spec([4], [{"type": "dense", "units": 2}]))
write("fuzz_spec", "softmax-not-last", spec([4], [{"type": "softmax"}, {"type": "dense", "units": 2}]))
write("fuzz_spec", "huge-dense", spec([784], [{"type": "dense", "units": 1000000000}, {"type": "softmax"}]))
write("fuzz_spec", "huge-conv", spec([3, 4096, 4096], [
    {"type": "conv2d", "filters": 4096, "kernel": 3}, {"type": "flatten"},
    {"type": "dense", "units": 10}, {"type": "softmax"}]))
write("fuzz_spec", "duplicate-name", spec([4], [
    {"type": "dense", "units": 3, "name": "a"}, {"type": "dense", "units": 2, "name": "a"}, {"type": "softmax"}]))
write("fuzz_spec", "bad-json", '{"input": [1, 2, 3], "layers": [')
write("fuzz_spec", "preset-name", "lenet")
