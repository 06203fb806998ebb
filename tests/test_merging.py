"""Token reduction invariants, property-based over random schedules and inputs, for every method."""
import json

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import stmsearch
from stmsearch import ConfigError, MergeConfig, ParametricSchedule, load_config
from stmsearch.merging.capacity import split_sides

DEPTH = 4
METHODS = ["stm", "tome", "prune", "random"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return stmsearch.create_model("vim_proxy", pretrained=False, depth=DEPTH)


def run(model, cfg, x):
    stmsearch.apply(model, cfg)
    with torch.inference_mode():
        return model(x)


def internal_trace(model):
    return model._stm["trace"]


configs = st.builds(
    dict,
    method=st.sampled_from(METHODS),
    schedule=st.lists(st.integers(0, 24), min_size=DEPTH, max_size=DEPTH),
    window=st.integers(0, 12),
    neighbourhood=st.sampled_from(["1d", "2d"]),
    symmetric=st.booleans(),
    metric=st.sampled_from(["hidden", "x", "B", "dt"]),
    runs=st.integers(2, 4),
    fading=st.sampled_from(["estimated", "fixed", "none"]),
    weights=st.sampled_from(["size", "mean", "dt", "norm"]),
    size_aware_decay=st.booleans(),
    damage=st.sampled_from(["cosine", "ward"]),
    importance=st.sampled_from(["none", "min", "max", "mean"]),
    importance_power=st.sampled_from([1.0, 4.0, 8.0]),
    weight_power=st.sampled_from([0.5, 1.0, 4.0]),
    edges=st.sampled_from(["blocks", "free"]),
    drop=st.sampled_from([0.0, 0.5, 1.0]),
)


def valid(d):
    try:
        cfg = MergeConfig(**d)
        cfg.validate_for(DEPTH)
    except ValueError:  # ConfigError, or a refused combination (free edges or drops with 2d cells)
        return None
    return cfg


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.filter_too_much])
@given(d=configs, seed=st.integers(0, 1000), batch=st.integers(1, 3))
def test_invariants_hold_for_random_schedules(model, d, seed, batch):
    cfg = valid(d)
    assume(cfg is not None)
    x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    logits = run(model, cfg, x)
    assert torch.isfinite(logits).all()
    trace = stmsearch.trace(model)
    sched = cfg.layer_schedule(DEPTH)
    assert [t["tokens"] for t in trace] == [197 - sum(sched[:l + 1]) for l in range(DEPTH)]
    prev_cls = torch.full((batch,), 98)
    for layer, (tokens, cls, sizes, rep) in enumerate(internal_trace(model)):
        rows = torch.arange(batch)
        # the class token is never merged: its slot holds exactly itself
        assert (rep[rows, cls] == -1).all() and (sizes[rows, cls] == 1).all()
        # order preserved: the remaining patches keep increasing order, class token between 97 and 98
        patches = rep.masked_select(rep >= 0).view(batch, -1)
        assert (patches[:, 1:] > patches[:, :-1]).all()
        pos = torch.arange(tokens)
        assert ((rep < 98) == (pos < cls[:, None]))[rep >= 0].all()
        assert (sizes.sum(1) == 197).all()  # 196 patches + the class token's own weight
        assert sum(trace[layer]["sizes"]) == 196 and trace[layer]["cls_index"] == int(cls[0])
        w = cfg.protect
        near = (pos - cls[:, None]).abs() <= w
        assert (sizes[near] == 1).all(), "a protected token was merged"
        if cfg.method == "stm" and cfg.symmetric:
            left, right = split_sides(sched[layer], layer)
            assert abs(left - right) <= 1
            assert ((prev_cls - cls) == left).all()
        prev_cls = cls


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(METHODS + ["none"]), seed=st.integers(0, 1000))
def test_zero_schedule_gives_identical_logits(model, method, seed):
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    stmsearch.apply(model, None)
    with torch.inference_mode():
        plain = model(x)
    assert torch.equal(run(model, MergeConfig(method=method, schedule=[0] * DEPTH), x), plain)
    stmsearch.apply(model, None)
    with torch.inference_mode():
        assert torch.equal(model(x), plain)


@pytest.mark.parametrize("method", METHODS)
def test_bf16_runs_every_method(method):
    torch.manual_seed(0)
    model = stmsearch.create_model("vim_proxy", pretrained=False, depth=DEPTH).to(torch.bfloat16)
    cfg = MergeConfig(method=method, schedule=[0, 10, 10, 10])
    out = run(model, cfg, torch.randn(2, 1, 28, 28, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert [t["tokens"] for t in stmsearch.trace(model)] == [197, 187, 177, 167]


def test_merge_is_a_size_weighted_average():
    from stmsearch.merging.functions import apply_plan, chain_plan
    x = torch.tensor([[[1.0], [3.0], [10.0]]])
    edges = torch.tensor([[True, False]])
    sizes = torch.tensor([[1.0, 3.0, 1.0]])
    out = apply_plan(x, chain_plan(edges, sizes, 1))
    torch.testing.assert_close(out, torch.tensor([[[2.5], [10.0]]]))


@pytest.mark.parametrize("seed", range(4))
def test_kept_positions_lists_each_images_kept_tokens_in_order(seed):
    """The scatter in kept_positions equals listing each row's kept tokens (the sort it replaced), for the
    plans of every method's function, rows keeping different tokens."""
    from stmsearch.merging import functions as fn
    g = torch.Generator().manual_seed(seed)
    b, t, r, cls = 3, 41, 7, torch.tensor([20, 20, 20])
    metric, mag = torch.randn(b, t, 8, generator=g), torch.rand(b, t, generator=g)
    plans = [fn.stm_1d(metric, cls, r, 2, 3, 1, False, 0.9, torch.ones(b, t), "ward"),
             fn.tome_plan(metric, cls, r, 2, None), fn.prune_plan(mag, cls, r, 2),
             fn.random_plan(cls, t, r, 2, 1, torch.ones(b, t), torch.rand(t - 1, generator=g))]
    for plan in plans:
        expected = torch.stack([row.nonzero().flatten() for row in plan.keep])
        assert torch.equal(fn.kept_positions(plan), expected)
    assert not torch.equal(plans[2].keep[0], plans[2].keep[1])  # the rows differ


def test_stm_merges_the_most_similar_neighbours():
    """Of the allowed pairs on each side, STM (fading off, no window) merges the identical one."""
    from stmsearch.merging.functions import stm_1d
    # layer 0 pairs: (0,1) (2,3) | class token 4 | (5,6) (7,8)
    metric = torch.tensor([[[1.0, 0], [1, 0], [0, 1], [1, 0], [9, 9], [1, 0], [0, 1], [-1, 1], [-1, 1]]])
    plan = stm_1d(metric, torch.tensor([4]), 2, 0, 2, 0, True, None, torch.ones(1, 9))
    assert plan.index.tolist() == [[0, 0, 1, 2, 3, 4, 5, 6, 6]]
    assert plan.out_len == 7


def test_ward_damage_is_the_squared_error_a_merge_adds():
    """w_a w_b / (w_a + w_b) |a - b|^2 equals the weighted squared error of both tokens about their
    weighted mean, computed here directly."""
    from stmsearch.merging.functions import pair_damage
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    wa, wb = torch.rand(2, 5, generator=g) * 4 + 1, torch.rand(2, 5, generator=g) * 4 + 1
    mean = (wa[..., None] * a + wb[..., None] * b) / (wa + wb)[..., None]
    sse = wa * (a - mean).pow(2).sum(-1) + wb * (b - mean).pow(2).sum(-1)
    torch.testing.assert_close(pair_damage(a, b, wa, wb, "ward"), sse)
    torch.testing.assert_close(pair_damage(a, 3 * a, wa, wb, "cosine"), torch.zeros(2, 5), atol=1e-6, rtol=0)


def test_ward_damage_over_a_batch_of_many_images_in_either_layout():
    """More images than one pass takes (the CPU takes a few at a time), as the neighbours of a (B, T, C) stream and of
    a channels-first (B, C, T) one: each image's damages are its own, as the one-pass formula and autograd give them."""
    from stmsearch.merging.functions import WARD_CHUNK, pair_damage
    g = torch.Generator().manual_seed(3)
    n = 2 * WARD_CHUNK + 3
    w = torch.rand(n, 11, generator=g) + 0.5
    for x in (torch.randn(n, 11, 6, generator=g), torch.randn(n, 6, 11, generator=g).transpose(1, 2)):
        want = (x[:, :-1] - x[:, 1:]).pow(2).sum(-1) * (w[:, :-1] * w[:, 1:] / (w[:, :-1] + w[:, 1:]))
        with torch.inference_mode():
            got = pair_damage(x[:, :-1], x[:, 1:], w[:, :-1], w[:, 1:], "ward")
            alone = torch.cat([pair_damage(x[i:i + 1, :-1], x[i:i + 1, 1:], w[i:i + 1, :-1], w[i:i + 1, 1:], "ward")
                               for i in range(n)])
        assert torch.equal(got, alone)
        torch.testing.assert_close(got, want)
        graded = x.clone().requires_grad_(True)
        torch.testing.assert_close(pair_damage(graded[:, :-1], graded[:, 1:], w[:, :-1], w[:, 1:], "ward"), want)


def test_ward_damage_sees_magnitude_that_cosine_ignores():
    """Same direction, tenfold norm: free for cosine, costly for Ward; two faint, nearly equal
    tokens: the reverse. Each kind merges its own pair on either side of the class token."""
    from stmsearch.merging.functions import stm_1d
    # layer 0 pairs: (0,1) (2,3) | class token 4 | (5,6) (7,8)
    side = [[1.0, 0], [10, 0], [0.1, 0], [0.1, 0.02]]
    metric = torch.tensor([side + [[9, 9]] + side])
    args = (torch.tensor([4]), 2, 0, 2, 0, True, None, torch.ones(1, 9))
    assert stm_1d(metric, *args, "cosine").index.tolist() == [[0, 0, 1, 2, 3, 4, 4, 5, 6]]
    assert stm_1d(metric, *args, "ward").index.tolist() == [[0, 1, 2, 2, 3, 4, 5, 6, 6]]


def test_config_round_trips_yaml_and_json(tmp_path):
    cfg = MergeConfig(method="stm", schedule=ParametricSchedule(start=2, interval=2, count=6, shape="increasing"),
                      window=4, neighbourhood="2d", runs=3, fading="fixed", gamma=0.9, size_aware_decay=True)
    for name in ("c.yaml", "c.json"):
        assert load_config(cfg.to_file(tmp_path / name)) == cfg
    json.loads((tmp_path / "c.json").read_text())


def test_parametric_schedule_expands():
    p = ParametricSchedule(start=2, interval=3, count=4)
    assert p.expand(12) == [0, 0, 4, 0, 0, 4, 0, 0, 4, 0, 0, 4]
    inc = ParametricSchedule(start=0, interval=4, count=6, shape="increasing").expand(12)
    dec = ParametricSchedule(start=0, interval=4, count=6, shape="decreasing").expand(12)
    assert [inc[i] for i in (0, 4, 8)] == [3, 6, 9] and [dec[i] for i in (0, 4, 8)] == [9, 6, 3]
    assert MergeConfig(schedule=[0, 10, 0, 10]).token_reduction(4) == pytest.approx(1 - (197 + 187 * 2 + 177) / (4 * 197))


def test_config_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: stm\nschedule: [0, 4]\nwindw: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: windw: unknown key"):
        load_config(bad)
    bad.write_text("method: stm\nschedule: [0, -4]\n")
    with pytest.raises(ConfigError, match=r"schedule\[1\]: negative"):
        load_config(bad)
    bad.write_text("method: merge\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: method: .*'stm'"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"schedule\[5\]: layer index beyond the model's depth 4"):
        MergeConfig(schedule=[0, 0, 0, 0, 0, 3]).validate_for(4)
    with pytest.raises(ConfigError, match=r"schedule.start: layer 6 is beyond the model's depth 4"):
        MergeConfig(schedule=ParametricSchedule(start=6, count=2)).validate_for(4)
    with pytest.raises(ConfigError, match=r"schedule\[1\]: asks to remove 160 of 197 tokens, but only \d+ are mergeable"):  # runs 4: 3 of 4
        MergeConfig(schedule=[0, 160]).validate_for(4)
    with pytest.raises(ConfigError, match="window"):
        MergeConfig(method="stm", window=97, schedule=[2]).validate_for(4)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_apply_rejects_invalid_schedule_before_patching(model):
    with pytest.raises(ConfigError):
        stmsearch.apply(model, MergeConfig(schedule=[0, 150, 0, 0]))
    assert type(model) is stmsearch.models.VisionMamba


def test_trace_needs_a_patched_model():
    with pytest.raises(RuntimeError, match="apply"):
        stmsearch.trace(stmsearch.create_model("vim_proxy", pretrained=False, depth=1))


@pytest.mark.parametrize("case", [{"metric": "dt", "weights": "dt"}, {"metric": "x", "weights": "size"},
                                  {"metric": "B", "weights": "mean"}])
def test_a_plan_made_ahead_equals_the_plan_made_at_the_merge(model, case, monkeypatch):
    """ToMe over a recorded metric plans as soon as the previous mixer records (patch.plan_ahead); the
    forward must be the one that plans at the merge, and every merge after a record must plan ahead."""
    from stmsearch.merging import patch

    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    cfg = MergeConfig(method="tome", schedule=[6, 9, 0, 12], **case)
    ahead = []
    original = patch.plan_ahead

    def counted(info, layer):
        original(info, layer)
        if info["pending"] is not None and info["pending"][0] == layer:
            ahead.append(layer)

    monkeypatch.setattr(patch, "plan_ahead", counted)
    out = run(model, cfg, x)
    trace = stmsearch.trace(model)
    assert ahead == [1, 3]  # layer 0 has no record before it; layer 2 removes nothing
    monkeypatch.setattr(patch, "plan_ahead", lambda info, layer: None)
    assert torch.equal(run(model, cfg, x), out)
    assert stmsearch.trace(model) == trace
    assert [t["tokens"] for t in trace] == [191, 182, 182, 170]


def test_plans_that_read_the_residual_wait_for_the_merge():
    from stmsearch.merging.methods import get_method

    tome = get_method("tome")
    assert tome.ahead(MergeConfig(method="tome", metric="dt"))
    assert not tome.ahead(MergeConfig(method="tome", metric="hidden", weights="dt"))
    assert not tome.ahead(MergeConfig(method="tome", metric="x", weights="norm"))  # norm weights read hidden
    assert not any(get_method(m).ahead(MergeConfig(method=m)) for m in ("stm", "prune", "random"))
