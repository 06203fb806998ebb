"""Verified fronts: every front point and the reference re-measured on the whole evaluation set.

A search measures accuracy on its ``subset`` and speed with its estimator; the front it builds
from them is the one users act on, so ``stmsearch verify`` (and ``stmsearch search --verify``)
re-evaluates each front trial and the reference on every image of the dataset and re-times it
paired with the unreduced model, with more pairs. The figures go into the trial as
``user_attrs["verified"] = {accuracy, accuracy_ci, n, speedup, speedup_ci, throughput, ...}``;
the Pareto table, the dashboard and export read them from there.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable

import optuna
from optuna.trial import TrialState

from ..merging.config import config_from_dict
from ..results.records import StudyError, load_study_data
from ..results.table import front_records
from .objective import input_options, load_evaluator
from .space import SearchSpace
from ..database import open_storage, set_finished_trial_attr

VERIFY_PAIRS = 15  # paired timings per verified point (a trial's default is 7)
VERIFIED_KEYS = ("accuracy", "accuracy_ci", "n", "skipped", "speedup", "speedup_ci", "throughput",
                 "reference_throughput", "timing_pairs", "device")


class VerifyError(RuntimeError):
    """A study that cannot be verified (no reference trial, a search still running, no front)."""


@dataclass
class Verified:
    number: int
    figures: dict


def _running(study: optuna.Study) -> list[int]:
    """Trials still RUNNING whose search is alive (their heartbeat is fresh)."""
    storage = study._storage
    stale = set(storage._get_stale_trial_ids(study._study_id)) if hasattr(storage, "_get_stale_trial_ids") else set()
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t._trial_id not in stale]


@dataclass
class _Job:
    """One study's verification: what it needs to re-measure its points."""

    name: str
    storage: object
    study: optuna.Study
    space: SearchSpace
    evaluate: Callable
    targets: list  # the reference first, then the front's records


def _job(storage, study_name: str) -> _Job:
    data = load_study_data(storage, study_name)
    study = data.study
    if data.reference() is None:
        raise VerifyError(f"study {study_name!r} has no completed reference trial (the unreduced model), so no "
                          "speed-up or accuracy drop can be verified; run the search (it evaluates the reference first)")
    running = _running(study)
    if running:
        raise VerifyError(f"study {study_name!r} has {len(running)} running trial(s) ({', '.join(map(str, running))}): "
                          "a search is still running; verify once it has finished")
    if data.info.space is None:
        raise StudyError(f"study {study_name!r}: user_attrs.space is missing; verify needs the search space")
    space = SearchSpace.model_validate(data.info.space)
    targets = [data.reference()] + [r for r in front_records(data) if not r.is_reference]
    return _Job(study_name, storage, study, space, load_evaluator(space.evaluator), targets)


def _verify(job: _Job, record, device: str | None, pairs: int, progress: bool) -> Verified:
    """Re-measure one record of ``job`` and store the figures in its trial."""
    space = job.space
    cfg = None if record.is_reference else config_from_dict(record.config, f"trial {record.number}: config")
    metrics = job.evaluate(space.model, space.checkpoint, cfg, space.dataset, limit=None,
                           device=device or space.device, batch_size=space.batch_size, measure=("accuracy", "speed"),
                           throughput_batch=space.throughput.batch, bf16=space.throughput.bf16, progress=progress,
                           estimator="paired", runs=pairs, **input_options(space))
    figures = {k: metrics[k] for k in VERIFIED_KEYS if k in metrics}
    figures["at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    trial_id = job.study.get_trials(deepcopy=False)[record.number]._trial_id
    set_finished_trial_attr(job.storage, trial_id, "verified", figures)
    return Verified(record.number, figures)


def verify_studies(storage_url: str, study_names: list[str], device: str | None = None, pairs: int = VERIFY_PAIRS,
                   progress: bool = True, log: Callable[[str], None] = print) -> dict[str, list[Verified]]:
    """Re-measure several studies' fronts and references, their points interleaved (one of each study in
    turn, references first): each study's paired speed-ups then span the same minutes, so a drift of the
    machine over them (other load, clocks) lands on every study alike rather than on whichever ran first.
    Every study is checked before any is measured. Returns what was written, per study, trial by trial."""
    storage = open_storage(storage_url, must_exist=True)  # heartbeats on, to tell a running search
    jobs = [_job(storage, name) for name in study_names]
    order = [(job, job.targets[k]) for k in range(max(len(j.targets) for j in jobs)) for job in jobs
             if k < len(job.targets)]
    out: dict[str, list[Verified]] = {job.name: [] for job in jobs}
    for i, (job, record) in enumerate(order):
        log(f"verify {i + 1}/{len(order)}: " + (f"{job.name} " if len(jobs) > 1 else "") + f"trial {record.number}"
            + (" (reference)" if record.is_reference else f" ({record.method})"))
        out[job.name].append(_verify(job, record, device, pairs, progress))
    return out


def verify_study(storage_url: str, study_name: str, device: str | None = None, pairs: int = VERIFY_PAIRS,
                 progress: bool = True, log: Callable[[str], None] = print) -> list[Verified]:
    """Re-measure the study's front and its reference; returns what was written, trial by trial."""
    return verify_studies(storage_url, [study_name], device, pairs, progress, log)[study_name]
