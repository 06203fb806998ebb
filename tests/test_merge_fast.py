"""The GPU fast path of merging (stmsearch.merging.fast, stmsearch.ops.merge_triton) equals the torch path.

Three places run the kernels: CUDA (tests marked ``gpu``), and Triton's CPU interpreter, which
the CPU machines reach through :func:`test_interpreter_parity`: it runs this module's ``interp``
tests in subprocesses (triton_interpreter.run_tests) with ``TRITON_INTERPRET=1`` (the variable must
be set before triton is imported). The torch-only helpers are tested directly.
"""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

import stmsearch
from stmsearch.merging import functions as fn

HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
interp = pytest.mark.skipif(not (INTERPRET and HAS_TRITON),
                            reason="runs inside test_interpreter_parity's subprocesses (TRITON_INTERPRET=1)")
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not (torch.cuda.is_available() and HAS_TRITON),
                                reason="needs a CUDA GPU and triton")

# one config per code path of the kernels: features and their layouts, damage, fading, weights, blocks, sides
CASES = [
    {"method": "stm"},
    {"method": "stm", "symmetric": True, "window": 2},
    {"method": "stm", "metric": "x", "damage": "cosine", "fading": "none"},
    {"method": "stm", "metric": "B", "fading": "estimated", "weights": "size"},
    {"method": "stm", "metric": "hidden", "fading": "layer", "weights": "dt", "runs": 3, "importance": "min"},
    {"method": "stm", "weights": "norm", "importance": "mean", "symmetric": True},
    {"method": "stm", "importance": "max", "damage": "cosine"},
    {"method": "stm", "weights": "norm", "weight_power": 2.0, "importance": "min", "importance_power": 4.0},
    {"method": "stm", "weights": "norm", "weight_power": 1.0, "importance": "max", "importance_power": 1.0},
    {"method": "stm", "weights": "mean", "importance": "none"},
    {"method": "stm", "edges": "free", "symmetric": True, "window": 2},
    {"method": "stm", "drop": 0.5, "weights": "mean", "importance": "none"},
    {"method": "stm", "drop": 0.75, "edges": "free", "symmetric": True, "metric": "x", "weights": "size"},
    {"method": "stm", "drop": 1.0, "runs": 2},
    {"method": "stm", "runs": 4, "runs_from": 0.04, "symmetric": True},  # runs at layer 2 (9 of 196), pairs at 5
    {"method": "stm", "neighbourhood": "2d"},
    {"method": "stm", "neighbourhood": "2d", "symmetric": True, "window": 2, "metric": "x", "damage": "cosine",
     "fading": "estimated", "weights": "mean", "importance": "none", "runs": 4},
    {"method": "random"},
    {"method": "prune", "window": 1},
    {"method": "tome"},
    {"method": "tome", "metric": "x", "weights": "size", "window": 2},
    {"method": "tome", "metric": "dt", "weights": "dt"},
]


def _compare(model: torch.nn.Module, images: torch.Tensor, case: dict, schedule: list[int]) -> None:
    """Logits and per-layer trace of the fast path against the torch path, same model and images."""
    stmsearch.apply(model, stmsearch.MergeConfig(schedule=schedule, **case))
    outs, traces = [], []
    for flag in ("0", "1"):
        os.environ["STMSEARCH_FAST_MERGE"] = flag
        try:
            with torch.no_grad():
                outs.append(model(images).float())
            traces.append(stmsearch.trace(model))
        finally:
            os.environ.pop("STMSEARCH_FAST_MERGE", None)
    stmsearch.apply(model, None)
    assert traces[0] == traces[1]  # same tokens, class-token index and patch counts at every layer
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)


@interp
@pytest.mark.parametrize("case", CASES, ids=lambda c: " ".join(f"{k}={v}" for k, v in c.items()))
def test_fast_equals_torch_interp(case: dict) -> None:
    torch.manual_seed(0)
    model = stmsearch.create_model("vim_proxy").eval()
    images = torch.randn(2, 1, 28, 28)
    _compare(model, images, case, [0, 0, 9, 0, 0, 7] + [0] * 6)


KERNELS = {"stm": ["edge_scores", "select_chain", "merge_segments"], "stm 2d": ["stm_2d_plan", "merge_segments"],
           "stm free": ["edge_scores", "select_chain", "merge_segments"],
           "stm drop": ["edge_scores", "drop_scores", "select_chain", "apply_drops", "select_chain", "merge_segments"],
           "random": ["select_chain", "merge_segments"], "prune": ["prune_plan", "merge_segments"],
           "tome": ["tome_plan", "merge_segments"]}


@interp
@pytest.mark.parametrize("method", KERNELS)
def test_kernels_are_used_interp(monkeypatch, method: str) -> None:
    """The parity above means something only if the fast path ran."""
    from stmsearch.ops import merge_triton as mt

    calls = []
    for name in ("edge_scores", "select_chain", "prune_plan", "tome_plan", "stm_2d_plan", "merge_segments",
                 "drop_scores", "apply_drops"):
        original = getattr(mt, name)
        monkeypatch.setattr(mt, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    model = stmsearch.create_model("vim_proxy").eval()
    extra = {"stm 2d": {"neighbourhood": "2d"}, "stm free": {"edges": "free"}, "stm drop": {"drop": 0.5}}.get(method, {})
    stmsearch.apply(model, stmsearch.MergeConfig(method=method.split()[0], schedule=[0, 0, 6], **extra))
    with torch.no_grad():
        model(torch.randn(1, 1, 28, 28))
    assert calls == KERNELS[method]


def test_interpreter_parity() -> None:
    """Run the ``interp`` tests of this module on the CPU through Triton's interpreter."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed (the dev extra installs it)")
    if INTERPRET:
        pytest.skip("already inside the interpreter run")
    from triton_interpreter import run_tests

    assert run_tests([__file__, "-k", "interp"]) == len(CASES) + len(KERNELS) + 8


@interp
def test_importance_vectors_equal_the_features_interp() -> None:
    """One launch for STM's importance-derived vectors: features.powered's damage scale and norm
    weights, at power 1 (raw) and above, over strided importance with tiny and huge values."""
    from stmsearch.merging import features as ft
    from stmsearch.ops import merge_triton as mt

    torch.manual_seed(3)
    imp = (torch.rand(3, 2 * 37) * 10)[:, ::2]
    imp[0, :4] = torch.tensor([0.0, 1e-9, 1e4, 3e3])
    sizes = torch.randint(1, 4, (3, 37)).float()
    for q, p in ((2.0, 4.0), (1.0, 1.0), (8.0, 0.5)):
        dmg, w = mt.importance_vectors(imp, sizes, q, p)
        torch.testing.assert_close(dmg, ft.powered(imp, q), rtol=1e-5, atol=0)
        torch.testing.assert_close(w, sizes * ft.powered(imp.clamp_min(1e-6), p), rtol=1e-5, atol=0)
    dmg, w = mt.importance_vectors(imp, sizes, None, 2.0)
    assert dmg is None and w is not None


@interp
def test_step_statistics_equal_the_features_interp() -> None:
    """The estimated fading decay and the ``dt`` weights, one launch each, equal features.fading's and
    features.weights' torch ops, over a padded (strided) ``delta``, with and without a bias."""
    from types import SimpleNamespace

    from stmsearch.merging import features as ft
    from stmsearch.ops import merge_triton as mt
    from stmsearch.ops.direction import Direction

    torch.manual_seed(6)
    bsz, chans, length, states = 3, 40, 37, 5
    delta = torch.randn(bsz, chans, 48)[..., :length] * 3
    a = -torch.rand(chans, states) * 2
    sizes = torch.randint(1, 4, (bsz, length)).float()
    for bias in (torch.randn(chans), None):
        d = Direction(None, delta, a, None, None, None, bias)
        step = SimpleNamespace(config=SimpleNamespace(fading="estimated", weights="dt"), recorded=d,
                               state={"sizes": sizes})
        torch.testing.assert_close(mt.mean_decay(delta, bias, a), ft.fading(step), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mt.dt_weights(delta, bias, sizes), ft.weights(step), rtol=1e-5, atol=1e-6)


@interp
def test_edge_scores_tiles_agree_interp() -> None:
    """The shifted edge-score program (each token read and activated once, the next token's row taken
    from the same tile) scores every edge as the plain one (each edge's two tokens read), over tiles
    that split the edges unevenly, both layouts, a dt metric's softplus, both damages and blocks."""
    from stmsearch.ops import merge_triton as mt

    torch.manual_seed(5)
    for channels_first in (True, False):
        feat = torch.randn(3, 40, 37) if channels_first else torch.randn(3, 37, 40)
        cls, w, imp = torch.tensor([18, 3, 30]), torch.rand(3, 37) + 0.5, torch.rand(3, 37)
        for bias in (None, torch.randn(40)):
            for runs, ward in ((3, True), (None, False)):
                args = (feat, channels_first, cls, 1, runs, 1, w, ward, 0.9, bias, imp, "min")
                ref = mt.edge_scores(*args, tiles=(16, 16, 4, False))
                for tiles in ((16, 16, 4, True), (8, 64, 4, True), (32, 16, 4, True)):
                    torch.testing.assert_close(mt.edge_scores(*args, tiles=tiles), ref, rtol=1e-5, atol=1e-6)


@interp
def test_select_chain_equals_torch_choice_interp() -> None:
    """The one-launch choice and chain plan: torch's choose_edges + chain_plan (ties, as identical
    tokens give, to the earlier edge), per side, with random's block mask applied in the kernel and a
    shared (stride 0) score row, and a shortage flagged."""
    from stmsearch.merging.capacity import block_offset
    from stmsearch.ops import merge_triton as mt

    torch.manual_seed(4)
    for b, t, r, left, cls in ((3, 21, 6, None, 10), (2, 40, 9, 4, 20), (2, 37, 5, 0, 3), (2, 30, 7, None, 0)):
        score = torch.randint(0, 4, (b, t - 1)).float()  # many ties
        score[:, ::5] = fn._BIG
        cls_t = torch.full((b,), cls)
        if left is None:
            ref = fn.choose_edges(score, score < fn._BIG / 2, r)
        else:
            before = fn.positions(b, t - 1, score.device) < cls_t[:, None]
            ref = torch.zeros_like(before)
            for side, k in ((before, left), (~before, r - left)):
                if k:
                    ref |= fn.choose_edges(score, (score < fn._BIG / 2) & side, k)
        plan = fn.chain_plan(ref, None, r)
        index, keep, first, ok = mt.select_chain(score, cls_t, r, left)
        assert ok.all() and torch.equal(index, plan.index) and torch.equal(keep, plan.keep)
        pos = torch.arange(t)
        for i in range(b):
            for j in range(t - r):
                assert pos[index[i] == j].tolist() == list(range(int(first[i, j]), int(first[i, j + 1])))
    draw = torch.rand(24)
    for layer, window in ((0, 0), (3, 2)):
        cls_t = torch.tensor([12, 12])
        ref = fn.random_plan(cls_t, 25, 6, window, layer, torch.ones(2, 25), draw)
        pairs = (window, 2, block_offset(layer, 2))
        index, keep, first, ok = mt.select_chain(draw.expand(2, -1), cls_t, 6, None, pairs)
        assert ok.all() and torch.equal(index, ref.index) and torch.equal(keep, ref.keep)
    *_, ok = mt.select_chain(torch.rand(1, 8), torch.tensor([4]), 3, None, (2, 2, 0))  # 2 pairs outside the window
    assert not ok.any()
    *_, ok = mt.select_chain(torch.rand(1, 8), torch.tensor([2]), 4, 3)  # 2 edges before the class token
    assert not ok.any()


@interp
def test_prune_kernel_equals_torch_plan_interp() -> None:
    """The one-launch pruning plan: the torch plan's slots, weights and kept tokens, and each slot's
    first token (slot j holds exactly tokens first[j]..first[j+1]-1), with the class token near
    either end, and a shortage of unprotected tokens flagged."""
    from stmsearch.ops import merge_triton as mt

    torch.manual_seed(1)
    for b, t, r, window, cls in ((3, 21, 6, 1, 10), (2, 40, 15, 0, 3), (2, 37, 9, 2, 33)):
        magnitude = torch.rand(b, 2 * t)[:, ::2]  # a strided view, as a step's importance may be
        cls_t = torch.full((b,), cls)
        ref = fn.prune_plan(magnitude, cls_t, r, window)
        index, weight, keep, first, ok = mt.prune_plan(magnitude, cls_t, r, window)
        assert torch.equal(index, ref.index) and torch.equal(keep, ref.keep) and ok.all()
        torch.testing.assert_close(weight, ref.weight)
        assert first.shape == (b, t - r + 1) and (first[:, -1] == t).all()
        pos = torch.arange(t)
        for i in range(b):
            for j in range(t - r):
                assert pos[index[i] == j].tolist() == list(range(int(first[i, j]), int(first[i, j + 1])))
    *_, ok = mt.prune_plan(torch.rand(1, 9), torch.tensor([4]), 5, 2)  # 4 tokens outside the window
    assert not ok.any()


@interp
def test_tome_kernel_equals_torch_plan_interp() -> None:
    """The one-launch ToMe plan: the torch plan's slots and kept tokens, with its slots listed as
    runs of ``order`` (each holding exactly its tokens, in sequence order), for features in either
    layout, odd and even lengths, a protected window and a shortage flagged."""
    from stmsearch.ops import merge_triton as mt

    torch.manual_seed(2)
    for b, t, r, window, cls in ((3, 21, 7, 1, 10), (2, 40, 12, 0, 20), (2, 37, 5, 3, 18)):
        feat = torch.randn(b, 16, t).transpose(1, 2) if t % 2 else torch.randn(b, t, 16)
        cls_t = torch.full((b,), cls)
        ref = fn.tome_plan(feat, cls_t, r, window, None)
        index, keep, first, order, ok = mt.tome_plan(feat, cls_t, r, window)
        assert torch.equal(index, ref.index) and torch.equal(keep, ref.keep) and ok.all()
        # destinations split over programs (16 a program), the channel loop unrolled: the same plan
        for tiles in ((32, 16, "ieee", 4, 4, 16), (16, 16, "ieee", 4, 4, 32, 2)):
            split = mt.tome_plan(feat, cls_t, r, window, tiles=tiles)
            assert all(torch.equal(x, y) for x, y in zip(split, (index, keep, first, order, ok))), (t, r, tiles)
        assert first.shape == (b, t - r + 1) and order.shape == (b, t)
        pos = torch.arange(t)
        for i in range(b):
            assert sorted(order[i].tolist()) == list(range(t))
            for j in range(t - r):
                members = order[i, int(first[i, j]):int(first[i, j + 1])].tolist()
                assert members == pos[index[i] == j].tolist()
    # pre-activation steps: softplus(feat + bias) compared, as features.step_sizes makes them; channels
    # over three steps (each step's bias loaded a step ahead)
    feat, bias, cls_t = torch.randn(2, 40, 33).transpose(1, 2), torch.randn(40), torch.full((2,), 16)
    ref = fn.tome_plan(torch.nn.functional.softplus(feat + bias), cls_t, 9, 1, None)
    for tiles in (None, (16, 16, "ieee", 4, 4, 16)):
        index, keep, *_ = mt.tome_plan(feat, cls_t, 9, 1, tiles=tiles, softplus_bias=bias)
        assert torch.equal(index, ref.index) and torch.equal(keep, ref.keep), tiles
    assert not torch.equal(mt.tome_plan(feat, cls_t, 9, 1)[0], index)  # the bias is not ignored
    # exact ties across the split's parts go to the earlier destination, as the torch plan's
    feat = torch.randn(2, 70, 16)
    feat[:, 1::2] = feat[:, 1:2]  # every destination alike: each source's best is destination 0
    feat[:, 40] = feat[:, 1]  # a source as alike as can be
    cls_t = torch.full((2,), 35)
    ref = fn.tome_plan(feat, cls_t, 6, 0, None)
    for tiles in ((32, 16, "ieee", 4, 4), (32, 16, "ieee", 4, 4, 16)):
        index, keep, *_ = mt.tome_plan(feat, cls_t, 6, 0, tiles=tiles)
        assert torch.equal(index, ref.index) and torch.equal(keep, ref.keep), tiles
    *_, ok = mt.tome_plan(torch.randn(1, 9, 4), torch.tensor([4]), 3, 2)  # 2 sources left outside the window
    assert not ok.any()


@interp
def test_merge_kernel_slots_interp() -> None:
    """merge_segments with several slots a program gives the one-slot program's result bit for bit:
    runs of one to four tokens with and without weights, ToMe's listed slots, rows that end inside a
    program's slots."""
    from stmsearch.ops import merge_triton as mt

    torch.manual_seed(3)
    b, t, c = 2, 23, 40
    x, w, sizes = torch.randn(b, t, c), torch.rand(b, t), torch.rand(b, t) + 0.5
    rep, cls = torch.arange(t).expand(b, t).contiguous(), torch.tensor([11, 4])
    lengths = [1, 3, 1, 1, 4, 2, 1, 1, 1, 2, 1, 1, 3, 1]  # 14 slots over 23 tokens
    starts = torch.tensor([0] + lengths).cumsum(0)
    first = starts.to(torch.int32).expand(b, -1).contiguous()
    keep = torch.zeros(b, t, dtype=torch.bool)
    keep[:, starts[:-1]] = True
    index, keep_t, first_t, order, _ = mt.tome_plan(torch.randn(b, t, 16), cls, 8, 0)
    for args in ((x, w, first, keep, sizes, rep, cls), (x, None, first, keep, sizes, rep, cls),
                 (x, w, first_t, keep_t, sizes, rep, cls, order)):
        ref = mt.merge_segments(*args, tiles=(1, 1))
        assert ref[0].shape[1] in (14, 15)
        for tiles in ((4, 1), (8, 4), (16, 2)):
            got = mt.merge_segments(*args, tiles=tiles)
            assert all(torch.equal(p, q) for p, q in zip(ref, got)), tiles
    # the runs' weighted means, their sizes and the class token's slot
    out, osizes, orep, ocls = mt.merge_segments(x, w, first, keep, sizes, rep, cls, tiles=(8, 4))
    j = 4  # tokens 6..9
    want = (w[:, 6:10, None] * x[:, 6:10]).sum(1) / w[:, 6:10].sum(1, keepdim=True)
    torch.testing.assert_close(out[:, j], want)
    assert torch.allclose(osizes[:, j], sizes[:, 6:10].sum(1)) and (orep[:, j] == 6).all()
    assert ocls.tolist() == [int((starts[1:] > 11).nonzero()[0]), int((starts[1:] > 4).nonzero()[0])]


@interp
def test_stm_2d_kernel_equals_torch_plan_interp() -> None:
    """The one-launch 2-D plan: the torch plan's slots and kept tokens for tokens left by arbitrary earlier
    merges (cells with one to four tokens), both layers' cell offsets, features in either layout, ties
    (identical tokens, damage 0) to the earlier token, sides, weights, importance and fading; its slots
    listed as runs of ``order``; a shortage flagged."""
    from stmsearch.merging.capacity import split_sides
    from stmsearch.ops import merge_triton as mt

    grid, patches = 8, 64
    g = torch.Generator().manual_seed(5)
    for case, (layer, runs, window, symmetric, ward) in enumerate(
            [(0, 2, 0, False, True), (1, 3, 1, True, False), (2, 4, 2, False, True), (3, 3, 0, True, True)]):
        left_patches = sorted(torch.randperm(patches, generator=g)[:48].tolist())
        rep = torch.tensor(left_patches)
        split = int((rep < patches // 2).sum())
        rep = torch.cat([rep[:split], torch.tensor([-1]), rep[split:]])[None].expand(2, -1)
        t = rep.shape[1]
        cls = torch.full((2,), split)
        if case % 2:
            feat = torch.randn(2, t, 8, generator=g)
        else:  # two kinds of token: many members tie at damage 0, within cells and across them
            feat = torch.randint(0, 2, (2, t, 1), generator=g).float().expand(-1, -1, 8).contiguous()
        channels_first = case % 2 == 1
        weight = torch.rand(2, t, generator=g) + 0.5
        imp = torch.rand(2, t, generator=g) + 0.1
        fading = torch.tensor([0.9, 0.95]) if case == 2 else 0.97
        r = 6
        left = split_sides(r, layer)[0] if symmetric else None
        ref = fn.stm_2d(feat, cls, rep, grid, r, window, runs, layer, symmetric, fading, weight,
                        "ward" if ward else "cosine", importance=imp, importance_kind="min")
        index, keep, first, order, ok = mt.stm_2d_plan(feat.transpose(1, 2) if channels_first else feat,
                                                       channels_first, cls, rep, grid, r, window, runs, layer,
                                                       left, weight, ward, fading, importance=imp,
                                                       importance_kind="min")
        assert ok.all() and torch.equal(index, ref.index) and torch.equal(keep, ref.keep), case
        pos = torch.arange(t)
        for i in range(2):
            assert sorted(order[i].tolist()) == list(range(t))
            for j in range(t - r):
                assert order[i, int(first[i, j]):int(first[i, j + 1])].tolist() == pos[index[i] == j].tolist()
    rep = torch.tensor([[0, 2, 4, -1, 40, 42]])  # one token a cell: nothing can merge
    *_, ok = mt.stm_2d_plan(torch.randn(1, 6, 4), False, torch.tensor([3]), rep, grid, 1, 0, 2, 0, None, None, True,
                            None)
    assert not ok.any()


def test_fixed_fading_is_a_float() -> None:
    """Fixed fading is a host float (a tensor made per layer would copy to the GPU and stall it),
    and fading it equals fading by the same gamma as a tensor."""
    dist = torch.arange(6).float()
    damage = torch.rand(2, 6)
    torch.testing.assert_close(fn.fade(damage, 0.9, dist), fn.fade(damage, torch.tensor(0.9), dist))
    torch.testing.assert_close(fn.fade(damage, torch.tensor([0.9, 0.8]), dist),
                               damage * torch.tensor([[0.9], [0.8]]) ** dist)
    assert fn.fade(damage, None, dist) is damage


@gpu
@needs_cuda
@pytest.mark.parametrize("case", CASES + [{"method": "stm", "runs": 2}],
                         ids=lambda c: " ".join(f"{k}={v}" for k, v in c.items()))
def test_fast_equals_torch_gpu(case: dict) -> None:
    torch.manual_seed(0)
    model = stmsearch.create_model("vim_tiny").cuda().eval()
    images = torch.randn(4, 3, 224, 224, device="cuda")
    _compare(model, images, case, [0, 0] + [8, 0] * 11)


@gpu
@needs_cuda
def test_tome_tf32x3_plan_equals_ieee_and_torch_gpu() -> None:
    """ToMe's similarities run at three-pass TF32 on CUDA for most layouts and dtypes (tome_tiles): its
    plans must be the IEEE kernel's and (fp32) the torch path's, at the sizes of vim_tiny and vim_small,
    at odd lengths, for token-major and channel-major features in fp32 and bf16."""
    from stmsearch.ops import merge_triton as mt

    torch.manual_seed(3)
    for b, t, c, r in ((64, 197, 192, 16), (64, 181, 384, 16), (8, 120, 768, 30)):
        for channel_major in (False, True):
            for dtype in (torch.float32, torch.bfloat16):
                feat = torch.randn(b, c, t, device="cuda").transpose(1, 2) if channel_major else \
                    torch.randn(b, t, c, device="cuda")
                feat = feat.to(dtype)
                cls_t = torch.full((b,), t // 2, device="cuda")
                fast = mt.tome_plan(feat, cls_t, r, 0)
                ieee = mt.tome_plan(feat, cls_t, r, 0, tiles=(32, 16, "ieee", 4, 4))
                assert all(torch.equal(x, y) for x, y in zip(fast, ieee)), (b, t, c, channel_major, dtype)
                if dtype == torch.float32:
                    ref = fn.tome_plan(feat, cls_t, r, 0, None)
                    assert torch.equal(fast[0], ref.index) and torch.equal(fast[1], ref.keep)


@gpu
@needs_cuda
@pytest.mark.parametrize("case", CASES, ids=lambda c: " ".join(f"{k}={v}" for k, v in c.items()))
def test_merged_forward_never_syncs(case: dict) -> None:
    """A merged forward queues its work without waiting for the GPU (a wait per layer starves it)."""
    model = stmsearch.create_model("vim_tiny").cuda().eval()
    stmsearch.apply(model, stmsearch.MergeConfig(schedule=[0, 0] + [8, 0] * 11, **case))
    images = torch.randn(4, 3, 224, 224, device="cuda")
    with torch.no_grad():
        model(images)  # compile and autotune first
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            model(images)
        finally:
            torch.cuda.set_sync_debug_mode(0)


@gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_plan_ahead_on_a_side_stream_gpu(dtype, monkeypatch) -> None:
    """ToMe over ``dt`` plans on a side stream beside the scan (patch.plan_ahead): eager and graph-replayed
    forwards equal, bit for bit, the forward that plans at the merge on the main stream."""
    from stmsearch.merging import patch

    torch.manual_seed(0)
    model = stmsearch.create_model("vim_tiny").cuda().eval()
    stmsearch.apply(model, stmsearch.MergeConfig(method="tome", metric="dt", schedule=[0, 0] + [8, 0] * 11))
    images = torch.randn(8, 3, 224, 224, device="cuda")
    autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16,  # noqa: E731
                                      cache_enabled=False)
    with torch.no_grad(), autocast():
        ahead = model(images).float()
        trace = stmsearch.trace(model)
        assert len(model._stm["streams"]) == 1
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            model(images)  # warm-up before capture, off the default stream
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = model(images)
        graph.replay()
        torch.cuda.synchronize()
        monkeypatch.setattr(patch, "plan_ahead", lambda info, layer: None)
        plain = model(images).float()
    assert stmsearch.trace(model) == trace
    assert torch.equal(ahead, plain) and torch.equal(captured.float(), plain)
