"""The token-major conv's tile against odd lengths: graph-replay time of conv_pair_triton per tile and length.

    python bench/bench_conv_tiles.py [--batch 256] [--dim 384] [--lengths 192,193,196,197,96,97]
                                     [--tiles 64x32,64x16,32x32,128x16,64x8] [--dtypes bf16,fp32]

Prints us per call and the per-token time against the first length of each group of eight (e.g. 193
against 192), the ratio issue 12 bounds at 1.03. x is token-major (B, L, C) viewed as (B, C, L), as the
CUDA token layout gives it (vim_tiny's d_inner is 384, vim_small's 768).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from stmsearch.ops import conv_triton
sys.path.insert(0, str(Path(__file__).parent))
from bench_merge_kernels import graph_us  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--lengths", default="192,193,196,197,96,97")
    ap.add_argument("--tiles", default="64x32,64x16,32x32,128x16,64x8")
    ap.add_argument("--dtypes", default="bf16,fp32")
    a = ap.parse_args()
    lengths = [int(v) for v in a.lengths.split(",")]
    tiles = [tuple(int(v) for v in t.split("x")) for t in a.tiles.split(",")]
    w = [torch.randn(a.dim, 1, 4, device="cuda") for _ in range(2)]
    bias = [torch.randn(a.dim, device="cuda") for _ in range(2)]
    print(f"{torch.cuda.get_device_name()}  batch {a.batch}  channels {a.dim}")
    for name in a.dtypes.split(","):
        dtype = DTYPES[name]
        for tile in tiles:
            conv_triton.TOKEN_TILES = tile
            us = {}
            for n in lengths:
                x = torch.randn(a.batch, n, a.dim, device="cuda", dtype=dtype).transpose(1, 2)
                us[n] = graph_us(lambda: conv_triton.conv_pair_triton(x, w[0], bias[0], w[1], bias[1]))
            per = "  ".join(f"{n}:{us[n]:7.1f}" for n in lengths)
            base = {n: n - n % 8 for n in lengths}
            ratio = "  ".join(f"{n}/{base[n]}={us[n] / n / (us[base[n]] / base[n]):.3f}" for n in lengths
                              if base[n] != n and base[n] in us)
            print(f"{name} tile {tile[0]}x{tile[1]}  us  {per}   per token  {ratio}", flush=True)


if __name__ == "__main__":
    main()
