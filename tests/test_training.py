"""train-proxy: each dataset trains its own proxy, end to end on a handful of images."""
import pytest
import torch

from stmsearch import training
from stmsearch.evaluation.datasets import PROXY_MODELS
from stmsearch.cli.train import train_proxy_cmd
from stmsearch.models import zoo


def test_each_dataset_trains_a_proxy_with_a_default_checkpoint():
    assert training.proxy_model("mnist5k") == "vim_proxy"
    assert training.proxy_model("mnist5k-clutter") == "vim_proxy_clutter"
    assert all(zoo.default_checkpoint(name) for name in PROXY_MODELS.values())
    with pytest.raises(ValueError, match="--dataset must be one of"):
        training.proxy_model("imagefolder:/x")


def test_train_proxy_on_clutter_runs_end_to_end_and_every_layer_learns(one_thread, monkeypatch):
    monkeypatch.delenv("STMSEARCH_SCAN", raising=False)
    # two layers: the reference scan's backward is slow on the CPU
    model, summary = training.train_proxy(epochs=1, batch_size=4, weight_decay=0.0, seed=0, device="cpu",
                                          progress=False, dataset="mnist5k-clutter", limit=8,
                                          overrides={"depth": 2})
    assert not model.training and summary["model"] == "vim_proxy_clutter" and summary["shift"] == 4
    assert summary["n"] == 8 and 0.0 <= summary["accuracy"] <= 1.0 and summary["scan"] == "reference"
    after = model.state_dict()
    # seed 0 built these initial weights; without weight decay only a gradient moves a weight, and
    # in_proj, A_log and the patch embedding sit below scans: they move only if gradients pass them
    torch.manual_seed(0)
    init = training.create_model("vim_proxy_clutter", pretrained=False, depth=2).state_dict()
    for key in ("layers.0.mixer.in_proj.weight", "layers.0.mixer.A_log", "layers.0.mixer.A_b_log",
                "patch_embed.proj.weight", "head.weight"):
        assert not torch.equal(after[key], init[key]), key


def test_train_proxy_refuses_the_forward_only_triton_scan(monkeypatch):
    monkeypatch.setattr(training, "resolve_backend", lambda device: "triton")
    with pytest.raises(ValueError, match="triton scan backend is forward-only"):
        training.train_proxy(epochs=1, device="cpu", progress=False, limit=4)


def test_cli_writes_the_dataset_models_default_checkpoint(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from stmsearch.models import create_model

    target = tmp_path / "weights" / "vim_proxy_clutter.pt"
    monkeypatch.setitem(zoo.PRETRAINED, "vim_proxy_clutter", zoo.Pretrained(shipped=target))
    trained = create_model("vim_proxy_clutter", pretrained=False)
    calls = []

    def fake_train(*args, **kwargs):  # the training itself is tested above
        calls.append(kwargs)
        return trained, {"model": "vim_proxy_clutter", "accuracy": 0.5}

    monkeypatch.setattr("stmsearch.cli.train.train_proxy", fake_train)
    result = CliRunner().invoke(train_proxy_cmd, ["--dataset", "mnist5k-clutter", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert calls[0]["dataset"] == "mnist5k-clutter" and target.is_file()
    loaded = create_model("vim_proxy_clutter")  # the default path now holds the weights
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), loaded.state_dict().values()))
    bad = CliRunner().invoke(train_proxy_cmd, ["--dataset", "cifar10"])
    assert bad.exit_code != 0 and "mnist5k-clutter" in bad.output
