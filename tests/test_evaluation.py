"""Accuracy, throughput, ``evaluate`` and the ``eval`` / ``profile`` commands."""
import json
import math

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

import stmsearch
from stmsearch.cli import main
from stmsearch.evaluation.stats import wilson_interval
from stmsearch.evaluation import api
from stmsearch.evaluation.accuracy import evaluate_accuracy
from stmsearch.evaluation.datasets import ImageSet, load_dataset
from stmsearch.evaluation.flops import analytic_flops
from stmsearch.evaluation.throughput import measure_throughput


pytestmark = pytest.mark.usefixtures("one_thread")


def _toy_set(n=37, seed=0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet(name="toy", images=torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=g),
                    labels=torch.randint(0, 3, (n,), generator=g), mean=(0.5,), std=(0.25,), num_classes=3,
                    classes=("a", "b", "c"))


def _toy_model(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()


def test_accuracy_matches_a_manual_count():
    data, model = _toy_set(), _toy_model()
    result = evaluate_accuracy(model, data, batch_size=8, progress=False)  # 37 = 4 full batches + 5
    with torch.no_grad():
        x = (data.images.float() / 255 - 0.5) / 0.25
        expected = (model(x).argmax(-1) == data.labels).float().mean().item()
    correct = round(expected * 37)
    assert result == {"accuracy": pytest.approx(expected), "n": 37,
                      "accuracy_ci": pytest.approx(list(wilson_interval(correct, 37)))}
    assert 0 < expected < 1  # a toy model that is neither always right nor always wrong


def test_accuracy_is_nan_when_outputs_are_not_finite():
    model = _toy_model()
    with torch.no_grad():
        model[1].bias[0] = float("nan")
    assert math.isnan(evaluate_accuracy(model, _toy_set(), progress=False)["accuracy"])


def test_throughput_on_cpu_is_measured():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3)).eval()
    result = measure_throughput(model, (1, 8, 8), batch_size=16, device="cpu", runs=3, warmup=1)
    assert result["throughput"] > 0 and result["latency_ms"] > 0
    assert result["peak_mem_mb"] is None  # documented: not measured on the CPU
    sample = torch.randn(3, 1, 8, 8)  # tiled to the batch
    assert measure_throughput(model, (1, 8, 8), 16, "cpu", runs=1, warmup=0, sample=sample)["throughput"] > 0
    with pytest.raises(ValueError, match="model expects"):
        measure_throughput(model, (1, 8, 8), 4, "cpu", runs=1, sample=torch.randn(1, 3, 8, 8))


def test_throughput_forwards_run_without_autograd():
    """Timed forwards must not record a graph (the CPU reference would take its autograd path)."""
    seen = []

    class Probe(nn.Linear):
        def forward(self, x):
            seen.append(torch.is_inference_mode_enabled())
            return super().forward(x.flatten(1))

    measure_throughput(Probe(16, 3), (1, 4, 4), batch_size=4, device="cpu", runs=2, warmup=1)
    assert seen and all(seen)


def test_evaluate_raises_on_nan_accuracy(monkeypatch):
    monkeypatch.setattr(api, "evaluate_accuracy", lambda *a, **k: {"accuracy": float("nan"), "n": 5})
    with pytest.raises(RuntimeError, match="accuracy is nan"):
        api.evaluate("vim_proxy", dataset="mnist5k", limit=5, device="cpu", measure=("accuracy",))


def test_evaluate_rejects_mismatched_data_and_unknown_measures():
    with pytest.raises(ValueError, match="expects 3x224x224"):
        api.evaluate("vim_tiny", dataset="mnist5k", limit=2, device="cpu", measure=("accuracy",))
    with pytest.raises(ValueError, match="unknown"):
        api.evaluate("vim_proxy", measure=("speeed",), device="cpu")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "stm.yaml"
    return stmsearch.MergeConfig(method="stm", schedule=[0] + [6] * 4).to_file(path)


def test_cli_eval_json(config_file, tmp_path):
    torch.manual_seed(1)
    weights = tmp_path / "proxy.pt"
    torch.save(stmsearch.create_model("vim_proxy", pretrained=False).state_dict(), weights)
    result = CliRunner().invoke(main, ["eval", "--model", "vim_proxy", "--checkpoint", str(weights), "--dataset",
                                       "mnist5k", "--limit", "50", "--config", str(config_file), "--device", "cpu",
                                       "--batch-size", "25", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert set(metrics) == {"accuracy", "accuracy_ci", "n", "params", "tokens_per_layer", "device"}
    assert metrics["accuracy_ci"][0] <= metrics["accuracy"] <= metrics["accuracy_ci"][1]
    assert metrics["n"] == 50 and 0 <= metrics["accuracy"] <= 1
    assert metrics["tokens_per_layer"] == [197, 191, 185, 179] + [173] * 8
    # the same figure as evaluating the model directly
    model = stmsearch.apply(stmsearch.create_model("vim_proxy", weights), stmsearch.load_config(config_file))
    direct = evaluate_accuracy(model, load_dataset("mnist5k", limit=50), batch_size=50, progress=False)
    assert metrics["accuracy"] == pytest.approx(direct["accuracy"])


def test_cli_profile_json(config_file):
    result = CliRunner().invoke(main, ["profile", "--model", "vim_proxy", "--config", str(config_file),
                                       "--device", "cpu", "--batch-size", "4", "--runs", "1", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert set(metrics) == {"flops", "params", "tokens_per_layer", "throughput", "latency_ms", "peak_mem_mb",
                            "speed_estimator", "device"}
    assert metrics["speed_estimator"] == "measured"
    assert metrics["throughput"] > 0 and metrics["latency_ms"] > 0 and metrics["peak_mem_mb"] is None
    model = stmsearch.create_model("vim_proxy")
    assert metrics["params"] == sum(p.numel() for p in model.parameters())
    assert metrics["tokens_per_layer"] == [197, 191, 185, 179] + [173] * 8
    # STM's default importance source runs the shipped proxy's saliency probe at each merging layer
    probe_macs = sum(metrics["tokens_per_layer"][:4]) * stmsearch.models.probe.of(model).macs_per_token
    assert metrics["flops"] == pytest.approx(analytic_flops(model.cfg, metrics["tokens_per_layer"]) + probe_macs,
                                             rel=0.02)
    assert metrics["flops"] - probe_macs < analytic_flops(model.cfg, [197] * 12)
    assert metrics["device"].startswith("cpu")


def test_cli_table_and_errors(tmp_path):
    runner = CliRunner()
    table = runner.invoke(main, ["eval", "--model", "vim_proxy", "--dataset", "mnist5k", "--limit", "10",
                                 "--device", "cpu"])
    assert table.exit_code == 0, table.output
    assert "accuracy" in table.stdout and "%" in table.stdout
    missing = runner.invoke(main, ["eval", "--model", "vim_proxy", "--dataset", "mnist5k",
                                   "--config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code != 0 and "nope.yaml" in missing.output
    unknown = runner.invoke(main, ["eval", "--model", "vim_proxy", "--dataset", "svhn", "--device", "cpu"])
    assert unknown.exit_code != 0 and "unknown dataset" in unknown.output


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")


@pytest.mark.gpu
@needs_cuda
def test_gpu_throughput_graphs_and_memory():
    model = stmsearch.create_model("vim_tiny").cuda()
    eager = measure_throughput(model, (3, 224, 224), 64, "cuda", runs=5, warmup=2)
    graphed = measure_throughput(model, (3, 224, 224), 64, "cuda", runs=5, warmup=2, cuda_graphs=True, bf16=True)
    for r in (eager, graphed):
        assert r["throughput"] > 0 and r["latency_ms"] > 0
        assert r["peak_mem_mb"] > sum(p.numel() * 4 for p in model.parameters()) / 2 ** 20
    stmsearch.apply(model, stmsearch.MergeConfig(method="stm", schedule=[0] + [8] * 10))
    try:  # merges plan on the device with no host sync (README "Merges on the GPU"), so they are captured too
        merged = measure_throughput(model, (3, 224, 224), 64, "cuda", runs=5, warmup=2)
        merged_graphed = measure_throughput(model, (3, 224, 224), 64, "cuda", runs=5, warmup=2, cuda_graphs=True,
                                            bf16=True)
    finally:
        stmsearch.apply(model, None)
    assert merged["throughput"] > 0 and merged_graphed["throughput"] > 0
    # a forward that does wait on the host is refused, with the reason
    with pytest.raises(RuntimeError, match="cannot be captured"):
        measure_throughput(SyncsOnTheHost().cuda(), (3, 8, 8), 2, "cuda", runs=1, cuda_graphs=True)


class SyncsOnTheHost(torch.nn.Module):
    def forward(self, x):
        return x * float(x.sum())


@pytest.mark.gpu
@needs_cuda
def test_gpu_evaluate_keeps_data_on_the_device():
    metrics = api.evaluate("vim_proxy", dataset="mnist5k", limit=200, device="cuda", batch_size=100)
    assert metrics["device"].startswith("cuda:") and metrics["n"] == 200
    assert load_dataset("mnist5k", device="cuda", limit=200).images.is_cuda
    cpu = api.evaluate("vim_proxy", dataset="mnist5k", limit=200, device="cpu", batch_size=100,
                       measure=("accuracy",))
    assert metrics["accuracy"] == pytest.approx(cpu["accuracy"], abs=0.011)  # kernels differ slightly


def test_eval_skip_bad_images_reports_how_many(tmp_path, monkeypatch):
    """A folder with an unreadable file: a one-line error naming it, or with the flag, n and skipped."""
    import numpy as np
    from PIL import Image

    for c in ("a", "b"):
        for i in range(2):
            (tmp_path / "imgs" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((240, 260, 3), 60 * i + 40, np.uint8)).save(tmp_path / "imgs" / c / f"{i}.jpg")
    (tmp_path / "imgs" / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff")  # a JPEG that ends after its marker
    monkeypatch.setenv("STMSEARCH_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    small = stmsearch.create_model("vim_tiny", depth=1)  # the real layout at 224, one layer for the CPU
    monkeypatch.setattr(api, "_cached_model", lambda name, checkpoint, probe, device: small)
    args = ["eval", "--model", "vim_tiny", "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--device", "cpu",
            "--json"]
    strict = CliRunner().invoke(main, args)
    assert strict.exit_code != 0 and f"{tmp_path / 'imgs' / 'b' / 'broken.jpg'}: not a readable image" in strict.output
    assert "Traceback" not in strict.output
    result = CliRunner().invoke(main, args + ["--skip-bad-images"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["n"] == 4 and metrics["skipped"] == 1 and 0 <= metrics["accuracy"] <= 1
    direct = api.evaluate("vim_tiny", dataset=f"imagefolder:{tmp_path / 'imgs'}", device="cpu", measure=("accuracy",),
                          skip_bad_images=True)
    assert direct == {k: metrics[k] for k in direct}
