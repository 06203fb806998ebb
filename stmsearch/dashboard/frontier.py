"""Front analytics shared by the dashboard and ``stmsearch export``: hypervolume and the knee.

Hypervolume is measured in a unit-free space where every objective is "larger is better"
and 0 is the worst: accuracy as a fraction, throughput as speedup over the reference
(``throughput / T0``) and FLOPs or latency as their reduction factor (``F0 / flops``). The
reference point is the origin of that space. ``T0``/``F0`` come from the study's reference
trial (the unreduced model); without one, from the worst value any trial reached, so the
scale stays fixed for the whole study and the curve over trials never decreases.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .trials import DIRECTIONS, pareto_mask


def hypervolume(points: np.ndarray) -> float:
    """Volume dominated by ``points`` (n x d, every axis maximised) above the origin.

    Exact, by slicing along the last axis (fine for the small fronts of 2-3 objectives).
    """
    pts = np.clip(np.asarray(points, dtype=float), 0.0, None)
    if pts.size == 0:
        return 0.0
    return _sliced(pts[pareto_mask(pts, ["maximize"] * pts.shape[1])])


def _sliced(pts: np.ndarray) -> float:
    if pts.shape[1] == 1:
        return float(pts[:, 0].max())
    if pts.shape[1] == 2:  # staircase: sweep x downwards, adding each new height band
        pts = pts[np.argsort(-pts[:, 0], kind="stable")]
        best_y, total = 0.0, 0.0
        for x, y in pts:
            if y > best_y:
                total += x * (y - best_y)
                best_y = y
        return total
    pts = pts[np.argsort(-pts[:, -1], kind="stable")]
    total = 0.0
    for i in range(len(pts)):
        lower = pts[i + 1, -1] if i + 1 < len(pts) else 0.0
        if pts[i, -1] > lower:
            total += (pts[i, -1] - lower) * _sliced(pts[: i + 1, :-1])
    return total


def scales(records: list[dict[str, Any]], objectives: list[str]) -> dict[str, float]:
    """The normalising value of each cost objective (see the module docstring)."""
    ref = next((r for r in records if r["is_reference"] and r["state"] == "COMPLETE"), None)
    out: dict[str, float] = {}
    for m in objectives:
        if m == "accuracy":
            continue
        seen = [r[m] for r in records if r["state"] == "COMPLETE" and r[m] is not None and r[m] > 0]
        value = ref[m] if ref is not None and ref[m] else None
        if value is None and seen:
            value = min(seen) if DIRECTIONS[m] == "maximize" else max(seen)
        out[m] = float(value) if value else 1.0
    return out


def gains(record: dict[str, Any], objectives: list[str], scale: dict[str, float]) -> list[float] | None:
    """The record's point in hypervolume space, or None when a value is missing."""
    out = []
    for m in objectives:
        v = record[m]
        if v is None or (m != "accuracy" and v <= 0):
            return None
        if m == "accuracy":
            out.append(v)
        else:
            out.append(v / scale[m] if DIRECTIONS[m] == "maximize" else scale[m] / v)
    return out


def hypervolume_history(records: list[dict[str, Any]], objectives: list[str]) -> list[tuple[int, float]]:
    """``(trial number, hypervolume of the feasible complete trials up to it)`` for one study."""
    scale = scales(records, objectives)
    front = np.zeros((0, len(objectives)))
    history, current = [], 0.0
    for r in sorted(records, key=lambda r: r["number"]):
        g = gains(r, objectives, scale) if r["state"] == "COMPLETE" and r["feasible"] else None
        if g is not None and not _dominated(np.array(g), front):
            front = np.vstack([front, g])
            front = front[pareto_mask(front, ["maximize"] * len(objectives))]
            current = hypervolume(front)
        history.append((r["number"], current))
    return history


def _dominated(point: np.ndarray, front: np.ndarray) -> bool:
    """True when some row of ``front`` is at least as good as ``point`` everywhere (it adds no volume)."""
    return bool(len(front)) and bool((front >= point).all(axis=1).any())


def knee_index(points: np.ndarray, directions: list[str]) -> int:
    """Index of the knee of a 2-objective front.

    Both axes are scaled to [0, 1] between the front's extremes (1 = best); the knee is the
    point farthest beyond the straight line joining the two extremes, i.e. the one with the
    largest sum of scaled values. Ties go to the first objective.
    """
    pts = np.asarray(points, dtype=float) * np.array([1.0 if d == "maximize" else -1.0 for d in directions])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    scaled = (pts - lo) / span
    score = scaled.sum(axis=1)
    best = np.flatnonzero(np.isclose(score, score.max()))
    return int(best[np.argmax(scaled[best, 0])])
