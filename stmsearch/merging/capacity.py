"""How many tokens a layer can remove: shared by config validation and the merge functions.

Pure integer arithmetic, so that a schedule rejected here is exactly one the runtime
could not carry out.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import MergeConfig


def split_sides(r: int, layer: int) -> tuple[int, int]:
    """(before, after) the class token for a symmetric merge of ``r``; the odd one alternates."""
    left = r // 2 + (r % 2 if layer % 2 else 0)
    return left, r - left


def block_offset(layer: int, runs: int) -> int:
    """Blocks of ``runs`` tokens shift by one each layer so runs can grow across layers."""
    return layer % runs


def side_capacity(n: int, runs: int, offset: int) -> int:
    """Edges inside blocks of ``runs`` tokens over ``n`` eligible tokens of one side."""
    if n <= 1:
        return 0
    return n - ((n - 1 + offset) // runs + 1)


def _sides(tokens: int, cls: int, window: int) -> tuple[int, int]:
    return max(0, cls - window), max(0, tokens - cls - 1 - window)


def capacity(cfg: "MergeConfig", tokens: int, cls: int, layer: int) -> int:
    """Most tokens ``cfg``'s method can remove before ``layer`` from ``tokens`` tokens.

    ``cls`` is the class-token index; it is exact for symmetric STM, which keeps it equal
    across a batch, and the bounds for the other methods hold wherever it sits.
    """
    w = cfg.protect
    eligible = max(0, tokens - 1 - 2 * w)
    if cfg.method == "none":
        return 0
    if cfg.method == "prune":
        return eligible
    if cfg.method == "tome":
        return max(0, (eligible - 1) // 2)
    runs = cfg.runs if cfg.method == "stm" else 2
    off = block_offset(layer, runs)

    def cap(n: int) -> int:
        c = side_capacity(n, runs, off)
        if cfg.method == "stm" and cfg.neighbourhood == "2d":
            c = min(c, (runs - 1) * n // 4)  # at most one cell of 4 tokens per anchor
        return c

    if cfg.method == "stm" and cfg.symmetric:
        left, right = _sides(tokens, cls, w)
        cl, cr = cap(left), cap(right)
        return max((r for r in range(cl + cr + 1)
                    if split_sides(r, layer)[0] <= cl and split_sides(r, layer)[1] <= cr), default=0)
    # the class token may sit anywhere: the worst split of the eligible tokens
    return min(cap(a) + cap(eligible - a) for a in range(eligible + 1))
