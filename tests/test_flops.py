"""fvcore FLOP counts: no unsupported ops, agreement with the analytic formula and published sizes.

Tolerances: fvcore vs :func:`analytic_flops` within 2% (the brief's cross-check); against the
published ViM-Ti 1.45 G / ViM-S 5.1 G within 5% (papers round, and conventions for the scan
differ slightly between counters).
"""
import pytest
import torch

import stmsearch
from stmsearch.evaluation import flops as flops_mod
from stmsearch.evaluation.flops import analytic_flops, count_flops
from stmsearch.models import vim as vim_module
from stmsearch.ops import scan as scan_module


pytestmark = pytest.mark.usefixtures("one_thread")


def _shape(model):
    return model.cfg.in_chans, model.cfg.img_size, model.cfg.img_size


def _tokens(model, config):
    """Tokens per layer from an ordinary (untraced) forward."""
    if config is None:
        return [model.pos_embed.shape[1]] * model.cfg.depth
    with torch.inference_mode():
        model(torch.randn(1, *_shape(model)))
    return [layer["tokens"] for layer in stmsearch.trace(model)]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return stmsearch.create_model("vim_tiny")


def test_vim_tiny_matches_analytic_and_published(tiny):
    stmsearch.apply(tiny, None)
    result = count_flops(tiny, _shape(tiny))
    assert result["unsupported"] == {}
    assert result["flops"] == pytest.approx(analytic_flops(tiny.cfg, _tokens(tiny, None)), rel=0.02)
    assert result["flops"] == pytest.approx(1.45e9, rel=0.05)
    assert {"conv", "selective_scan", "conv1d_depthwise"} <= set(result["by_operator"])
    assert sum(result["by_operator"].values()) == result["flops"]


def _count_merged(model, config):
    """fvcore's count and the tokens per layer with ``config`` applied; the model is restored."""
    stmsearch.apply(model, config)
    try:
        return count_flops(model, _shape(model)), _tokens(model, config)
    finally:
        stmsearch.apply(model, None)


def test_vim_tiny_with_a_merge_schedule(tiny):
    result, tokens = _count_merged(tiny, stmsearch.MergeConfig(method="stm", schedule=[0] + [8] * 10))
    assert result["unsupported"] == {}
    assert tokens[-1] == 197 - 80
    assert result["flops"] == pytest.approx(analytic_flops(tiny.cfg, tokens), rel=0.02)
    assert result["flops"] < 0.8 * analytic_flops(tiny.cfg, [197] * 24)


def test_vim_small_matches_published():
    torch.manual_seed(0)
    model = stmsearch.create_model("vim_small")
    result = count_flops(model, _shape(model))
    assert result["unsupported"] == {}
    assert result["flops"] == pytest.approx(5.1e9, rel=0.05)
    assert result["flops"] == pytest.approx(analytic_flops(model.cfg, _tokens(model, None)), rel=0.02)


METHODS = {
    "stm-1d": dict(method="stm", schedule=[0] + [6] * 4),
    "stm-2d": dict(method="stm", neighbourhood="2d", schedule=[0] + [6] * 4, fading="fixed"),
    "stm-asym-dt": dict(method="stm", schedule=[0] + [6] * 4, symmetric=False, runs=3, metric="dt",
                        weights="dt", size_aware_decay=True),
    "stm-free-drop": dict(method="stm", schedule=[0] + [6] * 4, edges="free", drop=0.5),
    "stm-sym-drop": dict(method="stm", schedule=[0] + [6] * 4, symmetric=True, drop=0.25),
    "tome": dict(method="tome", metric="x", schedule=[4] * 4),
    "prune": dict(method="prune", schedule=[4] * 4),
    "random": dict(method="random", schedule=[4] * 4),
}


@pytest.fixture(scope="module")
def proxy():
    torch.manual_seed(0)
    return stmsearch.create_model("vim_proxy", pretrained=False, depth=6)  # all op kinds, half the layers


@pytest.mark.parametrize("name", list(METHODS))
def test_every_merge_method_is_fully_supported(proxy, name):
    config = stmsearch.MergeConfig(**METHODS[name])
    result, tokens = _count_merged(proxy, config)
    assert result["unsupported"] == {}
    analytic = analytic_flops(proxy.cfg, tokens)
    if name == "tome":
        # its similarity (one half of the tokens against the other) is a real matmul, counted on
        # top of the layers: more than nothing, at most every cross-half pair at the widest metric
        entering = [t + r for t, r in zip(tokens, config.layer_schedule(proxy.cfg.depth)) if r]
        bound = sum((t + 1) // 2 * (t // 2) * proxy.cfg.d_inner for t in entering)
        assert 0 < result["flops"] - analytic <= bound
    else:
        assert result["flops"] == pytest.approx(analytic, rel=0.02)


def test_counting_leaves_the_model_and_torch_unchanged(proxy):
    x = torch.randn(1, *_shape(proxy))
    scatter_ = torch.Tensor.scatter_
    config = stmsearch.MergeConfig(method="stm", schedule=[0] + [6] * 4)
    stmsearch.apply(proxy, config)
    try:
        with torch.inference_mode():
            before = proxy(x)
        with flops_mod._traceable(), torch.inference_mode():
            during = proxy(x)  # the scan runs as one custom op here
        count_flops(proxy, _shape(proxy))
        with torch.inference_mode():
            after = proxy(x)
    finally:
        stmsearch.apply(proxy, None)
    assert torch.equal(before, during) and torch.equal(before, after)
    assert vim_module.bidirectional_scan is scan_module.bidirectional_scan
    assert torch.Tensor.scatter_ is scatter_


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
@pytest.mark.parametrize("backend", ["", "triton"], ids=["auto", "triton"])
def test_cuda_count_matches_cpu(tiny, monkeypatch, backend):
    """On CUDA the trace sees plain torch ops whatever the backend (no Triton or extension
    kernels hidden from fvcore), so the count is the CPU's up to the conv's padded outputs."""
    stmsearch.apply(tiny, stmsearch.MergeConfig(method="stm", schedule=[0] + [8] * 10, size_aware_decay=True))
    try:
        cpu = count_flops(tiny, _shape(tiny))
        monkeypatch.setenv("STMSEARCH_SCAN", backend)
        gpu = count_flops(tiny.cuda(), _shape(tiny))
    finally:
        stmsearch.apply(tiny.cpu(), None)  # the fixture is shared with the CPU tests
    assert gpu["unsupported"] == {} and cpu["unsupported"] == {}
    # CUDA's depthwise conv1d is counted over its padded length: a fraction of a percent more
    assert gpu["flops"] == pytest.approx(cpu["flops"], rel=0.005)
