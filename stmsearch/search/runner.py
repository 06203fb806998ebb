"""Running a search: open the study, reap orphans, evaluate the reference, then sample to budget.

Executors: ``ray`` (default; see ``ray_executor``) and ``local`` (in-process, sequential,
for debugging). Both evaluate the unreduced reference first, alone, so speed-ups and the
``min_speedup`` constraint are measured against it; both tell every trial to the SQL
storage as it lands. Re-running the same command continues the study up to its budget.
"""
from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from .objective import TrialOutcome, run_trial
from .params import grid, grid_size, suggest
from .progress import SearchProgress
from .record import (INTERRUPTED, Heartbeat, add_reference, enqueue_seeds, finished, measured_twin,
                     reap_stale, reference_metrics, tell)
from .space import REFERENCE, SearchSpace, SpaceError, unset_variables
from .storage import default_url, open_storage, open_study, study_name


class SearchError(RuntimeError):
    """A search that cannot go on (e.g. the unreduced reference model fails to evaluate)."""


@dataclass
class SearchResult:
    """Where the study lives and what this run did."""

    study_name: str
    storage_url: str
    budget: int
    ran: int  # trials finished by this run
    reaped: int  # orphaned trials of a killed earlier run, marked failed
    elapsed_s: float


def constraint_values(trial: optuna.trial.FrozenTrial) -> list[float]:
    """``constraints_func`` for optuna < 5: the values recorded when the trial was told."""
    return list(trial.user_attrs.get("constraint_values", {}).values())


def build_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The space's sampler; constraints steer NSGA-II and TPE when any are set.

    Optuna >= 5 reads the constraints each trial sets (``Trial.set_constraint``); older
    versions take a ``constraints_func``.
    """
    spec = space.sampler
    constrained = any(v is not None for v in space.constraints.model_dump().values())
    cons = constraint_values if constrained and not hasattr(optuna.Trial, "set_constraint") else None
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if spec.name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=spec.population_size or 50, seed=spec.seed,
                                             constraints_func=cons)
    if spec.name == "tpe":
        return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=spec.n_startup_trials or 10,
                                          multivariate=True, constraints_func=cons)
    if spec.name == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.GridSampler(grid(space), seed=spec.seed)


def check_inputs(space: SearchSpace, source: str) -> None:
    """Files and variables a run needs, checked before any trial."""
    unset = unset_variables(space)
    if unset:
        raise SpaceError(f"{source}: {unset[0]}: environment variable not set")
    if space.checkpoint and not Path(space.checkpoint).is_file():
        raise SpaceError(f"{source}: checkpoint: file not found: {space.checkpoint}")
    if space.dataset.startswith("imagefolder:") and not Path(space.dataset.split(":", 1)[1]).is_dir():
        raise SpaceError(f"{source}: dataset: folder not found: {space.dataset.split(':', 1)[1]}")
    try:
        build_sampler(space)
    except ValueError as exc:
        raise SpaceError(f"{source}: {exc}") from None


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


def _fail_interrupted(study: optuna.Study, trial: optuna.Trial) -> None:
    try:
        trial.set_user_attr("error", INTERRUPTED)
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
    except Exception:  # noqa: BLE001 - already told, or storage gone: the heartbeat reaps it later
        pass


def run_local(study: optuna.Study, space: SearchSpace, remaining: int, progress: SearchProgress,
              deadline: float | None = None, **_: object) -> None:
    """Sequential ask/evaluate/tell in this process (no Ray): for debugging and tests.

    With a ``deadline`` (``time.monotonic()``), no trial starts that would likely end after it.
    """
    remaining -= start_study(study, space, lambda: run_trial(space, {}, REFERENCE))
    progress.update()
    reference, took = reference_metrics(study), []
    with Heartbeat(study._storage) as beat:
        for _ in range(remaining):
            if deadline and time.monotonic() + (statistics.median(took) if took else 0.0) > deadline:
                break
            started = time.monotonic()
            with warnings.catch_warnings():  # optuna warns that heartbeats are meant for optimize()
                warnings.simplefilter("ignore", UserWarning)
                trial = study.ask()
            beat.add(trial._trial_id)
            try:
                params, seed = suggest(trial, space), trial.user_attrs.get("seed_config")
                outcome = run_trial(space, params, seed, measured_twin(study, space, params, seed))
                tell(study, trial, outcome, space, reference)
            except BaseException:
                _fail_interrupted(study, trial)  # Ctrl-C: fail it now rather than leave it RUNNING
                raise
            finally:
                beat.remove(trial._trial_id)
            took.append(time.monotonic() - started)
            progress.update()


def _executor(name: str) -> Callable[..., None]:
    if name == "local":
        return run_local
    if name == "ray":
        from .ray_executor import run_ray
        return run_ray
    raise ValueError(f"unknown executor {name!r} (allowed: ray, local)")


def run_search(space: SearchSpace, space_path: str | Path, *, trials: int | None = None,
               storage_url: str | None = None, study: str | None = None, executor: str = "ray",
               max_concurrent: int | None = None, address: str | None = None, runs: str | Path = "runs",
               progress: SearchProgress | bool = True) -> SearchResult:
    """Run (or continue) the study of ``space`` until it holds its budget of finished trials."""
    start = time.monotonic()
    deadline = start + space.budget.timeout_s if space.budget.timeout_s else None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_inputs(space, str(space_path))
    run = _executor(executor)
    url = storage_url or default_url(space_path, runs)
    name = study or study_name(space_path, space)
    try:
        the_study = open_study(open_storage(url), name, space, build_sampler(space))
    except ValueError as exc:  # the study exists with other objectives or another space
        raise SearchError(str(exc)) from None
    reaped = reap_stale(the_study)
    budget = trials or space.budget.trials
    if space.sampler.name == "grid":
        budget = min(budget, grid_size(space) + 1 + len(space.seeds))
    before = len(finished(the_study))
    if budget > before:
        display = progress if isinstance(progress, SearchProgress) else SearchProgress(
            the_study, space, budget, enabled=bool(progress))
        with display:
            run(the_study, space, budget - before, display, deadline=deadline,
                max_concurrent=max_concurrent, address=address, runs=Path(runs))
    return SearchResult(study_name=name, storage_url=url, budget=budget, ran=len(finished(the_study)) - before,
                        reaped=reaped, elapsed_s=time.monotonic() - start)
