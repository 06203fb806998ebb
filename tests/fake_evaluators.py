"""Stand-in evaluators for the search tests (a space's ``evaluator: module:function``).

They follow evaluate()'s signature and return its keys, computed from the config in
microseconds, so the search machinery (storage, resume, failures, Ray) is tested without
the CPU cost of real evaluations. Importable by subprocesses and Ray workers through
PYTHONPATH.
"""
from __future__ import annotations

import math
import os
import time

import torch

from stmsearch.search.space import model_geometry

CALLS_FILE = "STMSEARCH_FAKE_CALLS"  # env var: append one line per evaluation to this file
PROBES_FILE = "STMSEARCH_FAKE_PROBES"  # env var: append the probe each evaluation was given to this file


def fake_evaluate(model_name, checkpoint, config, dataset, limit=None, device="auto", batch_size=256,
                  measure=("accuracy", "throughput", "flops"), throughput_batch=None, bf16=False,
                  cuda_graphs=False, progress=False, **options) -> dict:
    """Accuracy falls and throughput rises with token reduction; window and runs shift accuracy."""
    depth, tokens = model_geometry(model_name)
    sched = config.layer_schedule(depth) if config is not None else [0] * depth
    reduction = config.token_reduction(depth, tokens) if config is not None else 0.0
    bonus = 0.0 if config is None else 0.002 * config.protect - 0.01 * (config.runs - 2)
    left, per_layer = tokens, []
    for r in sched:
        left -= r
        per_layer.append(left)
    time.sleep(float(os.environ.get("STMSEARCH_FAKE_SLEEP", "0")))
    if os.environ.get(CALLS_FILE):
        with open(os.environ[CALLS_FILE], "a") as f:
            f.write(f"{os.getpid()}\n")
    if os.environ.get(PROBES_FILE):
        with open(os.environ[PROBES_FILE], "a") as f:
            f.write(f"{options.get('probe')}\n")
    out = {"accuracy": max(0.0, 0.98 - 0.9 * reduction ** 2 + bonus), "n": limit or 5000,
           "flops": int(1e8 * (1 - reduction)), "params": 123456, "tokens_per_layer": per_layer,
           "throughput": 1000.0 / (1.0 - reduction), "latency_ms": 1.0, "peak_mem_mb": 0.0, "device": "cpu"}
    if options.get("estimator") in ("paired", "model"):  # a speed-up against the unreduced model, as evaluate() gives
        out.update(speedup=1.0 / (1.0 - reduction), speedup_ci=[0.98 / (1.0 - reduction), 1.02 / (1.0 - reduction)])
        if options["estimator"] == "paired":
            out["timing_pairs"] = options.get("runs") or 7
    return out


def raising_evaluate(model_name, checkpoint, config, dataset, **kwargs) -> dict:
    """The unreduced model evaluates; every merged config runs out of GPU memory."""
    if config is None:
        return fake_evaluate(model_name, checkpoint, config, dataset, **kwargs)
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")


def nan_evaluate(model_name, checkpoint, config, dataset, **kwargs) -> dict:
    """Merged configs yield a NaN accuracy."""
    out = fake_evaluate(model_name, checkpoint, config, dataset, **kwargs)
    if config is not None:
        out["accuracy"] = math.nan
    return out


def alternating_evaluate(model_name, checkpoint, config, dataset, **kwargs) -> dict:
    """Merged configs removing 2 mod 4 tokens in all raise; the others evaluate."""
    if config is not None and sum(config.layer_schedule(12)) % 4 == 2:
        raise RuntimeError("simulated failure")
    return fake_evaluate(model_name, checkpoint, config, dataset, **kwargs)


def token_layers_evaluate(model_name, checkpoint, config, dataset, **kwargs) -> dict:
    """fake_evaluate plus ``token_layers``, the measurement of the objective registered in test_architecture."""
    out = fake_evaluate(model_name, checkpoint, config, dataset, **kwargs)
    return {**out, "token_layers": sum(out["tokens_per_layer"])}
