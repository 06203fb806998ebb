"""CPU: a merged forward with each direction's step sizes taken once (``Direction.steps``) against
the same forward with them dropped (the scan and STM's ``dt`` metric each take their own softplus),
interleaved in one process, 2 threads.

    PYTHONPATH=. python bench/bench_cpu_steps.py [--rounds 8] [--batch 32]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import stmsearch
from stmsearch.models import vim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = stmsearch.create_model("vim_proxy_clutter").eval()
    x = torch.randn(args.batch, 1, 56, 56)
    with_steps = vim.BiMamba.direction

    def without_steps(self, u, reverse):
        return with_steps(self, u, reverse)._replace(steps=None)

    # the fastest schedule of the searches' seed ladder: every layer from 0, 10 tokens decreasing
    cfg = stmsearch.MergeConfig(method="stm", window=4,
                                schedule={"start": 0, "interval": 1, "count": 10, "shape": "decreasing"})
    stmsearch.apply(model, cfg)
    times: dict[str, list[float]] = {"steps dropped": [], "steps once": []}
    try:
        with torch.no_grad():
            for i in range(args.rounds + 1):
                for name, fn in (("steps dropped", without_steps), ("steps once", with_steps)):
                    vim.BiMamba.direction = fn
                    t = time.perf_counter()
                    model(x)
                    if i:  # the first round warms up
                        times[name].append((time.perf_counter() - t) * 1e3)
    finally:
        vim.BiMamba.direction = with_steps
    for name, v in times.items():
        print(f"{name}: median {statistics.median(v):.1f} ms, min {min(v):.1f}, max {max(v):.1f} ({len(v)} forwards)")
    ratios = [a / b for a, b in zip(times["steps dropped"], times["steps once"])]
    print(f"per round, dropped / once: median {statistics.median(ratios):.3f}, {min(ratios):.3f}-{max(ratios):.3f}")


if __name__ == "__main__":
    main()
