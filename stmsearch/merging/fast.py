"""The GPU fast path of a merge step (kernels in :mod:`stmsearch.ops.merge_triton`).

Plans come out the same as the torch functions' (:mod:`stmsearch.merging.functions`), so a
method's result does not depend on the path; only the number of launches does. Used where
:func:`enabled` holds: CUDA tensors with triton installed, not under a trace (FLOP counting
sees the torch ops), and ``STMSEARCH_FAST_MERGE`` not ``0``.
"""
from __future__ import annotations

import os

import torch

from ..ops import merge_triton as mt
from . import features as ft
from . import functions as fn
from .capacity import block_offset, split_sides

def enabled(x: torch.Tensor) -> bool:
    """Whether merges of ``x`` take the fast path."""
    return os.environ.get("STMSEARCH_FAST_MERGE", "1") != "0" and mt.fast_merge_available(x)


def chain(score: torch.Tensor, cls: torch.Tensor, r: int, weight: torch.Tensor | None, left: int | None = None,
          blocks: tuple[int, int, int] | None = None) -> fn.Plan:
    """Merge along the ``r`` least-scored edges of ``score`` (B, T-1) (``BIG`` = not allowed): see
    :func:`stmsearch.ops.merge_triton.select_chain` for ``left`` (a side's share) and ``blocks``."""
    index, keep, first, ok = mt.select_chain(score, cls, r, left, blocks)
    fn._check(ok.all(), fn.SHORTAGE.format(r))
    return fn.Plan(index, weight, keep, index.shape[1] - r, first)


def random(step: ft.MergeStep, draw: torch.Tensor) -> fn.Plan:
    """:func:`functions.random_plan` for ``step``: one draw per edge, shared by the batch (a row
    stride of 0), masked to pairs in the kernel."""
    pairs = (step.window, 2, block_offset(step.layer, 2))
    return chain(draw.expand(step.cls.shape[0], -1), step.cls, step.r, weights_or_none(step), blocks=pairs)


def stm_1d(step: ft.MergeStep) -> fn.Plan:
    """:func:`functions.stm_1d` for ``step``: damage, fading and blocks (or free edges) in one kernel;
    drops in three more."""
    cfg = step.config
    feat, channels_first, bias = ft.metric_source(step)
    importance, weight = _importance_vectors(step)
    runs = step.runs if cfg.edges == "blocks" else None
    score = mt.edge_scores(feat, channels_first, step.cls, step.window, runs, block_offset(step.layer, step.runs),
                           weight, cfg.damage == "ward", fading(step), bias, importance, cfg.importance)
    sides = split_sides(step.r, step.layer) if cfg.symmetric else None
    if cfg.drop:
        weight = _drops(step, score, weight, sides)
    return chain(score, step.cls, step.r, weight, None if sides is None else sides[0])


def _drops(step: ft.MergeStep, score: torch.Tensor, weight: torch.Tensor | None,
           sides: tuple[int, int] | None) -> torch.Tensor | None:
    """:func:`functions.stm_1d`'s drops: ``drop`` of each side's merges (rounded down) go to the faintest
    tokens' edges, which ``score`` then ranks first (edited in place), so one choice over it takes the
    drops and the least damage beside them. Returns the merge weights with the dropped tokens at 0."""
    k = [int(step.config.drop * n) for n in (sides or (step.r,))]
    if not sum(k):
        return weight
    _, keep, _, ok = mt.select_chain(mt.drop_scores(ft.importance(step), step.cls, step.window), step.cls, sum(k),
                                     None if sides is None else k[0])
    fn._check(ok.all(), fn.SHORTAGE.format(sum(k)))
    return mt.apply_drops(keep, step.cls, score, weight)


def stm_2d(step: ft.MergeStep) -> fn.Plan:
    """:func:`functions.stm_2d` for ``step``: cells and damage in one kernel, choice and the slots'
    listing in another."""
    cfg = step.config
    feat, channels_first, bias = ft.metric_source(step)
    importance, weight = _importance_vectors(step)
    left = split_sides(step.r, step.layer)[0] if cfg.symmetric else None
    index, keep, first, order, ok = mt.stm_2d_plan(feat, channels_first, step.cls, step.state["rep"],
                                                   step.state["grid"], step.r, step.window, cfg.runs, step.layer,
                                                   left, weight, cfg.damage == "ward", fading(step), bias,
                                                   importance, cfg.importance)
    fn._check(ok.all(), fn.SHORTAGE.format(step.r))
    return fn.Plan(index, weight, keep, index.shape[1] - step.r, first, order)


def _importance_vectors(step: ft.MergeStep) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(features.damage_importance, features.weights_or_none) of ``step``: one kernel for what
    derives from the importance (the damage scale, ``norm`` weights), torch for other weights."""
    cfg = step.config
    damage_power = None if cfg.importance == "none" else cfg.importance_power
    weight_power = cfg.weight_power if cfg.weights == "norm" else None
    damage, weight = None, None
    if damage_power is not None or weight_power is not None:
        damage, weight = mt.importance_vectors(ft.importance(step), step.state["sizes"], damage_power, weight_power)
    if cfg.weights not in ("norm", "mean"):
        weight = weights(step)
    return damage, weight


def fading(step: ft.MergeStep) -> float | torch.Tensor | None:
    """:func:`features.fading`, the estimated decay in one kernel (torch: six launches and an fp32
    copy of a bf16 ``delta``)."""
    return ft.fading(step, mt.mean_decay)


def weights(step: ft.MergeStep) -> torch.Tensor:
    """:func:`features.weights`, ``dt`` weights in one kernel (torch: four passes over ``delta``)."""
    return ft.weights(step, mt.dt_weights)


def weights_or_none(step: ft.MergeStep) -> torch.Tensor | None:
    """:func:`features.weights_or_none` with :func:`weights`."""
    return None if step.config.weights == "mean" else weights(step)


def prune(step: ft.MergeStep) -> fn.Plan:
    """:func:`functions.prune_plan` for ``step`` with its segments, in one kernel."""
    index, weight, keep, first, ok = mt.prune_plan(ft.importance(step), step.cls, step.r, step.window)
    fn._check(ok.all(), fn.PRUNE_SHORTAGE.format(step.r))
    return fn.Plan(index, weight, keep, index.shape[1] - step.r, first)


def tome(step: ft.MergeStep) -> fn.Plan:
    """:func:`functions.tome_plan` for ``step`` with its segments, in two kernels (a step-size metric's
    softplus taken inside them)."""
    feat, channels_first, bias = ft.metric_source(step)
    feat = feat.transpose(1, 2) if channels_first else feat
    index, keep, first, order, ok = mt.tome_plan(feat, step.cls, step.r, step.window, softplus_bias=bias)
    fn._check(ok.all(), fn.BIPARTITE_SHORTAGE.format(step.r))
    return fn.Plan(index, weights_or_none(step), keep, feat.shape[1] - step.r, first, order)


def merge(info: dict, residual: torch.Tensor, plan: fn.Plan) -> torch.Tensor:
    """:func:`patch.reduce_tokens` for a plan of runs in one kernel: the merge and the update of the
    patch counts, grid anchors and class-token index."""
    out, info["sizes"], info["rep"], info["cls"] = mt.merge_segments(residual, plan.weight, plan.first, plan.keep,
                                                                     info["sizes"], info["rep"], info["cls"],
                                                                     plan.order)
    return out
