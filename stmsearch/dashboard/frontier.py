"""Front analytics shared by the dashboard and ``stmsearch export``: hypervolume and the knee.

Hypervolume is the one ``stmsearch search`` reports (:mod:`stmsearch.search.pareto`): accuracy
as is, throughput as speed-up over the reference trial, FLOPs as a fraction of the
reference's; reference point accuracy 0, speed-up 0, FLOPs 1.1x the unreduced model.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from ..search.pareto import hypervolume, normalised, pareto_mask, reference_point


def _objective_metrics(record: dict[str, Any], objectives: list[str]) -> dict[str, float] | None:
    values = {m: record[m] for m in objectives}
    return None if any(v is None for v in values.values()) else values


def hypervolume_history(records: list[dict[str, Any]], objectives: list[str]) -> list[tuple[int, float]]:
    """``(trial number, hypervolume of the feasible complete trials up to it)`` for one study."""
    usable = [r for r in sorted(records, key=lambda r: r["number"])
              if r["state"] == "COMPLETE" and r["feasible"] and _objective_metrics(r, objectives)]
    ref = next((_objective_metrics(r, objectives) for r in usable if r["is_reference"]), None)
    # without a reference trial the FLOPs bound comes from every trial, so it stays fixed over the history
    seen = [SimpleNamespace(user_attrs={"metrics": _objective_metrics(r, objectives)}) for r in usable]
    bound = reference_point(objectives, ref, seen)
    front = np.zeros((0, len(objectives)))  # minimised, as the search's hypervolume takes them
    history, current, ok = [], 0.0, {r["number"] for r in usable}
    for r in sorted(records, key=lambda r: r["number"]):
        if r["number"] in ok:
            p = np.array(normalised(_objective_metrics(r, objectives), objectives, ref))
            if not (front <= p).all(axis=1).any():  # a dominated point adds no volume; keep the front small
                front = np.vstack([front, p])
                front = front[pareto_mask(front, ["minimize"] * len(objectives))]
                current = hypervolume([tuple(q) for q in front], bound)
        history.append((r["number"], current))
    return history


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
