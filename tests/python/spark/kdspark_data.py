"""The small generated data set and network of the kindling_spark tests
(a plain module: both conftest.py and the tests import it)."""
import numpy as np

NUM_FEATURES, NUM_CLASSES = 8, 3
SPEC = {"input": [NUM_FEATURES], "layers": [
    {"type": "dense", "units": 16}, {"type": "relu"},
    {"type": "dense", "units": NUM_CLASSES}, {"type": "softmax"}]}
EPOCHS = 6


def make_blobs(n, seed):
    """Three well separated Gaussian blobs in 8 dimensions."""
    centers = np.random.default_rng(0).normal(0, 2.0, (NUM_CLASSES, NUM_FEATURES))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, n)
    x = centers[y] + rng.normal(0, 1.5, (n, NUM_FEATURES))
    return x.astype(np.float32), y.astype(np.int32)
