"""STM's ``runs_from``: a layer merges runs of up to ``runs`` tokens only where it removes at least that share
of its mergeable tokens, pairs elsewhere. What it changes, the capacity it claims (every count up to it
runs) and its errors. The GPU fast path's equality is tests/test_merge_fast.py's (its runs_from case)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

import stmsearch
from stmsearch import ConfigError, MergeConfig
from stmsearch.merging import functions as fn
from stmsearch.merging.capacity import eligible, layer_runs
from stmsearch.merging.config import config_from_dict
from stmsearch.merging.methods import get_method


def test_layer_runs_pairs_below_the_share_runs_from_it():
    assert layer_runs(4, 0.2, 19, 100) == 2
    assert layer_runs(4, 0.2, 20, 100) == 4
    assert layer_runs(4, 0.0, 1, 100) == 4  # 0: runs at every layer, as before the knob
    assert layer_runs(2, 0.3, 90, 100) == 2


def _logits(model, images, **knobs):
    stmsearch.apply(model, MergeConfig(method="stm", **knobs))
    try:
        with torch.inference_mode():
            return model(images)
    finally:
        stmsearch.apply(model, None)


def test_each_layer_merges_as_its_share_says():
    """A light layer merges as pairs do and a heavy one as runs do, in one forward."""
    torch.manual_seed(0)
    model = stmsearch.create_model("vim_proxy").eval()
    images = torch.randn(3, 1, 28, 28)
    light, heavy = [0, 0, 8] + [0] * 9, [0, 0, 80] + [0] * 9  # 8 and 80 of 196 mergeable tokens
    for sched in (light, heavy):
        pairs, runs4 = _logits(model, images, schedule=sched, runs=2), _logits(model, images, schedule=sched, runs=4)
        assert not torch.equal(pairs, runs4)  # the two rules differ here, so the check below can fail
        want = pairs if sched is light else runs4
        torch.testing.assert_close(_logits(model, images, schedule=sched, runs=4, runs_from=0.2), want, rtol=0, atol=0)
    # both layers in one schedule: the light one as pairs, the heavy one as runs (neither rule alone)
    both = [0, 0, 80, 0, 0, 8] + [0] * 6
    mixed = _logits(model, images, schedule=both, runs=4, runs_from=0.2)
    assert not torch.equal(mixed, _logits(model, images, schedule=both, runs=2))
    assert not torch.equal(mixed, _logits(model, images, schedule=both, runs=4))


@settings(max_examples=40, deadline=None)
@given(tokens=st.integers(4, 197), layer=st.integers(0, 5), runs=st.integers(3, 4), window=st.integers(0, 4),
       runs_from=st.sampled_from([0.1, 0.2, 0.3, 0.5, 0.9]), symmetric=st.booleans(), seed=st.integers(0, 10 ** 6))
def test_every_count_up_to_the_capacity_runs(tokens, layer, runs, window, runs_from, symmetric, seed):
    """Each count up to the claimed capacity takes its own layer's rule and finds its merges (no shortage),
    wherever the class token sits; a symmetric claim, exact for its class-token position, is the whole range."""
    cfg = MergeConfig(method="stm", runs=runs, runs_from=runs_from, window=window, symmetric=symmetric)
    g = torch.Generator().manual_seed(seed)
    cls = int(torch.randint(0, tokens, (1,), generator=g))
    stm = get_method("stm")
    cap = stm.capacity(cfg, tokens, cls, layer, 196)
    metric = torch.randn(1, tokens, 4, generator=g)

    def plan(r):
        k = layer_runs(runs, runs_from, r, eligible(tokens, window))
        return fn.stm_1d(metric, torch.tensor([cls]), r, window, k, layer, symmetric, None, torch.ones(1, tokens), "ward")

    for r in range(1, cap + 1):
        assert plan(r).out_len == tokens - r
    if symmetric:  # exact for this class-token position (one-sided claims hold wherever it sits)
        with pytest.raises(RuntimeError, match="mergeable"):
            plan(cap + 1)


@pytest.mark.parametrize("data", [{"runs_from": 1.5}, {"runs_from": -0.1}, {"runs_from": 0.2, "edges": "free"},
                                  {"runs_from": 0.2, "neighbourhood": "2d"}])
def test_config_errors_name_the_field(data):
    with pytest.raises(ConfigError, match="runs_from"):
        config_from_dict({"method": "stm", **data})


def test_latency_keys_of_earlier_tables_stand():
    stm = get_method("stm")
    assert "runs_from" not in stm.cost_key(MergeConfig(method="stm", runs=4))
    assert stm.cost_key(MergeConfig(method="stm", runs=4, runs_from=0.2)).endswith(",runs_from=0.2")
    assert MergeConfig(method="stm").runs_from == 0.0 and 0.0 in stm.knobs["runs_from"]["choices"]
