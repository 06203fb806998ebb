"""Merge cost on the GPU: img/s of reduced vim_tiny against the unreduced model, the share of
the forward spent in merge ops, and where schedules land on the scan's sequence-length steps.

    python bench/bench_merge.py [--model vim_tiny] [--batch 256] [--lengths 197,189,...]

Merge overhead = GPU time between CUDA events recorded around every merge step (plan +
gather/scatter of the residual stream), summed over a forward, over the forward's time.
"""
from __future__ import annotations

import argparse
import statistics

import torch

import stmsearch
from stmsearch.evaluation.throughput import measure_throughput
from stmsearch.merging import patch
from stmsearch.merging.schedules import for_reduction
from bench_scan import fixed_length  # bench/ is on sys.path when run as a script


def merge_share(model, batch: int, runs: int = 5) -> float:
    """Fraction of the forward's GPU time spent inside merge steps."""
    events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    original = patch.reduce_tokens

    def timed(*args, **kwargs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = original(*args, **kwargs)
        end.record()
        events.append((start, end))
        return out

    x = torch.randn(batch, 3, 224, 224, device="cuda")
    shares = []
    patch.reduce_tokens = timed
    try:
        with torch.inference_mode():
            for _ in range(runs + 1):
                events.clear()
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                model(x)
                e.record()
                torch.cuda.synchronize()
                shares.append(sum(a.elapsed_time(b) for a, b in events) / s.elapsed_time(e))
    finally:
        patch.reduce_tokens = original
    return statistics.median(shares[1:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vim_tiny")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lengths", default="197,181,165,158,149,133,119,109,99")
    ap.add_argument("--steps-only", action="store_true", help="only the sequence-length step function")
    args = ap.parse_args()
    model = stmsearch.create_model(args.model).cuda()
    depth = len(model.layers)
    print(f"{torch.cuda.get_device_name()}, {args.model}, batch {args.batch}, fp32, scan backend "
          f"{stmsearch.ops.resolve_backend('cuda')}")
    if not args.steps_only:
        methods(model, depth, args.batch)
    steps(model, args.batch, args.lengths)


def methods(model, depth: int, batch: int) -> None:
    """img/s and merge share of each method at 20% and 40% reduction."""
    base = measure_throughput(model, (3, 224, 224), batch, "cuda")["throughput"]
    print(f"\nunreduced: {base:.0f} img/s")
    print(f"\n{'method':7} {'target':>6} {'reduction':>9} {'mean tokens':>11} {'img/s':>7} {'speed-up':>8} {'merge share':>11}")
    for method in ("stm", "tome", "prune", "random"):
        for target in (0.2, 0.4):
            cfg = for_reduction(stmsearch.MergeConfig(method=method), target, depth)
            stmsearch.apply(model, cfg)
            tput = measure_throughput(model, (3, 224, 224), batch, "cuda")["throughput"]
            share = merge_share(model, batch)
            sched = cfg.layer_schedule(depth)
            tokens = [197 - sum(sched[:l + 1]) for l in range(depth)]
            print(f"{method:7} {target:6.0%} {cfg.token_reduction(depth):9.1%} {sum(tokens) / depth:11.1f} "
                  f"{tput:7.0f} {tput / base:7.2f}x {share:10.1%}   tokens/layer {tokens}", flush=True)
    stmsearch.apply(model, None)


def steps(model, batch: int, lengths: str) -> None:
    """img/s with every layer at one sequence length (tokens removed before layer 0)."""
    print("\nstep function: all layers at a fixed length (tokens removed before layer 0 by STM)")
    for length in (int(v) for v in lengths.split(",")):
        fixed_length(model, length)
        tput = measure_throughput(model, (3, 224, 224), batch, "cuda")["throughput"]
        print(f"  {length:4d} tokens: {tput:7.0f} img/s", flush=True)
    stmsearch.apply(model, None)


if __name__ == "__main__":
    main()
