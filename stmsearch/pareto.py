"""Pareto fronts and exact hypervolume over plain arrays (no study, no plotting).

The search's progress, the results layer, the dashboard and export all take their fronts
from here, so a point is on the front in one place only.
"""
from __future__ import annotations

import numpy as np


def pareto_mask(points: np.ndarray, directions: list[str]) -> np.ndarray:
    """True for the rows of ``points`` (n x d) that no other row dominates.

    Rows holding NaN are never on the front. Equal rows do not dominate each other.
    """
    pts = np.asarray(points, dtype=float).reshape(len(points), len(directions))
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in directions])
    oriented = pts * signs  # larger is better on every axis
    valid = ~np.isnan(oriented).any(axis=1)
    mask = valid.copy()
    for i in np.flatnonzero(valid):
        others = oriented[valid]
        dominated = (others >= oriented[i]).all(axis=1) & (others > oriented[i]).any(axis=1)
        mask[i] = not dominated.any()
    return mask


def front(points: list[tuple[float, ...]]) -> list[int]:
    """Indices of the non-dominated points (all objectives minimised); duplicates all kept."""
    if not points:
        return []
    return np.flatnonzero(pareto_mask(np.array(points, dtype=float), ["minimize"] * len(points[0]))).tolist()


def _hv2(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    area, best_y = 0.0, ref[1]
    for x, y in sorted(points):
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return area


def hypervolume(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Exact hypervolume dominated by ``points`` (minimised) up to ``ref``, for 1 to 3 objectives."""
    pts = [p for p in points if all(a < r for a, r in zip(p, ref))]
    if not pts:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in pts)
    if len(ref) == 2:
        return _hv2([(p[0], p[1]) for p in pts], (ref[0], ref[1]))
    if len(ref) != 3:
        raise ValueError("hypervolume: 1 to 3 objectives")
    pts.sort(key=lambda p: p[2])
    total = 0.0
    for i, p in enumerate(pts):  # slabs between successive third-objective values
        top = pts[i + 1][2] if i + 1 < len(pts) else ref[2]
        if top > p[2]:
            total += _hv2([(q[0], q[1]) for q in pts[: i + 1]], (ref[0], ref[1])) * (top - p[2])
    return total


def knee_index(points: np.ndarray, directions: list[str], eligible: np.ndarray | None = None) -> int:
    """Index of the knee of a 2-objective front (``points``, n x 2).

    Both axes are scaled to [0, 1] between the front's extremes (1 = best); the knee is the
    point farthest beyond the straight line joining the two extremes, i.e. the one with the
    largest sum of scaled values. Only ``eligible`` rows may be chosen (the extremes still
    come from every row); ties go to the better first objective.
    """
    pts = np.asarray(points, dtype=float) * np.array([1.0 if d == "maximize" else -1.0 for d in directions])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    scaled = (pts - lo) / np.where(hi > lo, hi - lo, 1.0)
    score = np.where(np.ones(len(pts), bool) if eligible is None else eligible, scaled.sum(axis=1), -np.inf)
    best = np.flatnonzero(np.isclose(score, score.max()))
    return int(best[np.argmax(scaled[best, 0])])
