"""Optuna studies in SQL storage (SQLite by default, PostgreSQL as-is), named per space."""
from __future__ import annotations

from pathlib import Path

import optuna

from ..models.checkpoint import file_sha256
from ..models.zoo import default_checkpoint
from .space import SearchSpace



def default_url(space_path: str | Path, runs: str | Path = "runs") -> str:
    """``sqlite:///runs/<space stem>.db``, creating the runs folder."""
    folder = Path(runs)
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / Path(space_path).stem}.db"


def study_name(space_path: str | Path, space: SearchSpace) -> str:
    """Space stem plus a hash of what it searches: stable, so re-running resumes."""
    return f"{Path(space_path).stem}-{space.identity()}"


def _checkpoint_digest(space: SearchSpace) -> str | None:
    path = Path(space.checkpoint) if space.checkpoint else default_checkpoint(space.model)
    return file_sha256(path) if path is not None and Path(path).is_file() else None


def _probe_digest(space: SearchSpace) -> str | None:
    return file_sha256(space.probe) if space.probe and Path(space.probe).is_file() else None


def study_attrs(space: SearchSpace) -> dict:
    """The study-level record (see the trial record contract)."""
    return {"objectives": list(space.objectives), "space": space.model_dump(mode="json"),
            "space_identity": space.identity(), "model": space.model,
            "checkpoint": space.checkpoint, "checkpoint_sha256": _checkpoint_digest(space),
            **({"probe": space.probe, "probe_sha256": _probe_digest(space)} if space.probe else {}),
            "dataset": space.dataset, "subset": space.subset,
            "constraints": space.constraints.model_dump(mode="json")}


def open_study(storage: optuna.storages.BaseStorage, name: str, space: SearchSpace,
               sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """Create or load the study; its directions must match the space's objectives."""
    study = optuna.create_study(storage=storage, study_name=name, directions=space.directions,
                                sampler=sampler, load_if_exists=True)
    have = [d.name.lower() for d in study.directions]
    if have != space.directions:
        raise ValueError(f"study {name!r} optimises {have}, but the space asks for {space.directions} "
                         f"({', '.join(space.objectives)}); use another --study name")
    stored = study.user_attrs.get("space_identity")
    if stored is not None and stored != space.identity():
        raise ValueError(f"study {name!r} was created from a different search space (identity {stored}, this one "
                         f"{space.identity()}); its trials would not fit the new ranges: use another --study name")
    for key, value in study_attrs(space).items():
        study.set_user_attr(key, value)
    return study

