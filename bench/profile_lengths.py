"""GPU kernel time at odd token counts against a nearby multiple of 8 (torch.profiler, no host time).

Every layer runs at T tokens (the residual cut before layer 0, as bench_merge's bound); per pair
T:M it prints the kernel milliseconds of one forward at each, their per-token ratio
((time(T) / T) / (time(M) / M), 1 = proportional to tokens) and the top kernels side by side.

    python bench/profile_lengths.py [--batch 256] [--pairs 193:192,97:96] [--dtypes bf16,fp32]
                                    [--layouts token,channel] [--conv-tiles 64x32,64x16]

``--layouts``: the CUDA layout under the triton scan (models.vim.CUDA_LAYOUT): token-major, every
GEMM one over all tokens (the default), or padded channel-major rows with per-image GEMMs; each
profiled in turn. ``--conv-tiles``: the token-major conv's (channels x positions) tiles to profile in
turn (stmsearch.ops.conv_triton.TOKEN_TILES; default: the shipped one).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import stmsearch
from stmsearch.models import vim
from stmsearch.ops import conv_triton

sys.path.insert(0, str(Path(__file__).parent))
import bench_merge as bm  # noqa: E402


def kernel_ms(model, x, dtype: str, iters: int = 5) -> dict[str, tuple[float, int]]:
    """Kernel name -> (ms per forward, calls per forward) over ``iters`` bound forwards."""
    fn = bm.forward_fn(model, x, dtype, bound=True)
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    out = {}
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", 0)
        if us > 0:
            out[e.key[:70]] = (us / iters / 1e3, e.count // iters)
    return out


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vim_tiny")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--pairs", default="193:192,97:96")
    ap.add_argument("--dtypes", default="bf16,fp32")
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--layouts", default="token")
    ap.add_argument("--conv-tiles", default="x".join(map(str, conv_triton.TOKEN_TILES)))
    args = ap.parse_args()
    model = bm.make_model(args.model)
    x = torch.randn(args.batch, 3, 224, 224, device="cuda")
    full = model.cfg.num_patches + 1
    runs = [(layout, tile) for layout in args.layouts.split(",") for tile in args.conv_tiles.split(",")
            if layout == "token" or tile == args.conv_tiles.split(",")[0]]  # the padded layout has one conv tile
    for layout, tile in runs:
        vim.CUDA_LAYOUT = layout
        conv_triton.TOKEN_TILES = tuple(int(v) for v in tile.split("x"))
        for dtype in args.dtypes.split(","):
            for pair in args.pairs.split(","):
                t, m = (int(v) for v in pair.split(":"))
                res = {}
                for n in (t, m):
                    cfg = stmsearch.MergeConfig(method="stm", window=0, runs=8, schedule=[full - n]) if n < full else None
                    stmsearch.apply(model, cfg)
                    res[n] = kernel_ms(model, x, dtype)
                total = {n: sum(v[0] for v in res[n].values()) for n in res}
                print(f"\n{dtype} batch {args.batch}, {layout} layout, conv tile {tile}: {t} tokens {total[t]:.3f} ms, "
                      f"{m} tokens {total[m]:.3f} ms; per-token ratio {(total[t] / t) / (total[m] / m):.3f}")
                for k in sorted(set(res[t]) | set(res[m]), key=lambda k: -res[t].get(k, (0, 0))[0])[:args.top]:
                    a, b = res[t].get(k, (0.0, 0)), res[m].get(k, (0.0, 0))
                    print(f"  {k:70} {a[0]:7.3f} {b[0]:7.3f}  calls {a[1]}/{b[1]}")
    stmsearch.apply(model, None)


if __name__ == "__main__":
    main()
