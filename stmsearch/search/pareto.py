"""Pareto fronts and hypervolume of a study's feasible trials.

Hypervolume is computed on normalised objectives so runs on different machines compare:
accuracy as is, throughput as speed-up over the reference trial, FLOPs as a fraction of the
reference's. Reference point: accuracy 0, speed-up 0, FLOPs 1.1x the unreduced model.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

SIGN = {"accuracy": -1.0, "throughput": -1.0, "flops": 1.0}  # to minimisation
REF_POINT = {"accuracy": 0.0, "throughput": 0.0, "flops": 1.1}


def feasible_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials that meet the constraints, each config once (repeats reuse a measurement)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("feasible", True) and "reused_from" not in t.user_attrs]


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


def pareto_trials(trials: list[FrozenTrial], directions: Sequence[str]) -> list[FrozenTrial]:
    """The non-dominated trials for the given study directions."""
    signs = [1.0 if d == "minimize" else -1.0 for d in directions]
    points = [tuple(s * v for s, v in zip(signs, t.values)) for t in trials]
    return [trials[i] for i in front(points)]


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


def normalised(metrics: dict, objectives: Sequence[str], reference: dict | None) -> tuple[float, ...]:
    """One trial's objectives, normalised by the reference metrics and turned to minimisation."""
    out = []
    for name in objectives:
        value = float(metrics[name])
        if name in ("throughput", "flops") and reference and reference.get(name):
            value /= float(reference[name])
        out.append(SIGN[name] * value)
    return tuple(out)


def reference_point(objectives: Sequence[str], reference: dict | None,
                    trials: list[FrozenTrial] | None = None) -> tuple[float, ...]:
    """REF_POINT in minimisation form; without a reference, FLOPs use 1.1x the largest seen."""
    out = []
    for name in objectives:
        r = REF_POINT[name]
        if name == "flops" and not (reference and reference.get("flops")):
            r *= max((float(t.user_attrs["metrics"]["flops"]) for t in trials or []), default=0.0)
        out.append(SIGN[name] * r)
    return tuple(out)


def study_hypervolume(study: optuna.Study, objectives: Sequence[str], reference: dict | None) -> float:
    """Normalised hypervolume of the study's feasible completed trials."""
    trials = feasible_trials(study)
    points = [normalised(t.user_attrs["metrics"], objectives, reference) for t in trials
              if "metrics" in t.user_attrs]
    return hypervolume(points, reference_point(objectives, reference, trials))
