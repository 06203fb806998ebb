"""The ``local`` executor: sequential ask, evaluate, tell in this process, without Ray
(for debugging, tests and CPU machines). See :mod:`stmsearch.search.executor` for the contract."""
from __future__ import annotations

import statistics
import time

import optuna
from optuna.trial import TrialState

from ..database import reset_connections
from .executor import start_study
from .objective import run_trial
from .params import suggest
from .progress import SearchProgress
from .record import (INTERRUPTED, Heartbeat, admitted, ask, counted, measured_twin, reference_metrics, tell,
                     withdraw)
from .space import REFERENCE, SearchSpace


def _fail_interrupted(study: optuna.Study, trial: optuna.Trial) -> None:
    reset_connections(study._storage)
    try:
        trial.set_user_attr("error", INTERRUPTED)
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
    except Exception:  # noqa: BLE001 - already told, or storage gone: the heartbeat reaps it later
        pass


def run_local(study: optuna.Study, space: SearchSpace, budget: int, progress: SearchProgress,
              deadline: float | None = None, **_: object) -> list[int]:
    """Sequential ask/evaluate/tell in this process (no Ray): for debugging, tests and CPU machines.

    With a ``deadline`` (``time.monotonic()``), no trial starts that would likely end after it.
    """
    mine = start_study(study, space, lambda: run_trial(space, {}, REFERENCE))
    progress.update()
    reference, took = reference_metrics(study), []
    with Heartbeat(study._storage) as beat:
        while len(counted(study)) < budget:
            if deadline and time.monotonic() + (statistics.median(took) if took else 0.0) > deadline:
                break
            started = time.monotonic()
            trial = ask(study)
            beat.add(trial._trial_id)
            try:
                if not admitted(study, trial.number, budget):
                    withdraw(study, trial._trial_id, "the study's budget is full")
                    break
                params, seed = suggest(trial, space), trial.user_attrs.get("seed_config")
                outcome = run_trial(space, params, seed, measured_twin(study, space, params, seed))
                tell(study, trial, outcome, space, reference)
            except BaseException:
                _fail_interrupted(study, trial)  # Ctrl-C: fail it now rather than leave it RUNNING
                raise
            finally:
                beat.remove(trial._trial_id)
            mine.append(trial.number)
            took.append(time.monotonic() - started)
            progress.update()
    return mine
