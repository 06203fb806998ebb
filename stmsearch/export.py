"""``stmsearch export``: pick trials of a study and write their configs plus a manifest.

Candidates are the complete, feasible trials that pass the filters; the reference trial
(the unreduced model) is never exported: it is the baseline ``--max-drop`` is measured from.

Picks:
  knee            the Pareto point farthest beyond the line joining the two extremes of the
                  accuracy-vs-throughput front (accuracy-vs-FLOPs when throughput is not an
                  objective), both axes scaled to [0, 1] between the extremes; see
                  :func:`stmsearch.pareto.knee_index`.
  max-accuracy    the most accurate candidate (ties: the faster one).
  max-throughput  the fastest candidate (ties: the more accurate one).
  pareto          every candidate on the study's front over all its objectives.

Each chosen trial is written as ``<out>/<study>-trial<N>.yaml``, readable with
``stmsearch.load_config``; ``manifest.json`` records where every number came from.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .merging.config import config_from_dict
from .results.frontier import knee
from .results.records import StudyInfo, TrialRecord, load_study_data

PICKS = ("knee", "max-accuracy", "max-throughput", "pareto")


class ExportError(ValueError):
    """No trial matches, or the study lacks what a pick or filter needs."""


def reference_accuracy(records: list[TrialRecord], study: str) -> float:
    """Accuracy of the study's reference trial (``--max-drop`` is relative to it), verified where it was."""
    ref = next((r for r in records if r.is_reference and r.complete and r.figure("accuracy") is not None), None)
    if ref is None:
        raise ExportError(f"study {study!r}: --max-drop needs the reference trial (is_reference), which it lacks")
    return ref.figure("accuracy")


def speed_axis(records: list[TrialRecord]) -> str:
    """The speed the picks and filters use: the speed-up where trials have it, else throughput."""
    return "speedup" if any(r.figure("speedup") is not None and not r.is_reference for r in records) else "throughput"


def passes(r: TrialRecord, min_accuracy: float | None, min_throughput: float | None) -> bool:
    """Complete, feasible and above the absolute thresholds (verified figures where verified)."""
    if not r.complete or not r.feasible or r.figure("accuracy") is None:
        return False
    if min_accuracy is not None and r.figure("accuracy") < min_accuracy:
        return False
    return min_throughput is None or (r.figure("throughput") or 0.0) >= min_throughput


def knee_axes(objectives: list[str], speed: str) -> list[str]:
    """Accuracy against speed when speed is an objective, else against the first other objective."""
    if "accuracy" not in objectives:
        raise ExportError(f"objectives {objectives}: the knee needs accuracy among them")
    others = [o for o in objectives if o != "accuracy"]
    if not others:
        raise ExportError("objectives: the knee needs a second objective besides accuracy")
    fast = [o for o in others if o in ("speedup", "throughput")]
    return ["accuracy", speed if fast else others[0]]


def select(records: list[TrialRecord], objectives: list[str], pick: str, study: str,
           min_accuracy: float | None = None, max_drop: float | None = None,
           min_throughput: float | None = None) -> list[TrialRecord]:
    """The trials ``pick`` chooses among those passing the filters; raises if none does.

    In a verified study only verified trials are candidates, judged by their verified figures.
    """
    if pick not in PICKS:
        raise ExportError(f"--pick: unknown pick {pick!r}; choose one of {', '.join(PICKS)}")
    verified = any(r.verified for r in records)
    if verified:
        records = [r for r in records if r.verified]
    floor = min_accuracy
    if max_drop is not None:
        drop_floor = reference_accuracy(records, study) - max_drop
        floor = drop_floor if floor is None else max(floor, drop_floor)
    pool = [r for r in records if passes(r, floor, min_throughput)]
    candidates = [r for r in pool if not r.is_reference]
    speed = speed_axis(records)
    if pick == "knee":
        chosen = [k for k in [knee(pool, knee_axes(objectives, speed), verified)] if k is not None]
    elif pick == "pareto":
        chosen = sorted((r for r in candidates if r.pareto), key=lambda r: -r.figure("accuracy"))
    elif pick == "max-accuracy":
        chosen = [max(candidates, key=lambda r: (r.figure("accuracy"), r.figure(speed) or 0.0))] if candidates else []
    else:
        fast = [r for r in candidates if r.figure(speed) is not None]
        chosen = [max(fast, key=lambda r: (r.figure(speed), r.figure("accuracy")))] if fast else []
    if not chosen:
        filters = {"--min-accuracy": min_accuracy, "--max-drop": max_drop, "--min-throughput": min_throughput}
        shown = ", ".join(f"{k} {v}" for k, v in filters.items() if v is not None) or "no filters"
        raise ExportError(f"study {study!r}: no trial matches --pick {pick} with {shown} "
                          f"({len(candidates)} feasible merge trial(s) pass the filters)")
    return chosen


def safe_name(name: str) -> str:
    """A study name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"


def manifest_entry(r: TrialRecord, info: StudyInfo, file: str) -> dict[str, Any]:
    """Where a config came from and what it measured (the full metrics, with accuracy and n)."""
    return {"file": file, "study": info.name, "trial": r.number, "metrics": r.metrics, "verified": r.verified,
            "token_reduction": r.token_reduction, "model": info.model, "checkpoint": info.checkpoint,
            "checkpoint_sha256": info.checkpoint_sha256, "dataset": info.dataset, "subset": info.subset,
            "hardware": r.hardware, "software": r.software, "config": r.config}


def export_configs(storage: str, study: str, pick: str, out_dir: str | Path, unverified: bool = False,
                   **filters: float | None) -> dict:
    """Write the chosen configs and ``manifest.json`` to ``out_dir``; return the manifest.

    A study whose front was never verified (``stmsearch verify``) is refused unless ``unverified``.
    """
    data = load_study_data(storage, study)
    if not data.verified and not unverified:
        raise ExportError(f"study {study!r} is not verified: its figures come from {data.info.subset or 'all'} "
                          f"images per trial and one timing; run `stmsearch verify --storage ... --study {study}` "
                          "first, or export them as they are with --unverified")
    chosen = select(data.records, data.info.objectives, pick, study, **filters)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for r in chosen:
        file = f"{safe_name(study)}-trial{r.number}.yaml"
        config_from_dict(r.config, f"study {study!r} trial {r.number}: config").to_file(out / file)
        entries.append(manifest_entry(r, data.info, file))
    manifest = {"study": study, "pick": pick, "filters": {k.replace("_", "-"): v for k, v in filters.items()},
                "figures": "verified" if data.verified else "unverified (the search's own measurements)",
                "objectives": data.info.objectives, "configs": entries}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
