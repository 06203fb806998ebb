"""Reading studies written by ``stmsearch search`` into plain trial records.

One record per finished trial (complete or failed), flat enough for plotting, tables and
export. The layout of the stored attributes is the trial-record contract (see the README):
``study.user_attrs["objectives"]`` names ``trial.values`` in order, and each trial carries
``metrics``, ``config``, ``tokens_per_layer``, ``feasible``, ``is_reference`` and the rest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from ..search.pareto import pareto_mask

# The direction of every metric a front or filter may use.
DIRECTIONS = {"accuracy": "maximize", "throughput": "maximize", "flops": "minimize",
              "latency_ms": "minimize", "peak_mem_mb": "minimize", "token_reduction": "maximize",
              "params": "minimize"}
OBJECTIVES = ("accuracy", "throughput", "flops")  # what a study may optimise (the contract)
NUMERIC = tuple(DIRECTIONS) + ("n", "duration_s")
SHOWN_STATES = (TrialState.COMPLETE, TrialState.FAIL)


class StudyError(ValueError):
    """A study that is missing or does not follow the trial-record contract."""


def split_names(names: Iterable[str]) -> list[str]:
    """``--study a --study b,c`` -> ``["a", "b", "c"]`` (order kept, duplicates dropped)."""
    out: list[str] = []
    for name in names:
        for part in name.split(","):
            if part.strip() and part.strip() not in out:
                out.append(part.strip())
    return out


def as_storage(storage: str | BaseStorage) -> BaseStorage:
    """A storage object, so several loads share one connection pool (and one schema check)."""
    return optuna.storages.get_storage(storage) if isinstance(storage, str) else storage


def open_study(storage: str | BaseStorage, name: str) -> optuna.Study:
    """``optuna.load_study`` with an error that lists the studies the storage does hold."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        raise StudyError(f"study {name!r} not found in the storage; it holds: {', '.join(known) or 'none'}") from None


def study_info(study: optuna.Study) -> dict[str, Any]:
    """The study-level attributes of the contract, with the objective names checked."""
    attrs = dict(study.user_attrs)
    objectives = attrs.get("objectives")
    if not objectives or len(objectives) != len(study.directions):
        raise StudyError(f"study {study.study_name!r}: user_attrs.objectives must name its "
                         f"{len(study.directions)} objective(s), got {objectives!r}")
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise StudyError(f"study {study.study_name!r}: user_attrs.objectives: unknown objective {unknown[0]!r}")
    return {"name": study.study_name, "objectives": list(objectives), "model": attrs.get("model"),
            "checkpoint": attrs.get("checkpoint"), "checkpoint_sha256": attrs.get("checkpoint_sha256"),
            "dataset": attrs.get("dataset"), "subset": attrs.get("subset"),
            "constraints": attrs.get("constraints") or {}, "space": attrs.get("space")}


def _number(value: Any) -> float | None:
    """A finite float, or None for missing / NaN / non-numeric values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def trial_record(trial: FrozenTrial, info: dict[str, Any]) -> dict[str, Any]:
    """One trial as a flat, JSON-able dict (``values`` first, ``metrics`` filling the rest)."""
    ua = trial.user_attrs
    metrics = dict(ua.get("metrics") or {})
    values = dict(zip(info["objectives"], trial.values)) if trial.values else {}
    config = ua.get("config") or {}
    record: dict[str, Any] = {
        "study": info["name"], "number": trial.number, "key": f"{info['name']}#{trial.number}",
        "state": trial.state.name, "params": dict(trial.params), "metrics": metrics, "config": config,
        "method": config.get("method"), "window": config.get("window"),
        "tokens_per_layer": ua.get("tokens_per_layer") or metrics.get("tokens_per_layer") or [],
        "is_reference": bool(ua.get("is_reference", False)),
        "feasible": bool(ua.get("feasible", trial.state == TrialState.COMPLETE)),
        "hardware": ua.get("hardware") or {}, "software": ua.get("software") or {},
        "error": ua.get("error"), "seed_config": ua.get("seed_config"),
        "token_reduction": _number(ua.get("token_reduction")), "duration_s": _number(ua.get("duration_s")),
        "datetime_complete": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
    }
    for key in NUMERIC:
        if key not in ("token_reduction", "duration_s"):
            record[key] = _number(values.get(key, metrics.get(key)))
    return record


@dataclass
class StudyData:
    """A loaded study: the optuna object, its contract attributes and its trial records."""

    study: optuna.Study
    info: dict[str, Any]
    records: list[dict[str, Any]]


def load_study_data(storage: str | BaseStorage, name: str) -> StudyData:
    """Completed and failed trials of one study; ``pareto`` marks its front over all objectives."""
    study = open_study(storage, name)
    info = study_info(study)
    records = [trial_record(t, info) for t in study.get_trials(deepcopy=False, states=SHOWN_STATES)]
    for record, on_front in zip(records, front_mask(records, info["objectives"])):
        record["pareto"] = bool(on_front)
    return StudyData(study, info, records)


def load_trials(storage: str | BaseStorage, study_names: str | Iterable[str]) -> list[dict[str, Any]]:
    """Completed and failed trials of each study as records, studies in the order given."""
    names = [study_names] if isinstance(study_names, str) else list(study_names)
    return [r for name in names for r in load_study_data(storage, name).records]


def front_mask(records: list[dict[str, Any]], metrics: list[str]) -> np.ndarray:
    """Pareto front over ``metrics`` among complete, feasible records (others are never on it)."""
    if not records:
        return np.zeros(0, dtype=bool)
    pts = np.array([[r[m] if r[m] is not None else np.nan for m in metrics] for r in records], dtype=float)
    usable = np.array([r["state"] == "COMPLETE" and r["feasible"] for r in records], dtype=bool)
    pts[~usable] = np.nan
    return pareto_mask(pts, [DIRECTIONS[m] for m in metrics])


def data_version(storage: str | BaseStorage, study_names: list[str]) -> str:
    """A cheap fingerprint that changes when a trial of any study finishes."""
    parts = []
    for name in study_names:
        trials = open_study(storage, name).get_trials(deepcopy=False, states=SHOWN_STATES)
        parts.append(f"{name}:{len(trials)}:{max((t.number for t in trials), default=-1)}")
    return "|".join(parts)
