"""Capacity rules are safe: a schedule that validation accepts runs, whatever earlier merges left.

The 2d neighbourhood's rule once counted cells of a fresh grid (runs - 1 per four tokens), so a
40% schedule it accepted stopped mid-forward ("fewer than N mergeable neighbour pairs left")
once earlier merges had left cells with a single token.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import stmsearch
from stmsearch import MergeConfig
from stmsearch.merging import functions as fn
from stmsearch.merging.capacity import cells_2d
from stmsearch.merging.methods import get_method
from stmsearch.merging.schedule import walk

PATCHES, GRID = 196, 14


@settings(max_examples=60, deadline=None)
@given(data=st.data(), layer=st.integers(0, 11), runs=st.integers(2, 4), window=st.integers(0, 6),
       symmetric=st.booleans(), one_per_cell=st.booleans(), seed=st.integers(0, 10 ** 6))
def test_2d_capacity_holds_for_any_tokens_left(data, layer, runs, window, symmetric, one_per_cell, seed):
    """Any set of patches still standing as tokens (an arbitrary history of earlier merges, the
    worst being one token in every cell) offers at least the capacity's merges; the plan keeps
    order, the class token and every protected token."""
    g = torch.Generator().manual_seed(seed)
    if one_per_cell:  # the adversary: one token per cell, then a few extra
        first = {}
        for p in range(PATCHES):
            first.setdefault(((p // GRID + layer % 2) // 2, (p % GRID + layer % 2) // 2, p < PATCHES // 2), p)
        extra = data.draw(st.sets(st.integers(0, PATCHES - 1), max_size=60))
        left = sorted(set(first.values()) | extra)
    else:
        left = sorted(data.draw(st.sets(st.integers(0, PATCHES - 1), min_size=2)))
    rep = torch.tensor(left)
    split = int((rep < PATCHES // 2).sum())
    rep = torch.cat([rep[:split], torch.tensor([-1]), rep[split:]])[None]
    t = rep.shape[1]
    cfg = MergeConfig(method="stm", neighbourhood="2d", runs=runs, window=window, symmetric=symmetric)
    r = get_method("stm").capacity(cfg, t, split, layer, PATCHES)
    if r == 0:
        return
    metric = torch.randn(1, t, 8, generator=g)
    cls = torch.tensor([split])
    plan = fn.stm_2d(metric, cls, rep, GRID, r, window, runs, layer, symmetric, None, torch.ones(1, t), "ward")
    assert plan.out_len == t - r and int(plan.keep.sum()) == t - r
    kept = fn.kept_positions(plan)
    assert (kept[:, 1:] > kept[:, :-1]).all()  # kept tokens in order
    assert bool(plan.keep[0, split]) and int((plan.index[0] == plan.index[0, split]).sum()) == 1
    near = (torch.arange(t) - split).abs() <= window
    assert plan.keep[0, near].all() and all(int((plan.index[0] == plan.index[0, i]).sum()) == 1
                                             for i in near.nonzero().flatten().tolist())
    # a merged token joins an earlier token of its own side: order and the class token stay put
    src = (~plan.keep[0]).nonzero().flatten()
    dst = kept[0, plan.index[0, src]]
    assert (dst < src).all() and ((src < split) == (dst < split)).all()


def test_2d_capacity_counts_cells_on_each_side():
    assert cells_2d(PATCHES, 0) == (28, 28) and cells_2d(PATCHES, 1) == (32, 32)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("runs", [2, 4])
def test_2d_schedules_at_capacity_run(symmetric, runs):
    """Every layer asks for as many tokens as the rule allows (the shared 40% schedule of
    bench_fidelity went past the old rule's real capacity): the forward never stops."""
    torch.manual_seed(0)
    model = stmsearch.create_model("vim_proxy", pretrained=False)
    depth = len(model.layers)
    base = MergeConfig(method="stm", neighbourhood="2d", runs=runs, window=0, symmetric=symmetric,
                       schedule=[0, 0] + [40] * (depth - 2))
    cfg = base.model_copy(update={"schedule": walk(base, depth, clip=True).schedule})
    assert sum(cfg.schedule) > 0
    stmsearch.apply(model, cfg)
    try:
        with torch.inference_mode():
            for seed in range(3):
                x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
                assert torch.isfinite(model(x)).all()
    finally:
        stmsearch.apply(model, None)


def test_2d_refuses_what_it_cannot_guarantee():
    """The old rule accepted 17 a layer from layer 2 (bench_fidelity's 40% schedule on the
    12-layer proxy) and the plan then ran out of pairs; the safe rule refuses it up front."""
    cfg = MergeConfig(method="stm", neighbourhood="2d", runs=4, window=0, symmetric=False,
                      schedule=[0, 0] + [17] * 10)
    with pytest.raises(stmsearch.ConfigError, match="neighbourhood=2d"):
        cfg.validate_for(12)
