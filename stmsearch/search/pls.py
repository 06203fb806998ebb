"""Pareto local search mixed with TPE: after its startup trials, a share of the trials are small
mutations of the current feasible front, the rest TPE's.

Why it exists: on the tabular benchmark the last per cent of hypervolume sits in a handful of
configs a step or two from front points the warm-start ladder finds (another shape, a wider
window, one more step of tokens), a joint neighbour TPE's density model rarely proposes. It did
not beat plain TPE there (bench/SEARCH.md has the figures), so no shipped space uses it; it is
kept as a nameable option (``name: pls``; options ``local_fraction``, ``n_startup_trials``,
``seed`` and any other TPE keyword, passed to the TPE it wraps) for spaces where the front is
reached by refinement rather than by jumps. Picklable for Ray: it holds only numpy state and a TPE.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import FrozenTrial, TrialState

from .pareto import pareto_trials

TRIES = 32  # mutations drawn before a local step gives its trial back to TPE (the neighbourhood is used up)


def inert(params: dict[str, Any]) -> set[str]:
    """Knobs of a method other than the trial's (``<method>.<knob>``, params.py): changing them runs nothing new."""
    method = params.get("method")
    return {n for n in params if method is not None and "." in n and n.split(".", 1)[0] != method}


def _active(params: dict[str, Any]) -> tuple:
    gone = inert(params)
    return tuple(sorted((k, repr(v)) for k, v in params.items() if k not in gone))


def neighbour(d: BaseDistribution, value: Any, rng: np.random.RandomState) -> Any:
    """One step away: another choice, or the next grid value up or down (two steps one time in four);
    an unstepped or log range moves a tenth of its (log) width."""
    if isinstance(d, CategoricalDistribution):
        others = [c for c in d.choices if c != value]
        return others[rng.randint(len(others))] if others else value
    steps = (1 + (rng.rand() < 0.25)) * (1 if rng.rand() < 0.5 else -1)
    if not d.log and d.step is not None:
        moved = min(d.high, max(d.low, value + steps * d.step))
        return int(moved) if isinstance(d, IntDistribution) else float(moved)
    lo, hi, v = (np.log(d.low), np.log(d.high), np.log(value)) if d.log else (d.low, d.high, value)
    moved = float(np.clip(v + steps * (hi - lo) / 10, lo, hi))
    out = float(np.exp(moved)) if d.log else moved
    return int(min(d.high, max(d.low, round(out)))) if isinstance(d, IntDistribution) else out


class ParetoLocalSampler(optuna.samplers.BaseSampler):
    """TPE, except that once ``n_startup_trials`` are complete a ``local_fraction`` of trials mutate a front point.

    A local step picks a trial of the feasible Pareto front at random and moves one parameter a
    step (a second and a third with probability 1/2 and 1/4), never a knob of a method the trial
    does not run, and redraws (up to ``TRIES``) while the result repeats a trial's active
    parameters; with no feasible front yet, or no new neighbour, the trial is TPE's.
    """

    def __init__(self, *, local_fraction: float = 0.5, n_startup_trials: int = 10, seed: int | None = None,
                 constraints_func: Callable[[FrozenTrial], Sequence[float]] | None = None, **tpe_options: Any):
        if not 0.0 <= local_fraction <= 1.0:
            raise ValueError(f"local_fraction must be in [0, 1], got {local_fraction}")
        self._fraction = local_fraction
        self._startup = n_startup_trials
        self._rng = np.random.RandomState(seed)
        self._space = IntersectionSearchSpace()
        self._tpe = optuna.samplers.TPESampler(n_startup_trials=n_startup_trials, seed=seed,
                                               constraints_func=constraints_func, **tpe_options)

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._tpe.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        # every parameter seen so far (the search's space is flat): a local step proposes them all
        return self._space.calculate(study)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if search_space and len(done) >= self._startup and self._rng.rand() < self._fraction:
            proposal = self._local_step(study, done, search_space)
            if proposal is not None:
                return proposal
        return self._tpe.sample_relative(study, trial, self._tpe.infer_relative_search_space(study, trial))

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._tpe.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._tpe.after_trial(study, trial, state, values)  # TPE records constraints_func's values here

    def _local_step(self, study: optuna.Study, done: list[FrozenTrial],
                    space: dict[str, BaseDistribution]) -> dict[str, Any] | None:
        feasible = [t for t in done if all(c <= 0 for c in t.constraints.values()) and space.keys() <= t.params.keys()]
        if not feasible:
            return None
        front = pareto_trials(feasible, [d.name.lower() for d in study.directions])
        seen = {_active(t.params) for t in study.get_trials(deepcopy=False)}
        for _ in range(TRIES):
            parent = front[self._rng.randint(len(front))].params
            params = {n: parent[n] for n in space}
            for _ in range(1 + (self._rng.rand() < 0.5) + (self._rng.rand() < 0.25)):
                live = [n for n in space if n not in inert(params) and not space[n].single()]
                if not live:
                    return None
                name = live[self._rng.randint(len(live))]
                params[name] = neighbour(space[name], params[name], self._rng)
            if _active(params) not in seen:
                return params
        return None
