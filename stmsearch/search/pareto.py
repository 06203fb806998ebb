"""Fronts and hypervolume of a study's feasible trials (the arithmetic is :mod:`stmsearch.pareto`).

Hypervolume is computed on the objectives' normalised axes (:mod:`stmsearch.objectives`), so
runs on different machines compare: accuracy and speed-up as they are, throughput, FLOPs and
latency relative to the reference trial's.
"""
from __future__ import annotations

from typing import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..objectives import normalised, reference_point
from ..pareto import front, hypervolume


def feasible_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials that meet the constraints, each config once (repeats reuse a measurement)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("feasible", True) and "reused_from" not in t.user_attrs]


def pareto_trials(trials: list[FrozenTrial], directions: Sequence[str]) -> list[FrozenTrial]:
    """The non-dominated trials for the given study directions."""
    signs = [1.0 if d == "minimize" else -1.0 for d in directions]
    points = [tuple(s * v for s, v in zip(signs, t.values)) for t in trials]
    return [trials[i] for i in front(points)]


def study_hypervolume(study: optuna.Study, objectives: Sequence[str], reference: dict | None) -> float:
    """Normalised hypervolume of the study's feasible completed trials."""
    metrics = [t.user_attrs["metrics"] for t in feasible_trials(study) if "metrics" in t.user_attrs]
    points = [normalised(m, list(objectives), reference) for m in metrics]
    return hypervolume(points, reference_point(list(objectives), reference, metrics))
