"""The Pareto-local-search sampler (``pls``): TPE plus mutations of the feasible front."""
from __future__ import annotations

import pickle

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from stmsearch.search.pls import ParetoLocalSampler, inert, neighbour

SPACE = {"method": CategoricalDistribution(["stm", "tome"]), "count": IntDistribution(2, 24, step=2),
         "shape": CategoricalDistribution(["constant", "decreasing"]), "stm.window": IntDistribution(0, 12, step=2),
         "tome.window": IntDistribution(0, 8, step=4)}


def objectives(p: dict) -> tuple[list[float], float]:
    """Two maximised objectives and a constraint (feasible at <= 0): heavier schedules are faster and worse."""
    speed = p["count"] / 4 + (1.0 if p["shape"] == "decreasing" else 0.0)
    acc = 1.0 - p["count"] / 30 + (p["stm.window"] / 60 if p["method"] == "stm" else 0.0)
    return [acc, speed], 0.5 - acc


def run(sampler: optuna.samplers.BaseSampler, n: int) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    for _ in range(n):
        trial = study.ask(SPACE)
        values, violation = objectives(trial.params)
        trial.set_constraint("acc", violation)
        study.tell(trial, values)
    return study


def active(p: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in p.items() if k not in inert(p)))


def test_local_steps_are_new_one_to_three_step_neighbours_of_feasible_front_points():
    study = run(ParetoLocalSampler(local_fraction=1.0, n_startup_trials=8, seed=1), 40)
    trials = study.trials
    for i, t in enumerate(trials[8:], 8):
        before = trials[:i]
        assert active(t.params) not in {active(b.params) for b in before}  # never a repeat of what ran
        feasible = [b for b in before if b.constraints["acc"] <= 0]
        # each local step differs from some feasible earlier trial in at most 3 active parameters
        assert any(sum(t.params[k] != b.params[k] for k in SPACE if k not in inert(t.params)) <= 3
                   for b in feasible), t.params


def test_no_local_steps_means_plain_tpe():
    with_none = run(ParetoLocalSampler(local_fraction=0.0, n_startup_trials=5, seed=4, multivariate=True), 15)
    tpe = run(optuna.samplers.TPESampler(n_startup_trials=5, seed=4, multivariate=True), 15)
    assert [t.params for t in with_none.trials] == [t.params for t in tpe.trials]


def test_local_steps_differ_from_tpe_and_repeat_with_the_seed():
    def params(seed):
        return [t.params for t in run(ParetoLocalSampler(local_fraction=0.5, n_startup_trials=5, seed=seed), 20).trials]
    tpe = [t.params for t in run(optuna.samplers.TPESampler(n_startup_trials=5, seed=2), 20).trials]
    assert params(2) == params(2) != tpe


def test_inert_knobs_are_the_other_methods():
    assert inert({"method": "stm", "count": 4, "stm.window": 2, "tome.window": 4}) == {"tome.window"}
    assert inert({"count": 4, "stm.window": 2}) == set()  # one method: no method parameter, nothing inert


@pytest.mark.parametrize("d, value", [(IntDistribution(0, 12, step=2), 6), (IntDistribution(0, 12, step=2), 0),
                                      (FloatDistribution(0.0, 1.0, step=0.25), 1.0), (FloatDistribution(1e-3, 1.0, log=True), 0.1),
                                      (IntDistribution(1, 64, log=True), 8), (CategoricalDistribution(["a", "b", "c"]), "b")])
def test_neighbours_stay_in_the_distribution_and_move_at_most_two_steps(d, value):
    rng = np.random.RandomState(0)
    moved = [neighbour(d, value, rng) for _ in range(200)]
    assert all(d._contains(d.to_internal_repr(m)) for m in moved)
    if isinstance(d, CategoricalDistribution):
        assert set(moved) == {"a", "c"}
    elif d.step is not None and not d.log:
        assert {abs(m - value) for m in moved} <= {0, d.step, 2 * d.step} and any(m != value for m in moved)


def test_bad_fraction_is_refused_and_the_sampler_pickles():
    with pytest.raises(ValueError, match="local_fraction"):
        ParetoLocalSampler(local_fraction=1.5)
    sampler = ParetoLocalSampler(seed=3)
    run(sampler, 12)
    again = pickle.loads(pickle.dumps(sampler))
    assert [again._rng.rand() for _ in range(3)] == [sampler._rng.rand() for _ in range(3)]


def test_a_real_search_runs_local_steps_after_the_ladder(tmp_path, monkeypatch):
    """In a study as the runner opens it (reference, ladder, then the sampler), with the local executor."""
    import yaml
    from pathlib import Path

    from stmsearch.search import run_search
    from stmsearch.search.space import load_space

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))  # fake_evaluators
    from test_search_ladder import BASE

    data = {**BASE, "seeds": [], "seed_ladder": 3, "device": "cpu", "objectives": ["accuracy", "flops"],
            "budget": {"trials": 14}, "evaluator": "fake_evaluators:fake_evaluate",
            "sampler": {"name": "pls", "n_startup_trials": 4, "seed": 0, "options": {"local_fraction": 1.0}}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    result = run_search(load_space(path), path, executor="local", runs=tmp_path / "runs", progress=False)
    study = optuna.load_study(study_name=result.study_name, storage=result.storage_url)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert result.ran == 14 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    names = list(trials[-1].params)
    for i, t in enumerate(trials[4:], 4):  # every sampled trial is new and a near neighbour of an earlier one
        assert active(t.params) not in {active(b.params) for b in trials[:i]}
        assert min(sum(t.params[k] != b.params.get(k) for k in names if k not in inert(t.params))
                   for b in trials[:i]) <= 3
