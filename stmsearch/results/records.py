"""Studies written by ``stmsearch search`` read into typed trial records.

The stored layout is the trial-record contract (see the README): ``study.user_attrs
["objectives"]`` names ``trial.values`` in order, and each trial carries ``metrics``,
``config``, ``tokens_per_layer``, ``feasible``, ``is_reference`` and the rest. Studies of
earlier versions (throughput objectives, no intervals, no verification) read the same way.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np
import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from ..database import open_existing
from ..objectives import METRICS, direction, objective_names
from ..pareto import pareto_mask

SHOWN_STATES = (TrialState.COMPLETE, TrialState.FAIL)


class StudyError(ValueError):
    """A study that is missing or does not follow the trial-record contract."""


def _number(value: Any) -> float | None:
    """A finite float, or None for missing / NaN / non-numeric values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class TrialRecord:
    """One finished trial (complete or failed) of one study."""

    study: str
    number: int
    state: str
    values: dict[str, float]  # the study's objectives, by name
    metrics: dict[str, Any]  # what the evaluator measured, as stored
    config: dict[str, Any]
    suggested: dict[str, Any] = field(default_factory=dict)  # the sampler's parameters
    tokens_per_layer: list[int] = field(default_factory=list)
    is_reference: bool = False
    feasible: bool = True
    hardware: dict[str, Any] = field(default_factory=dict)
    software: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seed_config: str | None = None
    token_reduction: float | None = None
    duration_s: float | None = None
    datetime_complete: str | None = None
    verified: dict[str, Any] | None = None  # re-measured on the whole set (stmsearch verify)
    reused_from: int | None = None  # the trial whose measurement of the same config this one repeats
    pareto: bool = False

    @property
    def key(self) -> str:
        return f"{self.study}#{self.number}"

    @property
    def method(self) -> str | None:
        return self.config.get("method")

    @property
    def window(self) -> int | None:
        return self.config.get("window")

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE"

    def value(self, name: str) -> float | None:
        """A number of this trial by metric name: the objective value, else the measured metric."""
        if name in ("token_reduction", "duration_s"):
            return getattr(self, name)
        return _number(self.values.get(name, self.metrics.get(name)))

    def figure(self, name: str) -> float | None:
        """The verified figure for ``name`` where the trial was verified, else its search measurement."""
        if self.verified and _number(self.verified.get(name)) is not None:
            return _number(self.verified[name])
        return self.value(name)

    def interval(self, name: str, verified: bool = False) -> tuple[float, float] | None:
        """The 95% interval of ``name`` (accuracy, speedup): the search's, or (``verified``) the
        verification's where the trial was verified."""
        source = self.verified if verified and self.verified and name in self.verified else self.metrics
        ci = source.get(f"{name}_ci")
        return (float(ci[0]), float(ci[1])) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None

    def __getitem__(self, key: str) -> Any:
        """``record["accuracy"]``: a field by name, else a metric's value (None if absent)."""
        if key in self.__dataclass_fields__ or key in ("key", "method", "window"):
            return getattr(self, key)
        return self.value(key)

    def as_dict(self) -> dict[str, Any]:
        """Flat, JSON-able: every field plus one key per known metric (what the dashboard page reads)."""
        out = asdict(self)
        out.update(key=self.key, method=self.method, window=self.window,
                   accuracy_ci=self.interval("accuracy"), speedup_ci=self.interval("speedup"))
        out.update({name: self.value(name) for name, m in METRICS.items() if m.numeric})
        return out


@dataclass
class StudyInfo:
    """The study-level attributes of the contract."""

    name: str
    objectives: list[str]
    model: str | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    dataset: str | None = None
    subset: int | None = None
    constraints: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Any] | None = None

    @property
    def directions(self) -> list[str]:
        return [direction(o) for o in self.objectives]


@dataclass
class StudyData:
    """A loaded study: the optuna object, its contract attributes and its trial records."""

    study: optuna.Study
    info: StudyInfo
    records: list[TrialRecord]

    def reference(self) -> TrialRecord | None:
        """The completed reference trial (the unreduced model), if any."""
        return next((r for r in self.records if r.is_reference and r.complete), None)

    @property
    def verified(self) -> bool:
        """True once ``stmsearch verify`` has re-measured the study's front."""
        return any(r.verified for r in self.records)


def split_names(names: Iterable[str]) -> list[str]:
    """``--study a --study b,c`` -> ``["a", "b", "c"]`` (order kept, duplicates dropped)."""
    out: list[str] = []
    for name in names:
        for part in name.split(","):
            if part.strip() and part.strip() not in out:
                out.append(part.strip())
    return out


def as_storage(storage: str | BaseStorage) -> BaseStorage:
    """A storage object, so several loads share one connection pool (and one schema check); a URL
    must name an existing database (a typo is an error, not a new empty database)."""
    return open_existing(storage) if isinstance(storage, str) else storage


def open_study(storage: str | BaseStorage, name: str) -> optuna.Study:
    """``optuna.load_study`` with an error that lists the studies the storage does hold."""
    storage = as_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        raise StudyError(f"study {name!r} not found in the storage; it holds: {', '.join(known) or 'none'}") from None


def study_info(study: optuna.Study) -> StudyInfo:
    """The study-level attributes of the contract, with the objective names checked."""
    attrs = dict(study.user_attrs)
    objectives = attrs.get("objectives")
    if not objectives or len(objectives) != len(study.directions):
        raise StudyError(f"study {study.study_name!r}: user_attrs.objectives must name its "
                         f"{len(study.directions)} objective(s), got {objectives!r}")
    unknown = [o for o in objectives if o not in objective_names()]
    if unknown:
        raise StudyError(f"study {study.study_name!r}: user_attrs.objectives: unknown objective {unknown[0]!r}")
    return StudyInfo(name=study.study_name, objectives=list(objectives), model=attrs.get("model"),
                     checkpoint=attrs.get("checkpoint"), checkpoint_sha256=attrs.get("checkpoint_sha256"),
                     dataset=attrs.get("dataset"), subset=attrs.get("subset"),
                     constraints=attrs.get("constraints") or {}, space=attrs.get("space"))


def trial_record(trial: FrozenTrial, info: StudyInfo) -> TrialRecord:
    """One stored trial as a record."""
    ua = trial.user_attrs
    metrics = dict(ua.get("metrics") or {})
    if ua.get("speedup") is not None:  # kept beside the metrics by studies of earlier versions
        metrics.setdefault("speedup", ua["speedup"])
    return TrialRecord(
        study=info.name, number=trial.number, state=trial.state.name,
        values=dict(zip(info.objectives, trial.values)) if trial.values else {}, metrics=metrics,
        config=ua.get("config") or {}, suggested=dict(trial.params),
        tokens_per_layer=ua.get("tokens_per_layer") or metrics.get("tokens_per_layer") or [],
        is_reference=bool(ua.get("is_reference", False)),
        feasible=bool(ua.get("feasible", trial.state == TrialState.COMPLETE)),
        hardware=ua.get("hardware") or {}, software=ua.get("software") or {}, error=ua.get("error"),
        seed_config=ua.get("seed_config"), token_reduction=_number(ua.get("token_reduction")),
        duration_s=_number(ua.get("duration_s")),
        datetime_complete=trial.datetime_complete.isoformat() if trial.datetime_complete else None,
        verified=ua.get("verified"), reused_from=ua.get("reused_from"))


def front_mask(records: list[TrialRecord], metrics: list[str]) -> np.ndarray:
    """Pareto front over ``metrics`` among complete, feasible records (others are never on it)."""
    if not records:
        return np.zeros(0, dtype=bool)
    pts = np.array([[np.nan if r.value(m) is None else r.value(m) for m in metrics] for r in records], dtype=float)
    usable = np.array([r.complete and r.feasible for r in records], dtype=bool)
    pts[~usable] = np.nan
    return pareto_mask(pts, [direction(m) for m in metrics])


def load_study_data(storage: str | BaseStorage, name: str) -> StudyData:
    """Completed and failed trials of one study; ``pareto`` marks its front over all objectives."""
    study = open_study(storage, name)
    info = study_info(study)
    records = [trial_record(t, info) for t in study.get_trials(deepcopy=False, states=SHOWN_STATES)]
    for record, on_front in zip(records, front_mask(records, info.objectives)):
        record.pareto = bool(on_front)
    return StudyData(study, info, records)


def load_trials(storage: str | BaseStorage, study_names: str | Iterable[str]) -> list[TrialRecord]:
    """Completed and failed trials of each study as records, studies in the order given."""
    names = [study_names] if isinstance(study_names, str) else list(study_names)
    return [r for name in names for r in load_study_data(storage, name).records]


def data_version(storage: str | BaseStorage, study_names: list[str]) -> str:
    """A cheap fingerprint that changes when a trial of any study finishes."""
    parts = []
    for name in study_names:
        trials = open_study(storage, name).get_trials(deepcopy=False, states=SHOWN_STATES)
        parts.append(f"{name}:{len(trials)}:{max((t.number for t in trials), default=-1)}")
    return "|".join(parts)
