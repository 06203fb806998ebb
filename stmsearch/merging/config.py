"""``MergeConfig``: one token-reduction schedule and its method's knobs, validated.

The format every method shares, so one search compares them. ``schedule[l]`` tokens are
removed just before layer ``l`` runs. Round-trips through YAML and JSON.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, StrictInt, ValidationError, field_validator,
                      model_validator)

from ..yamlfile import read_text, read_yaml
from .methods import METHODS, get_method
from .schedule import ConfigError, token_reduction, tokens_per_layer, walk

__all__ = ["ConfigError", "MergeConfig", "ParametricSchedule", "config_from_dict", "load_config"]


class ParametricSchedule(BaseModel):
    """Merge ``count`` tokens every ``interval`` layers from ``start`` on, shaped over the steps.

    ``increasing`` / ``decreasing`` ramp linearly and remove about as many tokens in total
    as ``constant``. ``steps`` caps the number of merging layers.
    """

    model_config = ConfigDict(extra="forbid")
    start: int = Field(0, ge=0)
    interval: int = Field(1, ge=1)
    count: int = Field(..., ge=0)
    shape: Literal["constant", "increasing", "decreasing"] = "constant"
    steps: int | None = Field(None, ge=1)

    def expand(self, depth: int) -> list[int]:
        """The per-layer list for a model of ``depth`` layers."""
        if self.start >= depth:
            raise ConfigError(f"schedule.start: layer {self.start} is beyond the model's depth {depth}")
        layers = list(range(self.start, depth, self.interval))[: self.steps]
        k = len(layers)
        if self.shape == "constant":
            counts = [self.count] * k
        else:
            counts = [round(self.count * 2 * (i + 1) / (k + 1)) for i in range(k)]
            counts = counts if self.shape == "increasing" else counts[::-1]
        out = [0] * depth
        for layer, c in zip(layers, counts):
            out[layer] = c
        return out


class MergeConfig(BaseModel):
    """A token-reduction configuration (the README's "Merge configurations" explains each knob).

    ``method`` names an entry of the method table (:mod:`stmsearch.merging.methods`); the
    knobs below are shared, and each method reads the ones its entry lists.
    """

    model_config = ConfigDict(extra="forbid")
    _source: str | None = PrivateAttr(None)  # the file it was read from: errors found later name it
    method: str = "stm"
    schedule: Union[list[StrictInt], ParametricSchedule] = Field(default_factory=list)
    window: int | None = Field(None, ge=0, description="protected tokens each side of the class token; "
                                                       "default: the method's (0 for every method)")
    # STM knobs (ignored by the baselines except where noted). A method's own defaults (the method
    # table's ``defaults``; STM's differ) replace these when a config leaves a knob out.
    neighbourhood: Literal["1d", "2d"] = "1d"
    symmetric: bool = True
    metric: Literal["hidden", "x", "B", "dt"] = "hidden"  # also the similarity used by tome
    runs: int = Field(2, ge=2, le=8)
    # the share of a layer's mergeable tokens it must remove to merge runs of up to ``runs`` (lighter layers
    # merge pairs; 0: every layer merges runs); 1d blocks only
    runs_from: float = Field(0.0, ge=0.0, le=1.0)
    fading: Literal["estimated", "layer", "fixed", "none"] = "estimated"
    gamma: float = Field(0.95, gt=0.0, le=1.0)
    weights: Literal["size", "mean", "dt", "norm"] = "size"
    damage: Literal["cosine", "ward"] = "cosine"  # how a merge is scored: 1 - cosine, or Ward's squared error
    # damage scaled by the pair's importance (hidden-output norm): the lesser, greater or mean of the two
    importance: Literal["none", "min", "max", "mean"] = "none"
    # what "importance" is: the previous mixer's output norm, the model's saliency probe (an error where it has
    # none), or the probe where the model carries one (auto); see stmsearch.models.probe
    importance_source: Literal["norm", "probe", "auto"] = "norm"
    # ``weights: norm`` as size * importance ** weight_power: above 1 the important member of a merge
    # dominates it more (towards pruning its faint partner), below 1 less
    weight_power: float = Field(1.0, gt=0.0, le=8.0)
    # ``importance`` as importance ** importance_power (over the image's mean): steeper above 1
    importance_power: float = Field(1.0, gt=0.0, le=8.0)
    # STM's candidate pairs: ``blocks`` (inside fixed blocks of ``runs`` tokens, shifted each layer) or
    # ``free`` (any adjacent pair on one side of the window, chains of any length); 1d only
    edges: Literal["blocks", "free"] = "blocks"
    # the share of each layer's STM merges that drop the faintest tokens (pruning's order) into their outward
    # neighbour at weight 0, wherever they are; STM's damage chooses the rest (0: none); 1d only
    drop: float = Field(0.0, ge=0.0, le=1.0)
    size_aware_decay: bool = False
    seed: int = 0  # random method

    def __eq__(self, other: object) -> bool:  # the same config whichever file it came from
        return isinstance(other, MergeConfig) and self.model_dump() == other.model_dump()

    __hash__ = None  # mutable, like any pydantic model

    @field_validator("method")
    @classmethod
    def _known_method(cls, name: str) -> str:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r} (allowed: {', '.join(map(repr, METHODS))})")
        return name

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data: object) -> object:
        """Knobs a config leaves out take its method's defaults (the method table), then the fields'."""
        if isinstance(data, dict):
            method = METHODS.get(data.get("method", "stm"))
            if method is not None and method.defaults:
                return {**method.defaults, **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> "MergeConfig":
        if isinstance(self.schedule, list):
            bad = [i for i, c in enumerate(self.schedule) if c < 0]
            if bad:
                raise ValueError(f"schedule[{bad[0]}]: negative token count {self.schedule[bad[0]]}")
        if self.neighbourhood == "2d" and self.runs > 4:
            raise ValueError("runs: a 2d cell holds at most 4 tokens, got runs=%d" % self.runs)
        if self.neighbourhood == "2d" and (self.edges != "blocks" or self.drop):
            raise ValueError("edges: free and drop are 1d neighbourhood knobs (2d merges within cells)")
        if self.runs_from and (self.neighbourhood == "2d" or self.edges != "blocks"):
            raise ValueError("runs_from: a knob of 1d blocks (neighbourhood 1d, edges blocks)")
        return self

    @property
    def protect(self) -> int:
        """The protection window in effect."""
        return self.window if self.window is not None else get_method(self.method).default_window

    def layer_schedule(self, depth: int) -> list[int]:
        """Tokens removed before each of ``depth`` layers; errors name the field."""
        if get_method(self.method).plan is None:  # "none": the unreduced model
            return [0] * depth
        if isinstance(self.schedule, ParametricSchedule):
            return self.schedule.expand(depth)
        if len(self.schedule) > depth:
            extra = next((i for i in range(depth, len(self.schedule)) if self.schedule[i]), None)
            if extra is not None:
                raise ConfigError(f"schedule[{extra}]: layer index beyond the model's depth {depth}")
        return (list(self.schedule) + [0] * depth)[:depth]

    def validate_for(self, depth: int, num_tokens: int = 197) -> list[int]:
        """Check the schedule against a model; return the per-layer list.

        Raises :class:`ConfigError` if a layer asks to remove more tokens than are mergeable
        once the class token and its window are protected.
        """
        return walk(self, depth, num_tokens).schedule

    def token_reduction(self, depth: int, num_tokens: int = 197) -> float:
        """1 - (tokens processed over all layers) / (depth * num_tokens)."""
        return token_reduction(tokens_per_layer(self.layer_schedule(depth), num_tokens), num_tokens)

    def to_dict(self) -> dict:
        """Plain data, as written to files and trial attributes."""
        return self.model_dump(mode="json")

    def to_file(self, path: str | Path) -> Path:
        """Write YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
        path = Path(path)
        data = self.to_dict()
        if path.suffix in (".yaml", ".yml"):
            path.write_text(yaml.safe_dump(data, sort_keys=False))
        elif path.suffix == ".json":
            path.write_text(json.dumps(data, indent=2) + "\n")
        else:
            raise ConfigError(f"{path}: unknown config format (use .yaml, .yml or .json)")
        return path


def _path(loc: tuple) -> tuple:
    """A field path without pydantic's union-branch tags (``list[int]``, ``ParametricSchedule``)."""
    return tuple(p for p in loc if isinstance(p, int) or not (p[:1].isupper() or "[" in p))


def _dotted(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "(top level)"


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: ``source: field.path: message``. Of a union's alternatives, only the
    most specific complaint is kept (``schedule[0]: ...`` rather than also "not a mapping")."""
    errors = [(_path(err["loc"]), err) for err in exc.errors()]
    lines = []
    for path, err in errors:
        if any(len(other) > len(path) and other[:len(path)] == path for other, _ in errors):
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        line = f"{source}: {_dotted(path)}: {msg}"
        if line not in lines:
            lines.append(line)
    return "\n".join(lines)


def config_from_dict(data: dict, source: str = "config") -> MergeConfig:
    """Validate a mapping into a :class:`MergeConfig`; errors name ``source`` and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of config fields, got {type(data).__name__}")
    try:
        return MergeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | Path) -> MergeConfig:
    """Read a config written by :meth:`MergeConfig.to_file` (YAML or JSON)."""
    path = Path(path)
    if path.suffix != ".json":
        cfg = config_from_dict(read_yaml(path, "config", ConfigError), str(path))
    else:
        try:
            data = json.loads(read_text(path, "config", ConfigError))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from None
        cfg = config_from_dict(data, str(path))
    cfg._source = str(path)
    return cfg
