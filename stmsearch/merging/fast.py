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


def chain(score: torch.Tensor, r: int, weight: torch.Tensor | None, sides: tuple[torch.Tensor, int, int] | None = None
          ) -> fn.Plan:
    """Merge along the ``r`` least-scored edges of ``score`` (B, T-1), ``BIG`` = not allowed.

    ``sides`` (before, left, right): pick ``left`` edges where ``before`` and ``right`` elsewhere.
    """
    if sides is None:
        top = score.topk(r, dim=-1, largest=False).indices
    else:
        before, left, right = sides
        big = torch.full_like(score, mt.BIG)
        top = torch.cat([torch.where(side, score, big).topk(k, dim=-1, largest=False).indices
                         for side, k in ((before, left), (~before, right)) if k], dim=1)
    index, keep, first, ok = mt.chain_plan(top, score)
    fn._check(ok.all(), fn.SHORTAGE.format(r))
    return fn.Plan(index, weight, keep, score.shape[1] + 1 - r, first)


def stm_1d(step: ft.MergeStep) -> fn.Plan:
    """:func:`functions.stm_1d` for ``step``: damage, fading and blocks in one kernel."""
    cfg = step.config
    feat, channels_first, bias = ft.metric_source(step)
    importance, weight = _importance_vectors(step)
    score = mt.edge_scores(feat, channels_first, step.cls, step.window, cfg.runs, block_offset(step.layer, cfg.runs),
                           weight, cfg.damage == "ward", ft.fading(step), bias, importance, cfg.importance)
    sides = None
    if cfg.symmetric:
        left, right = split_sides(step.r, step.layer)
        sides = (fn.positions(score.shape[0], score.shape[1], score.device) < step.cls[:, None], left, right)
    return chain(score, step.r, weight, sides)


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
        weight = ft.weights(step)
    return damage, weight


def prune(step: ft.MergeStep) -> fn.Plan:
    """:func:`functions.prune_plan` for ``step`` with its segments, in one kernel."""
    index, weight, keep, first, ok = mt.prune_plan(ft.importance(step), step.cls, step.r, step.window)
    fn._check(ok.all(), fn.PRUNE_SHORTAGE.format(step.r))
    return fn.Plan(index, weight, keep, index.shape[1] - step.r, first)


def tome(step: ft.MergeStep) -> fn.Plan:
    """:func:`functions.tome_plan` for ``step`` with its segments, in one kernel."""
    feat = ft.metric(step)
    index, keep, first, order, ok = mt.tome_plan(feat, step.cls, step.r, step.window)
    fn._check(ok.all(), fn.BIPARTITE_SHORTAGE.format(step.r))
    return fn.Plan(index, ft.weights_or_none(step), keep, feat.shape[1] - step.r, first, order)


def merge(info: dict, residual: torch.Tensor, plan: fn.Plan) -> torch.Tensor:
    """:func:`patch.reduce_tokens`' merge and its patch-count and grid-anchor update for a plan of runs, in one kernel."""
    out, info["sizes"], info["rep"] = mt.merge_segments(residual, plan.weight, plan.first, plan.keep,
                                                        info["sizes"], info["rep"], plan.order)
    return out
