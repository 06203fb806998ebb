"""The executor contract: how a study's trials get run, and the table of executors.

An executor is a callable with :class:`Executor`'s signature. It must (1) have the study's
unreduced reference evaluated first, through :func:`start_study` (once per study, however many
searches start on it), so speed-ups and the ``min_speedup`` constraint are measured against
it; (2) run trials while the study's ``budget`` has room, admitting each new trial with
:func:`stmsearch.search.record.admitted` (several searches may share a study) and stopping
when ``deadline`` passes, asking the study's sampler for parameters and evaluating each with
:func:`stmsearch.search.objective.run_trial`; (3) record who runs each trial
(:func:`~stmsearch.search.record.owner`), heartbeat the running ones, and tell every trial to
the SQL storage as it lands (:func:`stmsearch.search.record.tell`); (4) call
``progress.update()`` after each; and (5) return the numbers of the trials it finished. ``local`` and ``ray`` implement it; adding one
is an entry in :data:`EXECUTORS` ("module:function", imported when chosen, so Ray loads only
for ``ray``).
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Callable, Protocol

import optuna
from optuna.trial import TrialState

from .objective import TrialOutcome
from .progress import SearchProgress
from .record import Heartbeat, claim_reference, enqueue_seeds, reap_stale, reference_metrics, tell, withdraw
from .space import SearchSpace


class SearchError(RuntimeError):
    """A search that cannot go on (e.g. the unreduced reference model fails to evaluate)."""


class Executor(Protocol):
    def __call__(self, study: optuna.Study, space: SearchSpace, budget: int, progress: SearchProgress, *,
                 deadline: float | None = None, max_concurrent: int | None = None, address: str | None = None,
                 runs: Path = Path("runs")) -> list[int]:
        """Run trials of ``study`` until it holds ``budget`` (see the module doc); return those it finished."""


EXECUTORS = {"local": "stmsearch.search.local:run_local", "ray": "stmsearch.search.ray_executor:run_ray"}


def get_executor(name: str) -> Executor:
    """The executor registered as ``name``."""
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r} (allowed: {', '.join(EXECUTORS)})")
    module, attr = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def start_study(study: optuna.Study, space: SearchSpace, evaluate: Callable[[], TrialOutcome],
                poll_s: float = 1.0) -> list[int]:
    """Make sure the study holds its reference, evaluated once however many searches start on it
    together; enqueue the seed configs. Returns the trial numbers this call finished ([] or [n]).

    A failed reference stops the search (no trial could be compared).
    """
    while reference_metrics(study) is None:
        claim = claim_reference(study, space)
        if claim is None:  # another search evaluates it: wait for it, or for its claim to die
            while reference_metrics(study) is None and _live_claim(study):
                time.sleep(poll_s)
                reap_stale(study)
            continue
        with Heartbeat(study._storage) as beat:
            beat.add(claim._trial_id)
            try:
                outcome = evaluate()
            except BaseException:
                withdraw(study, claim._trial_id, "the search was stopped while it evaluated the reference")
                raise
        if outcome.error is None:
            enqueue_seeds(study, space)  # before the reference lands, so searches waiting on it find them
        trial = tell(study, claim, outcome, space, None)
        if trial.state == TrialState.FAIL:
            raise SearchError(f"the unreduced reference model failed, so no trial can be compared: "
                              f"{trial.user_attrs['error']}")
        return [trial.number]
    enqueue_seeds(study, space)
    return []


def _live_claim(study: optuna.Study) -> bool:
    return any(t.user_attrs.get("reference_claim") for t in study.get_trials(deepcopy=False,
                                                                             states=(TrialState.RUNNING,)))
