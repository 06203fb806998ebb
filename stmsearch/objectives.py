"""Every metric a trial can report, and which of them a study may optimise: one table.

A :class:`Metric` says how a number is named, formatted and compared. An objective is a
metric with a ``direction`` and a hypervolume axis: ``normalise`` turns a trial's value into
that axis (``relative`` ones are divided by the reference trial's value) and ``bound`` is the
axis' reference point.
``measure`` names the evaluation pass that produces it (``accuracy``, ``speed`` or ``flops``),
so the evaluator runs only what a study needs.

Search, progress, the Pareto table, the dashboard, the results layer and export all read
:data:`METRICS`; adding an objective is one :func:`register_metric` call plus its measurement.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

def _si(unit: str, digits: int = 3) -> Callable[[float], str]:
    def text(v: float) -> str:
        for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(v) >= factor:
                return f"{v / factor:.{digits}f} {prefix}{unit}"
        return f"{v:.{digits}g} {unit}"
    return text


@dataclass(frozen=True)
class Metric:
    """A number a trial reports.

    ``text`` is the full form for people, ``cell`` the compact table form under ``header``.
    ``direction`` (``maximize``/``minimize``) is set for metrics a front or filter may use;
    ``objective`` metrics also carry ``measure``, ``relative`` and ``bound``.
    """

    name: str
    label: str
    header: str
    text: Callable[[Any], str]
    cell: Callable[[Any], str]
    direction: str | None = None
    objective: bool = False
    measure: str | None = None
    relative: bool = False
    bound: float | None = None
    description: str = ""
    numeric: bool = True  # False for lists (intervals, tokens per layer): shown, never plotted or compared

    @property
    def sign(self) -> float:
        """Multiplier that turns the value into a quantity to minimise."""
        return -1.0 if self.direction == "maximize" else 1.0

    def normalise(self, value: float, reference: dict | None) -> float:
        """The hypervolume axis: ``value``, or for a relative metric ``value`` over the reference's."""
        ref = (reference or {}).get(self.name) if self.relative else None
        return value / float(ref) if ref else value


METRICS: dict[str, Metric] = {}
MEASURES = ("accuracy", "speed", "flops")  # the evaluation passes an objective can need


def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` to the table (an objective needs a direction, a measure and a bound)."""
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is already registered")
    if metric.objective and (metric.direction not in ("maximize", "minimize") or metric.measure not in MEASURES
                             or metric.bound is None):
        raise ValueError(f"objective {metric.name!r} needs a direction, a measure in {MEASURES} and a bound")
    METRICS[metric.name] = metric
    return metric


def unregister_metric(name: str) -> None:
    """Remove a metric (for tests and plug-ins that replace one)."""
    METRICS.pop(name, None)


def objective_names() -> list[str]:
    """Names a study may optimise, in table order."""
    return [m.name for m in METRICS.values() if m.objective]


def objective(name: str) -> Metric:
    """The objective ``name``; a clear error lists the known ones."""
    metric = METRICS.get(name)
    if metric is None or not metric.objective:
        raise ValueError(f"unknown objective {name!r} (allowed: {', '.join(objective_names())})")
    return metric


def direction(name: str) -> str | None:
    """``maximize``/``minimize`` for a metric with a direction, else None."""
    metric = METRICS.get(name)
    return metric.direction if metric else None


def directions() -> dict[str, str]:
    """Every metric that has a direction, by name."""
    return {n: m.direction for n, m in METRICS.items() if m.direction}


def fmt(name: str, value: float | None) -> str:
    """A value for people (``-`` when missing); unknown names print as they are."""
    if value is None:
        return "-"
    metric = METRICS.get(name)
    return metric.text(value) if metric else str(value)


def measures_for(names: list[str]) -> tuple[str, ...]:
    """The evaluation passes the objectives ``names`` need, in :data:`MEASURES` order."""
    wanted = {objective(n).measure for n in names}
    return tuple(m for m in MEASURES if m in wanted)


def normalised(metrics: dict, names: list[str], reference: dict | None) -> tuple[float, ...]:
    """One trial's objectives on their hypervolume axes, each turned to minimisation."""
    return tuple(objective(n).sign * objective(n).normalise(float(metrics[n]), reference) for n in names)


def reference_point(names: list[str], reference: dict | None, seen: list[dict] | None = None) -> tuple[float, ...]:
    """The hypervolume reference point in minimisation form.

    A relative axis without a reference trial falls back to ``bound`` times the largest
    value in ``seen`` (metrics dicts), so it stays fixed over a study's history.
    """
    out = []
    for n in names:
        m = objective(n)
        bound = m.bound
        if m.relative and not (reference or {}).get(n):
            bound *= max((float(s[n]) for s in seen or [] if s.get(n) is not None), default=0.0)
        out.append(m.sign * bound)
    return tuple(out)


def _pct(v: float) -> str:
    return f"{100 * v:.2f} %"


register_metric(Metric(
    "accuracy", "top-1 accuracy", "acc %", _pct, lambda v: f"{100 * v:.2f}", "maximize", True, "accuracy",
    False, 0.0, "fraction of evaluated images classified correctly"))
register_metric(Metric(
    "speedup", "speed-up", "speed-up", lambda v: f"{v:.2f}x", lambda v: f"{v:.2f}x", "maximize", True, "speed",
    False, 0.0, "unreduced model's time per batch over this config's (the reference trial is 1.0)"))
register_metric(Metric(
    "throughput", "throughput", "img/s", lambda v: f"{v:,.1f} img/s", lambda v: f"{v:,.0f}", "maximize", True,
    "speed", True, 0.0, "images per second at the throughput batch size"))
register_metric(Metric(
    "flops", "FLOPs", "MACs", _si("MAC"), _si("", 2), "minimize", True, "flops", True, 1.1,
    "fvcore multiply-accumulates per image"))
register_metric(Metric(
    "latency_ms", "latency (batch 1)", "ms", lambda v: f"{v:.2f} ms", lambda v: f"{v:.2f}", "minimize", True,
    "speed", True, 1.1, "milliseconds per forward of one image"))
register_metric(Metric("tokens_per_layer", "tokens per layer", "tokens", lambda v: " ".join(map(str, v)),
                       lambda v: " ".join(map(str, v)), numeric=False))


def _interval(fmt_one: Callable[[float], str]) -> Callable[[Any], str]:
    return lambda v: "-" if v is None else f"{fmt_one(v[0])} to {fmt_one(v[1])} (95%)"


register_metric(Metric("accuracy_ci", "accuracy 95% interval", "acc CI", _interval(_pct),
                       _interval(lambda v: f"{100 * v:.1f}"), numeric=False))
register_metric(Metric("speedup_ci", "speed-up 95% interval", "speed-up CI", _interval(lambda v: f"{v:.3f}x"),
                       _interval(lambda v: f"{v:.2f}"), numeric=False))
register_metric(Metric("reference_throughput", "unreduced model's throughput", "ref img/s",
                       lambda v: f"{v:,.1f} img/s", lambda v: f"{v:,.0f}"))
register_metric(Metric("predicted_ms", "predicted time per batch", "ms", lambda v: f"{v:.2f} ms", lambda v: f"{v:.1f}"))
register_metric(Metric("timing_pairs", "timed pairs", "pairs", lambda v: f"{int(v)}", lambda v: f"{int(v)}"))
register_metric(Metric("n", "images evaluated", "n", lambda v: f"{int(v):,}", lambda v: f"{int(v)}"))
register_metric(Metric("skipped", "unreadable images skipped", "skipped", lambda v: f"{int(v):,}",
                       lambda v: f"{int(v)}"))
register_metric(Metric("params", "parameters", "params", lambda v: f"{v / 1e6:.2f} M", lambda v: f"{v / 1e6:.2f}M",
                       "minimize"))
register_metric(Metric("peak_mem_mb", "peak memory", "MiB", lambda v: f"{v:,.1f} MiB", lambda v: f"{v:,.0f}",
                       "minimize"))
register_metric(Metric("token_reduction", "token reduction", "merged %", lambda v: f"{100 * v:.1f} %",
                       lambda v: f"{100 * v:.1f}", "maximize"))
register_metric(Metric("duration_s", "trial duration", "s", lambda v: f"{v:.1f} s", lambda v: f"{v:.1f}"))
