"""Do calibrations price merge steps that run the same code alike? On the CPU, STM's torch path is the
same code whatever ``runs`` is (runs only move the block boundaries), so a latency table should time
STM with runs 2, 3 and 4 alike; a gap between those keys is calibration error, and it reaches the search
as a speed-up difference between configs that run equally fast. Calibrates ``--tables`` tables in a row
(one process, nothing else should run) and prints, per table, each key's median ratio to STM with pairs
over the grid counts from ``--from-tokens`` up, then their spread over tables.

    PYTHONPATH=. python bench/bench_step_keys.py --probe bench/results/probe_refit_2026-12-05/vim_proxy.h16.probe.pt
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from stmsearch.evaluation.fidelity import load_proxy
from stmsearch.evaluation.latency import calibrate
from stmsearch.merging import MergeConfig, get_method
from stmsearch.models import probe as pb

VARIANTS = {"stm runs 2": {"method": "stm"}, "stm runs 3": {"method": "stm", "runs": 3},
            "stm runs 4": {"method": "stm", "runs": 4}, "prune": {"method": "prune"}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--proxy", default="vim_proxy")
    ap.add_argument("--probe", help="a saliency probe file to attach (STM reads it, as in the front runs)")
    ap.add_argument("--tables", type=int, default=3)
    ap.add_argument("--from-tokens", type=int, default=98, help="grid counts at and above this one are compared")
    ap.add_argument("--json", help="write the tables' step times here")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    model = load_proxy(args.proxy, range(0, 1)).model
    if args.probe:
        pb.attach(model, pb.load(args.probe))
    cfgs = {name: MergeConfig(schedule=[], **kw) for name, kw in VARIANTS.items()}
    keys = {name: get_method(c.method).cost_key(c) for name, c in cfgs.items()}
    tables, ratios = [], {name: [] for name in cfgs}
    for i in range(args.tables):
        tab = calibrate(model, args.proxy, list(cfgs.values()), torch.device("cpu"), 32, progress=False)
        tables.append({"tokens": tab.merge_tokens, "merge_ms": tab.merge_ms})
        at = [j for j, t in enumerate(tab.merge_tokens) if t >= args.from_tokens]
        base = tab.merge_ms[keys["stm runs 2"]]
        line = []
        for name, key in keys.items():
            r = statistics.median(tab.merge_ms[key][j] / base[j] for j in at)
            ratios[name].append(r)
            line.append(f"{name} {r:.3f}")
        print(f"table {i + 1}: ms at {tab.merge_tokens[-1]} tokens, STM pairs {base[-1]:.2f}; median ratio to STM pairs "
              f"from {args.from_tokens} tokens: " + ", ".join(line), flush=True)
    for name, rs in ratios.items():
        print(f"{name}: ratio to STM pairs {min(rs):.3f}-{max(rs):.3f} over {len(rs)} tables")
    out = {"keys": keys, "ratios": ratios, "tables": tables}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
