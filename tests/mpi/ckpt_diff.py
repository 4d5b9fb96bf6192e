#!/usr/bin/env python3
"""Largest absolute difference between the weights of two Kindling
checkpoints (every dataset under /layers), or 'inf' if their layouts differ.
With --attr NAME, print /training's attribute NAME of the first file."""
import sys

import h5py
import numpy as np


def tensors(path):
    out = {}
    with h5py.File(path, "r") as f:
        f["layers"].visititems(lambda name, obj: out.__setitem__(name, np.asarray(obj, dtype=np.float64))
                               if isinstance(obj, h5py.Dataset) else None)
    return out


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--attr":
        with h5py.File(sys.argv[3], "r") as f:
            print(int(f["training"].attrs[sys.argv[2]]))
        return
    a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
    if not a or a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        print("inf")
        return
    print(repr(max(float(np.max(np.abs(a[k] - b[k]))) if a[k].size else 0.0 for k in a)))


if __name__ == "__main__":
    main()
