"""Plotly figures of the dashboard: Pareto fronts, hypervolume over trials, importances."""
from __future__ import annotations

import html
from typing import Any

import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..objectives import direction
from ..results.frontier import hypervolume_history
from ..results.records import StudyInfo, TrialRecord, front_mask
from .views import AxisSpec, ImportancesView, ParetoView

# Okabe-Ito: distinguishable with colour-blindness; dominated points are neutral grey.
STUDY_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]
DOMINATED = "#BBBBBB"
FONT = dict(family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size=13, color="#222")
PREFIXES = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]


def resolve_unit(spec: Any, values: list[float | None]) -> tuple[float, str]:
    """``(scale, unit)`` for a field spec, picking an SI prefix from the largest value if asked."""
    if not spec.si_prefix:
        return spec.scale, spec.unit
    top = max((abs(v * spec.scale) for v in values if v is not None), default=0.0)
    factor, prefix = next(((f, p) for f, p in PREFIXES if top >= f), (1.0, ""))
    return spec.scale / factor, prefix + spec.unit


def axis_title(label: str, unit: str) -> str:
    return f"{label} ({unit})" if unit else label


def base_layout(title: str, height: int = 460) -> dict[str, Any]:
    """Shared look: white background, light grid, legend under the plot."""
    return dict(title=dict(text=title, x=0.01, font=dict(size=16)), height=height, font=FONT,
                template="plotly_white", margin=dict(l=70, r=20, t=50, b=60),
                legend=dict(orientation="h", yanchor="top", y=-0.18, x=0, font=dict(size=12)),
                hoverlabel=dict(font=dict(size=12, family=FONT["family"]), align="left"))


def _fmt(value: float | None, scale: float, unit: str, digits: int | None) -> str:
    if value is None:
        return "–"
    v = value * scale
    text = f"{v:,.{digits}f}" if digits is not None else f"{v:,.4g}"
    return f"{text} {unit}".strip()


def hover_text(r: dict[str, Any], x: AxisSpec, y: AxisSpec, xs: tuple[float, str], ys: tuple[float, str]) -> str:
    """Point tooltip: the trial, its two plotted values and its config."""
    cfg = r["config"] or {}
    knobs = ", ".join(f"{k}={v}" for k, v in cfg.items() if k not in ("method", "schedule", "window"))
    schedule = cfg.get("schedule", [])
    lines = [f"<b>{html.escape(r['study'])} · trial {r['number']}</b>"
             + (" · reference" if r["is_reference"] else "") + ("" if r["feasible"] else " · infeasible"),
             f"{y.label}: {_fmt(r[y.metric], ys[0], ys[1], y.digits)}",
             f"{x.label}: {_fmt(r[x.metric], xs[0], xs[1], x.digits)}",
             f"method: {cfg.get('method')} · window: {cfg.get('window')}",
             f"schedule: {html.escape(str(schedule))}"]
    if r["token_reduction"] is not None:
        lines.append(f"token reduction: {100 * r['token_reduction']:.1f} %")
    if knobs:
        lines.append(f"knobs: {html.escape(knobs)}")
    return "<br>".join(lines)


def _points(rs, x: AxisSpec, y: AxisSpec, xs, ys) -> dict[str, Any]:
    return dict(x=[r[x.metric] * xs[0] for r in rs], y=[r[y.metric] * ys[0] for r in rs],
                customdata=[r["key"] for r in rs], hovertext=[hover_text(r, x, y, xs, ys) for r in rs],
                hovertemplate="%{hovertext}<extra></extra>")


def _error_bars(rs: list[TrialRecord], axis: AxisSpec, scale: float) -> dict[str, Any] | None:
    """Asymmetric error bars from the verified 95% intervals, where the axis has them (accuracy, speed-up)."""
    cis = [r.interval(axis.metric, verified=True) for r in rs]
    if not any(cis):
        return None
    up = [(ci[1] - r.figure(axis.metric)) * scale if ci else 0.0 for r, ci in zip(rs, cis)]
    down = [(r.figure(axis.metric) - ci[0]) * scale if ci else 0.0 for r, ci in zip(rs, cis)]
    return dict(type="data", symmetric=False, array=up, arrayminus=down, thickness=1.2, width=3)


def _verified_trace(rs: list[TrialRecord], study: str, colour: str, x: AxisSpec, y: AxisSpec, xs, ys) -> go.Scatter:
    """Verified figures (the whole set, paired timing) with their 95% intervals as error bars."""
    text = [f"<b>{html.escape(study)} · trial {r.number} · verified</b><br>"
            f"{y.label}: {_fmt(r.figure(y.metric), ys[0], ys[1], y.digits)}<br>"
            f"{x.label}: {_fmt(r.figure(x.metric), xs[0], xs[1], x.digits)}<br>"
            f"on {int(r.verified.get('n') or 0):,} images, {r.verified.get('timing_pairs', '?')} timed pairs" for r in rs]
    return go.Scatter(mode="markers", name=f"{study} · verified (95% CI)", meta=dict(study=study, role="verified"),
                      x=[r.figure(x.metric) * xs[0] for r in rs], y=[r.figure(y.metric) * ys[0] for r in rs],
                      error_x=_error_bars(rs, x, xs[0]), error_y=_error_bars(rs, y, ys[0]),
                      marker=dict(color=colour, size=9, symbol="diamond", line=dict(color="#222", width=1)),
                      customdata=[r.key for r in rs], hovertext=text, hovertemplate="%{hovertext}<extra></extra>")


def pareto_figure(view: ParetoView, records: list[TrialRecord], studies: list[str]) -> go.Figure:
    """One scatter per study and role: front (coloured; hollow until verified), dominated (grey),
    infeasible (x), reference (star), and the verified figures with their intervals (diamonds)."""
    x, y = view.x, view.y
    shown = [r for r in records if r["state"] == "COMPLETE" and r[x.metric] is not None and r[y.metric] is not None]
    xs, ys = resolve_unit(x, [r[x.metric] for r in shown]), resolve_unit(y, [r[y.metric] for r in shown])
    fig = go.Figure()
    for i, study in enumerate(studies):
        colour = STUDY_COLOURS[i % len(STUDY_COLOURS)]
        rs = [r for r in shown if r["study"] == study]
        front = front_mask(rs, [x.metric, y.metric])
        on = sorted((r for r, f in zip(rs, front) if f), key=lambda r: r[x.metric])
        if on:
            fig.add_trace(go.Scatter(x=[r[x.metric] * xs[0] for r in on], y=[r[y.metric] * ys[0] for r in on],
                                     mode="lines", line=dict(color=colour, width=1.5, shape="hv"
                                                             if direction(x.metric) == "minimize" else "vh"),
                                     hoverinfo="skip", name=f"{study} · front", showlegend=False))
        pareto = [r for r, f in zip(rs, front) if f and not r["is_reference"]]
        groups = [
            ("Pareto", [r for r in pareto if r.verified],
             dict(color=colour, size=11, symbol="circle", line=dict(color="white", width=1))),
            ("Pareto · unverified", [r for r in pareto if not r.verified],
             dict(color="white", size=11, symbol="circle", line=dict(color=colour, width=2))),
            ("dominated", [r for r, f in zip(rs, front) if not f and r["feasible"] and not r["is_reference"]],
             dict(color=DOMINATED, size=8, symbol="circle", line=dict(color=colour, width=1))),
            ("infeasible", [r for r in rs if not r["feasible"] and not r["is_reference"]],
             dict(color=colour, size=9, symbol="x-thin-open", opacity=0.7, line=dict(color=colour, width=2))),
            ("reference (unreduced)", [r for r in rs if r["is_reference"]],
             dict(color="#F0E442", size=18, symbol="star", line=dict(color="#222", width=1.2))),
        ]
        for role, group, marker in groups:
            if group:
                fig.add_trace(go.Scatter(mode="markers", marker=marker, name=f"{study} · {role}",
                                         meta=dict(study=study, role=role), **_points(group, x, y, xs, ys)))
        verified = [r for r in rs if r.verified and r.figure(x.metric) is not None and r.figure(y.metric) is not None]
        if verified:
            fig.add_trace(_verified_trace(verified, study, colour, x, y, xs, ys))
    layout = base_layout(view.title)
    layout.update(xaxis=dict(title=axis_title(x.label, xs[1]), type="log" if x.log else "linear", zeroline=False),
                  yaxis=dict(title=axis_title(y.label, ys[1]), type="log" if y.log else "linear", zeroline=False),
                  clickmode="event", hovermode="closest")
    fig.update_layout(**layout)
    return fig


def hypervolume_figure(title: str, records: list[TrialRecord], infos: list[StudyInfo]) -> go.Figure:
    """Hypervolume of each study's feasible trials so far, against trial number."""
    fig = go.Figure()
    for i, info in enumerate(infos):
        hist = hypervolume_history([r for r in records if r.study == info.name], info.objectives)
        fig.add_trace(go.Scatter(x=[n for n, _ in hist], y=[h for _, h in hist], mode="lines+markers",
                                 line=dict(shape="hv", color=STUDY_COLOURS[i % len(STUDY_COLOURS)], width=2),
                                 marker=dict(size=5), name=info.name,
                                 hovertemplate=f"{html.escape(info.name)} · trial %{{x}}<br>"
                                               "hypervolume %{y:.4g}<extra></extra>"))
    layout = base_layout(title, height=380)
    layout.update(xaxis=dict(title="Trial number", rangemode="tozero"),
                  yaxis=dict(title="Hypervolume (unitless)", rangemode="tozero"))
    fig.update_layout(**layout)
    return fig


def importances(study: optuna.Study, objectives: list[str], wanted: list[str]) -> tuple[dict[str, dict], str]:
    """``{objective: {param: importance}}`` and a note saying why some could not be computed."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.params]
    # seeded trials (the reference) carry no params; rank the params every searched trial has
    shared = set.intersection(*(set(t.params) for t in complete)) if complete else set()
    varying = sorted(p for p in shared if len({repr(t.params[p]) for t in complete}) > 1)
    if len(complete) < 2 or not varying:
        return {}, (f"{study.study_name}: importances need at least 2 completed trials whose parameters vary "
                    f"(has {len(complete)} with parameters, {len(varying)} varying).")
    out, notes = {}, []
    for obj in wanted:
        if obj not in objectives:
            continue
        idx = objectives.index(obj)
        try:
            out[obj] = optuna.importance.get_param_importances(
                study, params=varying, target=lambda t, i=idx: t.values[i],
                evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        except (ValueError, RuntimeError, ImportError) as exc:  # ImportError: fANOVA needs scikit-learn
            notes.append(f"{study.study_name} / {obj}: {exc}")
    return out, " ".join(notes)


OBJECTIVE_COLOURS = {"accuracy": "#332288", "throughput": "#44AA99", "flops": "#DDCC77", "latency_ms": "#AA4499",
                     "peak_mem_mb": "#88CCEE", "params": "#999933", "token_reduction": "#CC6677"}


def importances_figure(view: ImportancesView, per_study: dict[str, dict[str, dict]]) -> go.Figure:
    """One panel per study; in each, a bar per parameter and objective (colour = objective)."""
    studies = list(per_study)
    fig = make_subplots(rows=1, cols=len(studies), subplot_titles=studies, horizontal_spacing=0.12)
    for col, study in enumerate(studies, start=1):
        by_obj = per_study[study]
        first = next(iter(by_obj.values()))
        params = sorted(first, key=first.get)  # least important at the bottom
        for obj, imp in by_obj.items():
            fig.add_trace(go.Bar(x=[imp.get(p, 0.0) for p in params], y=params, orientation="h", name=obj,
                                 legendgroup=obj, showlegend=col == 1,
                                 marker_color=OBJECTIVE_COLOURS.get(obj, "#777"),
                                 hovertemplate="%{y}: %{x:.3f}<extra>" + html.escape(f"{study} · {obj}") + "</extra>"),
                          row=1, col=col)
        fig.update_xaxes(title_text="Importance (fANOVA)", range=[0, 1], row=1, col=col)
    n_params = max((len(imp) for by_obj in per_study.values() for imp in by_obj.values()), default=1)
    n_obj = max((len(by_obj) for by_obj in per_study.values()), default=1)
    layout = base_layout(view.title, height=max(320, 150 + 18 * n_params * n_obj))
    layout.update(barmode="group", margin=dict(l=110, r=20, t=70, b=60), legend_title_text="Objective")
    fig.update_layout(**layout)
    fig.update_yaxes(automargin=True)
    return fig
