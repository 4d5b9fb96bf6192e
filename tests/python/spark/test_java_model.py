"""The JVM API's KindlingModel (java/, issue 16) against Python's: a model
saved by Python or trained by the `kindling` CLI loads in Java and predicts
the same classes and probabilities (within 1e-6); a model saved by Java
loads in Python; both write the same directory layout and raise the same
errors for a corrupt save. Java runs build/kindling-tests.jar's ModelTool.
Skipped with the reason when Java or the jars are not built."""
import hashlib
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("pyspark", reason="pyspark is not installed (pip install pyspark)")

from kdspark_data import make_blobs  # noqa: E402
from sparkenv import model_tool  # noqa: E402
from kindling_spark.model import KindlingModel  # noqa: E402


@pytest.fixture(scope="module")
def java():
    tool = model_tool()

    def run(*args, ok=True, timeout=300):
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        r = subprocess.run([*tool, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)
        out = [line for line in r.stdout.splitlines() if line.startswith(("OK", "ERROR"))]
        assert out, f"ModelTool {args} printed nothing (rc {r.returncode}):\n{r.stdout}\n{r.stderr[-3000:]}"
        if ok:
            assert r.returncode == 0 and out[-1].startswith("OK"), f"ModelTool {args}: {out[-1]}\n{r.stderr[-3000:]}"
        else:
            assert r.returncode == 1 and out[-1].startswith("ERROR"), f"ModelTool {args} should fail: {out}"
        return out[-1]
    return run


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    x, _ = make_blobs(150, seed=5)
    path = tmp_path_factory.mktemp("java_samples") / "x.f32"
    path.write_bytes(x.astype("<f4").tobytes())
    return x, path


def java_predict(java, model_dir, samples, tmp_path):
    x, xpath = samples
    out = tmp_path / "probs.f64"
    java("predict", model_dir, xpath, len(x), out)
    return np.frombuffer(out.read_bytes(), dtype="<f8").reshape(len(x), -1)


def test_python_saved_model_predicts_the_same_in_java(java, trained, samples, tmp_path):
    model = KindlingModel.from_checkpoint(trained.path)
    model.write().save(str(tmp_path / "py"))
    got = java_predict(java, tmp_path / "py", samples, tmp_path)
    want = model.predict(samples[0]).astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert (got.argmax(1) == want.argmax(1)).all()
    # A trained model, not a constant: the blobs are separable.
    assert (want.argmax(1) == make_blobs(150, seed=5)[1]).mean() > 0.8


def test_java_saved_model_loads_in_python(java, trained, samples, tmp_path):
    java("fromckpt", trained.path, tmp_path / "java")
    py = KindlingModel.from_checkpoint(trained.path)
    py.write().save(str(tmp_path / "py"))
    # The same files (no Hadoop .crc files beside them), the same "kindling" section.
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(tmp_path / "java") == files(tmp_path / "py") == ["data/model.h5", "metadata/_SUCCESS",
                                                                 "metadata/part-00000"]
    lines = (tmp_path / "java" / "metadata" / "part-00000").read_text().splitlines()
    assert len(lines) == 1
    jmeta = json.loads(lines[0])
    pmeta = json.loads((tmp_path / "py" / "metadata" / "part-00000").read_text())
    for key in ("format", "formatVersion", "kindlingVersion", "checkpoint", "checkpointBytes", "checkpointSha256",
                "inputShape", "numClasses", "history"):
        assert jmeta["kindling"][key] == pmeta["kindling"][key], key
    assert jmeta["kindling"]["checkpointSha256"] == hashlib.sha256(trained.path.read_bytes()).hexdigest()
    assert len(jmeta["kindling"]["history"]) > 0 and jmeta["defaultParamMap"] == pmeta["defaultParamMap"]
    back = KindlingModel.load(str(tmp_path / "java"))
    assert back.uid == jmeta["uid"] and back.checkpoint == trained.path.read_bytes()
    np.testing.assert_array_equal(back.predict(samples[0]), py.predict(samples[0]))


def test_round_trip_keeps_uid_and_params(java, trained, tmp_path):
    model = KindlingModel.from_checkpoint(trained.path, predictBatchSize=17)
    model.write().save(str(tmp_path / "a"))
    java("resave", tmp_path / "a", tmp_path / "b")
    back = KindlingModel.load(str(tmp_path / "b"))
    assert back.uid == model.uid and back.getPredictBatchSize() == 17 and back.history_records == model.history_records
    # Java, like Python, will not write over an existing save without being told.
    err = java("resave", tmp_path / "a", tmp_path / "b", ok=False)
    assert "already exists" in err
    java("resave", tmp_path / "a", tmp_path / "b", "overwrite")


def python_error(path):
    with pytest.raises(Exception) as e:
        KindlingModel.load(str(path))
    return str(e.value)


def test_corrupt_saves_give_the_same_errors(java, trained, tmp_path):
    good = tmp_path / "good"
    KindlingModel.from_checkpoint(trained.path).write().save(str(good))

    def broken(name, change):
        d = tmp_path / name
        shutil.copytree(good, d)
        change(d)
        return d

    def flip(d):
        p = d / "data" / "model.h5"
        b = bytearray(p.read_bytes())
        b[len(b) // 2] ^= 0xFF
        p.write_bytes(bytes(b))

    cases = {
        "checksum": broken("checksum", flip),
        "truncated": broken("truncated", lambda d: (d / "data" / "model.h5").write_bytes(b"\x89HDF")),
        "metadata": broken("metadata", lambda d: (d / "metadata" / "part-00000").write_text("{not json")),
        "version": broken("version", lambda d: (d / "metadata" / "part-00000").write_text(
            (good / "metadata" / "part-00000").read_text().replace('"formatVersion":1', '"formatVersion":9'))),
        "missing": broken("missing", lambda d: (d / "data" / "model.h5").unlink()),
        "empty": tmp_path / "nothing-here",
    }
    for name, d in cases.items():
        jerr = java("describe", d, ok=False)
        perr = python_error(d)
        if name == "metadata":  # the parsers' own words differ
            perr = perr.split(" (")[0]
        assert perr in jerr, f"{name}: Java said {jerr!r}, Python {perr!r}"
    assert "is corrupt" in java("describe", cases["checksum"], ok=False)


def test_bad_checkpoint_bytes_are_a_clear_error(java, tmp_path):
    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"this is not an HDF5 file\n" * 10)
    err = java("fromckpt", bogus, tmp_path / "out", ok=False)
    assert "KindlingException" in err and str(bogus) in err, err
    assert not (tmp_path / "out").exists()


def test_close_frees_and_rebuilds(java, trained, tmp_path):
    KindlingModel.from_checkpoint(trained.path).write().save(str(tmp_path / "m"))
    assert java("closed", tmp_path / "m") == "OK true"


def test_broadcast_prediction_in_spark(java, trained, samples, tmp_path):
    KindlingModel.from_checkpoint(trained.path).write().save(str(tmp_path / "m"))
    x, xpath = samples
    out = java("spark", tmp_path / "m", xpath, len(x), f"file://{tmp_path / 'saved-by-sc'}", timeout=600)
    assert out.startswith(f"OK rows {len(x)} worst ")
    assert float(out.split()[-1]) <= 1e-6
    back = KindlingModel.load(str(tmp_path / "saved-by-sc"))
    np.testing.assert_array_equal(back.predict(x), KindlingModel.load(str(tmp_path / "m")).predict(x))
