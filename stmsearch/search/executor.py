"""The executor contract: how a study's trials get run, and the table of executors.

An executor is a callable with :class:`Executor`'s signature. It must (1) evaluate the
unreduced reference first, alone, through :func:`start_study`, so speed-ups and the
``min_speedup`` constraint are measured against it; (2) run trials until ``remaining`` more
have finished (or ``deadline`` passes), asking the study's sampler for parameters and
evaluating each with :func:`stmsearch.search.objective.run_trial`; (3) tell every trial to the
SQL storage as it lands (:func:`stmsearch.search.record.tell`), heartbeating the running ones;
and (4) call ``progress.update()`` after each. ``local`` and ``ray`` implement it; adding one
is an entry in :data:`EXECUTORS` ("module:function", imported when chosen, so Ray loads only
for ``ray``).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, Protocol

import optuna
from optuna.trial import TrialState

from .objective import TrialOutcome
from .progress import SearchProgress
from .record import add_reference, enqueue_seeds, reference_metrics
from .space import SearchSpace


class SearchError(RuntimeError):
    """A search that cannot go on (e.g. the unreduced reference model fails to evaluate)."""


class Executor(Protocol):
    def __call__(self, study: optuna.Study, space: SearchSpace, remaining: int, progress: SearchProgress, *,
                 deadline: float | None = None, max_concurrent: int | None = None, address: str | None = None,
                 runs: Path = Path("runs")) -> None:
        """Run trials of ``study`` until ``remaining`` more have finished (see the module doc)."""


EXECUTORS = {"local": "stmsearch.search.local:run_local", "ray": "stmsearch.search.ray_executor:run_ray"}


def get_executor(name: str) -> Executor:
    """The executor registered as ``name``."""
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r} (allowed: {', '.join(EXECUTORS)})")
    module, attr = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def start_study(study: optuna.Study, space: SearchSpace, evaluate: Callable[[], TrialOutcome]) -> int:
    """Evaluate and store the unreduced model unless the study has it, then enqueue the seeds.

    Returns the trials added (0 or 1); a failed reference stops the search.
    """
    added = 0
    if reference_metrics(study) is None:
        trial = add_reference(study, space, evaluate())
        if trial.state == TrialState.FAIL:
            raise SearchError(f"the unreduced reference model failed, so no trial can be compared: "
                              f"{trial.user_attrs['error']}")
        added = 1
    enqueue_seeds(study, space)
    return added
