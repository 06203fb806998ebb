"""STM's importance knobs: damage scaled by the tokens' importance (the hidden-output norm pruning
ranks by) and merge weights by it. Plans stay valid (the invariants of test_merging cover every
value; test_batch_independence every knob value); here: what each knob changes, and its errors."""
from __future__ import annotations

import pytest
import torch

import stmsearch
from stmsearch.merging.methods import STM_DEFAULTS
from stmsearch import ConfigError, MergeConfig
from stmsearch.merging import functions as fn
from stmsearch.merging.config import config_from_dict

# layer 0, runs 2, one-sided: edges (0,1) (2,3) | class token 4 | (5,6) (7,8) are the allowed pairs
# every allowed pair equally dissimilar (cosine damage 1)
METRIC = torch.tensor([[[1.0, 0], [0, 1], [1.0, 0], [0, 1], [9, 9], [1, 0], [0, 1], [1, 0], [0, 1]]])
CLS = torch.tensor([4])


def _chosen(plan):
    return plan.index.tolist()[0]


def test_importance_min_lets_a_faint_token_join_a_dissimilar_neighbour():
    """Both pairs before the class token are equally dissimilar; the one with a faint member is
    merged under ``min`` (as pruning would drop that token), whichever pair comes first."""
    imp = torch.tensor([[5.0, 5.0, 5.0, 0.1, 1, 5, 5, 5, 5]])
    args = (METRIC, CLS, 1, 0, 2, 0, False, None, torch.ones(1, 9), "cosine")
    plain = fn.stm_1d(*args)
    scaled = fn.stm_1d(*args, importance=imp, importance_kind="min")
    assert _chosen(scaled) == [0, 1, 2, 2, 3, 4, 5, 6, 7]  # (2,3) merged: token 3 is faint
    assert _chosen(plain) != _chosen(scaled)


@pytest.mark.parametrize("kind, pair", [("min", [0, 1, 2, 2, 3, 4, 5, 6, 7]), ("max", [0, 0, 1, 2, 3, 4, 5, 6, 7]),
                                        ("mean", [0, 0, 1, 2, 3, 4, 5, 6, 7])])
def test_importance_kinds_score_the_pair_by_its_lesser_greater_or_mean_member(kind, pair):
    # (0,1): 2 and 2; (2,3): 0.5 and 6 -> min prefers (2,3), max and mean prefer (0,1)
    imp = torch.tensor([[2.0, 2.0, 0.5, 6.0, 1, 5, 5, 5, 5]])
    plan = fn.stm_1d(METRIC, CLS, 1, 0, 2, 0, False, None, torch.ones(1, 9), "cosine",
                     importance=imp, importance_kind=kind)
    assert _chosen(plan) == pair


def test_importance_reaches_the_2d_plan():
    """2d cells: the faint member of a cell joins first under ``min``."""
    grid = 4
    rep = torch.cat([torch.arange(8), torch.tensor([-1]), torch.arange(8, 16)])[None]
    metric = torch.eye(17)[None]  # every member equally far from its cell's first
    imp = torch.ones(1, 17)
    imp[0, 5] = 0.01  # patch 5: member of the cell of patches 0 1 4 5 at layer 0
    plan = fn.stm_2d(metric, torch.tensor([8]), rep, grid, 1, 0, 2, 0, False, None, torch.ones(1, 17), "ward",
                     importance=imp, importance_kind="min")
    assert not plan.keep[0, 5] and plan.keep.sum() == 16
    assert plan.index[0, 5] == plan.index[0, 0]


def test_norm_weights_let_the_important_member_dominate_the_merged_token():
    model = stmsearch.create_model("vim_proxy")
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    outs = {}
    for w in ("mean", "norm"):
        stmsearch.apply(model, MergeConfig(method="stm", weights=w, importance="min", schedule=[0, 0] + [10] * 6))
        with torch.inference_mode():
            outs[w] = model(x)
    stmsearch.apply(model, None)
    assert torch.isfinite(outs["norm"]).all() and not torch.equal(outs["mean"], outs["norm"])


def test_importance_knobs_are_validated_and_searchable():
    with pytest.raises(ConfigError, match=r"importance: Input should be 'none', 'min', 'max' or 'mean'"):
        config_from_dict({"method": "stm", "importance": "norm"})
    with pytest.raises(ConfigError, match=r"weights: Input should be .*'norm'"):
        config_from_dict({"method": "stm", "weights": "importance"})
    knobs = stmsearch.merging.get_method("stm").knobs
    assert knobs["importance"]["choices"][0] == "none" and "norm" in knobs["weights"]["choices"]
    # STM's defaults (bench_fidelity's choice) turn it on; the baselines' configs keep the field off
    assert MergeConfig(method="stm").importance == STM_DEFAULTS["importance"] != "none"
    assert MergeConfig(method="tome").importance == "none"


def _step(cfg: MergeConfig, norms: list[float], sizes: list[float]):
    """A MergeStep whose tokens' hidden outputs have the given norms (importance)."""
    from stmsearch.merging.features import MergeStep
    hidden = torch.tensor(norms)[None, :, None] * torch.tensor([0.6, 0.8])  # (1, T, 2), norm = the value
    return MergeStep(cfg, {"sizes": torch.tensor([sizes])}, hidden.clone(), hidden, 1, 0, None)


@pytest.mark.parametrize("power", [0.5, 2.0, 4.0])
def test_weight_power_raises_the_importance_in_norm_weights(power):
    from stmsearch.merging import features as ft
    norms, sizes = [1.0, 2.0, 4.0, 0.5], [1.0, 3.0, 1.0, 2.0]
    base = ft.weights(_step(MergeConfig(method="stm", weights="norm", weight_power=1.0), norms, sizes))[0]
    torch.testing.assert_close(base, torch.tensor(sizes) * torch.tensor(norms))
    w = ft.weights(_step(MergeConfig(method="stm", weights="norm", weight_power=power), norms, sizes))[0]
    # a merged token only reads weight ratios: sizes * importance ** power, up to one factor per image
    want = torch.tensor(sizes) * torch.tensor(norms) ** power
    torch.testing.assert_close(w / w[0], want / want[0])
    # the power touches only norm weights
    assert torch.equal(ft.weights(_step(MergeConfig(method="stm", weights="size", weight_power=power), norms, sizes)),
                       torch.tensor([sizes]))


def test_weight_power_stays_finite_for_extreme_importance():
    from stmsearch.merging import features as ft
    w = ft.weights(_step(MergeConfig(method="stm", weights="norm", weight_power=8.0), [1e-8, 1e4, 3.0, 0.0], [1.0] * 4))
    assert torch.isfinite(w).all() and (w > 0).all()


@pytest.mark.parametrize("kind", ["min", "max", "mean"])
def test_importance_power_steepens_the_damage_scale(kind):
    """``importance_power`` q: the damage scale reads importance ** q (over the image's mean), so a pair
    that is not faint enough to go first at q = 1 goes first at q = 4."""
    from stmsearch.merging import features as ft
    norms = [1.0, 2.0, 4.0, 0.5]
    assert ft.damage_importance(_step(MergeConfig(method="stm", importance="none", importance_power=4.0), norms,
                                      [1.0] * 4)) is None
    plain = ft.damage_importance(_step(MergeConfig(method="stm", importance=kind, importance_power=1.0), norms,
                                       [1.0] * 4))[0]
    assert torch.equal(plain, torch.tensor(norms))  # q = 1: the importance itself, as before the knob
    steep = ft.damage_importance(_step(MergeConfig(method="stm", importance=kind, importance_power=4.0), norms,
                                       [1.0] * 4))[0]
    torch.testing.assert_close(steep / steep[0], torch.tensor(norms) ** 4)
    # Ward damage: (0,1) 1 at importance 1; (2,3) 9 at importance 0.3; after the class token 9 at importance 1.
    # Plain scaling keeps (0,1) (9 * 0.3 = 2.7 > 1), q = 4 prefers (2,3) (9 * 0.3 ** 4 < 1)
    metric = torch.tensor([[[1.0, 0], [0, 1], [3.0, 0], [0, 3], [9, 9], [3, 0], [0, 3], [3, 0], [0, 3]]])
    imp = torch.tensor([[1.0, 1.0, 0.3, 0.3, 1, 1, 1, 1, 1]])
    args = (metric, CLS, 1, 0, 2, 0, False, None, torch.ones(1, 9), "ward")
    assert _chosen(fn.stm_1d(*args, importance=imp, importance_kind=kind)) == [0, 0, 1, 2, 3, 4, 5, 6, 7]
    assert _chosen(fn.stm_1d(*args, importance=imp ** 4, importance_kind=kind)) == [0, 1, 2, 2, 3, 4, 5, 6, 7]


def test_powers_change_a_merged_model_and_are_validated_and_searchable():
    model = stmsearch.create_model("vim_proxy")
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    outs = {}
    for over in ({}, {"weight_power": 0.5}, {"importance_power": 1.0}):  # each unlike STM's default
        stmsearch.apply(model, MergeConfig(method="stm", weights="norm", importance="mean", **over,
                                           schedule=[0, 0] + [12] * 8))
        with torch.inference_mode():
            outs[tuple(over)] = model(x)
    stmsearch.apply(model, None)
    assert all(torch.isfinite(o).all() for o in outs.values())
    assert not torch.equal(outs[()], outs[("weight_power",)]) and not torch.equal(outs[()], outs[("importance_power",)])
    for knob in ("weight_power", "importance_power"):
        for bad in (0, -1, 9):
            with pytest.raises(ConfigError, match=knob):
                config_from_dict({"method": "stm", knob: bad})
        choices = stmsearch.merging.get_method("stm").knobs[knob]["choices"]
        assert 1.0 in choices and len(choices) > 1
        assert getattr(MergeConfig(method="tome"), knob) == 1.0  # the field's default: the old behaviour
