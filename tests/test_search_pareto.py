"""Pareto fronts, hypervolume and the progress summary."""
from __future__ import annotations

import random

import numpy as np
import optuna
import pytest
from optuna._hypervolume import compute_hypervolume

from stmsearch.objectives import normalised, reference_point
from stmsearch.pareto import front, hypervolume
from stmsearch.search.progress import line, snapshot


def test_front_keeps_exactly_the_non_dominated_points():
    pts = [(1.0, 5.0), (2.0, 3.0), (3.0, 3.5), (4.0, 1.0), (2.0, 3.0), (5.0, 5.0)]
    assert front(pts) == [0, 1, 3, 4]


@pytest.mark.parametrize("dim", [2, 3])
def test_hypervolume_matches_optuna(dim):
    rng = random.Random(dim)
    for _ in range(20):
        pts = [tuple(rng.random() for _ in range(dim)) for _ in range(rng.randint(1, 25))]
        ref = tuple([1.1] * dim)
        expected = compute_hypervolume(np.array(pts), np.array(ref))
        assert hypervolume(pts, ref) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_hypervolume_by_hand_and_outside_points():
    assert hypervolume([(0.0, 0.0)], (1.0, 2.0)) == 2.0
    assert hypervolume([(0.5, 0.5), (0.0, 1.0)], (1.0, 1.0)) == 0.25
    assert hypervolume([(1.5, 0.0)], (1.0, 1.0)) == 0.0  # beyond the reference point


def test_normalisation_is_relative_to_the_reference():
    ref = {"accuracy": 0.9, "throughput": 100.0, "flops": 1e9}
    pt = normalised({"accuracy": 0.8, "throughput": 150.0, "flops": 5e8}, ["accuracy", "throughput", "flops"], ref)
    assert pt == pytest.approx((-0.8, -1.5, 0.5))
    assert reference_point(["accuracy", "throughput", "flops"], ref) == (-0.0, -0.0, 1.1)


def _study(points, feasible):
    study = optuna.create_study(directions=["maximize", "maximize"])
    for (acc, thr), ok in zip(points, feasible):
        study.add_trial(optuna.trial.create_trial(values=[acc, thr], user_attrs={
            "metrics": {"accuracy": acc, "throughput": thr}, "feasible": ok, "is_reference": thr == 100.0}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"error": "x"}))
    return study


def test_snapshot_counts_best_front_and_hypervolume(tmp_path):
    from stmsearch.search.space import parse_space
    space = parse_space({"model": "vim_proxy", "dataset": "mnist5k", "objectives": ["accuracy", "throughput"],
                         "methods": [{"name": "stm"}], "schedule": {"form": "parametric", "count": 4},
                         "budget": {"trials": 10}})
    study = _study([(0.9, 100.0), (0.8, 200.0), (0.95, 300.0), (0.5, 400.0)], [True, True, False, True])
    snap = snapshot(study, space)
    assert (snap.done, snap.failed) == (4, 1)
    assert snap.best == {"accuracy": (0.9, 0), "throughput": (400.0, 3)}  # the infeasible 0.95 is ignored
    assert snap.front == 3
    assert snap.hypervolume == pytest.approx(hypervolume([(-0.9, -1.0), (-0.8, -2.0), (-0.5, -4.0)], (0.0, 0.0)))
    text = line(snap, 10, 12.0)
    assert "trials 5/10 (done 4, failed 1)" in text and "Pareto front 3" in text and "400.0 img/s (#3)" in text
