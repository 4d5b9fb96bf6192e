"""Where kindling_spark finds libkindling.so and the kindling CLI: an
explicit KINDLING_LIB / KINDLING_CLI first (and only), then the wheel's
kindling_spark/_native/, then a checkout's build tree."""
import pytest

from kindling_spark import native


def test_the_wheels_native_directory_comes_first(tmp_path, monkeypatch):
    monkeypatch.delenv("KINDLING_LIB", raising=False)
    monkeypatch.delenv("KINDLING_CLI", raising=False)
    packaged = tmp_path / "_native"
    packaged.mkdir()
    for name in ("libkindling.so", "kindling"):
        (packaged / name).write_bytes(b"")
        (packaged / name).chmod(0o755)
    monkeypatch.setattr(native, "NATIVE_DIR", packaged)
    assert native.library_candidates()[0] == packaged / "libkindling.so"
    assert native.library_path() == str(packaged / "libkindling.so")
    assert native.cli_path() == str(packaged / "kindling")
    # The environment still overrides, and a wrong one is an error, not a fallback.
    other = tmp_path / "other-kindling"
    other.write_bytes(b"")
    other.chmod(0o755)
    monkeypatch.setenv("KINDLING_CLI", str(other))
    assert native.cli_path() == str(other)
    monkeypatch.setenv("KINDLING_LIB", str(tmp_path / "missing.so"))
    with pytest.raises(native.NotFound, match="KINDLING_LIB=.*missing.so does not exist"):
        native.library_path()


def test_nothing_found_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("KINDLING_CLI", raising=False)
    monkeypatch.setattr(native, "NATIVE_DIR", tmp_path / "_native")
    monkeypatch.setattr(native, "PACKAGE_DIR", tmp_path)
    monkeypatch.setattr(native, "repo_root", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(native.NotFound, match=r"_native/kindling.*Install the kindling-spark wheel"):
        native.cli_path()
