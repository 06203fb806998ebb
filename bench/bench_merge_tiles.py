"""Tiles of the merge kernels whose best tile depends on shape, at the shapes one forward records.

For each model:batch:dtype it records the first, middle and last merge step's arguments of dt_weights,
mean_decay, tome_plan (metric x, dt and the residual) and merge_segments at 40% fewer token-layers, and
2-D STM's plan at 30% (at 40% it merges once), then times graph replays of each with the default tiles
and every listed alternative (DIFF: another result).

    STMSEARCH_SCAN=triton python bench/bench_merge_tiles.py vim_tiny:64:bf16 vim_tiny:64:fp32 vim_small:64:bf16 \
        [--only "tome dt,stm 2d"]
"""
import argparse
import sys
from pathlib import Path

import torch

import stmsearch
from stmsearch.merging.schedules import for_reduction
sys.path.insert(0, str(Path(__file__).parent))
from bench_merge_kernels import graph_us, record_calls  # noqa: E402


def record(model, x, dtype, variant, name, level):
    stmsearch.apply(model, for_reduction(stmsearch.MergeConfig(**variant), level, len(model.layers)))
    calls, originals = record_calls(model, x, dtype, [name])
    stmsearch.apply(model, None)
    return [(a, k) for _, a, k in calls], originals[name]


def sweep(label, calls, orig, tile_list):
    for which in (0, len(calls) // 2, -1):  # the first, middle and last merge step: 197, ~120 and ~54 tokens
        a, k = calls[which]
        ref = orig(*a, **k)
        res = [f"default {graph_us(lambda: orig(*a, **k)):.1f}"]
        for tiles in tile_list:
            try:
                got = orig(*a, **k, tiles=tiles)
                same = all(torch.equal(p, q) for p, q in zip(ref, got)) if isinstance(ref, tuple) else \
                    torch.allclose(ref, got, rtol=1e-5, atol=1e-6)
                res.append(f"{tiles} {graph_us(lambda: orig(*a, **k, tiles=tiles)):.1f}{'' if same else ' DIFF'}")
            except Exception as exc:  # noqa: BLE001
                res.append(f"{tiles} failed {type(exc).__name__} {str(exc)[:60]}")
        f = a[0]
        print(f"  {label} {tuple(f.shape)} {f.dtype}: " + ", ".join(res), flush=True)


# (label, variant recorded, kernel, level, alternative tiles)
SWEEPS = [
    ("dt_weights", {"method": "stm", "weights": "dt"}, "dt_weights", 0.4,
     [(32, 64, 4), (128, 32, 4), (64, 32, 4), (128, 16, 4), (256, 16, 8), (64, 64, 4), (128, 64, 8)]),
    ("mean_decay", {"method": "stm", "fading": "estimated"}, "mean_decay", 0.4,
     [(32, 4), (64, 8), (64, 4), (128, 8), (16, 4)]),
    # ToMe: (sources a program, channels a step, precision, warps of the plan, warps of the similarities
    # [, destinations a program: a row's destinations split over programs])
    ("tome x", {"method": "tome", "metric": "x"}, "tome_plan", 0.4,
     [(64, 32, "tf32", 4, 4, 64), (64, 32, "tf32", 4, 4, 32), (32, 32, "tf32", 4, 4, 64), (64, 32, "tf32", 4, 8),
      (32, 16, "ieee", 4, 4), (32, 16, "ieee", 4, 4, 64), (32, 16, "ieee", 4, 4, 32)]),
    # over steps channels stay 16 a step: another sum order changes plans (see tome_tiles)
    ("tome dt", {"method": "tome", "metric": "dt"}, "tome_plan", 0.4,
     [(64, 16, "tf32x3", 8, 4, 64), (64, 16, "tf32x3", 8, 4, 32), (32, 16, "tf32x3", 8, 4, 32),
      (32, 16, "tf32x3", 8, 4, 64), (32, 16, "tf32x3", 8, 4, 16), (16, 16, "tf32x3", 8, 4, 16),
      (16, 16, "tf32x3", 8, 4, 32), (16, 16, "tf32x3", 8, 2, 16), (32, 16, "tf32x3", 8, 2, 32),
      (64, 16, "tf32x3", 8, 8, 32)]),
    # the merge itself: (slots a program, warps), over runs (STM) and over ToMe's listed slots
    ("merge", {"method": "stm"}, "merge_segments", 0.4,
     [(1, 1), (1, 4), (2, 1), (2, 2), (4, 1), (4, 2), (4, 4), (8, 2), (8, 4), (16, 4)]),
    ("merge tome", {"method": "tome", "metric": "dt"}, "merge_segments", 0.4,
     [(1, 1), (1, 4), (2, 1), (2, 2), (4, 1), (4, 2), (4, 4), (8, 2), (8, 4), (16, 4)]),
    # at 40% 2-D STM merges once (for_reduction), so its steps are recorded at 30%
    ("stm 2d", {"method": "stm", "neighbourhood": "2d"}, "stm_2d_plan", 0.3,
     [(16, 8), (32, 4), (32, 8), (64, 4), (64, 8), (8, 4)]),
    ("tome hidden", {"method": "tome"}, "tome_plan", 0.4,
     [(64, 16, "tf32", 8, 4, 64), (64, 16, "tf32", 8, 4, 32), (64, 16, "tf32x3", 8, 4, 64),
      (64, 16, "tf32x3", 8, 4, 32)]),
]


@torch.inference_mode()
def main(model_name, batch, dtype, only=()):
    model = stmsearch.create_model(model_name).cuda().eval()
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    print(f"{model_name} b{batch} {dtype}", flush=True)
    for label, variant, name, level, tiles in SWEEPS:
        if not only or label in only:
            calls, orig = record(model, x, dtype, variant, name, level)
            sweep(label, calls, orig, tiles)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="+", metavar="MODEL:BATCH:DTYPE")
    ap.add_argument("--only", default="", help='the sweeps to run, e.g. "tome dt,stm 2d" (default: all)')
    args = ap.parse_args()
    only = {v.strip() for v in args.only.split(",") if v.strip()}
    if unknown := only - {label for label, *_ in SWEEPS}:
        sys.exit(f"--only: unknown {sorted(unknown)} (known: {', '.join(label for label, *_ in SWEEPS)})")
    for spec in args.specs:
        m, b, d = spec.split(":")
        main(m, int(b), d, only)
