"""The one walk over a schedule: validation, clipping to capacity and tokens per layer.

``MergeConfig.validate_for`` (before a model is patched), the search (which clips sampled
counts to what fits, and records what ran) and every tokens-per-layer figure go through
:func:`walk`, with each method's capacity rule from the method table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .methods import get_method


class ConfigError(ValueError):
    """A merge config that cannot be used; the message names the file (if any) and field."""


@dataclass(frozen=True)
class Walk:
    """A schedule as it runs: tokens removed before each layer, tokens each layer processes,
    and the layers whose asked-for count was lowered to their capacity (``clip=True`` only)."""

    schedule: list[int]
    tokens: list[int]
    capped: list[int]


def tokens_per_layer(schedule: list[int], num_tokens: int) -> list[int]:
    """Tokens each layer processes when ``schedule[l]`` are removed just before layer ``l``."""
    out = []
    for r in schedule:
        num_tokens -= r
        out.append(num_tokens)
    return out


def token_reduction(tokens: list[int], num_tokens: int) -> float:
    """1 - (tokens processed over all layers) / (layers * num_tokens)."""
    return 1.0 - sum(tokens) / (len(tokens) * num_tokens) if tokens else 0.0


def walk(cfg: Any, depth: int, num_tokens: int = 197, clip: bool = False) -> Walk:
    """Check every layer's count against the method's capacity, or lower it there (``clip``).

    Raises :class:`ConfigError` naming the layer when a count does not fit and ``clip`` is off.
    """
    method = get_method(cfg.method)
    asked = cfg.layer_schedule(depth)
    schedule, capped, tokens, cls = [], [], num_tokens, (num_tokens - 1) // 2
    for layer, r in enumerate(asked):
        if r:
            cap = method.capacity(cfg, tokens, cls, layer, num_tokens - 1)
            if r > cap and not clip:
                source = getattr(cfg, "_source", None)
                raise ConfigError(
                    (f"{source}: " if source else "") + f"schedule[{layer}]: asks to remove {r} of {tokens} tokens, but only {cap} are mergeable "
                    f"with method={cfg.method}, window={cfg.protect}"
                    + "".join(f", {k}={getattr(cfg, k)}" for k in ("runs", "neighbourhood") if k in method.knobs))
            if r > cap:
                capped.append(layer)
                r = cap
            cls -= method.cls_shift(cfg, r, layer)
            tokens -= r
        schedule.append(r)
    return Walk(schedule, tokens_per_layer(schedule, num_tokens), capped)
