"""The saliency probe: the Fisher saliency it learns, its features, its file, and what ``importance_source``
does with it (stmsearch.models.probe, stmsearch.evaluation.saliency, ``stmsearch fit-probe``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
import torch
from click.testing import CliRunner

import stmsearch
from stmsearch import ConfigError, MergeConfig
from stmsearch.cli import main
from stmsearch.evaluation.saliency import collect, compress, fit, narrow
from stmsearch.merging.gradients import fisher_saliency, logit_jacobian
from stmsearch.models import create_model, zoo
from stmsearch.models import probe as pb

# two merging layers late in a 4-layer model: a backward through at most two layers each (fast on the CPU)
SCHEDULE = [0, 0, 8, 8]


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("vim_proxy", pretrained=False, depth=4)


def _images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def _config(**over) -> MergeConfig:
    return MergeConfig(**{"method": "stm", "schedule": SCHEDULE, "importance_source": "norm", **over})


def test_fisher_saliency_is_the_expected_squared_gradient_of_the_log_likelihood():
    """sum_k p_k ||d log p_k / d x_t||^2, computed class by class with autograd, equals the batched form."""
    torch.manual_seed(0)
    z0 = torch.randn(2, 5)
    x = torch.randn(2, 3, 4, requires_grad=True)
    w = torch.randn(3, 4, 5)
    z = z0 + torch.einsum("btc,tck->bk", x, w)
    eye = torch.eye(5)[:, None].expand(5, 2, 5)
    g = torch.autograd.grad(z, x, grad_outputs=eye, is_grads_batched=True, retain_graph=True)[0]
    fast = fisher_saliency(z.detach(), g)
    p = z.softmax(-1).detach()
    slow = torch.zeros(2, 3)
    for k in range(5):
        gk = torch.autograd.grad(z.log_softmax(-1)[:, k].sum(), x, retain_graph=True)[0]
        slow += p[:, k, None] * gk.pow(2).sum(-1)
    assert torch.allclose(fast, slow, rtol=1e-4, atol=1e-6)


def test_features_of_an_image_do_not_depend_on_its_batch():
    torch.manual_seed(0)
    res, hid = torch.randn(3, 9, 4), torch.randn(3, 9, 4)
    cls, sizes = torch.tensor([4, 3, 5]), torch.rand(3, 9) + 1
    norm = hid.norm(dim=-1)
    full = pb.features(res, hid, cls, sizes, norm)
    assert full.shape == (3, 9, 3 * 4 + pb.EXTRA)
    for i in range(3):
        one = pb.features(res[i:i + 1], hid[i:i + 1], cls[i:i + 1], sizes[i:i + 1], norm[i:i + 1])
        assert torch.equal(one, full[i:i + 1])


@pytest.mark.parametrize("rank", [None, 3])
def test_predict_is_the_mlp_over_the_features_without_forming_them(rank):
    """The factored prediction a merge runs equals the MLP over :func:`features` that fitting trains,
    at any layer row and length, for a full and a low-rank first layer, in and out of inference mode."""
    g = torch.Generator().manual_seed(1)
    c, hidden, layers = 6, 5, (2, 4)
    f = 3 * c + pb.EXTRA
    w1 = torch.randn(2, f, rank or hidden, generator=g)
    v = None if rank is None else torch.randn(2, rank, hidden, generator=g)
    probe = pb.SaliencyProbe(layers, w1, torch.randn(2, hidden, generator=g), torch.randn(2, hidden, generator=g),
                             torch.randn(2, generator=g), v=v)
    for t, layer in ((11, 2), (7, 4), (11, 9)):
        res, hid = 3 * torch.randn(4, t, c, generator=g), torch.randn(4, t, c, generator=g)
        cls = torch.tensor([0, t // 2, t - 1, 2])
        sizes = torch.randint(1, 4, (4, t), generator=g).float()
        norm = hid.norm(dim=-1)
        want = probe.log_saliency(layer, pb.features(res, hid, cls, sizes, norm))
        got = probe.predict(layer, res, hid, cls, sizes, norm)
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-5)
        with torch.inference_mode():
            assert torch.equal(probe.predict(layer, res, hid, cls, sizes, norm), got)
        # under autograd (a merge in a model being trained or differentiated) it still predicts, with gradients
        res.requires_grad_(True)
        graded = probe.predict(layer, res, hid, cls, sizes, norm)
        graded.sum().backward()
        assert torch.allclose(graded, want, atol=1e-4, rtol=1e-5) and res.grad is not None
    assert probe.macs_per_token == (2 * c + 2) * (rank or hidden) + (rank or 0) * (hidden if rank else 0) + hidden


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_predict_on_the_gpu_is_the_mlp_over_the_features_and_the_cpus_prediction():
    """The shipped digits probe on CUDA, fp32 and with a bf16 mixer output (autocast's): the formed features'
    MLP there and the CPU's prediction, up to rounding."""
    probe = pb.of(create_model("vim_proxy"))
    g = torch.Generator().manual_seed(2)
    b, t, c = 8, 197, probe.embed_dim
    res, hid = 3 * torch.randn(b, t, c, generator=g), torch.randn(b, t, c, generator=g)
    cls, sizes = torch.randint(0, t, (b,), generator=g), torch.randint(1, 4, (b, t), generator=g).float()
    norm = hid.norm(dim=-1)
    with torch.inference_mode():
        cpu = probe.predict(6, res, hid, cls, sizes, norm)
        on = [v.cuda() for v in (res, hid, cls, sizes, norm)]
        gpu = probe.predict(6, *on)
        want = probe.log_saliency(6, pb.features(*on))
        half = probe.predict(6, on[0], on[1].bfloat16(), *on[2:])
    torch.testing.assert_close(gpu, want, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=1e-4)
    assert half.dtype == torch.float32 and (half - gpu).abs().max() < 0.1


def test_collect_reads_each_merging_layers_saliency_and_splits_by_image():
    model, x = _tiny(), _images(3)
    train, held = collect(model, x, _config(), batch=2, split=1)  # the split falls inside the first batch
    assert sorted(train) == sorted(held) == [2, 3]
    # layer 2 sees 197 tokens (196 read, the class token left out): 1 and 2 images
    assert sum(len(y) for _, y in train[2]) == 1 * 196 and sum(len(y) for _, y in held[2]) == 2 * 196
    # the targets are centred per image
    y = torch.cat([b for _, b in held[2]])
    assert abs(y.view(2, 196).mean(-1)).max() < 1e-4
    # one image's targets are the same read alone or in a batch, and the path is the config's own
    alone, _ = collect(model, x[1:2], _config(), batch=1)
    assert torch.allclose(alone[3][0][1], held[3][0][1][:alone[3][0][1].numel()], atol=1e-4)
    assert pb.of(model) is None and not hasattr(model, "_stm")


def test_fit_learns_the_saliency_and_the_file_round_trips(tmp_path):
    model, x = _tiny(), _images(4)
    probe = fit(model, x, _config(), holdout=1, hidden=16, steps=300, batch=4)
    assert probe.layers == (2, 3) and probe.embed_dim == 64
    # on its own training tokens the probe explains much of the saliency (a constant explains none)
    train, _ = collect(model, x[:3], _config(), batch=3)
    f, y = train[2][0][0].float(), train[2][0][1]
    pred = probe.log_saliency(2, f)
    assert 1 - (pred - y).pow(2).mean() / y.var() > 0.3
    assert set(probe.meta["heldout_r2"]) == {"2", "3"}
    probe.save(tmp_path / "p.pt")
    again = pb.load(tmp_path / "p.pt")
    assert again.layers == probe.layers and again.meta["heldout_r2"] == probe.meta["heldout_r2"]
    assert torch.equal(again.log_saliency(2, f), pred)
    # a layer it was not fitted at reads the nearest fitted one
    assert torch.equal(again.log_saliency(0, f), again.log_saliency(2, f))


@pytest.fixture(scope="module")
def distilling():
    """A tiny model, a probe fitted to it and the features of its path: what compress and narrow distil from."""
    model, x = _tiny(), _images(4)
    full = fit(model, x, _config(), hidden=16, steps=300, batch=4)
    feats, _ = collect(model, x, _config(), batch=4, saliency=False)
    return model, full, {k: torch.cat([a for a, _ in v]).float() for k, v in feats.items()}


def test_compress_distils_a_low_rank_probe_that_predicts_like_the_full_one(tmp_path, distilling):
    model, full, feats = distilling
    start = compress(full, feats, rank=8, steps=0)  # the principal directions alone
    small = compress(full, feats, rank=8, steps=300)
    assert small.v.shape == (2, 8, 16) and small.w1.shape == (2, full.w1.shape[1], 8)
    assert small.macs_per_token == (2 * 64 + 2) * 8 + 8 * 16 + 16 < full.macs_per_token  # as predict() runs it
    for layer in (2, 3):
        y = full.log_saliency(layer, feats[layer])
        agree = 1 - (small.log_saliency(layer, feats[layer]) - y).pow(2).mean() / y.var()
        assert agree > 0.99 and small.meta["teacher_r2"][str(layer)] == pytest.approx(agree.item(), abs=1e-3)
        assert start.meta["teacher_r2"][str(layer)] < small.meta["teacher_r2"][str(layer)]  # distilling helps
    small.save(tmp_path / "s.pt")
    again = pb.load(tmp_path / "s.pt")
    assert torch.equal(again.log_saliency(2, feats[2]), small.log_saliency(2, feats[2]))
    # it is what fvcore counts at a merge: one more layer's worth of MACs per token than without it
    from stmsearch.evaluation.flops import count_flops
    pb.attach(model, again)
    counts = []
    for source in ("norm", "probe"):
        stmsearch.apply(model, _config(importance_source=source))
        counts.append(count_flops(model, (1, 28, 28))["flops"])
        stmsearch.apply(model, None)
    assert counts[1] - counts[0] == pytest.approx((197 + 189) * small.macs_per_token, rel=0.02)


def test_narrow_distils_a_probe_of_fewer_units_that_predicts_like_the_full_one(tmp_path, distilling):
    _, full, feats = distilling
    start = narrow(full, feats, hidden=8, steps=0)  # the eight units of largest contribution alone
    small = narrow(full, feats, hidden=8, steps=500)
    assert small.v is None and small.w1.shape == (2, full.w1.shape[1], 8) and small.b1.shape == (2, 8)
    assert small.meta["hidden"] == 8 and small.meta["narrowed_from"] == 16
    # its R^2 against the saliency was never measured: the teacher's is kept under its own name
    assert "heldout_r2" not in small.meta and small.meta["teacher_heldout_r2"] == full.meta["heldout_r2"]
    assert small.macs_per_token == (2 * 64 + 2) * 8 + 8 < full.macs_per_token  # as predict() runs it
    for layer in (2, 3):
        y = full.log_saliency(layer, feats[layer])
        agree = 1 - (small.log_saliency(layer, feats[layer]) - y).pow(2).mean() / y.var()
        assert agree > 0.95 and small.meta["teacher_r2"][str(layer)] == pytest.approx(agree.item(), abs=1e-3)
        assert start.meta["teacher_r2"][str(layer)] < small.meta["teacher_r2"][str(layer)]  # distilling helps
    # every unit kept and no step taken: the full probe itself, its units reordered
    same = narrow(full, feats, hidden=16, steps=0)
    assert torch.allclose(same.log_saliency(3, feats[3]), full.log_saliency(3, feats[3]), atol=1e-5)
    small.save(tmp_path / "n.pt")
    assert torch.equal(pb.load(tmp_path / "n.pt").log_saliency(2, feats[2]), small.log_saliency(2, feats[2]))
    with pytest.raises(pb.ProbeError, match="hidden 17 must lie in 1..16"):
        narrow(full, feats, hidden=17)
    with pytest.raises(pb.ProbeError, match="low-rank"):
        narrow(compress(full, feats, rank=2, steps=0), feats, hidden=4)


def test_probe_files_are_checked_field_by_field(tmp_path):
    with pytest.raises(pb.ProbeError, match="no such saliency probe file"):
        pb.load(tmp_path / "absent.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(pb.ProbeError, match=r"other\.pt: format: not a saliency probe file"):
        pb.load(tmp_path / "other.pt")
    good = pb.SaliencyProbe((2,), torch.zeros(1, 3 * 4 + pb.EXTRA, 5), torch.zeros(1, 5), torch.zeros(1, 5),
                            torch.zeros(1))
    good.save(tmp_path / "good.pt")
    obj = torch.load(tmp_path / "good.pt", weights_only=True)
    obj["b1"] = torch.zeros(1, 4)
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(pb.ProbeError, match=r"bad\.pt: b1: shape \(1, 4\), expected \(1, 5\)"):
        pb.load(tmp_path / "bad.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(pb.ProbeError, match=r"text\.pt: not a saliency probe file"):
        pb.load(tmp_path / "text.pt")
    # fitted for embed_dim 4, the model has 64
    with pytest.raises(pb.ProbeError, match=r"good\.pt: w1: fitted for embed_dim 4, the model has 64"):
        pb.attach(_tiny(), tmp_path / "good.pt")


def test_importance_source_reads_the_probe_norm_ignores_it_and_probe_needs_one():
    model, x = _tiny(), _images(4)
    with pytest.raises(ConfigError, match="importance_source: probe needs a saliency probe on the model"):
        stmsearch.apply(model, _config(importance_source="probe"))

    def logits(source):
        stmsearch.apply(model, _config(importance_source=source, importance="mean", weights="norm"))
        try:
            with torch.inference_mode():
                return model(x)
        finally:
            stmsearch.apply(model, None)

    norm = logits("norm")
    assert torch.equal(logits("auto"), norm)  # no probe: auto is the output norm
    # a fitted probe of this width (the shipped proxy's: this model's layers read its nearest fitted ones), not
    # fitted here: collecting saliency costs a backward per merging layer and image, most of a minute on CI
    probe = pb.of(create_model("vim_proxy"))
    probe.w2 = -probe.w2  # the opposite ranking to what it learned: surely not the output norm's
    pb.attach(model, probe)
    assert torch.equal(logits("norm"), norm)
    assert torch.equal(logits("auto"), logits("probe")) and not torch.equal(logits("probe"), norm)
    # an image's answer does not depend on its batch with the probe either
    stmsearch.apply(model, _config(importance_source="probe", importance="mean", weights="norm"))
    try:
        with torch.inference_mode():
            both, one = model(x), model(x[1:2])
    finally:
        stmsearch.apply(model, None)
    assert torch.allclose(both[1:2], one, atol=1e-5)


def test_the_shipped_proxies_carry_their_probes_and_other_weights_do_not(tmp_path):
    for name in ("vim_proxy", "vim_proxy_clutter"):
        probe = pb.of(create_model(name))
        assert probe is not None and probe.embed_dim == 64 and probe.meta["model"] == name
        assert min(probe.meta["heldout_r2"].values()) > 0.3  # as fitted by `stmsearch fit-probe` on the GPU
        assert pb.of(create_model(name, pretrained=False)) is None
    # the shipped file named explicitly, as a string, is the shipped weights all the same
    assert pb.of(create_model("vim_proxy", checkpoint=str(zoo.PRETRAINED["vim_proxy"].shipped))) is not None
    path = tmp_path / "w.pt"
    torch.save({"model": create_model("vim_proxy").state_dict()}, path)
    assert pb.of(create_model("vim_proxy", checkpoint=path)) is None  # its own weights: no probe fits them
    assert zoo.PRETRAINED["vim_proxy"].probe.is_file()
    # STM's defaults read the probe wherever the model carries one; the baselines' the output norm
    assert MergeConfig(method="stm").importance_source == "auto"
    assert MergeConfig(method="prune").importance_source == MergeConfig(method="tome").importance_source == "norm"


def test_fit_probe_command_writes_a_probe(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    MergeConfig(method="stm", schedule=[0] * 10 + [8, 8], importance_source="norm").to_file(cfg)
    out = tmp_path / "p.pt"
    r = CliRunner().invoke(main, ["fit-probe", "vim_proxy", "--dataset", "mnist5k", "--images", "3", "--holdout", "1",
                                  "--steps", "20", "--hidden", "8", "--device", "cpu", "--config", str(cfg),
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    # the shipped vim_proxy has 12 layers; the config merges at its last two only
    assert summary["layers"] == [10, 11] and out.is_file()
    probe = pb.load(out)
    assert probe.meta["dataset"] == "mnist5k" and probe.meta["images"] == 3 and probe.meta["holdout"] == 1
    # --rank --from: compress that probe (no backward), on 2 training images
    small = tmp_path / "s.pt"
    r = CliRunner().invoke(main, ["fit-probe", "vim_proxy", "--dataset", "mnist5k", "--from", str(out), "--rank", "2",
                                  "--compress-images", "2", "--config", str(cfg), "--device", "cpu", "--out", str(small)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["rank"] == 2 and summary["macs_per_token"] == pb.load(small).macs_per_token < probe.macs_per_token
    r = CliRunner().invoke(main, ["fit-probe", "vim_tiny", "--dataset", "mnist5k"])
    assert r.exit_code != 0 and "--out is required" in r.output
    r = CliRunner().invoke(main, ["fit-probe", "vim_proxy", "--dataset", "mnist5k", "--from", str(out),
                                  "--out", str(small)])
    assert r.exit_code != 0 and "--from needs --rank or --hidden" in r.output
    # --from --hidden: narrow that probe (no backward)
    r = CliRunner().invoke(main, ["fit-probe", "vim_proxy", "--dataset", "mnist5k", "--from", str(out), "--hidden", "3",
                                  "--compress-images", "2", "--config", str(cfg), "--device", "cpu", "--out", str(small)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["narrowed_from"] == 8 and pb.load(small).w1.shape[2] == 3
    assert summary["macs_per_token"] == pb.load(small).macs_per_token < probe.macs_per_token


def test_the_probe_is_priced_in_macs_and_in_the_latency_models_key():
    from stmsearch.evaluation.flops import count_flops
    from stmsearch.merging.methods import get_method
    from stmsearch.search.calibration import step_configs
    from stmsearch.search.space import parse_space

    model = create_model("vim_proxy")
    counts = {}
    for source in ("norm", "probe"):
        stmsearch.apply(model, MergeConfig(method="stm", schedule=[0] + [6] * 4, importance_source=source))
        counts[source] = count_flops(model, (1, 28, 28))
        stmsearch.apply(model, None)
    assert counts["probe"]["unsupported"] == {}
    per_token = pb.of(model).macs_per_token
    # merges before layers 1-4, from 197, 191, 185 and 179 tokens
    assert counts["probe"]["flops"] - counts["norm"]["flops"] == pytest.approx((197 + 191 + 185 + 179) * per_token,
                                                                               rel=0.02)
    # any method that reads the importance runs the probe alike: tome's norm weights here
    stmsearch.apply(model, MergeConfig(method="tome", schedule=[0] + [6] * 4, weights="norm", importance_source="probe"))
    assert count_flops(model, (1, 28, 28))["unsupported"] == {}
    stmsearch.apply(model, None)
    tome = MergeConfig(method="tome", weights="norm")
    assert get_method("tome").cost_key(tome.model_copy(update={"importance_source": "probe"})) == \
        get_method("tome").cost_key(tome) + ",importance_source=probe"
    stm = get_method("stm")
    # norm configs keep the keys of tables timed before the knob existed
    assert "importance_source" not in stm.cost_key(MergeConfig(method="stm", importance_source="norm"))
    assert stm.cost_key(MergeConfig(method="stm", importance_source="auto")).endswith(",importance_source=auto")
    import yaml
    data = yaml.safe_load((Path(stmsearch.__file__).parents[1] / "search_spaces" / "demo.yaml").read_text())
    data["methods"] = [{"name": "stm", "knobs": {"importance_source": {"type": "categorical",
                                                                       "choices": ["norm", "auto"]}}}]
    space = parse_space(data)
    keys = {stm.cost_key(c) for c in step_configs(space)}
    assert len(keys) == 2 and any(k.endswith("importance_source=auto") for k in keys)


def test_a_probe_file_reaches_the_model_through_create_model_evaluate_eval_and_a_search_space(tmp_path, monkeypatch):
    """Users' own probes (fitted to their own weights) reach every place a model is made: ``create_model(probe=)``,
    ``evaluate(probe=)``, ``stmsearch eval|profile --probe``, and a search space's ``probe:`` field (trials,
    verification, calibration), with errors that name the file and field."""
    from stmsearch.evaluation import api
    from stmsearch.search import objective
    from stmsearch.search.runner import check_inputs
    from stmsearch.search.space import SpaceError, parse_space

    shipped = pb.of(create_model("vim_proxy"))
    mine = pb.SaliencyProbe(shipped.layers, shipped.w1, shipped.b1, -shipped.w2, shipped.b2, {"fitted": "by me"})
    path = tmp_path / "mine.probe.pt"
    mine.save(path)
    assert pb.of(create_model("vim_proxy", probe=path)).meta == {"fitted": "by me"}
    assert pb.of(create_model("vim_proxy", pretrained=False, probe=path)).meta == {"fitted": "by me"}
    with pytest.raises(pb.ProbeError, match=r"mine.probe.pt: w1: fitted for embed_dim 64"):
        create_model("vim_proxy", pretrained=False, embed_dim=32, probe=path)

    cfg = MergeConfig(method="stm", schedule=[0, 0] + [20] * 6)
    metrics = {}
    for probe in (None, path):
        metrics[probe] = api.evaluate("vim_proxy", None, cfg, "mnist5k", limit=64, device="cpu",
                                      measure=("accuracy",), probe=probe)
    model = api._cached_model("vim_proxy", None, str(path), torch.device("cpu"))
    assert torch.equal(pb.of(model).w2, -shipped.w2)  # the file's probe, not the shipped one
    assert pb.of(api._cached_model("vim_proxy", None, None, torch.device("cpu"))).meta == shipped.meta
    assert metrics[None]["accuracy"] != metrics[path]["accuracy"]  # the opposite ranking merges other tokens

    bad = tmp_path / "bad.pt"
    torch.save({"format": "something else"}, bad)
    r = CliRunner().invoke(main, ["eval", "--model", "vim_proxy", "--dataset", "mnist5k", "--limit", "8",
                                  "--device", "cpu", "--probe", str(bad)])
    assert r.exit_code != 0 and "bad.pt: format: not a saliency probe file" in r.output
    r = CliRunner().invoke(main, ["profile", "--model", "vim_proxy", "--device", "cpu", "--runs", "1", "--json",
                                  "--probe", str(path)])
    assert r.exit_code == 0, r.output

    data = yaml.safe_load((Path(stmsearch.__file__).parents[1] / "search_spaces" / "demo.yaml").read_text())
    plain = parse_space(data)
    assert parse_space({**data, "probe": None}).identity() == plain.identity()  # earlier studies resume
    monkeypatch.setenv("STMSEARCH_TEST_PROBES", str(tmp_path))
    space = parse_space({**data, "probe": "${STMSEARCH_TEST_PROBES}/mine.probe.pt"})
    assert space.probe == str(path) and space.identity() != plain.identity()
    check_inputs(space, "s.yaml")
    for name, message in (("bad.pt", "s.yaml: probe: .*bad.pt: format: not a saliency probe file"),
                          ("none.pt", "s.yaml: probe: .*none.pt: no such saliency probe file")):
        with pytest.raises(SpaceError, match=message):
            check_inputs(parse_space({**data, "probe": str(tmp_path / name)}), "s.yaml")
    monkeypatch.delenv("STMSEARCH_TEST_PROBES")
    with pytest.raises(SpaceError, match="probe: .*not set"):
        check_inputs(parse_space({**data, "probe": "${STMSEARCH_TEST_PROBES}/mine.probe.pt"}), "s.yaml")

    calls = []
    monkeypatch.setattr(objective, "load_evaluator", lambda name: lambda *a, **kw: calls.append(kw) or {})
    objective.call_evaluate(space, cfg)
    objective.call_evaluate(plain, cfg)
    assert calls[0]["probe"] == str(path) and "probe" not in calls[1]
    from stmsearch.search.storage import study_attrs
    from stmsearch.models.checkpoint import file_sha256
    assert study_attrs(space)["probe_sha256"] == file_sha256(path) and "probe" not in study_attrs(plain)

    # a latency table is timed with the space's probe
    from stmsearch.search import calibration
    seen = []
    monkeypatch.setattr(calibration, "calibrate", lambda model, *a, **kw: seen.append(pb.of(model).meta))
    calibration.calibrate_space(parse_space({**data, "device": "cpu", "probe": str(path)}), progress=False)
    assert seen == [{"fitted": "by me"}]
