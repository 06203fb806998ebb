"""One self-contained HTML page for one or more studies (plotly.js inlined, opens offline).

The page embeds the trial records as JSON next to the figures; ``static/dashboard.js``
draws the figures, the selected-trial panel and the sortable table from them.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any, Iterable

import plotly.io as pio
from optuna.storages import BaseStorage
from plotly.offline import get_plotlyjs

from ..results.records import StudyInfo, TrialRecord, as_storage, data_version, load_study_data, split_names
from .figures import STUDY_COLOURS, hypervolume_figure, importances, importances_figure, pareto_figure, resolve_unit
from .views import DetailView, HypervolumeView, ImportancesView, ParetoView, TableView, ViewSet, load_views

STATIC = Path(__file__).with_name("static")


def _field_specs(specs: list, records: list[TrialRecord]) -> list[dict[str, Any]]:
    """Field specs as the page's script reads them, SI prefixes resolved over all records."""
    out = []
    for spec in specs:
        scale, unit = resolve_unit(spec, [r[spec.key] for r in records if isinstance(r[spec.key], (int, float))])
        out.append(dict(key=spec.key, label=spec.label, unit=unit, scale=scale, digits=spec.digits))
    return out


def _study_summary(info: StudyInfo, records: list[TrialRecord], colour: str) -> dict[str, Any]:
    states = [r.state for r in records]
    return dict(name=info.name, colour=colour, objectives=info.objectives, model=info.model,
                checkpoint=info.checkpoint, dataset=info.dataset, subset=info.subset,
                constraints=info.constraints, complete=states.count("COMPLETE"), failed=states.count("FAIL"),
                pareto=sum(r.pareto for r in records))


# the same figure `stmsearch search` reports (stmsearch.objectives' normalised axes)
HYPERVOLUME_NOTE = ("Hypervolume of the feasible trials so far, as `stmsearch search` reports it: accuracy as a "
                    "fraction, speed-up as measured, throughput, FLOPs and latency relative to the unreduced "
                    "reference trial's. Reference point: accuracy 0, speed-up 0, relative throughput 0, "
                    "FLOPs and latency 1.1× the reference's.")


def page_data(storage: str | BaseStorage, study_names: list[str], views: ViewSet) -> dict[str, Any]:
    """Everything the page shows, as JSON-able data (figures as plotly JSON)."""
    storage = as_storage(storage)
    # taken before loading: a trial landing meanwhile makes a live page reload once more, never miss it
    version = data_version(storage, study_names)
    loaded = [load_study_data(storage, name) for name in study_names]
    records = [r for d in loaded for r in d.records]
    infos = [d.info for d in loaded]
    panels: list[dict[str, Any]] = []
    for view in views.views:
        panel: dict[str, Any] = dict(id=view.id, kind=view.kind, title=view.title, note=view.note)
        if isinstance(view, ParetoView):
            panel["figure"] = pareto_figure(view, records, study_names)
        elif isinstance(view, HypervolumeView):
            panel["figure"] = hypervolume_figure(view.title, records, infos)
            panel["note"] = panel["note"] or HYPERVOLUME_NOTE
        elif isinstance(view, ImportancesView):
            found, notes = {}, []
            for d in loaded:
                imp, note = importances(d.study, d.info.objectives, view.objectives or d.info.objectives)
                if imp:
                    found[d.info.name] = imp
                if note:
                    notes.append(note)
            panel["figure"] = importances_figure(view, found) if found else None
            panel["note"] = " ".join([view.note] + notes).strip()
        elif isinstance(view, (DetailView, TableView)):
            panel["fields"] = _field_specs(view.fields if isinstance(view, DetailView) else view.columns, records)
        if panel.get("figure") is not None:
            panel["figure"] = json.loads(pio.to_json(panel["figure"], validate=False))
        panels.append(panel)
    return dict(title=views.title, version=version,
                generated=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                studies=[_study_summary(d.info, d.records, STUDY_COLOURS[i % len(STUDY_COLOURS)])
                         for i, d in enumerate(loaded)],
                panels=panels, trials=[r.as_dict() for r in records])


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element (no ``</script>`` can close it early)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False, default=str).replace("</", "<\\/")


def render_html(data: dict[str, Any], poll: bool = False) -> str:
    """The whole page; ``poll`` makes it reload when the server reports new trials."""
    parts = {"TITLE": _escape(data["title"]), "CSS": (STATIC / "dashboard.css").read_text(),
             "PLOTLYJS": get_plotlyjs(), "DATA": _script_json(dict(data, poll=poll)),
             "APPJS": (STATIC / "dashboard.js").read_text()}
    # one pass over the template, so text inside the inserted parts is never substituted
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: parts[m.group(1)], (STATIC / "page.html").read_text())


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_html(storage: str | BaseStorage, study: str | Iterable[str], views: ViewSet | str | Path | None = None,
               poll: bool = False) -> str:
    """The dashboard page as a string."""
    names = split_names([study] if isinstance(study, str) else study)
    viewset = views if isinstance(views, ViewSet) else load_views(views)
    return render_html(page_data(storage, names, viewset), poll=poll)


def write_dashboard(storage_url: str | BaseStorage, study_name: str | Iterable[str], out_path: str | Path,
                    views: ViewSet | str | Path | None = None) -> Path:
    """Write the self-contained dashboard of one or more studies to ``out_path``."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_html(storage_url, study_name, views), encoding="utf-8")
    return out
