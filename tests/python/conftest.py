"""Shared fixtures: the Kindling library (skip with the reason when it is
not built) and real Fashion-MNIST training images."""
import gzip
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import kdlib  # noqa: E402

FASHION_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def kd():
    try:
        kdlib.load()
    except kdlib.LibraryMissing as e:
        pytest.skip(str(e))
    return kdlib


def read_fashion(n, split="train"):
    """The first n images (n, 1, 28, 28) scaled to [0, 1] and their labels."""
    images = FASHION_DIR / f"{split}-images-idx3-ubyte.gz"
    labels = FASHION_DIR / f"{split}-labels-idx1-ubyte.gz"
    if not images.exists() or not labels.exists():
        pytest.skip(f"{images} missing (package dataset-fashion-mnist)")
    with gzip.open(images, "rb") as f:
        x = np.frombuffer(f.read(16 + n * 784), dtype=np.uint8, offset=16)
    with gzip.open(labels, "rb") as f:
        y = np.frombuffer(f.read(8 + n), dtype=np.uint8, offset=8)
    x = (x.reshape(n, 1, 28, 28) / 255.0).astype(np.float32)
    return x, y.astype(np.int32)


@pytest.fixture(scope="session")
def fashion():
    return read_fashion(256)
