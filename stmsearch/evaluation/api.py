"""What one trial measures: the contract between the search and the evaluators.

``evaluate`` returns a dict with these keys (the same as ``stmsearch profile --json`` and
``stmsearch eval --json``), each present when its measurement was requested:
  accuracy (float, top-1 in [0, 1]), accuracy_ci ([lo, hi], Wilson 95%), n (int, images
  evaluated), skipped (int, unreadable image files left out of the dataset), speedup (the
  unreduced model's time over this config's) and speedup_ci ([lo, hi] bootstrap 95%, paired
  estimator; None when predicted), throughput (img/s of this config), reference_throughput (img/s
  of the unreduced model in the same measurement), speed_estimator, predicted_ms (model estimator),
  timing_pairs (paired), flops (int, fvcore MACs per image), params (int), tokens_per_layer
  (list[int]), latency_ms (batch 1), peak_mem_mb, device (str, e.g. "cuda:0 NVIDIA H200" or
  "cpu (2 threads)").
``params``, ``tokens_per_layer`` and ``device`` are always present; ``skipped`` whenever a
dataset is loaded with ``skip_bad_images=True`` (0 included; without it an unreadable file is an error).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import torch

from ..merging import MergeConfig, apply, trace
from ..models import VisionMamba, create_model
from ..objectives import MEASURES
from .accuracy import evaluate_accuracy
from .datasets import ImageSet, canonical_device, load_dataset
from .latency import LatencyTable
from .speed import ESTIMATORS, modelled_speed, paired_speed
from .throughput import describe_device, measure_throughput

METRIC_KEYS = ("accuracy", "accuracy_ci", "n", "skipped", "speedup", "speedup_ci", "throughput",
               "reference_throughput", "speed_estimator", "predicted_ms", "timing_pairs", "flops", "params",
               "tokens_per_layer", "latency_ms", "peak_mem_mb", "device")
CPU_THROUGHPUT_BATCH = 64  # default on the CPU, where a 256-image forward of the reference scan takes seconds


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> the current CUDA device if there is one, else the CPU; errors if CUDA is asked for and absent."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device: unknown device {str(device)!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device: {str(device)!r} is not supported (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    return canonical_device(device)


@functools.lru_cache(maxsize=4)
def _cached_model(name: str, checkpoint: str | None, probe: str | None, device: torch.device) -> VisionMamba:
    return create_model(name, checkpoint, probe=probe).to(device)


def _model(name: str, checkpoint: str | None, device: torch.device, config: MergeConfig | None,
           probe: str | None = None) -> VisionMamba:
    """The cached model of (name, checkpoint, probe, device), patched for ``config`` (None: unpatched)."""
    model = _cached_model(name, None if checkpoint is None else str(checkpoint), None if probe is None else str(probe),
                          device)
    return apply(model, config)  # restores the previous trial's patch first


def input_shape(model: VisionMamba) -> tuple[int, int, int]:
    cfg = model.cfg
    return cfg.in_chans, cfg.img_size, cfg.img_size


def tokens_per_layer(model: VisionMamba, x: torch.Tensor) -> list[int]:
    """Tokens each layer's mixer runs on: from a forward of ``x`` (1 image) when merging is patched in."""
    if getattr(model, "_stm", None) is None:
        return [int(model.pos_embed.shape[1])] * len(model.layers)
    with torch.inference_mode():
        model(x[:1])
    return [int(layer["tokens"]) for layer in trace(model)]


def _check_data(data: ImageSet, model_name: str, model: VisionMamba) -> None:
    want = input_shape(model)
    if data.shape != want:
        raise ValueError(f"dataset {data.name} holds {'x'.join(map(str, data.shape))} images, but model "
                         f"{model_name} expects {'x'.join(map(str, want))}")
    if data.num_classes > model.cfg.num_classes:
        raise ValueError(f"dataset {data.name} has {data.num_classes} classes, model {model_name} "
                         f"predicts {model.cfg.num_classes}")


def _finite(metrics: dict, key: str) -> None:
    value = metrics.get(key)
    if value is not None and not math.isfinite(value):
        raise RuntimeError(f"{key} is {value}: the model produced non-finite outputs under this configuration")


def evaluate(model_name: str, checkpoint: str | None = None, config: MergeConfig | None = None,
             dataset: str | None = None, limit: int | None = None, device: str = "auto", batch_size: int = 256,
             measure: Iterable[str] = MEASURES, throughput_batch: int | None = None, bf16: bool = False,
             cuda_graphs: bool = False, progress: bool = False, runs: int | None = None,
             skip_bad_images: bool = False, estimator: str | None = None,
             latency_table: LatencyTable | str | None = None, probe: str | None = None) -> dict:
    """Measure one model + merge config on this machine; returns the :data:`METRIC_KEYS` asked for.

    ``dataset`` (val split, first ``limit`` images) is needed for accuracy; when given, the
    throughput and FLOPs passes also run on its real images. ``throughput_batch`` defaults to
    ``batch_size`` on a GPU and at most 64 on the CPU; ``runs`` to 5 timed runs (2 warm-up) on a
    GPU and 3 (1) on the CPU (for ``paired``: the timed pairs, default 7). ``skip_bad_images`` leaves
    unreadable image files out of the dataset (and reports how many as ``skipped``) instead of
    failing. ``estimator`` (see :mod:`stmsearch.evaluation.speed`; default ``measured``, the config
    timed alone; a search defaults to ``paired`` on a GPU, ``model`` on the CPU) says how speed is found; ``model`` needs ``latency_table`` (a table or
    its JSON file) made for this model, device, batch and dtype. ``probe``: a saliency probe file for the
    model's weights (:func:`stmsearch.models.create_model`). Raises on a NaN accuracy or throughput.
    """
    measure = tuple(measure)
    dev = resolve_device(device)
    estimator = estimator or "measured"
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: unknown {estimator!r}; choose from {', '.join(ESTIMATORS)}")
    if "speed" in measure and estimator == "model" and latency_table is None:
        raise ValueError("the model estimator needs a latency table: make one with `stmsearch calibrate` "
                         "(or choose estimator paired or measured)")
    unknown = set(measure) - set(MEASURES)
    if unknown:
        raise ValueError(f"measure: unknown {sorted(unknown)}; choose from {MEASURES}")
    if "accuracy" in measure and dataset is None:
        raise ValueError("measuring accuracy needs a dataset")
    model = _model(model_name, checkpoint, dev, config, probe)
    shape = input_shape(model)
    data = load_dataset(dataset, "val", dev, limit, skip_bad_images) if dataset is not None else None
    if data is not None:
        _check_data(data, model_name, model)
    gpu = dev.type == "cuda"
    tp_batch = throughput_batch or (batch_size if gpu else min(batch_size, CPU_THROUGHPUT_BATCH))
    sample = data.normalize(data.images[:tp_batch]) if data is not None else torch.randn(1, *shape, device=dev)
    out = {"params": sum(p.numel() for p in model.parameters()), "device": describe_device(dev)}
    if data is not None and skip_bad_images:
        out["skipped"] = len(data.skipped)
    if "accuracy" in measure:
        out.update(evaluate_accuracy(model, data, batch_size, dev, progress, amp_bf16=bf16))
    if "speed" in measure:
        out["speed_estimator"] = estimator
        real = sample if data is not None else None
        if estimator == "paired":
            out.update(paired_speed(model, config, shape, tp_batch, dev, pairs=runs or 7, warmup=2 if gpu else 1,
                                    bf16=bf16, sample=real))
        elif estimator == "model":
            table = latency_table if isinstance(latency_table, LatencyTable) else LatencyTable.load(latency_table)
            table.check(model_name, describe_device(dev), tp_batch, bf16)
            out.update(modelled_speed(table, config, model.cfg.depth, model.cfg.num_patches + 1, tp_batch))
        else:
            out.update(measure_throughput(model, shape, tp_batch, dev, runs=runs or (5 if gpu else 3),
                                          warmup=2 if gpu else 1, bf16=bf16, cuda_graphs=cuda_graphs, sample=real))
    if "flops" in measure:
        from .flops import count_flops  # fvcore loads only when FLOPs are counted

        counted = count_flops(model, shape, dev, sample[:1])
        if counted["unsupported"]:
            raise RuntimeError(f"fvcore found ops without a FLOP handle: {counted['unsupported']}")
        out["flops"] = counted["flops"]
    out["tokens_per_layer"] = tokens_per_layer(model, sample)
    _finite(out, "accuracy")
    _finite(out, "throughput")
    return {k: out[k] for k in METRIC_KEYS if k in out}
