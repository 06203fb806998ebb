"""ViM runtime: official key/shape table, parameter counts, class token, determinism, checkpoints."""
import argparse
import copy
import builtins
import math
import os
import subprocess
import sys

import warnings

import pytest
import torch

import stmsearch
from stmsearch.models import CheckpointError, create_model, list_models, zoo

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


# --- official training checkpoints (hustvl/Vim's main.py, DeiT-based) ---

def vim_training_args(**changes) -> argparse.Namespace:
    """The Namespace hustvl/Vim's vim/main.py saves as 'args' (its argparse fields, ViM-Ti's run)."""
    args = dict(
        batch_size=128, epochs=300, bce_loss=False, unscale_lr=False,
        model="vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2", input_size=224,
        drop=0.0, drop_path=0.0, model_ema=True, model_ema_decay=0.99996, model_ema_force_cpu=False,
        opt="adamw", opt_eps=1e-8, opt_betas=None, clip_grad=None, momentum=0.9, weight_decay=0.1,
        sched="cosine", lr=5e-4 * 128 * 8 / 512.0, lr_noise=None, lr_noise_pct=0.67, lr_noise_std=1.0,
        warmup_lr=1e-6, min_lr=1e-5, decay_epochs=30, warmup_epochs=5, cooldown_epochs=10, patience_epochs=10,
        decay_rate=0.1, color_jitter=0.3, aa="rand-m9-mstd0.5-inc1", smoothing=0.1, train_interpolation="bicubic",
        repeated_aug=True, train_mode=True, ThreeAugment=False, src=False, reprob=0.25, remode="pixel", recount=1,
        resplit=False, mixup=0.8, cutmix=1.0, cutmix_minmax=None, mixup_prob=1.0, mixup_switch_prob=0.5,
        mixup_mode="batch", teacher_model="regnety_160", teacher_path="", distillation_type="none",
        distillation_alpha=0.5, distillation_tau=1.0, cosub=False, finetune="", attn_only=False,
        data_path="/datasets/imagenet", data_set="IMNET", inat_category="name", output_dir="./output/vim_t",
        device="cuda", seed=0, resume="", start_epoch=0, eval=False, eval_crop_ratio=0.875, dist_eval=True,
        num_workers=25, pin_mem=True, distributed=True, world_size=8, dist_url="env://", if_amp=True,
        if_continue_inf=False, if_nan2num=False, if_random_cls_token_position=False, if_random_token_rank=False,
        local_rank=0, rank=0, gpu=0, dist_backend="nccl", nb_classes=1000)
    args.update(changes)
    return argparse.Namespace(**args)


def timm_cosine_scheduler_state(lr: float) -> dict:
    """timm 0.4.12's CosineLRScheduler.state_dict(): its __dict__ less the optimizer."""
    return {"param_group_field": "lr", "_initial_param_group_field": "initial_lr", "base_values": [lr, lr],
            "metric": None, "noise_range_t": None, "noise_pct": 0.67, "noise_type": "normal", "noise_std": 1.0,
            "noise_seed": 42, "t_initial": 300, "t_mul": 1.0, "lr_min": 1e-5, "decay_rate": 0.1,
            "cycle_limit": 1, "warmup_t": 5, "warmup_lr_init": 1e-6, "warmup_prefix": False,
            "t_in_epochs": True, "warmup_steps": [(lr - 1e-6) / 5, (lr - 1e-6) / 5]}


def official_training_checkpoint(path, model, scaler) -> dict:
    """Save what hustvl/Vim's main.py saves each epoch, after one real AdamW step; returns model and EMA weights."""
    args = vim_training_args()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]  # timm: no weight decay on 1-d params
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": 0.1}],
                            lr=args.lr, eps=args.opt_eps)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    model(torch.randn(2, 3, model.cfg.img_size, model.cfg.img_size)).logsumexp(-1).sum().backward()
    opt.step()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    ema = {k: 0.9 * before[k] + 0.1 * weights[k] if v.is_floating_point() else v for k, v in weights.items()}
    torch.save({"model": weights, "optimizer": opt.state_dict(), "lr_scheduler": timm_cosine_scheduler_state(args.lr),
                "epoch": 299, "model_ema": ema, "scaler": scaler, "args": args}, path)
    assert opt.state_dict()["state"], "the optimizer state must be real (after a step)"
    return {"model": weights, "model_ema": ema}


SMALL_TINY = {"depth": 2, "img_size": 32}  # vim_tiny's layers, small enough for a CPU training step


@pytest.mark.parametrize("scaler", ["none", "grad_scaler"])
def test_official_training_checkpoint_loads_model_or_ema(tmp_path, scaler):
    torch.manual_seed(0)
    state = "none" if scaler == "none" else torch.amp.GradScaler("cpu").state_dict()
    path = tmp_path / "checkpoint.pth"
    want = official_training_checkpoint(path, create_model("vim_tiny", **SMALL_TINY), state)
    for ema, key in ((False, "model"), (True, "model_ema")):
        got = create_model("vim_tiny", checkpoint=path, ema=ema, **SMALL_TINY).state_dict()
        assert all(torch.equal(got[k], want[key][k]) for k in got), key
    assert not all(torch.equal(want["model"][k], want["model_ema"][k]) for k in want["model"])
    # Namespace was allowed for those loads only: not process-wide afterwards
    assert argparse.Namespace not in torch.serialization.get_safe_globals()
    with pytest.raises(Exception, match="Namespace"):
        torch.load(path, weights_only=True)


def test_ema_needs_a_model_ema_entry(tmp_path):
    sd = create_model("vim_tiny", **SMALL_TINY).state_dict()
    torch.save({"model": sd, "epoch": 3, "args": vim_training_args()}, tmp_path / "no_ema.pth")
    with pytest.raises(CheckpointError, match=r"no_ema\.pth: no 'model_ema' entry .*found: model, epoch, args"):
        create_model("vim_tiny", checkpoint=tmp_path / "no_ema.pth", ema=True, **SMALL_TINY)
    torch.save(sd, tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="bare.pth: no 'model_ema' entry"):
        create_model("vim_tiny", checkpoint=tmp_path / "bare.pth", ema=True, **SMALL_TINY)
    with pytest.raises(ValueError, match="ema=True needs weights"):
        create_model("vim_tiny", ema=True)


def test_ddp_module_prefix_is_dropped(tmp_path):
    """Keys saved from a DistributedDataParallel (or timm ModelEmaV2) wrapper carry 'module.'."""
    src = create_model("vim_tiny", **SMALL_TINY)
    torch.save({"model": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "ddp.pth")
    got = create_model("vim_tiny", checkpoint=tmp_path / "ddp.pth", **SMALL_TINY).state_dict()
    assert all(torch.equal(got[k], v) for k, v in src.state_dict().items())


class Exploit:
    """Unpickling this would run code: exec writes the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').write('ran')",)


@pytest.mark.parametrize("where", ["top level", "inside args"])
def test_code_running_pickles_are_refused_without_running(tmp_path, where):
    """Allowing argparse.Namespace lets nothing else in, not even inside the Namespace."""
    marker = tmp_path / "ran.txt"
    sd = create_model("vim_tiny", **SMALL_TINY).state_dict()
    payload = ({"model": sd, "args": vim_training_args(), "hook": Exploit(marker)} if where == "top level"
               else {"model": sd, "args": vim_training_args(output_dir=Exploit(marker))})
    torch.save(payload, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"evil\.pth: not a loadable weights-only checkpoint \(.*exec") as err:
        create_model("vim_tiny", checkpoint=tmp_path / "evil.pth", **SMALL_TINY)
    assert "\n" not in str(err.value)
    assert not marker.exists()


# --- published weights: shipped (vim_proxy) and on the Hugging Face Hub (vim_*) ---

def test_every_size_names_one_hub_file_and_the_proxy_ships_its_own():
    hub = {name: zoo.PRETRAINED[name].hub for name in SIZES}
    assert {n: (h.repo_id, h.filename) for n, h in hub.items()} == {
        "vim_tiny": ("hustvl/Vim-tiny-midclstok", "vim_t_midclstok_76p1acc.pth"),
        "vim_small": ("hustvl/Vim-small-midclstok", "vim_s_midclstok_80p5acc.pth"),
        "vim_base": ("hustvl/Vim-base-midclstok", "vim_b_midclstok_81p9acc.pth")}
    assert zoo.PRETRAINED["vim_proxy"].shipped.is_file() and zoo.PRETRAINED["vim_proxy"].hub is None


def test_default_loads_shipped_weights_and_never_the_hub(monkeypatch):
    def no_hub(file):
        raise AssertionError(f"went to the Hub for {file}")

    monkeypatch.setattr(stmsearch.models, "hub_download", no_hub)
    shipped = torch.load(zoo.PROXY_CHECKPOINT, weights_only=True)["model"]
    for model in (create_model("vim_proxy"), create_model("vim_proxy", pretrained=True)):
        assert all(torch.equal(v, shipped[k]) for k, v in model.state_dict().items())
    assert not torch.equal(create_model("vim_proxy", pretrained=False).head.weight, shipped["head.weight"])
    create_model("vim_tiny")  # random weights, no network
    with pytest.raises(AssertionError, match="Vim-tiny-midclstok"):
        create_model("vim_tiny", pretrained=True)


def hf_env(home) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {**env, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}


def place_in_hf_cache(home, repo_id: str, filename: str, payload: dict, commit: str = "0" * 40):
    """Where huggingface_hub keeps a downloaded file: hub/models--ORG--NAME/snapshots/COMMIT/FILE, refs/main."""
    repo = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    torch.save(payload, repo / "snapshots" / commit / filename)


def test_pretrained_loads_the_official_file_from_the_hf_cache(tmp_path):
    """Offline, from a cache laid out as huggingface_hub lays it: the full ViM-Ti, official checkpoint layout."""
    torch.manual_seed(0)
    sd = create_model("vim_tiny").state_dict()
    place_in_hf_cache(tmp_path / "hf", "hustvl/Vim-tiny-midclstok", "vim_t_midclstok_76p1acc.pth",
                      {"model": sd, "epoch": 299, "model_ema": sd, "scaler": "none", "args": vim_training_args()})
    torch.save(sd, tmp_path / "want.pth")
    code = ("import sys, torch, stmsearch; want = torch.load(sys.argv[1], weights_only=True); "
            "got = stmsearch.create_model('vim_tiny', pretrained=True).state_dict(); "
            "assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want); print('same')")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "want.pth")], env=hf_env(tmp_path / "hf"),
                         capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "same", run.stderr[-2000:]


def test_pretrained_offline_without_the_file_says_which_and_how(tmp_path):
    code = ("import stmsearch\ntry:\n    stmsearch.create_model('vim_small', pretrained=True)\n"
            "except stmsearch.CheckpointError as e:\n    print(e)")
    run = subprocess.run([sys.executable, "-c", code], env=hf_env(tmp_path / "hf"), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    message = run.stdout.strip()
    assert "\n" not in message
    assert "hustvl/Vim-small-midclstok" in message and "vim_s_midclstok_80p5acc.pth" in message
    assert "hf download hustvl/Vim-small-midclstok vim_s_midclstok_80p5acc.pth" in message and "checkpoint=" in message


def test_pretrained_without_huggingface_hub_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(CheckpointError, match=r"needs huggingface_hub: pip install 'stmsearch\[hub\]'"):
        create_model("vim_base", pretrained=True)

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
    monkeypatch.setitem(zoo.PRETRAINED, "vim_proxy_clutter", zoo.Pretrained(shipped=absent))
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


def test_derived_parameters_follow_in_place_changes(monkeypatch):
    """Casts and transforms of parameters kept between gradient-free forwards are made once, and
    made again when a parameter changes in place (a checkpoint load) or a forward needs autograd."""
    from stmsearch.models.vim import BiMamba

    torch.manual_seed(0)
    model = create_model("vim_tiny", depth=2).eval()
    img = torch.randn(1, 3, 224, 224)
    made = []
    original = BiMamba.derived

    def counting(self, key, source, make):
        return original(self, key, source, lambda v: made.append(key) or make(v))

    monkeypatch.setattr(BiMamba, "derived", counting)
    with torch.inference_mode():
        model(img)
        first = len(made)
        model(img)
        assert first > 0 and len(made) == first  # the second forward made none
        with torch.no_grad():
            model.layers[0].mixer.A_log.add_(0.5)
    with torch.inference_mode():
        out = model(img)
    assert len(made) == first + 1  # only A of the changed layer
    with torch.no_grad():  # a replaced parameter (as load_state_dict(assign=True) does) is seen too
        mixer = model.layers[1].mixer
        mixer.A_log = torch.nn.Parameter(mixer.A_log.detach() + 0.25)
    with torch.inference_mode():
        out = model(img)
    assert len(made) == first + 2
    fresh = copy.deepcopy(model)
    fresh.layers[0].mixer._derived.clear()
    with torch.inference_mode():
        torch.testing.assert_close(out, fresh(img))
    with torch.inference_mode():  # parameters made under inference mode keep no version: no cache
        made.clear()
        made_here = create_model("vim_tiny", depth=1).eval()
        made_here(img)
        once = list(made)
        made_here(img)
        assert {"in_proj", "A", "A_b", "out_proj"} <= set(once) and made == once + once
    out = model(img)  # with autograd: every op runs, and the graph reaches the parameters
    out.sum().backward()
    assert model.layers[0].mixer.A_log.grad is not None
