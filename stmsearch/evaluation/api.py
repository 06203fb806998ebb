"""What one trial measures: the contract between the search and the evaluators.

``evaluate`` returns a dict with these keys (the same as ``stmsearch profile --json`` and
``stmsearch eval --json``), each present when its measurement was requested:
  accuracy (float, top-1 in [0, 1]), n (int, images evaluated), flops (int, fvcore MACs per
  image), params (int), tokens_per_layer (list[int]), throughput (img/s), latency_ms
  (batch 1), peak_mem_mb, device (str, e.g. "cuda:0 NVIDIA H200" or "cpu").
"""
from __future__ import annotations

METRIC_KEYS = ("accuracy", "n", "flops", "params", "tokens_per_layer", "throughput", "latency_ms",
               "peak_mem_mb", "device")
