"""ViM runtime: official key/shape table, parameter counts, class token, determinism, checkpoints."""
import math
import warnings

import pytest
import torch

import stmsearch
from stmsearch.models import CheckpointError, create_model, list_models

SIZES = {"vim_tiny": (192, 7.15e6), "vim_small": (384, 25.8e6), "vim_base": (768, 97.6e6)}


def official_table(d: int, depth: int = 24, n: int = 16, classes: int = 1000) -> dict[str, tuple]:
    """Keys and shapes of the official hustvl/Vim checkpoints (docs/vim-architecture.md)."""
    di, r = 2 * d, math.ceil(d / 16)
    t = {"patch_embed.proj.weight": (d, 3, 16, 16), "patch_embed.proj.bias": (d,), "cls_token": (1, 1, d),
         "pos_embed": (1, 197, d), "norm_f.weight": (d,), "head.weight": (classes, d), "head.bias": (classes,)}
    for i in range(depth):
        p = f"layers.{i}."
        t[p + "norm.weight"] = (d,)
        t[p + "mixer.in_proj.weight"] = (2 * di, d)
        t[p + "mixer.out_proj.weight"] = (d, di)
        t[p + "mixer.A_log"] = t[p + "mixer.A_b_log"] = (di, n)
        t[p + "mixer.D"] = t[p + "mixer.D_b"] = (di,)
        for s in ("", "_b"):
            t[p + f"mixer.conv1d{s}.weight"] = (di, 1, 4)
            t[p + f"mixer.conv1d{s}.bias"] = (di,)
            t[p + f"mixer.x_proj{s}.weight"] = (r + 2 * n, di)
            t[p + f"mixer.dt_proj{s}.weight"] = (di, r)
            t[p + f"mixer.dt_proj{s}.bias"] = (di,)
    return t


@pytest.mark.parametrize("name", list(SIZES))
def test_state_dict_matches_official_table(name):
    model = create_model(name)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == official_table(SIZES[name][0])


@pytest.mark.parametrize("name", list(SIZES))
def test_parameter_counts(name):
    n = sum(p.numel() for p in create_model(name).parameters())
    assert abs(n / SIZES[name][1] - 1) <= 0.005


def test_registry_lists_sizes_and_rejects_unknown():
    assert {"vim_tiny", "vim_small", "vim_base", "vim_proxy"} <= set(list_models())
    with pytest.raises(ValueError, match="vim_tiny"):
        create_model("vim_huge")


def test_class_token_sits_at_index_98():
    model = create_model("vim_tiny", depth=1)
    img = torch.randn(1, 3, 224, 224)
    x = model.embed(img)
    assert x.shape[1] == 197 and model.cls_pos == 98
    torch.testing.assert_close(x[0, 98], (model.cls_token + model.pos_embed[:, 98])[0, 0])
    patches = model.patch_embed(img)
    torch.testing.assert_close(x[0, 97], patches[0, 97] + model.pos_embed[0, 97])
    torch.testing.assert_close(x[0, 99], patches[0, 98] + model.pos_embed[0, 99])


def test_features_come_from_the_class_token():
    """Changing the class token's parameters changes the logits; the model reads position 98."""
    torch.manual_seed(0)
    model = create_model("vim_tiny", depth=2)
    img = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        a = model(img)
        model.cls_token.add_(1.0)
        b = model(img)
    assert not torch.allclose(a, b)


def test_forward_is_deterministic():
    torch.manual_seed(0)
    model = create_model("vim_proxy", pretrained=False)
    img = torch.randn(3, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(model(img), model(img))


def test_backward_direction_matters():
    """Both directions contribute (the reference ViM's CPU fallback computes only one)."""
    torch.manual_seed(0)
    model = create_model("vim_proxy", pretrained=False, depth=2)
    img = torch.randn(2, 1, 28, 28)
    with torch.inference_mode():
        a = model(img)
        for blk in model.layers:
            blk.mixer.x_proj_b.weight.mul_(2.0)
        assert not torch.allclose(a, model(img))


def test_official_layout_and_bare_state_dict_load(tmp_path):
    src = create_model("vim_tiny", depth=2)
    img = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        want = src(img)
    torch.save({"model": src.state_dict(), "epoch": 300}, tmp_path / "official.pth")
    torch.save(src.state_dict(), tmp_path / "bare.pth")
    for f in ("official.pth", "bare.pth"):
        model = create_model("vim_tiny", checkpoint=tmp_path / f, depth=2)
        with torch.inference_mode():
            assert torch.equal(model(img), want)


def test_mismatching_checkpoints_fail_loudly(tmp_path):
    sd = create_model("vim_tiny", depth=2).state_dict()
    missing = dict(sd)
    missing.pop("head.bias")
    torch.save({"model": missing}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: head\.bias"):
        create_model("vim_tiny", checkpoint=tmp_path / "missing.pth", depth=2)
    extra = dict(sd, **{"layers.0.mixer.bogus": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys: layers\.0\.mixer\.bogus"):
        create_model("vim_tiny", checkpoint=tmp_path / "extra.pth", depth=2)
    with pytest.raises(CheckpointError, match=r"shape mismatch: cls_token: file \(1, 1, 192\) vs model \(1, 1, 384\)"):
        create_model("vim_small", checkpoint=tmp_path / "extra.pth", depth=2)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        create_model("vim_tiny", checkpoint=tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="not found"):
        create_model("vim_tiny", checkpoint=tmp_path / "absent.pth")


class Payload:
    """An arbitrary pickled object, as a malicious checkpoint could carry."""


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    """weights_only=True: a checkpoint carrying arbitrary objects is not unpickled."""
    torch.save({"model": {"w": torch.zeros(1)}, "cfg": Payload()}, tmp_path / "obj.pth")
    with pytest.raises(CheckpointError, match="weights-only"):
        create_model("vim_tiny", checkpoint=tmp_path / "obj.pth")


def test_reference_backend_is_reported(monkeypatch):
    monkeypatch.delenv("STMSEARCH_SCAN", raising=False)
    assert stmsearch.ops.resolve_backend("cpu") == "reference"


def test_training_step_runs_on_the_reference_scan():
    torch.manual_seed(0)
    model = create_model("vim_proxy", pretrained=False, depth=1).train()
    loss = model(torch.randn(2, 1, 28, 28)).logsumexp(-1).sum()
    loss.backward()
    assert model.layers[0].mixer.A_b_log.grad is not None and model.layers[0].mixer.A_b_log.grad.abs().sum() > 0


def test_clutter_proxy_has_imagenet_sequence_length_on_56x56():
    torch.manual_seed(0)
    model = create_model("vim_proxy_clutter", pretrained=False)
    assert model.cfg.img_size == 56 and model.cfg.patch_size == 4 and model.cfg.in_chans == 1
    img = torch.randn(2, 1, 56, 56)
    assert model.embed(img).shape[1] == 197 and model.cls_pos == 98
    with torch.inference_mode():
        assert model(img).shape == (2, 10)


def test_missing_default_checkpoint_warns_and_keeps_random_weights(tmp_path, monkeypatch):
    from stmsearch.models import zoo

    absent = tmp_path / "vim_proxy_clutter.pt"
    monkeypatch.setitem(zoo.DEFAULT_CHECKPOINTS, "vim_proxy_clutter", absent)
    with pytest.warns(UserWarning, match="vim_proxy_clutter.pt not found"):
        create_model("vim_proxy_clutter")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # overrides or pretrained=False: no default is wanted, no warning
        create_model("vim_proxy_clutter", depth=1)
        create_model("vim_proxy_clutter", pretrained=False)
    # once written, the default file is loaded
    torch.manual_seed(1)
    src = create_model("vim_proxy_clutter", pretrained=False)
    torch.save({"model": src.state_dict()}, absent)
    loaded = create_model("vim_proxy_clutter")
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), loaded.state_dict().values()))
