"""Seeds made from the space itself: a ladder of schedules from the least to the most reduction.

A search's hypervolume is mostly decided by how early it finds points along the whole speed
axis, the fast end especially (bench/SEARCH.md). ``seed_ladder: N`` in a space adds seed configs
that span that axis by rule, not by hand, in two legs:

- the dense leg, N rungs: the space's first method at its lowest start and interval, with the
  per-layer count stepped evenly across its range, lowest to highest, each rung in the space's
  shape that removes the most token-layers at that count (after capping to capacity; the first
  such shape on a tie): the densest schedules the space has, so the heavy rungs reach the fast
  end (a constant shape stops short of it: bench/SEARCH.md);
- the sparse leg, N - 1 rungs (where the space ranges the interval): the same counts but the
  lightest at the space's widest interval. A merge every few layers costs less accuracy per
  removed token where the proxy's tokens are not free (on vim_proxy_clutter the fronts past 1.6x
  are every second or third layer), and a search seeded on one interval only tends to stay there
  (bench/SEARCH.md, README "Clutter with two more sampler seeds").

Each ranged knob takes the method's default where the space's range holds it (the defaults are
chosen for fidelity, bench/bench_fidelity.py), else its least value; fixed knobs keep their
value. The protection window (tokens kept unmerged each side of the class token) is the
exception on the dense leg: it rises with the rung, evenly across the space's values from the
method's default (else the narrowest) to the widest. Merging every layer, a light schedule's
accuracy hardly moves with the window and a heavy one's mostly rises with it (over the tabular
benchmark's grid, STM within 0.02 at 10 tokens a layer or fewer, and at 18-22 on every layer
0.03-0.06 higher on average, up to 0.25). The sparse leg keeps the default window: there a
window costs accuracy on clutter (every third layer, 28 tokens: 0.752 at window 0, 0.516 at 12)
and moves nothing on the tabular grid (every third layer, 22 tokens: 0.973 against 0.974).
Every value is one of the space's, so every ladder config is a point of the space (a tabular
benchmark holds it), and a heavy rung that asks for more than a layer can remove is capped like
any trial.
"""
from __future__ import annotations

from typing import Any

from ..merging.config import MergeConfig
from ..merging.schedule import token_reduction, walk
from .space import (LADDER_PREFIX, Categorical, FloatRange, FreeSpace, IntRange, SearchSpace, Seed, knob_values,
                    model_geometry, schedule_counts)

PROTECTION = "window"  # MergeConfig's protected tokens each side of the class token, a knob of every method


def ladder_names(size: int, leg: str = "") -> list[str]:
    """The dense leg's rungs ladder-1 .. ladder-N; the sparse leg's ladder-sparse-2 .. ladder-sparse-N."""
    return [f"{LADDER_PREFIX}{leg}{i}" for i in range(1, size + 1)]


def rungs(values: list[int], size: int) -> list[int]:
    """``size`` of ``values`` evenly spaced by position, both ends included (the space checks that
    2 <= size <= len(counts), so no count repeats; a knob with fewer values than rungs repeats some)."""
    return [values[round(i * (len(values) - 1) / (size - 1))] for i in range(size)]


def _least(knob: Any) -> Any:
    """The value the unreduced reference's parameters take: the first choice, the low end, or the fixed value."""
    if isinstance(knob, Categorical):
        return knob.choices[0]
    if isinstance(knob, (IntRange, FloatRange)):
        return knob.low
    return knob


def _holds(knob: Any, value: Any) -> bool:
    if value is None:
        return False
    if isinstance(knob, FloatRange):
        return knob.low <= value <= knob.high and (knob.step is None or value in knob_values(knob))
    return value in knob_values(knob)


def _knobs(space: SearchSpace) -> dict[str, Any]:
    method = space.methods[0]
    defaults = MergeConfig(method=method.name)  # the method table's defaults filled in
    return {name: (getattr(defaults, name) if _holds(spec, getattr(defaults, name, None)) else _least(spec))
            for name, spec in method.knobs.items()}


def _protection(space: SearchSpace, size: int) -> list[Any] | None:
    """The window of each rung, rising from the method's default window (where the space's range holds it,
    else its narrowest) to the widest; None when the space fixes it or leaves it out (or ranges it without
    a grid: an unstepped float)."""
    method = space.methods[0]
    spec = method.knobs.get(PROTECTION)
    if not isinstance(spec, (Categorical, IntRange)) and not (isinstance(spec, FloatRange) and spec.step):
        return None
    values = sorted(knob_values(spec))
    default = MergeConfig(method=method.name).protect
    start = default if default in values else values[0]
    return rungs([v for v in values if v >= start], size)


def _densest(space: SearchSpace, method: str, knobs: dict[str, Any], schedule: dict[str, Any]) -> dict[str, Any]:
    """``schedule`` in the space's shape that removes the most token-layers (the first such on a tie)."""
    shapes = knob_values(space.schedule.shape) if space.schedule.shape is not None else []
    if len(shapes) < 2:
        return schedule
    depth, tokens = model_geometry(space.model)

    def reduction(shape: Any) -> float:
        cfg = MergeConfig(method=method, schedule={**schedule, "shape": shape}, **knobs)
        return token_reduction(walk(cfg, depth, tokens, clip=True).tokens, tokens)

    return {**schedule, "shape": max(shapes, key=reduction)}  # max keeps the first of equals


def _widest_interval(space: SearchSpace) -> int | None:
    """The sparse leg's interval: the space's widest, None where it does not range the interval."""
    sched = space.schedule
    if isinstance(sched, FreeSpace) or sched.interval is None:
        return None
    values = knob_values(sched.interval)
    return max(values) if len(values) > 1 else None


def _rung(space: SearchSpace, knobs: dict[str, Any], count: int, interval: int | None) -> dict[str, Any]:
    """One rung's config: ``count`` tokens a layer at ``interval`` (None: the space's least)."""
    sched, method = space.schedule, space.methods[0].name
    if isinstance(sched, FreeSpace):
        schedule: Any = [count if layer in sched.layers else 0 for layer in range(model_geometry(space.model)[0])]
    else:
        schedule = {k: _least(getattr(sched, k)) for k in ("start", "interval", "shape", "steps")
                    if getattr(sched, k) is not None}
        if interval is not None:
            schedule["interval"] = interval
        schedule = _densest(space, method, knobs, {**schedule, "count": count})
    return {"method": method, "schedule": schedule, **knobs}


def ladder_seeds(space: SearchSpace) -> list[Seed]:
    """The space's ``seed_ladder`` rungs as seeds, the dense leg then the sparse one (none when it is 0)."""
    if not space.seed_ladder:
        return []
    knobs = _knobs(space)
    windows = _protection(space, space.seed_ladder)
    counts = rungs(schedule_counts(space.schedule), space.seed_ladder)
    out = [Seed(name=name, config=_rung(space, knobs if windows is None else {**knobs, PROTECTION: windows[i]},
                                        count, None))
           for i, (name, count) in enumerate(zip(ladder_names(len(counts)), counts))]
    widest = _widest_interval(space)
    if widest is not None:
        out += [Seed(name=name, config=_rung(space, knobs, count, widest))
                for name, count in list(zip(ladder_names(len(counts), "sparse-"), counts))[1:]]
    return out


def warm_start(space: SearchSpace) -> list[Seed]:
    """Every seed a study evaluates after the reference, in order: the space's own, then the ladder."""
    return [*space.seeds, *ladder_seeds(space)]
