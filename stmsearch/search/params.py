"""Between a search space, Optuna parameters and MergeConfigs.

The parameter space is flat: every trial suggests every ranged knob of every method, and
the knobs of methods other than the sampled one are inert. Optuna's NSGA-II crosses over
only parameters present in *all* completed trials, so a conditional space would leave it
sampling most knobs at random.

Parameter names: ``method``; ``start``/``interval``/``count``/``shape``/``steps`` (parametric
schedule) or ``layerNN`` (free schedule); ``<method>.<knob>`` for knobs.
"""
from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

from ..merging.config import MergeConfig, ParametricSchedule, config_from_dict
from ..merging.schedule import walk
from .space import REFERENCE, Categorical, FloatRange, FreeSpace, IntRange, SearchSpace, model_geometry

SCHEDULE_FIELDS = ("start", "interval", "count", "shape", "steps")


def _distribution(knob: Any) -> BaseDistribution | None:
    """The Optuna distribution of a ranged knob; None for a fixed value."""
    if isinstance(knob, Categorical):
        return CategoricalDistribution(knob.choices)
    if isinstance(knob, IntRange):
        return IntDistribution(knob.low, knob.high, step=knob.step, log=knob.log)
    if isinstance(knob, FloatRange):
        return FloatDistribution(knob.low, knob.high, step=knob.step, log=knob.log)
    return None


def _schedule_knobs(space: SearchSpace) -> dict[str, Any]:
    sched = space.schedule
    if isinstance(sched, FreeSpace):
        rng = IntRange(type="int", low=sched.min_per_layer, high=sched.max_per_layer, step=sched.step)
        return {f"layer{layer:02d}": rng for layer in sorted(sched.layers)}
    return {k: getattr(sched, k) for k in SCHEDULE_FIELDS if getattr(sched, k) is not None}


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """Every searched parameter and its distribution, in suggestion order."""
    out: dict[str, BaseDistribution] = {}
    if len(space.methods) > 1:
        out["method"] = CategoricalDistribution([m.name for m in space.methods])
    for name, knob in _schedule_knobs(space).items():
        if (d := _distribution(knob)) is not None:
            out[name] = d
    for m in space.methods:
        for knob_name, knob in m.knobs.items():
            if (d := _distribution(knob)) is not None:
                out[f"{m.name}.{knob_name}"] = d
    return out


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Define-by-run: suggest every parameter (works on Ray's suggest-capturing trial wrapper too)."""
    params = {}
    for name, d in distributions(space).items():
        if isinstance(d, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, list(d.choices))
        elif isinstance(d, IntDistribution):
            params[name] = trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        else:
            params[name] = trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
    return params


def _value(knob: Any, name: str, params: dict[str, Any]) -> Any:
    return params[name] if _distribution(knob) is not None else knob


def config_from_params(space: SearchSpace, params: dict[str, Any]) -> MergeConfig:
    """The MergeConfig a parameter set describes, before clipping to capacity."""
    method = params.get("method", space.methods[0].name)
    mspace = next(m for m in space.methods if m.name == method)
    knobs = {k: _value(v, f"{method}.{k}", params) for k, v in mspace.knobs.items()}
    sched_knobs = _schedule_knobs(space)
    values = {k: _value(v, k, params) for k, v in sched_knobs.items()}
    if isinstance(space.schedule, FreeSpace):
        depth, _ = model_geometry(space.model)
        schedule: Any = [0] * depth
        for layer in space.schedule.layers:
            schedule[layer] = values[f"layer{layer:02d}"]
    else:
        schedule = ParametricSchedule(**values)
    return MergeConfig(method=method, schedule=schedule, **knobs)


def clip_to_capacity(cfg: MergeConfig, depth: int, tokens: int) -> tuple[MergeConfig, list[int]]:
    """Cap each layer's count at what can be merged there (the schedule walk with ``clip``).

    Returns the config (unchanged when nothing was capped, else with a per-layer schedule)
    and the layers that were capped. Capping keeps every sampled point evaluable; the
    trial records the schedule actually run.
    """
    run = walk(cfg, depth, tokens, clip=True)
    if not run.capped:
        return cfg, []
    return cfg.model_copy(update={"schedule": run.schedule}), run.capped


def seed_config(space: SearchSpace, name: str) -> MergeConfig:
    """The config of a named seed; ``reference`` is the unreduced model."""
    if name == REFERENCE:
        return MergeConfig(method="none")
    from .ladder import warm_start  # ladder builds seeds from a space; it needs nothing of this module

    seeds = warm_start(space)
    seed = next((s for s in seeds if s.name == name), None)
    if seed is None:
        raise KeyError(f"seed config {name!r} is not in the search space (seeds: "
                       f"{', '.join(s.name for s in seeds) or 'none'})")
    return config_from_dict(seed.config, f"seeds.{name}")


def _fits(d: BaseDistribution, value: Any) -> bool:
    try:
        return d._contains(d.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def project(space: SearchSpace, cfg: MergeConfig) -> dict[str, Any]:
    """Parameters that reproduce ``cfg`` where the space can express them (for enqueuing seeds)."""
    wanted: dict[str, Any] = {"method": cfg.method}
    if isinstance(cfg.schedule, ParametricSchedule):
        wanted.update(cfg.schedule.model_dump())
    else:
        wanted.update({f"layer{i:02d}": c for i, c in enumerate(cfg.schedule)})
    wanted.update({f"{cfg.method}.{k}": getattr(cfg, k) for k in MergeConfig.model_fields
                   if k not in ("method", "schedule")})
    return {n: wanted[n] for n, d in distributions(space).items() if n in wanted and _fits(d, wanted[n])}


def reference_params(space: SearchSpace) -> dict[str, Any]:
    """A full parameter set standing for the unreduced model: the least reduction expressible."""
    out = {}
    for name, d in distributions(space).items():
        if isinstance(d, CategoricalDistribution):
            out[name] = d.choices[0]
        else:
            out[name] = d.low
    return out


def grid(space: SearchSpace) -> dict[str, list[Any]]:
    """Every parameter's values for the grid sampler; float ranges need a step."""
    out = {}
    for name, d in distributions(space).items():
        if isinstance(d, CategoricalDistribution):
            out[name] = list(d.choices)
        elif isinstance(d, IntDistribution):
            out[name] = list(range(d.low, d.high + 1, d.step))
        elif d.step is None:
            raise ValueError(f"sampler grid: parameter {name!r} is a float range without a step; "
                             "give it a step or categorical choices")
        else:
            n = int(round((d.high - d.low) / d.step)) + 1
            out[name] = [d.low + i * d.step for i in range(n)]
    return out


def grid_size(space: SearchSpace) -> int:
    """Number of points in the grid."""
    return math.prod(len(v) for v in grid(space).values())
