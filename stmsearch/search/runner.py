"""Running a search: open the study, reap orphans, evaluate the reference, then sample to budget.

The executor (``ray`` by default, or ``local``) is chosen by name from
:data:`stmsearch.search.executor.EXECUTORS`; its contract is in that module. Re-running the
same command continues the study up to its budget.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import optuna

from ..evaluation.latency import LatencyError
from .calibration import ensure_table
from .executor import SearchError, get_executor
from .ladder import warm_start
from .params import grid_size
from .progress import SearchProgress
from .record import finished, reap_stale
from .samplers import make_sampler
from ..models import probe
from .space import SearchSpace, SpaceError, unset_variables
from ..database import open_storage
from .storage import default_url, open_study, study_name

__all__ = ["SearchError", "SearchResult", "build_sampler", "check_inputs", "run_search"]


@dataclass
class SearchResult:
    """Where the study lives and what this run did."""

    study_name: str
    storage_url: str
    budget: int
    ran: int  # trials finished by this run (not by other searches on the same study)
    numbers: list[int]  # which
    reaped: int  # orphaned trials of a killed earlier run, marked failed
    elapsed_s: float


def stored_constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
    """``constraints_func`` for optuna < 5: the constraint values recorded when the trial was told."""
    return list(trial.user_attrs.get("constraint_values", {}).values())


def build_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The space's sampler (:mod:`.samplers`); constraints steer the samplers that take them when any are set.

    Optuna >= 5 reads the constraints each trial sets (``Trial.set_constraint``); older
    versions take a ``constraints_func``.
    """
    constrained = any(v is not None for v in space.constraints.model_dump().values())
    cons = stored_constraints if constrained and not hasattr(optuna.Trial, "set_constraint") else None
    return make_sampler(space, cons)


def check_inputs(space: SearchSpace, source: str) -> None:
    """Files and variables a run needs, checked before any trial."""
    unset = unset_variables(space)
    if unset:
        raise SpaceError(f"{source}: {unset[0]}: environment variable not set")
    if space.checkpoint and not Path(space.checkpoint).is_file():
        raise SpaceError(f"{source}: checkpoint: file not found: {space.checkpoint}")
    if space.probe:
        try:
            probe.load(space.probe)
        except probe.ProbeError as exc:
            raise SpaceError(f"{source}: probe: {exc}") from None
    if space.dataset.startswith("imagefolder:") and not Path(space.dataset.split(":", 1)[1]).is_dir():
        raise SpaceError(f"{source}: dataset: folder not found: {space.dataset.split(':', 1)[1]}")
    try:
        build_sampler(space)
    except ValueError as exc:
        raise SpaceError(f"{source}: {exc}") from None


def run_search(space: SearchSpace, space_path: str | Path, *, trials: int | None = None,
               storage_url: str | None = None, study: str | None = None, executor: str = "ray",
               max_concurrent: int | None = None, address: str | None = None, runs: str | Path = "runs",
               progress: SearchProgress | bool = True) -> SearchResult:
    """Run (or continue) the study of ``space`` until it holds its budget of finished trials."""
    start = time.monotonic()
    deadline = start + space.budget.timeout_s if space.budget.timeout_s else None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_inputs(space, str(space_path))
    run = get_executor(executor)
    url = storage_url or default_url(space_path, runs)
    name = study or study_name(space_path, space)
    try:
        the_study = open_study(open_storage(url), name, space, build_sampler(space))
    except ValueError as exc:  # the study exists with other objectives or another space
        raise SearchError(str(exc)) from None
    reaped = reap_stale(the_study)
    budget = trials or space.budget.trials
    if isinstance(the_study.sampler, optuna.samplers.GridSampler):
        budget = min(budget, grid_size(space) + 1 + len(warm_start(space)))
    mine: list[int] = []
    if budget > len(finished(the_study)):
        if space.estimator() == "model" and space.evaluator is None:
            try:
                space = ensure_table(the_study, space, Path(runs), progress=bool(progress))
            except LatencyError as exc:
                raise SearchError(str(exc)) from None
        display = progress if isinstance(progress, SearchProgress) else SearchProgress(
            the_study, space, budget, enabled=bool(progress))
        with display:
            mine = run(the_study, space, budget, display, deadline=deadline, max_concurrent=max_concurrent,
                       address=address, runs=Path(runs))
    return SearchResult(study_name=name, storage_url=url, budget=budget, ran=len(mine), numbers=sorted(mine),
                        reaped=reaped, elapsed_s=time.monotonic() - start)
