"""``mnist5k-clutter``: the mnist5k digits, each placed at a random spot of a 56x56 canvas
strewn with fragments of other digits (after Mnih et al.'s cluttered MNIST, 2014).

Image i of a split is digit i of that split's mnist5k order, so labels, order and the
train/val split are mnist5k's. Clutter comes only from the other digits of the same split, so
no training digit leaks into the held-out images. Generation is a pure function of the split
(one seeded ``numpy.random.Generator`` per split): the same images in any process and in any
call order, in about a tenth of a second for the 4000 training digits.
"""
from __future__ import annotations

import numpy as np

from .mnist import mnist5k

CANVAS = 56
DIGIT = 28
PIECE = 8  # side of a clutter fragment (Mnih et al.: 8x8)
PIECES = (4, 8)  # fragments per image, inclusive range
# Fragments are cut from the central 20x20 box, where MNIST draws its size-normalised digits;
# crops from the empty border would be blank and add no clutter.
CROP_LO, CROP_HI = 4, 24 - PIECE
SEED = 15
SPLIT_STREAMS = {"train": 0, "val": 1}
# Mean and std of the training split's pixels / 255 (tests recompute them): the canvas is mostly
# background, so MNIST's own 0.1307 / 0.3081 would leave inputs far from unit scale.
CLUTTER_MEAN, CLUTTER_STD = (0.0710,), (0.2375,)


def clutter_images(digits: np.ndarray, seed: int | tuple[int, ...]) -> np.ndarray:
    """uint8 digits (N, 1, 28, 28) -> uint8 canvases (N, 1, 56, 56), a pure function of both.

    Canvas i gets 4-8 fragments (8x8) of digits other than i, pasted at random positions and
    max-combined, then digit i max-combined at a random position (fully inside the canvas).
    """
    n = len(digits)
    if n < 2:
        raise ValueError(f"clutter needs at least 2 digits to draw fragments from, got {n}")
    rng = np.random.default_rng(seed)
    count = rng.integers(PIECES[0], PIECES[1] + 1, n)
    # a source in [0, n-1) shifted past i: uniform over the other digits
    source = rng.integers(0, n - 1, (n, PIECES[1]))
    source += source >= np.arange(n)[:, None]
    crop = rng.integers(CROP_LO, CROP_HI + 1, (n, PIECES[1], 2))
    paste = rng.integers(0, CANVAS - PIECE + 1, (n, PIECES[1], 2))
    place = rng.integers(0, CANVAS - DIGIT + 1, (n, 2))
    out = np.zeros((n, 1, CANVAS, CANVAS), dtype=np.uint8)
    for i in range(n):
        canvas = out[i, 0]
        for k in range(count[i]):
            (cy, cx), (py, px) = crop[i, k], paste[i, k]
            frag = digits[source[i, k], 0, cy:cy + PIECE, cx:cx + PIECE]
            np.maximum(canvas[py:py + PIECE, px:px + PIECE], frag, out=canvas[py:py + PIECE, px:px + PIECE])
        y, x = place[i]
        np.maximum(canvas[y:y + DIGIT, x:x + DIGIT], digits[i, 0], out=canvas[y:y + DIGIT, x:x + DIGIT])
    return out


def mnist5k_clutter(split: str, layout: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 1, 56, 56) and labels of one split: mnist5k's digits of that split, on clutter.

    ``layout`` > 0 places the same digits again, at new positions among new fragments (a stream of
    its own per split and layout): more canvases of the same held-out digits, which the fidelity
    report uses to measure with more power than 500 canvases give. Layout 0 is the dataset itself.
    """
    if layout < 0:
        raise ValueError(f"mnist5k-clutter: layout must be >= 0, got {layout}")
    digits, labels = mnist5k(split)
    seed = (SEED, SPLIT_STREAMS[split]) + ((layout,) if layout else ())
    return clutter_images(digits, seed), labels
