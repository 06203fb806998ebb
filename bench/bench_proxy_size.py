"""Sizing vim_proxy_clutter: CPU forward time of candidate sizes relative to vim_proxy.

The host is shared, so absolute seconds mean little: in one process, every candidate's forward
of a batch (200 held-out images, inference mode, as an accuracy pass runs them) is timed between
two vim_proxy forwards of a digit batch (P C1 P C2 P ..., order rotated each round) and reported
as a ratio to the mean of its two neighbours; short interleaved steps keep both under the same
load. Other work on the host comes in bursts that can slow one forward several-fold, so beside
the median paired ratio the ratio of minima is printed: the candidate's fastest forward over the
fastest of its neighbour means (as many samples on each side, the least disturbed of each).
The estimated seconds per 1000 held-out images are each ratio x 13 s, vim_proxy's time on an
idle 2-core machine (bench_eval.py: 11.8-14.3 s).

    python bench/bench_proxy_size.py                                  # default candidates
    python bench/bench_proxy_size.py --candidates 64x16,80x16 --rounds 20

A candidate is DxDEPTH or DxDEPTHsN (embed_dim, depth, d_state N; default N is the proxy's 4),
built as vim_proxy_clutter with those overrides (random weights: time does not depend on them)
and fed mnist5k-clutter's val images.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import time

import torch

import stmsearch
from stmsearch.evaluation.datasets import ImageSet, load_dataset

PROXY_SECONDS = 13.0  # vim_proxy over 1000 digits, batch 200, 2 threads, idle machine


def parse_candidate(text: str) -> dict:
    """``80x16`` -> embed_dim 80, depth 16; ``96x12s8`` adds d_state 8."""
    m = re.fullmatch(r"(\d+)x(\d+)(?:s(\d+))?", text.strip())
    if not m:
        raise SystemExit(f"--candidates: {text!r} is not DxDEPTH or DxDEPTHsN (e.g. 80x16, 96x12s8)")
    d, depth, n = m.groups()
    return {"embed_dim": int(d), "depth": int(depth), **({"d_state": int(n)} if n else {})}


def batches(data: ImageSet, batch: int) -> list[torch.Tensor]:
    """The set's normalised batches, as an accuracy pass feeds them."""
    return [data.normalize(data.images[i:i + batch]) for i in range(0, len(data), batch)]


def timed(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Seconds of one forward of the normalised batch ``x``."""
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(x)
        return time.perf_counter() - t0


def interleaved_times(ref: torch.nn.Module, models: dict[str, torch.nn.Module], ref_x: list[torch.Tensor],
                      x: list[torch.Tensor], rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]], list[float]]:
    """Per candidate, its forward times and the mean of the two vim_proxy forwards around each;
    and all vim_proxy forward times."""
    names = list(models)
    times: dict[str, list[float]] = {s: [] for s in names}
    around: dict[str, list[float]] = {s: [] for s in names}
    ref_times = []
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        k = r % len(x)  # walk through the val batches
        before = timed(ref, ref_x[k])
        ref_times.append(before)
        for s in order:
            t = timed(models[s], x[k])
            times[s].append(t)
            after = timed(ref, ref_x[k])
            ref_times.append(after)
            around[s].append((before + after) / 2)
            before = after
        print(f"round {r + 1}: " + "  ".join(f"{s} {times[s][-1] / around[s][-1]:.2f}" for s in names), flush=True)
    return times, around, ref_times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", default="64x12,64x16,80x12,80x16,96x12,96x16")
    ap.add_argument("--rounds", type=int, default=10, help="timed forwards per candidate")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    specs = [s.strip() for s in args.candidates.split(",")]
    digits = batches(load_dataset("mnist5k"), args.batch)
    clutter = batches(load_dataset("mnist5k-clutter"), args.batch)
    ref = stmsearch.create_model("vim_proxy", pretrained=False)
    models = {s: stmsearch.create_model("vim_proxy_clutter", pretrained=False, **parse_candidate(s)) for s in specs}
    for model, x in [(ref, digits[0])] + [(m, clutter[0]) for m in models.values()]:  # warm-up
        timed(model, x)
    print(f"{args.rounds} rounds, batch {args.batch}, {args.threads} threads, "
          f"load avg {os.getloadavg()[0]:.1f} at start", flush=True)
    times, around, ref_times = interleaved_times(ref, models, digits, clutter, args.rounds)
    per_1000 = 1000 / args.batch
    best_ref = min(ref_times)
    print(f"\nvim_proxy forward: {best_ref:.2f}-{max(ref_times):.2f} s per {args.batch} images on this host now "
          f"(x{per_1000:.0f}: {best_ref * per_1000:.1f}-{max(ref_times) * per_1000:.1f} s per 1000); "
          f"estimates use {PROXY_SECONDS:.0f} s per 1000 (idle machine)")
    print(f"{'candidate':>10} {'params':>8} {'ratio of minima':>16} {'paired median':>14} {'quartiles':>11} "
          f"{'min-max':>11} {'est. s/1000 (minima / median)':>30}")
    for s in specs:
        params = sum(p.numel() for p in models[s].parameters())
        r = [t / a for t, a in zip(times[s], around[s])]
        fastest = min(times[s]) / min(around[s])
        q1, med, q3 = statistics.quantiles(r, n=4) if len(r) > 1 else (r[0],) * 3
        print(f"{s:>10} {params / 1e6:7.2f}M {fastest:16.2f} {med:14.2f} {q1:5.2f}-{q3:.2f} "
              f"{min(r):5.2f}-{max(r):.2f} {fastest * PROXY_SECONDS:6.1f} / {med * PROXY_SECONDS:4.1f}")


if __name__ == "__main__":
    main()
