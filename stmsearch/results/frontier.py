"""Front analytics of trial records: hypervolume over trials and the knee.

Hypervolume is the one ``stmsearch search`` reports: each objective on its normalised axis
(:mod:`stmsearch.objectives`), relative ones over the reference trial's value.
"""
from __future__ import annotations

import numpy as np

from ..objectives import direction, normalised, reference_point
from ..pareto import hypervolume, knee_index, pareto_mask
from .records import TrialRecord


def _objective_metrics(record: TrialRecord, objectives: list[str]) -> dict[str, float] | None:
    values = {m: record.value(m) for m in objectives}
    return None if any(v is None for v in values.values()) else values


def hypervolume_history(records: list[TrialRecord], objectives: list[str]) -> list[tuple[int, float]]:
    """``(trial number, hypervolume of the feasible complete trials up to it)`` for one study."""
    ordered = sorted(records, key=lambda r: r.number)
    usable = [r for r in ordered if r.complete and r.feasible and _objective_metrics(r, objectives)]
    ref = next((_objective_metrics(r, objectives) for r in usable if r.is_reference), None)
    # without a reference trial a relative axis is bounded from every trial, so it stays fixed over the history
    bound = reference_point(objectives, ref, [_objective_metrics(r, objectives) for r in usable])
    front = np.zeros((0, len(objectives)))  # minimised, as the search's hypervolume takes them
    history, current, ok = [], 0.0, {r.number for r in usable}
    for r in ordered:
        if r.number in ok:
            p = np.array(normalised(_objective_metrics(r, objectives), objectives, ref))
            if not (front <= p).all(axis=1).any():  # a dominated point adds no volume; keep the front small
                front = np.vstack([front, p])
                front = front[pareto_mask(front, ["minimize"] * len(objectives))]
                current = hypervolume([tuple(q) for q in front], bound)
        history.append((r.number, current))
    return history


def knee(pool: list[TrialRecord], axes: list[str], verified: bool = False) -> TrialRecord | None:
    """The knee of the 2-D front of ``pool`` over ``axes`` (the reference may shape the front,
    never be picked); None when the front holds no other trial. ``verified``: by verified figures."""
    get = (lambda r, a: r.figure(a)) if verified else (lambda r, a: r.value(a))
    pool = [r for r in pool if all(get(r, a) is not None for a in axes)]
    pts = np.array([[get(r, a) for a in axes] for r in pool], dtype=float).reshape(len(pool), len(axes))
    on = pareto_mask(pts, [direction(a) for a in axes])
    front, pts = [r for r, f in zip(pool, on) if f], pts[on]
    if not any(not r.is_reference for r in front):
        return None
    eligible = np.array([not r.is_reference for r in front])
    return front[knee_index(pts, [direction(a) for a in axes], eligible)]
