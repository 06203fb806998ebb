"""How fast a merge config runs, by one of three estimators.

- ``paired`` (default on a GPU): the config and the unreduced model timed in turns in this
  process on the same input (A B B A ..., ``pairs`` of each after warm-up); ``speedup`` is
  median(reference) / median(config) with a bootstrap 95% interval over the pairs. Whatever
  else the machine does falls on both alike.
- ``model`` (default on the CPU): predicted from a latency table (:mod:`.latency`) made once
  on this device, batch and dtype; deterministic, so the same table gives the same answer.
- ``measured``: the config timed alone (``runs`` after warm-up); its speed-up is taken
  against the reference trial's own measurement, which the search does (earlier versions did
  only this).

Each returns ``throughput`` (img/s of the config at the batch size), and the first two
``speedup`` and ``speedup_ci`` too.
"""
from __future__ import annotations

import contextlib
import statistics

import torch

from ..merging import MergeConfig, apply
from .latency import LatencyTable
from .stats import bootstrap_ratio_ci, median_ratio
from .throughput import _inputs, _timed, gpu_lock, interleaved_times

ESTIMATORS = ("paired", "model", "measured")
PAIRS = 7  # timed pairs after warm-up: enough for a median and its bootstrap interval


def default_estimator(device: torch.device) -> str:
    """``paired`` on a GPU, ``model`` on the CPU (where a shared host makes every timing noisy)."""
    return "paired" if torch.device(device).type == "cuda" else "model"


@torch.inference_mode()
def paired_speed(model: torch.nn.Module, config: MergeConfig | None, input_shape: tuple[int, int, int], batch: int,
                 device: torch.device, pairs: int = PAIRS, warmup: int = 2, bf16: bool = False,
                 sample: torch.Tensor | None = None) -> dict:
    """Paired speed of ``config`` against the unreduced ``model``; leaves ``model`` patched for ``config``.

    Also ``latency_ms`` (batch 1, the config alone) and, on a GPU, ``peak_mem_mb``.
    """
    if pairs < 2:
        raise ValueError(f"pairs must be >= 2, got {pairs}")
    device = torch.device(device)
    x = _inputs(input_shape, batch, device, sample)
    cuda = device.type == "cuda"

    def forward(cfg: MergeConfig | None):
        def run():
            apply(model, cfg)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                return model(x)
        return run

    with gpu_lock(device) if cuda else contextlib.nullcontext():
        out = {}
        if cuda:
            weights = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            forward(config)()
            torch.cuda.synchronize()
            out["peak_mem_mb"] = (torch.cuda.max_memory_allocated() - before + weights) / 2 ** 20
        if config is None:  # the reference against itself: speed-up 1 by definition
            (t_cand,) = interleaved_times([forward(None)], device, pairs, warmup)
            t_ref, speedup, ci = t_cand, 1.0, (1.0, 1.0)
        else:
            t_ref, t_cand = interleaved_times([forward(None), forward(config)], device, pairs, warmup)
            speedup, ci = median_ratio(t_ref, t_cand), bootstrap_ratio_ci(t_ref, t_cand)
        apply(model, config)
        out["latency_ms"] = 1e3 * _timed(model, x[:1].clone(), max(3, pairs // 2), 1, bf16, False)
    out.update(speedup=speedup, speedup_ci=list(ci), throughput=batch / statistics.median(t_cand),
               reference_throughput=batch / statistics.median(t_ref), timing_pairs=pairs)
    return out


def modelled_speed(table: LatencyTable, config: MergeConfig | None, depth: int, num_tokens: int, batch: int) -> dict:
    """Speed of ``config`` predicted by ``table`` (already checked against this evaluation)."""
    ms = table.predict_ms(config, depth, num_tokens)
    reference = table.predict_ms(None, depth, num_tokens)
    return {"speedup": reference / ms, "speedup_ci": None, "throughput": batch / (ms / 1e3),
            "reference_throughput": batch / (reference / 1e3), "predicted_ms": ms}
