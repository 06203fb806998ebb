"""Plug token reduction into a ViM in place (ToMe style): classes are swapped, not forked.

``apply(model, config)`` turns each ``Block`` into a :class:`MergeBlock` that reduces the
residual stream before its mixer, per the config's schedule. One state dict per model
(``model._stm``) is shared by all its blocks: the config, the class-token index of every
batch item, patch counts per token, the previous mixer's internals (for metrics) and the
per-layer trace.
"""
from __future__ import annotations

import contextlib
import math

import torch

from ..models import probe
from ..models.vim import BiMamba, Block, VisionMamba
from . import fast
from . import functions as fn
from .config import ConfigError, MergeConfig
from .features import MergeStep
from .methods import get_method


class MergeBiMamba(BiMamba):
    """Records its forward direction's internals for the next layer's merge metric."""

    def direction(self, x, reverse):
        d = super().direction(x, reverse)
        if not reverse and self._stm["record"]:
            self._stm["mixer"] = d
            plan_ahead(self._stm, self._stm_layer + 1)
        return d


class MergeBlock(Block):
    """Add -> reduce tokens (schedule[layer]) -> norm -> mixer.

    Reducing the summed residual equals reducing hidden and residual streams alike: the
    merge is a weighted average with the same weights for both, so it is linear.
    """

    def forward(self, hidden, residual):
        info = self._stm
        residual = self.add(hidden, residual)
        r = info["schedule"][self._stm_layer]
        if r:
            residual = reduce_tokens(info, residual, hidden, r, self._stm_layer, self.mixer)
        info["trace"].append((residual.shape[1], info["cls"], info["sizes"], info["rep"]))
        dt_scale = info["sizes"] if info["config"].size_aware_decay else None
        return self.mix(residual, dt_scale), residual


class MergeVisionMamba(VisionMamba):
    """Resets the shared state per forward and reads each item's class token."""

    def embed(self, img):
        x = super().embed(img)
        b, t, _ = x.shape
        rep = torch.arange(t - 1, device=x.device)
        info = self._stm
        info["cls"] = torch.full((b,), self.cls_pos, dtype=torch.long, device=x.device)
        info["sizes"] = torch.ones(b, t, device=x.device)
        info["rep"] = torch.cat([rep[:self.cls_pos], rep.new_full((1,), -1), rep[self.cls_pos:]]).expand(b, t)
        info["mixer"], info["pending"], info["trace"], info["grid"] = None, None, [], math.isqrt(t - 1)
        return x

    def class_token(self, h):
        return h[torch.arange(h.shape[0], device=h.device), self._stm["cls"]]


def plan_ahead(info: dict, layer: int) -> None:
    """Start ``layer``'s plan as soon as the previous mixer has recorded, where the method's plan reads
    nothing else (``Method.ahead``). On CUDA it runs on a side stream that :func:`reduce_tokens` joins:
    its kernels then share the GPU with the rest of that mixer (the other direction's projections, the
    scan), which leave most SMs idle at small batches, instead of waiting in line behind them."""
    schedule = info["schedule"]
    if layer >= len(schedule) or not schedule[layer] or not info["ahead"] or torch.jit.is_tracing():
        return
    step = MergeStep(info["config"], info, None, None, schedule[layer], layer, None)
    side, device = None, info["cls"].device
    if device.type == "cuda":
        streams = info.setdefault("streams", {})
        if device not in streams:
            streams[device] = torch.cuda.Stream(device)
        side = streams[device]
        side.wait_stream(torch.cuda.current_stream())
    # the inputs stay referenced (the recorded direction, cls, sizes) until reduce_tokens joins the side
    # stream, and the plan's tensors are only freed after it: no block is reused while the other stream reads it
    with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
        info["pending"] = (layer, info["method"].plan(step), side)


def reduce_tokens(info: dict, residual: torch.Tensor, hidden: torch.Tensor, r: int, layer: int,
                  mixer: BiMamba) -> torch.Tensor:
    """Remove ``r`` tokens from the residual stream and update the shared state."""
    pending, info["pending"], plan = info.get("pending"), None, None
    if pending is not None:
        ahead_of, plan, side = pending
        if side is not None:
            torch.cuda.current_stream().wait_stream(side)
        plan = plan if ahead_of == layer else None
    if plan is None:
        step = MergeStep(info["config"], info, residual, hidden, r, layer, mixer)
        for observe in info.get("observers", ()):  # e.g. the saliency probe's fit, which reads every step
            observe(step)
        plan = info["method"].plan(step)
    if plan.first is not None and fast.enabled(residual):
        return fast.merge(info, residual, plan)
    info["cls"] = plan.index.gather(1, info["cls"][:, None]).squeeze(1)
    info["sizes"] = fn.reduce_sum(info["sizes"], plan)
    # a slot sits where its kept token sat and keeps that token's patch as its grid anchor
    info["rep"] = info["rep"].gather(1, fn.kept_positions(plan))
    return fn.apply_plan(residual, plan)


def _restore(model: VisionMamba) -> None:
    for m, cls in getattr(model, "_stm_classes", []):
        m.__class__ = cls
        for attr in ("_stm", "_stm_layer"):
            m.__dict__.pop(attr, None)
    model.__dict__.pop("_stm_classes", None)


def apply(model: VisionMamba, config: MergeConfig | None) -> VisionMamba:
    """Patch ``model`` in place to reduce tokens per ``config``; ``None`` restores it. Returns it."""
    _restore(model)
    if config is None:
        return model
    schedule = config.validate_for(len(model.layers), model.pos_embed.shape[1])
    method = get_method(config.method)
    info = {"config": config, "schedule": schedule, "method": method, "record": method.records(config),
            "ahead": method.ahead(config), "probe": resolve_probe(model, config)}
    swaps = [(model, type(model), _merge_class(type(model)))]
    for i, block in enumerate(model.layers):
        swaps += [(block, type(block), MergeBlock), (block.mixer, type(block.mixer), MergeBiMamba)]
        block._stm_layer = block.mixer._stm_layer = i
    for m, _, new in swaps:
        m._stm = info
        m.__class__ = new
    model._stm_classes = [(m, old) for m, old, _ in swaps]
    return model


def resolve_probe(model: VisionMamba, config: MergeConfig):
    """The saliency probe ``config``'s ``importance_source`` asks for: the model's (``probe``; ``auto``
    where it carries one), or None (``norm``)."""
    found = probe.of(model)
    if config.importance_source == "probe" and found is None:
        where = f" ({config._source})" if config._source else ""
        raise ConfigError(f"importance_source{where}: probe needs a saliency probe on the model, and "
                          f"{type(model).__name__} has none: fit one with `stmsearch fit-probe` and attach it "
                          f"(stmsearch.models.probe.attach)")
    return None if config.importance_source == "norm" else found


def _merge_class(cls: type) -> type:
    """A MergeVisionMamba subclass of ``cls`` (kept per class so isinstance still holds)."""
    if issubclass(cls, MergeVisionMamba):
        return cls
    return type(f"Merge{cls.__name__}", (MergeVisionMamba, cls), {})


def trace(model: VisionMamba) -> list[dict]:
    """Per layer after a forward: ``tokens`` entering it, ``cls_index`` and ``sizes`` (first item)."""
    info = getattr(model, "_stm", None)
    if info is None or "trace" not in info:
        raise RuntimeError("trace() needs a model patched with stmsearch.apply() and one forward pass")
    out = []
    for tokens, cls, sizes, _ in info["trace"]:
        c = int(cls[0])
        patches = [int(s) for s in sizes[0].tolist()]
        patches[c] = 0  # the class token stands for no patch (it carries weight 1 internally)
        out.append({"tokens": tokens, "cls_index": c, "sizes": patches})
    return out
