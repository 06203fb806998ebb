"""Search spaces: the YAML schema, its loader and up-front checks.

A space names the model, data and objectives, the methods and knob ranges to search, the
schedule form, the sampler and budget, and seed configs. Everything is checked before any
trial starts; an error names the file, the field and the allowed values.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, StrictBool, StrictFloat, StrictInt,
                      StrictStr, Tag, ValidationError, model_validator)

from .. import objectives as obj
from ..merging.config import ConfigError, MergeConfig, ParametricSchedule, config_from_dict
from ..merging.methods import get_method, searchable_methods
from ..yamlfile import read_yaml

REFERENCE = "reference"  # seed name of the unreduced model, always evaluated first
LADDER_PREFIX = "ladder-"  # seed_ladder's seeds: ladder-1 (lightest) .. ladder-N (heaviest), then ladder-sparse-2 .. -N
_TAGS = {"categorical", "int", "float", "fixed", "parametric", "free"}


class SpaceError(ValueError):
    """A search space that cannot be used; the message names the file and field."""


class Strict(BaseModel):
    """A mapping whose unknown keys are errors that list the allowed ones."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                raise ValueError(f"unknown key {unknown[0]!r} (allowed: {', '.join(cls.model_fields)})")
        return data


Scalar = Union[StrictBool, StrictInt, StrictFloat, StrictStr]


class Categorical(Strict):
    """One of ``choices``."""

    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)


class IntRange(Strict):
    """An integer in [low, high] (inclusive), optionally stepped or log-scaled."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> "IntRange":
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) is below low ({self.low})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("log: needs low >= 1 and step 1")
        return self


class FloatRange(Strict):
    """A float in [low, high], optionally stepped or log-scaled."""

    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> "FloatRange":
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) is below low ({self.low})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log: needs low > 0 and no step")
        return self


def _knob_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("type") if value.get("type") in ("categorical", "int", "float") else None
    if isinstance(value, BaseModel):
        return value.type
    return "fixed"


Knob = Annotated[
    Union[Annotated[Categorical, Tag("categorical")], Annotated[IntRange, Tag("int")],
          Annotated[FloatRange, Tag("float")], Annotated[Scalar, Tag("fixed")]],
    Discriminator(_knob_tag, custom_error_type="knob",
                  custom_error_message="a knob is a fixed value or a mapping with type: categorical, int or float"),
]
Distribution = Union[Categorical, IntRange, FloatRange]


class MethodSpace(Strict):
    """A method and its knob values or ranges (unlisted knobs keep MergeConfig defaults).

    ``knobs: all`` searches every knob of the method over its default ranges (the method table's).
    """

    name: str
    knobs: dict[str, Knob] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _all_knobs(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("knobs") == "all" and data.get("name") in searchable_methods():
            data = {**data, "knobs": dict(get_method(data["name"]).knobs)}
        return data

    @model_validator(mode="after")
    def _check(self) -> "MethodSpace":
        allowed = searchable_methods()
        if self.name not in allowed:
            raise ValueError(f"name: unknown method {self.name!r} (allowed: {', '.join(allowed)})")
        return self


class ParametricSpace(Strict):
    """Merge ``count`` tokens every ``interval`` layers from ``start``, shaped (see ParametricSchedule)."""

    form: Literal["parametric"]
    start: Knob = 0
    interval: Knob = 1
    count: Knob
    shape: Knob = "constant"
    steps: Knob | None = None


class FreeSpace(Strict):
    """An independent token count for each listed layer."""

    form: Literal["free"]
    layers: list[int] = Field(min_length=1)
    min_per_layer: int = Field(0, ge=0)
    max_per_layer: int = Field(ge=1)
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "FreeSpace":
        if len(set(self.layers)) != len(self.layers):
            raise ValueError("layers: listed more than once")
        if self.max_per_layer < self.min_per_layer:
            raise ValueError(f"max_per_layer ({self.max_per_layer}) is below min_per_layer ({self.min_per_layer})")
        return self


def _form_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("form") if value.get("form") in ("parametric", "free") else None
    return getattr(value, "form", None)


ScheduleSpace = Annotated[
    Union[Annotated[ParametricSpace, Tag("parametric")], Annotated[FreeSpace, Tag("free")]],
    Discriminator(_form_tag, custom_error_type="schedule_form",
                  custom_error_message="form: must be 'parametric' or 'free'"),
]


class Constraints(Strict):
    """Feasibility limits; infeasible trials are kept but left off the Pareto front."""

    min_accuracy: float | None = Field(None, ge=0.0, le=1.0)
    max_flops: int | None = Field(None, gt=0)
    min_speedup: float | None = Field(None, gt=0.0)  # throughput over the reference trial's


def knob_values(knob: Any) -> list[Any]:
    """Every value a knob spec takes: a categorical's choices, an int range stepped, a stepped float
    range, or the fixed value itself. SpaceError for a float range without a step (no finite grid)."""
    if isinstance(knob, Categorical):
        return list(knob.choices)
    if isinstance(knob, IntRange):
        return list(range(knob.low, knob.high + 1, knob.step))
    if isinstance(knob, FloatRange):
        if knob.step is None:
            raise SpaceError(f"a float range without a step has no finite grid ({knob.low}..{knob.high})")
        n = int(round((knob.high - knob.low) / knob.step)) + 1
        return [knob.low + i * knob.step for i in range(n)]
    return [knob]


def schedule_counts(schedule: "ParametricSpace | FreeSpace") -> list[int]:
    """The non-zero per-layer counts a schedule space can take, lowest first (0 is the unreduced model)."""
    values = (range(schedule.min_per_layer, schedule.max_per_layer + 1, schedule.step)
              if isinstance(schedule, FreeSpace) else knob_values(schedule.count))
    return sorted({v for v in values if v > 0})


class SamplerSpec(Strict):
    """The Optuna sampler: a short name (``nsga2``, ``tpe``, ``random``, ``grid``, ``gp``, ``qmc``, ...), any
    Optuna sampler class name (``NSGAIIISampler``) or ``module.Class``; ``options`` are its constructor's
    keywords (checked against its signature before any trial, in :mod:`stmsearch.search.samplers`).
    TPE by default (the best of the samplers on bench/bench_search.py's table); NSGA-II's first
    generation is random: keep population_size below the budget."""

    name: str = Field("tpe", pattern=r"^[A-Za-z_][\w.]*$")
    seed: int | None = 0
    population_size: int | None = Field(None, ge=2)  # NSGA-II's (also settable under options)
    n_startup_trials: int | None = Field(None, ge=0)  # TPE's and GP's random start
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "SamplerSpec":
        both = [k for k in ("population_size", "n_startup_trials") if getattr(self, k) is not None and k in self.options]
        if both:
            raise ValueError(f"options: {both[0]} is given twice (as sampler.{both[0]} and under options)")
        return self


class Budget(Strict):
    """How many trials a study holds in all (re-runs continue up to it), and a time limit per run.

    ``timeout_s`` counts from the start of a run (Ray startup included); a re-run continues.
    """

    trials: int = Field(ge=1)
    timeout_s: float | None = Field(None, gt=0)


class Seed(Strict):
    """A named MergeConfig evaluated before sampling starts."""

    name: str = Field(min_length=1)
    config: dict[str, Any]

    @model_validator(mode="after")
    def _check(self) -> "Seed":
        if self.name == REFERENCE:
            raise ValueError(f"name: {REFERENCE!r} is reserved for the unreduced model, always evaluated first")
        return self


class ThroughputSpec(Strict):
    """How speed is found (passed to evaluate; the estimators are explained in the README).

    ``estimator``: ``paired`` (the config and the unreduced model timed in turns; default on a
    GPU), ``model`` (predicted from a latency table calibrated at the study's start, or from
    ``table``; default on the CPU) or ``measured`` (timed alone, compared with the reference trial).
    """

    estimator: Literal["paired", "model", "measured"] | None = None
    table: str | None = None  # latency table JSON for estimator model (default: calibrated when the study starts)
    batch: int | None = Field(None, ge=1)  # default: evaluate()'s (the eval batch on GPU, <= 64 on CPU)
    runs: int | None = Field(None, ge=1)  # timed runs (pairs for paired); default: 7 pairs, or 5 on GPU / 3 on CPU
    bf16: bool = False
    cuda_graphs: bool = False


_LATER_OPTIONS = {("skip_bad_images",): False, ("probe",): None, ("verify",): False, ("throughput", "estimator"): None,
                  ("throughput", "table"): None, ("sampler", "options"): {}, ("seed_ladder",): 0}


class SearchSpace(Strict):
    """One search: what to evaluate, what to vary, how to sample, how long."""

    description: str = ""
    model: str
    checkpoint: str | None = None
    probe: str | None = None  # a saliency probe file fitted to the checkpoint (stmsearch fit-probe)
    dataset: str
    subset: int | None = Field(None, ge=1)  # images evaluated per trial (None: the whole set)
    skip_bad_images: bool = False  # leave unreadable image files out (counted in metrics.skipped) instead of failing
    verify: bool = False  # after the search, re-measure the front on the whole set (stmsearch verify)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")  # checked before any study is made
    batch_size: int = Field(256, ge=1)
    objectives: list[str] = Field(min_length=2, max_length=3)
    constraints: Constraints = Field(default_factory=Constraints)
    methods: list[MethodSpace] = Field(min_length=1)
    schedule: ScheduleSpace
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    budget: Budget
    seeds: list[Seed] = Field(default_factory=list)
    seed_ladder: int = Field(0, ge=0)  # seeds spanning the speed axis, made by rule (stmsearch.search.ladder)
    throughput: ThroughputSpec = Field(default_factory=ThroughputSpec)
    evaluator: str | None = Field(None, pattern=r"^[\w.]+:\w+$")  # module:function, default evaluate()

    @model_validator(mode="after")
    def _check(self) -> "SearchSpace":
        unknown = [o for o in self.objectives if o not in obj.objective_names()]
        if unknown:
            raise ValueError(f"objectives: unknown objective {unknown[0]!r} (allowed: {', '.join(obj.objective_names())})")
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError("objectives: each objective at most once")
        if "speedup" in self.objectives and self.throughput.estimator == "measured":
            raise ValueError("objectives: speedup needs throughput.estimator paired or model (measured times a config "
                             "alone, so its speed-up is only known against the reference trial after the fact)")
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError("methods: each method at most once")
        seeds = [s.name for s in self.seeds]
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds: names must be unique")
        if self.seed_ladder:
            counts = schedule_counts(self.schedule)
            if not 2 <= self.seed_ladder <= len(counts):
                raise ValueError(f"seed_ladder: {self.seed_ladder} rungs; a ladder takes 2 up to the schedule's "
                                 f"{len(counts)} non-zero counts ({counts})")
            clash = [s for s in seeds if s.startswith(LADDER_PREFIX)]
            if clash:
                raise ValueError(f"seeds: the name {clash[0]!r} is kept for seed_ladder's ({LADDER_PREFIX}1, ...)")
        return self

    def estimator(self) -> str:
        """The speed estimator in effect: the space's, else ``paired`` on a GPU and ``model`` on the CPU."""
        if self.throughput.estimator:
            return self.throughput.estimator
        return "model" if self.device == "cpu" or (self.device == "auto" and not _cuda()) else "paired"

    @property
    def directions(self) -> list[str]:
        """Optuna study directions, in objective order."""
        return [obj.objective(o).direction for o in self.objectives]

    def identity(self) -> str:
        """Short hash of what is searched (not the budget): re-running the same space resumes its study."""
        data = self.model_dump(mode="json", exclude={"budget", "description"})
        # options added later count only when set, so the spaces of earlier versions keep their studies;
        # the latency table file is how speed is read, not what is searched
        for path, default in _LATER_OPTIONS.items():
            *parents, key = path
            where = data
            for p in parents:
                where = where[p]
            if where.get(key) == default or path == ("throughput", "table"):
                where.pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@lru_cache(maxsize=None)
def model_geometry(name: str) -> tuple[int, int]:
    """(depth, tokens incl. the class token) of a registered model, built on the meta device."""
    import torch

    from ..models import model_constructor
    with torch.device("meta"):
        cfg = model_constructor(name)().cfg
    return cfg.depth, cfg.num_patches + 1


def _loc(parts: tuple) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p not in _TAGS:
            out += f".{p}" if out else str(p)
    return out or "(top level)"


def format_errors(exc: ValidationError, source: str, prefix: tuple = ()) -> str:
    """One line per problem: ``source: field.path: message``."""
    lines = []
    for err in exc.errors():
        msg, loc = err["msg"].removeprefix("Value error, "), prefix + tuple(err["loc"])
        field = re.match(r"^([A-Za-z_]\w*): ", msg)  # a model check naming its field: join it to the path
        if err["type"] == "value_error" and field:
            loc, msg = loc + (field.group(1),), msg[field.end():]
        lines.append(f"{source}: {_loc(loc)}: {msg}")
    return "\n".join(lines)


def _corners(knob: Any) -> list[tuple[str, Any]]:
    """(suffix, value) pairs that bound a knob: its value, every choice, or low and high."""
    if isinstance(knob, Categorical):
        return [(f".choices[{i}]", c) for i, c in enumerate(knob.choices)]
    if isinstance(knob, (IntRange, FloatRange)):
        return [(".low", knob.low), (".high", knob.high)]
    return [("", knob)]


def _check_values(target: type[BaseModel], base: dict, knobs: dict, where: str, source: str) -> None:
    """Each knob's bounding values must be valid for ``target`` (MergeConfig or ParametricSchedule)."""
    for name, knob in knobs.items():
        if knob is None:
            continue
        for suffix, value in _corners(knob):
            try:
                target.model_validate({**base, name: value})
            except ValidationError as exc:
                errs = [e for e in exc.errors() if e["loc"][:1] == (name,)] or exc.errors()
                msg = errs[0]["msg"].removeprefix("Value error, ")
                allowed = "" if "Input should be '" in msg else _allowed(target, name)
                raise SpaceError(f"{source}: {where}.{name}{suffix}: {msg}{allowed}") from None


def _allowed(target: type[BaseModel], name: str) -> str:
    if name not in target.model_fields:
        return ""
    ann = str(target.model_fields[name].annotation)
    found = re.findall(r"'([^']+)'", ann) if "Literal" in ann else []
    return f" (allowed: {', '.join(found)})" if found else ""


def check_space(space: SearchSpace, source: str) -> SearchSpace:
    """Checks that need the model: knob values, schedule layers, and every seed config."""
    try:
        depth, tokens = model_geometry(space.model)
    except ValueError as exc:
        raise SpaceError(f"{source}: model: {exc}") from None
    for i, m in enumerate(space.methods):
        allowed = list(get_method(m.name).knobs)
        unknown = [k for k in m.knobs if k not in allowed]
        if unknown:
            raise SpaceError(f"{source}: methods[{i}].knobs.{unknown[0]}: not a knob of {m.name} "
                             f"(allowed: {', '.join(allowed)})")
        _check_values(MergeConfig, {"method": m.name}, m.knobs, f"methods[{i}].knobs", source)
    sched = space.schedule
    if isinstance(sched, ParametricSpace):
        knobs = {k: getattr(sched, k) for k in ("start", "interval", "count", "shape", "steps")}
        _check_values(ParametricSchedule, {"count": 0}, knobs, "schedule", source)
        start_max = max(v for _, v in _corners(sched.start))
        if start_max >= depth:
            raise SpaceError(f"{source}: schedule.start: {start_max} is beyond {space.model}'s depth {depth} "
                             f"(allowed: 0..{depth - 1})")
    else:
        bad = [layer for layer in sched.layers if not 0 <= layer < depth]
        if bad:
            raise SpaceError(f"{source}: schedule.layers: layer {bad[0]} is outside {space.model}'s "
                             f"layers (allowed: 0..{depth - 1})")
    _check_counts(space, tokens, source)
    for i, seed in enumerate(space.seeds):
        try:
            config_from_dict(seed.config, f"{source}: seeds[{i}].config").validate_for(depth, tokens)
        except ConfigError as exc:
            msg = str(exc)
            raise SpaceError(msg if msg.startswith(source) else f"{source}: seeds[{i}].config.{msg}") from None
    return space


def most_removable(space: SearchSpace, tokens: int) -> tuple[int, str]:
    """The most tokens one layer can remove under any of the space's methods and knob values
    (of the full sequence, at the first layers), and the method that reaches it."""
    best, who = 0, ""
    for m in space.methods:
        method = get_method(m.name)
        knobs = {k: [v for _, v in _corners(m.knobs[k])] for k in ("window", "runs", "neighbourhood", "symmetric")
                 if k in m.knobs}
        for combo in itertools.product(*knobs.values()):
            try:
                cfg = MergeConfig(method=m.name, **dict(zip(knobs, combo)))
            except ValueError:
                continue
            cap = max(method.capacity(cfg, tokens, (tokens - 1) // 2, layer, tokens - 1) for layer in range(8))
            if cap > best:
                best, who = cap, m.name
    return best, who


def _check_counts(space: SearchSpace, tokens: int, source: str) -> None:
    """Refuse token counts no layer could remove: every trial would be capped, and the sampler
    would learn from parameters that never ran."""
    sched = space.schedule
    field, high = (("schedule.count", max(v for _, v in _corners(sched.count)))
                   if isinstance(sched, ParametricSpace) else ("schedule.max_per_layer", sched.max_per_layer))
    limit, method = most_removable(space, tokens)
    if high > limit:
        raise SpaceError(f"{source}: {field}: {high} tokens in one layer is more than {space.model} can remove "
                         f"({limit} at most, with {method} and the space's knobs); allowed: up to {limit}")


def with_device(space: SearchSpace, device: str, source: str = "--device") -> SearchSpace:
    """The space on another device (``--device``), checked like the space's own field."""
    try:
        return SearchSpace.model_validate({**space.model_dump(mode="json"), "device": device})
    except ValidationError as exc:
        raise SpaceError(format_errors(exc, source)) from None


FILE_FIELDS = ("checkpoint", "probe", "dataset")  # the fields naming files or folders of this machine


def _expand_env(data: Any) -> Any:
    """``${VAR}`` in checkpoint, probe and dataset, so one shipped space serves every machine."""
    if isinstance(data, dict):
        for key in FILE_FIELDS:
            if isinstance(data.get(key), str):
                data[key] = os.path.expandvars(data[key])
    return data


def parse_space(data: Any, source: str = "space") -> SearchSpace:
    """Validate a mapping into a checked :class:`SearchSpace`."""
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: expected a mapping of search-space fields, got {type(data).__name__}")
    try:
        space = SearchSpace.model_validate(_expand_env(dict(data)))
    except ValidationError as exc:
        raise SpaceError(format_errors(exc, source)) from None
    return check_space(space, source)


def load_space(path: str | Path) -> SearchSpace:
    """Read and check a search-space YAML file (``yaml.safe_load``)."""
    return parse_space(read_yaml(path, "search-space", SpaceError), str(path))


def unset_variables(space: SearchSpace) -> list[str]:
    """Fields still holding an unexpanded ``${VAR}`` (the variable was not set)."""
    return [f"{k}: {v}" for k, v in ((k, getattr(space, k)) for k in FILE_FIELDS) if v and re.search(r"\$\{?\w+\}?", v)]
