"""Integer arithmetic of how many tokens a layer can remove, shared by the method table
(:mod:`stmsearch.merging.methods`), schedule validation and the merge functions, so a schedule
rejected before a run is exactly one the runtime could not carry out."""
from __future__ import annotations

import math
from functools import lru_cache


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


def layer_runs(runs: int, runs_from: float, r: int, n: int) -> int:
    """The longest run a layer removing ``r`` of its ``n`` mergeable tokens merges: ``runs`` where it removes
    at least a ``runs_from`` share of them, else pairs. Light layers keep pairs, which stay nearer their
    tokens; near a layer's pair capacity pairs leave no choice of what merges, and longer runs restore one
    (README "Merge configurations"). ``runs_from`` 0: ``runs`` at every layer. The first count that takes
    runs is ``math.ceil(runs_from * n)``, the same float product (STM's capacity rule reads it so)."""
    return runs if r >= runs_from * n else 2


def eligible(tokens: int, window: int) -> int:
    """Tokens outside the class token and its protection window (wherever the class token sits)."""
    return max(0, tokens - 1 - 2 * window)


def sides(tokens: int, cls: int, window: int) -> tuple[int, int]:
    """Eligible tokens before and after the class token at index ``cls``."""
    return max(0, cls - window), max(0, tokens - cls - 1 - window)


def worst_split(n: int, cap) -> int:
    """Capacity ``cap(a) + cap(n - a)`` of ``n`` eligible tokens for the worst class-token position."""
    return min(cap(a) + cap(n - a) for a in range(n + 1))


def symmetric_capacity(left: int, right: int, layer: int, cap, cap_right=None) -> int:
    """Most tokens a symmetric merge can remove when each side's share must fit that side
    (``cap_right``: the right side's rule where it differs from the left's)."""
    cl, cr = cap(left), (cap_right or cap)(right)
    return max((r for r in range(cl + cr + 1)
                if split_sides(r, layer)[0] <= cl and split_sides(r, layer)[1] <= cr), default=0)


def cell_of(row, col, layer: int):
    """The 2x2 grid cell of a patch at ``layer``: cells shift by one patch each layer, so merged
    areas can grow across cell borders. Works on ints and tensors alike."""
    o = layer % 2
    return (row + o) // 2, (col + o) // 2


@lru_cache(maxsize=None)
def cells_2d(patches: int, layer: int) -> tuple[int, int]:
    """Cells (before, after the class token) of a square grid of ``patches`` at ``layer``; a cell
    that straddles the class token counts once on each side (no merge crosses it)."""
    grid, split = math.isqrt(patches), patches // 2
    cells = {(*cell_of(p // grid, p % grid, layer), p < split) for p in range(patches)}
    before = sum(1 for c in cells if c[2])
    return before, len(cells) - before


def cell_capacity(n: int, cells: int, runs: int) -> int:
    """Fewest merges ``n`` eligible tokens over ``cells`` grid cells offer, whatever earlier merges
    left where (2d neighbours, ``runs`` <= 4): a cell with k tokens offers min(runs - 1, k - 1), as
    each joins the cell's earliest token. That is at least ceil((runs - 1) e / 3) for e = k - 1 <= 3,
    and ceil is subadditive, so the n - cells tokens beyond one a cell offer at least as many."""
    return max(0, -(-(runs - 1) * (n - cells) // 3))
