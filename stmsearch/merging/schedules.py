"""Schedules that reach a target token reduction (the benchmarks compare methods at equal reduction)."""
from __future__ import annotations

from .config import ConfigError, MergeConfig, ParametricSchedule


def for_reduction(base: MergeConfig, target: float, depth: int, num_tokens: int = 197,
                  start: int = 1) -> MergeConfig:
    """``base`` with the valid constant parametric schedule whose reduction is closest to ``target``.

    Tries every interval and per-step count from ``start`` on; ties go to the smaller count
    (gentler merges) among those within half a point. Raises :class:`ConfigError` if no schedule is valid.
    """
    best, best_err = None, (float("inf"), 0)
    for interval in range(1, depth):
        for count in range(1, num_tokens):
            cfg = base.model_copy(update={"schedule": ParametricSchedule(start=start, interval=interval, count=count)})
            try:
                cfg.validate_for(depth, num_tokens)
            except ConfigError:
                break  # larger counts at this interval are invalid too
            # within half a point of the target, prefer the gentlest per-step count
            miss = abs(cfg.token_reduction(depth, num_tokens) - target)
            err = (0.0 if miss <= 0.005 else miss, count)
            if err < best_err:
                best, best_err = cfg, err
    if best is None:
        raise ConfigError(f"no valid schedule reaches a reduction of {target:.0%} with method={base.method}")
    return best
