"""The Pareto table printed after a search (and by ``stmsearch verify``), as a rich Table."""
from __future__ import annotations

from rich.table import Table

from ..merging.config import MergeConfig
from ..merging.methods import METHODS
from ..objectives import METRICS
from .records import StudyData, TrialRecord, front_mask

def schedule_text(config: dict) -> str:
    """A short schedule: ``8/2@1`` (8 tokens every 2 layers from layer 1), ``8/2@1 inc`` (ramped),
    ``L3:8`` (one layer) or ``L5-21, 196 tok`` (a per-layer list: first and last merging layer, total)."""
    s = config.get("schedule")
    if isinstance(s, dict):
        text = f"{s['count']}/{s['interval']}@{s['start']}" + (f" x{s['steps']}" if s.get("steps") else "")
        return text + ("" if s.get("shape") == "constant" else f" {s['shape'][:3]}")
    layers = [i for i, c in enumerate(s or []) if c]
    if not layers:
        return "-"
    if len(layers) == 1:
        return f"L{layers[0]}:{s[layers[0]]}"
    return f"L{layers[0]}-{layers[-1]}, {sum(s)} tok"


def knob_text(config: dict) -> str:
    """The knobs the config's method reads that differ from that method's defaults."""
    method = METHODS.get(config.get("method", ""))
    if method is None or method.plan is None:
        return ""
    defaults = MergeConfig(method=method.name).to_dict()
    return " ".join(f"{k}={v}" for k, v in config.items() if k in method.knobs and v != defaults.get(k))


def front_records(data: StudyData) -> list[TrialRecord]:
    """The study's feasible front over all its objectives, best first objective first."""
    usable = [r for r in data.records if r.reused_from is None]
    on = [r for r, f in zip(usable, front_mask(usable, data.info.objectives)) if f]
    first = data.info.objectives[0]
    sign = -1.0 if METRICS[first].direction == "maximize" else 1.0
    return sorted(on, key=lambda r: sign * r.value(first))


def _cell(r: TrialRecord, name: str, verified: bool) -> str:
    """A value (verified where it was) and, for accuracy and speed-up, the half-width of its interval."""
    value = r.figure(name) if verified else r.value(name)
    if value is None:
        return "-"
    text = METRICS[name].cell(value)
    ci = r.interval(name, verified)
    if ci is not None and name == "accuracy":
        text += f"±{50 * (ci[1] - ci[0]):.1f}"
    elif ci is not None and name == "speedup":
        text += f"±{(ci[1] - ci[0]) / 2:.2f}"
    return text


def pareto_table(data: StudyData) -> Table:
    """The feasible Pareto front as a table; verified figures (whole set, paired timing) once verified.

    Accuracy and speed-up carry the half-width of their 95% interval. Short enough for 80 columns.
    """
    objectives, verified = data.info.objectives, data.verified
    trials = front_records(data)
    note = "verified on the whole set" if verified else "as measured in the search (not verified)"
    table = Table(title=f"Pareto front of {data.info.name} ({len(trials)} trials, {note})",
                  caption="schedule c/i@s: c tokens every i layers from layer s; Lx-y, n tok: layers x..y, "
                          "n tokens in all")
    for col in ("#", "method", "merged%", *(METRICS[o].header for o in objectives), "schedule", "knobs"):
        table.add_column(col, justify="left" if col in ("method", "schedule", "knobs") else "right",
                         no_wrap=col in ("schedule", "#"), overflow="fold")
    for r in trials:
        seed = r.seed_config
        table.add_row(str(r.number) + ("" if r.verified or not verified else "*"),
                      (r.method or "?") + (f" ({seed})" if seed else ""),
                      METRICS["token_reduction"].cell(r.token_reduction or 0.0),
                      *(_cell(r, o, verified) for o in objectives), schedule_text(r.config), knob_text(r.config))
    return table
