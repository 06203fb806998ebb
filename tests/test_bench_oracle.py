"""bench/bench_oracle.py: each candidate it measures is exactly the model with that one merge (or
drop) applied by the project's own plans, and the oracle applies the candidate it measured least."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stmsearch.evaluation.fidelity import load_proxy
from stmsearch.merging import functions as fn
from stmsearch.merging.config import MergeConfig
from stmsearch.merging.methods import unregister_method
from stmsearch.merging.patch import apply

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench():
    from bench import bench_oracle
    bench_oracle.register()
    yield bench_oracle
    unregister_method("oracle")  # other modules' tests walk the method table


@pytest.fixture(scope="module")
def proxy(one_thread):
    return load_proxy("vim_proxy", range(0, 2))


LAYER = 9  # late, so the tails are short


@pytest.fixture(scope="module")
def state(proxy):
    """The residual stream entering layer LAYER, after three earlier merges of 8 tokens each."""
    model = proxy.model
    schedule = [0] * 6 + [8] * 3 + [0] * 3
    apply(model, MergeConfig(method="stm", schedule=schedule))
    seen = {}
    block = model.layers[LAYER]
    hook = block.register_forward_pre_hook(lambda m, args: seen.update(
        residual=m.add(*args), sizes=model._stm["sizes"].clone(), cls=model._stm["cls"].clone()))
    try:
        with torch.inference_mode():
            model(proxy.images)
    finally:
        hook.remove()
        apply(model, None)
    return seen


def _reference(bench, model, state, plan):
    residual = fn.apply_plan(state["residual"], plan)
    sizes = fn.reduce_sum(state["sizes"], plan)
    cls = plan.index.gather(1, state["cls"][:, None]).squeeze(1)
    return bench.tail_logits(model, residual, sizes, cls, LAYER, True)


@torch.inference_mode()
def test_merge_candidates_are_the_plans_merge(bench, proxy, state):
    t = state["residual"].shape[1]
    weight = torch.rand(2, t) + 0.5
    res, sizes, cls = bench.merge_candidates(state["residual"], state["sizes"], state["cls"], weight)
    for e in (0, 5, int(state["cls"].min()) - 3, int(state["cls"].max()) + 3, t - 2):
        edges = torch.zeros(2, t - 1, dtype=torch.bool)
        edges[:, e] = True
        want = _reference(bench, proxy.model, state, fn.chain_plan(edges, weight, 1))
        got = bench.tail_logits(proxy.model, res[:, e], sizes[:, e], cls[:, e], LAYER, True)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@torch.inference_mode()
def test_drop_candidates_are_the_prune_plan(bench, proxy, state):
    t = state["residual"].shape[1]
    res, sizes, cls = bench.drop_candidates(state["residual"], state["sizes"], state["cls"])
    assert int(state["cls"][0]) != int(state["cls"][1])  # the two images' class tokens sit apart
    for k in (0, 7, int(state["cls"].min()) - 1, int(state["cls"].max()) + 1, t - 1):
        assert k not in state["cls"].tolist()
        magnitude = torch.ones(2, t)
        magnitude[:, k] = 0
        plan = fn.prune_plan(magnitude, state["cls"], 1, 0)
        torch.testing.assert_close(sizes[:, k], fn.reduce_sum(state["sizes"], plan))
        want = _reference(bench, proxy.model, state, plan)
        got = bench.tail_logits(proxy.model, res[:, k], sizes[:, k], cls[:, k], LAYER, True)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("row", ["oracle free", "oracle prune"])
@torch.inference_mode()
def test_oracle_applies_its_least_measured_candidate(bench, proxy, row):
    """One merge, four layers from the end: the final prediction's KL from the unreduced one is the least
    over every candidate the oracle measured."""
    model, depth = proxy.model, len(proxy.model.layers)
    reference = F.log_softmax(model(proxy.images).float(), -1)
    cfg = MergeConfig(**bench.ROWS[row], schedule=[0] * (depth - 4) + [1, 0, 0, 0])
    measured = {}
    original = bench.measured_kl
    bench.measured_kl = lambda *a: measured.setdefault("kl", original(*a))
    apply(model, cfg)
    model._stm["oracle_model"] = model
    try:
        out = F.log_softmax(model(proxy.images).float(), -1)
    finally:
        bench.measured_kl = original
        apply(model, None)
    kl = measured["kl"]
    cls = int(model.cls_pos)
    eligible = kl.clone()
    eligible[:, cls] = float("inf")  # the class token (a drop) or its edge after it (a merge)
    if row == "oracle free":
        eligible[:, cls - 1] = float("inf")
    got = (reference.exp() * (reference - out)).sum(-1)
    torch.testing.assert_close(got, eligible.min(-1).values, rtol=1e-3, atol=1e-6)
    # a real measurement: the candidates' effects differ by orders of magnitude, far past rounding
    assert (kl.max(-1).values > 1e3 * eligible.min(-1).values.abs().clamp_min(1e-9)).all()


@torch.inference_mode()
def test_outside_its_layers_the_oracle_is_stm(bench, proxy):
    """``oracle_layers`` empty: every plan is STM's own, so the logits are STM's at its defaults; with the
    oracle at one layer they differ."""
    depth = len(proxy.model.layers)
    schedule = [0, 0] + [8] * (depth - 2)
    outs = {}
    for name, over, layers in (("stm", {"method": "stm"}, None), ("none", bench.ROWS["oracle blocks"], range(0)),
                               ("one", bench.ROWS["oracle blocks"], range(3, 4))):
        apply(proxy.model, MergeConfig(**over, schedule=schedule))
        proxy.model._stm["oracle_model"] = proxy.model
        if layers is not None:
            proxy.model._stm["oracle_layers"] = layers
        try:
            outs[name] = proxy.model(proxy.images)
        finally:
            apply(proxy.model, None)
    torch.testing.assert_close(outs["none"], outs["stm"], rtol=0, atol=0)
    assert not torch.equal(outs["one"], outs["stm"])



def test_merge_logit_change_is_the_jacobian_of_the_merge(bench, proxy, state):
    """The first-order logit change of each merge equals a central finite difference of the rest of the
    model, moving the two tokens a fraction of the way to their weighted mean."""
    from stmsearch.merging.features import MergeStep
    x, t = state["residual"], state["residual"].shape[1]
    weight = torch.rand(2, t, generator=torch.Generator().manual_seed(0)) + 0.5
    cfg = MergeConfig(method="stm", schedule=[0] * 12)
    step = MergeStep(cfg, {"record": True, "sizes": state["sizes"], "cls": state["cls"]}, x, None, 1, LAYER, None)
    z, dz = bench.merge_logit_change(proxy.model, step, weight)
    assert dz.shape == (2, t - 1, z.shape[1])
    eps = 0.1
    with torch.inference_mode():
        torch.testing.assert_close(z, bench.tail_logits(proxy.model, x, state["sizes"], state["cls"], LAYER, True))
        for e in (0, 5, int(state["cls"].max()) + 3, t - 2):
            wa, wb = weight[:, e, None], weight[:, e + 1, None]
            mean = (wa * x[:, e] + wb * x[:, e + 1]) / (wa + wb)
            out = []
            for sign in (1, -1):
                moved = x.clone()
                moved[:, e] += sign * eps * (mean - x[:, e])
                moved[:, e + 1] += sign * eps * (mean - x[:, e + 1])
                out.append(bench.tail_logits(proxy.model, moved, state["sizes"], state["cls"], LAYER, True))
            fd = (out[0] - out[1]) / (2 * eps)
            assert (fd - dz[:, e]).abs().max() <= 0.05 * dz[:, e].abs().max() + 1e-6


def test_fisher_kl_is_the_kl_to_second_order(bench):
    gen = torch.Generator().manual_seed(1)
    z, dz = torch.randn(3, 10, generator=gen, dtype=torch.float64) * 2, torch.randn(3, 4, 10, generator=gen,
                                                                                   dtype=torch.float64)
    eps = 1e-3
    p = F.log_softmax(z, -1)[:, None]
    q = F.log_softmax(z[:, None] + eps * dz, -1)
    kl = (p.exp() * (p - q)).sum(-1)
    torch.testing.assert_close(bench.fisher_kl(z, dz) * eps ** 2, kl, rtol=1e-2, atol=0)
