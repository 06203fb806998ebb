"""``stmsearch export``: pick trials of a study and write their configs plus a manifest.

Candidates are the complete, feasible trials that pass the filters; the reference trial
(the unreduced model) is never exported: it is the baseline ``--max-drop`` is measured from.

Picks:
  knee            the Pareto point farthest beyond the line joining the two extremes of the
                  accuracy-vs-throughput front (accuracy-vs-FLOPs when throughput is not an
                  objective), both axes scaled to [0, 1] between the extremes; see
                  :func:`stmsearch.dashboard.frontier.knee_index`.
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

import click
import numpy as np

from .dashboard.frontier import knee_index
from .dashboard.trials import DIRECTIONS, StudyError, front_mask, load_study_data
from .merging.config import ConfigError, config_from_dict

PICKS = ("knee", "max-accuracy", "max-throughput", "pareto")


class ExportError(ValueError):
    """No trial matches, or the study lacks what a pick or filter needs."""


def reference_accuracy(records: list[dict[str, Any]], study: str) -> float:
    """Accuracy of the study's reference trial (``--max-drop`` is relative to it)."""
    ref = next((r for r in records if r["is_reference"] and r["state"] == "COMPLETE" and r["accuracy"] is not None),
               None)
    if ref is None:
        raise ExportError(f"study {study!r}: --max-drop needs the reference trial (is_reference), which it lacks")
    return ref["accuracy"]


def passes(r: dict[str, Any], min_accuracy: float | None, min_throughput: float | None) -> bool:
    """Complete, feasible and above the absolute thresholds."""
    if r["state"] != "COMPLETE" or not r["feasible"] or r["accuracy"] is None:
        return False
    if min_accuracy is not None and r["accuracy"] < min_accuracy:
        return False
    return min_throughput is None or (r["throughput"] is not None and r["throughput"] >= min_throughput)


def knee_trade_off(objectives: list[str]) -> str:
    """The cost axis of the knee: throughput when measured, else the first other objective."""
    if "accuracy" not in objectives:
        raise ExportError(f"objectives {objectives}: the knee needs accuracy among them")
    others = [o for o in objectives if o != "accuracy"]
    if not others:
        raise ExportError("objectives: the knee needs a second objective besides accuracy")
    return "throughput" if "throughput" in others else others[0]


def pick_knee(pool: list[dict[str, Any]], objectives: list[str]) -> list[dict[str, Any]]:
    """The knee of the 2-D front of ``pool`` (the reference may shape the front, never be picked)."""
    other = knee_trade_off(objectives)
    pool = [r for r in pool if r[other] is not None]
    front = [r for r, on in zip(pool, front_mask(pool, ["accuracy", other])) if on]
    if not any(not r["is_reference"] for r in front):
        return []
    pts = np.array([[r["accuracy"], r[other]] for r in front])
    eligible = np.array([not r["is_reference"] for r in front])
    return [front[knee_index(pts, ["maximize", DIRECTIONS[other]], eligible)]]


def select(records: list[dict[str, Any]], objectives: list[str], pick: str, study: str,
           min_accuracy: float | None = None, max_drop: float | None = None,
           min_throughput: float | None = None) -> list[dict[str, Any]]:
    """The trials ``pick`` chooses among those passing the filters; raises if none does."""
    if pick not in PICKS:
        raise ExportError(f"--pick: unknown pick {pick!r}; choose one of {', '.join(PICKS)}")
    floor = min_accuracy
    if max_drop is not None:
        drop_floor = reference_accuracy(records, study) - max_drop
        floor = drop_floor if floor is None else max(floor, drop_floor)
    pool = [r for r in records if passes(r, floor, min_throughput)]
    candidates = [r for r in pool if not r["is_reference"]]
    if pick == "knee":
        chosen = pick_knee(pool, objectives)
    elif pick == "pareto":
        chosen = sorted((r for r in candidates if r["pareto"]), key=lambda r: -r["accuracy"])
    elif pick == "max-accuracy":
        chosen = [max(candidates, key=lambda r: (r["accuracy"], r["throughput"] or 0.0))] if candidates else []
    else:
        fast = [r for r in candidates if r["throughput"] is not None]
        chosen = [max(fast, key=lambda r: (r["throughput"], r["accuracy"]))] if fast else []
    if not chosen:
        filters = {"--min-accuracy": min_accuracy, "--max-drop": max_drop, "--min-throughput": min_throughput}
        shown = ", ".join(f"{k} {v}" for k, v in filters.items() if v is not None) or "no filters"
        raise ExportError(f"study {study!r}: no trial matches --pick {pick} with {shown} "
                          f"({len(candidates)} feasible merge trial(s) pass the filters)")
    return chosen


def safe_name(name: str) -> str:
    """A study name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"


def manifest_entry(r: dict[str, Any], info: dict[str, Any], file: str) -> dict[str, Any]:
    """Where a config came from and what it measured (the full metrics, with accuracy and n)."""
    return {"file": file, "study": info["name"], "trial": r["number"], "metrics": r["metrics"],
            "token_reduction": r["token_reduction"], "model": info["model"], "checkpoint": info["checkpoint"],
            "checkpoint_sha256": info["checkpoint_sha256"], "dataset": info["dataset"], "subset": info["subset"],
            "hardware": r["hardware"], "software": r["software"], "config": r["config"]}


def export_configs(storage: str, study: str, pick: str, out_dir: str | Path, **filters: float | None) -> dict:
    """Write the chosen configs and ``manifest.json`` to ``out_dir``; return the manifest."""
    data = load_study_data(storage, study)
    chosen = select(data.records, data.info["objectives"], pick, study, **filters)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for r in chosen:
        file = f"{safe_name(study)}-trial{r['number']}.yaml"
        config_from_dict(r["config"], f"study {study!r} trial {r['number']}: config").to_file(out / file)
        entries.append(manifest_entry(r, data.info, file))
    manifest = {"study": study, "pick": pick, "filters": {k.replace("_", "-"): v for k, v in filters.items()},
                "objectives": data.info["objectives"], "configs": entries}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


@click.command("export")
@click.option("--storage", required=True, help="Optuna storage URL, e.g. sqlite:///studies.db.")
@click.option("--study", required=True, help="Study name.")
@click.option("--pick", type=click.Choice(PICKS), default="knee", show_default=True, help="Which trials to export.")
@click.option("--min-accuracy", type=click.FloatRange(0, 1), default=None, help="Top-1 floor, as a fraction.")
@click.option("--max-drop", type=click.FloatRange(0, 1), default=None,
              help="Largest accuracy loss vs the reference trial, as a fraction (0.01 = 1 point).")
@click.option("--min-throughput", type=click.FloatRange(0), default=None, help="Throughput floor in img/s.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the YAML configs and manifest.json.")
def export_cmd(storage: str, study: str, pick: str, min_accuracy: float | None, max_drop: float | None,
               min_throughput: float | None, out_dir: Path) -> None:
    """Export chosen configs of a study as YAML, with a manifest of their provenance."""
    try:
        manifest = export_configs(storage, study, pick, out_dir, min_accuracy=min_accuracy, max_drop=max_drop,
                                  min_throughput=min_throughput)
    except (ExportError, StudyError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    for e in manifest["configs"]:
        m = e["metrics"]
        thr = f", {m['throughput']:.1f} img/s" if m.get("throughput") is not None else ""
        click.echo(f"{out_dir / e['file']}: trial {e['trial']}, top-1 {100 * m['accuracy']:.2f} % "
                   f"on {m.get('n')} images{thr}")
    click.echo(f"{out_dir / 'manifest.json'}: {len(manifest['configs'])} config(s)")
