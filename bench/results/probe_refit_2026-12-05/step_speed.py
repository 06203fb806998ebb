"""STM's merge step (its defaults) with the shipped 64-unit probe, the refitted narrow ones, and the output
norm; prune's beside it: one step at 197 and 98 tokens, batch 32, one thread (the latency table's
``_merge_step``), medians (range) of 7 rounds of 20 steps, interleaved in one process.

    PYTHONPATH=. python bench/results/probe_refit_2026-12-05/step_speed.py PROXY PROBE_FILE...
"""
import statistics
import sys
import time

import torch

from stmsearch.evaluation.fidelity import load_proxy
from stmsearch.evaluation.latency import _merge_step
from stmsearch.merging.config import MergeConfig
from stmsearch.models import probe as pb

torch.set_num_threads(1)
name, files = sys.argv[1], sys.argv[2:]
with torch.inference_mode():
    model = load_proxy(name, range(0, 32)).model
    shipped = pb.of(model)
    for t in (197, 98):
        runs = {}
        for label, probe in [("64", shipped)] + [(f.rsplit("/", 1)[-1], pb.load(f)) for f in files]:
            pb.attach(model, probe)
            runs[f"stm {label}"] = _merge_step(model, MergeConfig(method="stm"), t, 32, torch.device("cpu"), torch.float32)
        runs["stm norm"] = _merge_step(model, MergeConfig(method="stm", importance_source="norm"), t, 32,
                                       torch.device("cpu"), torch.float32)
        runs["prune"] = _merge_step(model, MergeConfig(method="prune"), t, 32, torch.device("cpu"), torch.float32)
        for run in runs.values():
            for _ in range(5):
                run()
        res = {k: [] for k in runs}
        for _ in range(7):
            for k, run in runs.items():
                t0 = time.perf_counter()
                for _ in range(20):
                    run()
                res[k].append((time.perf_counter() - t0) / 20 * 1000)
        print(name, t, "tokens:", "  ".join(f"{k} {statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f}) ms"
                                           for k, v in res.items()), flush=True)
    pb.attach(model, shipped)
