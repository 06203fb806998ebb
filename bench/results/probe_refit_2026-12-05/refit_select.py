"""Probes refitted narrow on the saliency itself (GPU, `gpujobs`-style fit_on with the shipped probe's path
config and options but --hidden H) against the shipped 64-unit probe: STM's defaults on the SELECTION images
0-499 of a proxy at 10-40% (the fidelity bench's cells) and at five fast-end schedules of the fronts' space
(from layer 0, decreasing, window 0). 2-core CPU:

    PYTHONPATH=. python bench/results/probe_refit_2026-12-05/refit_select.py PROXY PROBE_FILE...
"""
import sys

import torch

from stmsearch.evaluation.fidelity import correct, evaluate_cell, load_proxy
from stmsearch.merging.config import config_from_dict
from stmsearch.merging.patch import apply
from stmsearch.merging.schedule import walk
from stmsearch.models import probe as pb
from stmsearch.search.space import model_geometry

torch.set_num_threads(2)
name, files = sys.argv[1], sys.argv[2:]
depth, tokens = model_geometry(name)
p = load_proxy(name, range(0, 500))
FAST = [(2, 18), (3, 26), (2, 20), (3, 28), (2, 22)]
probes = {"shipped (64)": pb.of(p.model), **{f: pb.load(f) for f in files}}
for label, probe in probes.items():
    pb.attach(p.model, probe)
    levels = [evaluate_cell(p, {"method": "stm"}, lv)["accuracy"] for lv in (0.1, 0.2, 0.3, 0.4)]
    fast = []
    for interval, count in FAST:
        cfg = config_from_dict({"method": "stm", "window": 0, "schedule": {
            "start": 0, "interval": interval, "count": count, "shape": "decreasing"}}, "fast")
        cfg = config_from_dict({**cfg.to_dict(), "schedule": list(walk(cfg, depth, tokens, clip=True).schedule)}, "fast")
        apply(p.model, cfg)
        fast.append(correct(p.model, p.images, p.labels).float().mean().item())
        apply(p.model, None)
    print(f"{name} {label}: macs/token {probe.macs_per_token}; 10-40% " + " / ".join(f"{a:.3f}" for a in levels)
          + "; fast end " + ", ".join(f"i{i}c{c} {a:.3f}" for (i, c), a in zip(FAST, fast)), flush=True)
