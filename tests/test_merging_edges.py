"""STM's ``edges`` and ``drop`` knobs: candidate pairs outside the fixed blocks, and a share of each
layer's merges that drops the faintest tokens (pruning's order) into their outward neighbour. The
invariants (class token kept, sizes add up, order kept) are checked for every value in
test_merging's property test; here: what each knob changes, the capacity it claims and its errors.
The GPU fast path's equality for both is tests/test_merge_fast.py's."""
from __future__ import annotations

import pytest
import torch

from stmsearch import ConfigError, MergeConfig
from stmsearch.merging import functions as fn
from stmsearch.merging.config import config_from_dict
from stmsearch.merging.methods import get_method

# runs 2 at layer 0: blocks (0,1) (2,3) | class token 4 | (5,6) (7,8); tokens 1 and 2 are identical but in
# different blocks, every in-block pair is dissimilar
METRIC = torch.tensor([[[1.0, 0], [0, 1], [0, 1], [1, 0], [9, 9], [1, 0], [0, 1], [1, 0], [0, 1]]])
CLS = torch.tensor([4])
ARGS = (METRIC, CLS, 1, 0, 2, 0, False, None, torch.ones(1, 9), "cosine")


def test_free_edges_merge_the_identical_pair_blocks_keep_apart():
    assert fn.stm_1d(*ARGS).index.tolist()[0] != [0, 1, 1, 2, 3, 4, 5, 6, 7]
    assert fn.stm_1d(*ARGS, edges="free").index.tolist()[0] == [0, 1, 1, 2, 3, 4, 5, 6, 7]


def test_free_edges_never_cross_the_class_token_or_the_window():
    allowed = fn.free_edges(torch.tensor([4, 2]), 9, 1)
    # class token 4, window 1: tokens 0-2 and 6-8 eligible; class token 2: 4-8
    assert allowed.tolist() == [[True, True, False, False, False, False, True, True],
                                [False, False, False, False, True, True, True, True]]


def test_drop_one_is_pruning_in_edge_form():
    """drop 1.0: the r faintest tokens go, at weight 0, into the neighbour farther from the class token,
    exactly as prune_plan books them (tokens at the ends of the sequence not among the faintest)."""
    torch.manual_seed(0)
    metric, cls = torch.randn(3, 21, 5), torch.tensor([10, 10, 10])
    mag = torch.rand(3, 21) + 0.1
    mag[:, 0] = mag[:, -1] = 5
    for r in (1, 4, 9):
        plan = fn.stm_1d(metric, cls, r, 0, 3, 2, False, 0.95, torch.ones(3, 21), "ward", drop=1.0, magnitude=mag)
        prune = fn.prune_plan(mag, cls, r, 0)
        assert torch.equal(plan.index, prune.index)
        assert torch.equal(plan.weight == 0, ~prune.keep)


def test_drop_shares_the_merges_and_every_merged_token_keeps_a_live_member():
    torch.manual_seed(1)
    metric, cls = torch.randn(2, 31, 4), torch.tensor([15, 12])
    mag = torch.rand(2, 31)
    mag[:, 0] = 0.0  # faintest, but at the outer end: it has no outward neighbour to join
    for symmetric in (False, True):
        plan = fn.stm_1d(metric, cls, 8, 1, 3, 1, symmetric, 0.95, torch.ones(2, 31), "ward",
                         edges="blocks", drop=0.5, magnitude=mag)
        assert (plan.weight == 0).sum(1).tolist() == [4, 4]  # half of 8 (of 4 and 4 a side when symmetric)
        assert plan.weight[:, 0].tolist() == [1.0, 1.0]
        live = torch.zeros(2, plan.out_len).scatter_add_(1, plan.index, plan.weight)
        assert (live > 0).all()
        assert plan.out_len == 31 - 8 and int((~plan.keep).sum()) == 16


def test_capacity_free_edges_all_but_one_token_a_side():
    stm = get_method("stm")
    blocks, free = MergeConfig(method="stm"), MergeConfig(method="stm", edges="free")
    # 197 tokens, window 0: 196 eligible; free: 196 - 2 for the worst class-token position
    assert stm.capacity(free, 197, 98, 2, 196) == 194
    assert stm.capacity(blocks, 197, 98, 2, 196) < 194
    assert stm.capacity(MergeConfig(method="stm", drop=0.5), 197, 98, 2, 196) == stm.capacity(blocks, 197, 98, 2, 196)
    sched = [0, 0, 150]
    with pytest.raises(ConfigError):
        MergeConfig(method="stm", schedule=sched).validate_for(4)
    MergeConfig(method="stm", edges="free", schedule=sched).validate_for(4)


def test_knobs_are_searchable_with_todays_defaults():
    knobs = get_method("stm").knobs
    assert knobs["edges"]["choices"][0] == MergeConfig(method="stm").edges == "blocks"
    assert 0.0 in knobs["drop"]["choices"] and MergeConfig(method="stm").drop == 0.0


@pytest.mark.parametrize("data, field", [({"method": "stm", "drop": 1.5}, "drop"), ({"method": "stm", "drop": -0.1}, "drop"),
                                          ({"method": "stm", "edges": "any"}, "edges"),
                                          ({"method": "stm", "neighbourhood": "2d", "edges": "free"}, "edges"),
                                          ({"method": "stm", "neighbourhood": "2d", "drop": 0.5}, "edges")])
def test_config_errors(data, field):
    with pytest.raises(ConfigError, match=field):
        config_from_dict(data)
