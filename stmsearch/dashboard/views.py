"""The dashboard's view definitions (``dashboards/*.yaml``), validated with pydantic.

The packaged ``default_views.yaml`` is used unless ``--views FILE`` names another; it is a
copy of ``dashboards/default.yaml`` in the repository (a test keeps them identical).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..merging.config import format_validation_error
from ..objectives import METRICS, directions
from ..yamlfile import read_yaml

DEFAULT_VIEWS = Path(__file__).with_name("default_views.yaml")
RECORD_FIELDS = ("study", "number", "state", "method", "window", "feasible", "is_reference", "pareto", "seed_config")


def _one_of(allowed):
    def check(value: str) -> str:
        names = allowed()
        if value not in names:
            raise ValueError(f"unknown {value!r} (allowed: {', '.join(names)})")
        return value
    return AfterValidator(check)


# a plotted metric needs a direction (it decides the front); a shown field is any numeric metric or record field
Metric = Annotated[str, _one_of(lambda: list(directions()))]
FieldKey = Annotated[str, _one_of(lambda: list(RECORD_FIELDS) + [n for n, m in METRICS.items() if m.numeric])]


class ViewsError(ValueError):
    """A view file that cannot be used; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Format(_Strict):
    """How a number is labelled and formatted."""

    label: str
    unit: str = ""
    scale: float = 1.0
    digits: int | None = Field(None, ge=0, le=8)
    si_prefix: bool = False  # pick k/M/G/T for the unit from the largest value shown


class FieldSpec(_Format):
    """A trial field shown in the detail panel or the table."""

    key: FieldKey


class AxisSpec(_Format):
    """A plot axis: a metric, whose direction decides which points are on the front."""

    metric: Metric
    log: bool = False


class _View(_Strict):
    id: str = Field(..., pattern=r"^[A-Za-z][\w-]*$")
    title: str
    note: str = ""


class ParetoView(_View):
    kind: Literal["pareto"]
    x: AxisSpec
    y: AxisSpec


class DetailView(_View):
    kind: Literal["detail"]
    fields: list[FieldSpec]


class HypervolumeView(_View):
    kind: Literal["hypervolume"]


class ImportancesView(_View):
    kind: Literal["importances"]
    objectives: list[Metric] | None = None  # default: every objective of the first study


class TableView(_View):
    kind: Literal["table"]
    columns: list[FieldSpec]


View = Annotated[Union[ParetoView, DetailView, HypervolumeView, ImportancesView, TableView],
                 Field(discriminator="kind")]


class ViewSet(_Strict):
    """A whole dashboard: its title and the views in page order."""

    title: str = "Token-merging schedule search"
    views: list[View]

    @model_validator(mode="after")
    def _unique(self) -> "ViewSet":
        ids = [v.id for v in self.views]
        dup = next((i for i in ids if ids.count(i) > 1), None)
        if dup is not None:
            raise ValueError(f"view id {dup!r} is used twice")
        return self


def load_views(path: str | Path | None = None) -> ViewSet:
    """Read and validate a view file (the packaged default when ``path`` is None)."""
    path = Path(path) if path is not None else DEFAULT_VIEWS
    data = read_yaml(path, "view", ViewsError)
    if not isinstance(data, dict):
        raise ViewsError(f"{path}: expected a mapping with 'views', got {type(data).__name__}")
    try:
        return ViewSet.model_validate(data)
    except ValidationError as exc:
        raise ViewsError(format_validation_error(exc, str(path))) from None

