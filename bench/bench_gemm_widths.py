"""GEMM time of the out_proj shape at token counts around multiples of 8 (graph replays, one CUDA device).

Per dtype and batch, d_inner 384 -> d_model 192 (vim_tiny), three ways of running it:
- ``bmm``: per image over y's tokens rounded up to 8, token-major output (the model before y went
  token-major; still its path for channel-major y, e.g. the mamba_ssm backend's);
- ``chan``: the same bmm with the output channel-major;
- ``mm``: y token-major, one GEMM over all B*L tokens (the model's path with the triton scan).
Prints us per call and the per-token ratio to 192 tokens of the same way; then cuBLASLt's bmm.

    python bench/bench_gemm_widths.py [--batches 64,256]
"""
import argparse
import sys
from pathlib import Path

import torch

from stmsearch.ops.layout import gemm_width, padded_empty, widened

sys.path.insert(0, str(Path(__file__).parent))
from bench_merge_kernels import graph_us  # noqa: E402

C, D = 384, 192


def ways(batch: int, length: int, dtype: torch.dtype) -> dict:
    """name -> a call running the out_proj GEMM at ``length`` tokens that way."""
    w = torch.randn(C, D, device="cuda", dtype=dtype)
    y = padded_empty(batch, C, length, device="cuda", dtype=dtype).normal_()
    wide = widened(y, gemm_width(length))
    out = torch.empty(batch, gemm_width(length), D, device="cuda", dtype=dtype)
    outc = torch.empty(batch, D, gemm_width(length), device="cuda", dtype=dtype)
    wb, wtb = w.expand(batch, -1, -1), w.t().expand(batch, -1, -1)
    ytok = torch.randn(batch * length, C, device="cuda", dtype=dtype)
    outm = torch.empty(batch * length, D, device="cuda", dtype=dtype)
    return {"bmm": lambda: torch.bmm(wide.transpose(1, 2), wb, out=out),
            "chan": lambda: torch.bmm(wtb, wide, out=outc),
            "mm": lambda: torch.mm(ytok, w, out=outm)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--lengths", default="192,193,196,197,200,208")
    args = ap.parse_args()
    lengths = [int(v) for v in args.lengths.split(",")]
    for batch in (int(b) for b in args.batches.split(",")):
        for dtype in (torch.float32, torch.bfloat16):
            res = {(n, name): graph_us(fn, n=10) for n in lengths for name, fn in ways(batch, n, dtype).items()}
            print(f"batch {batch} {dtype}: us per call; per-token ratio to the same way at {lengths[0]} tokens")
            for (n, name), us in res.items():
                ratio = us / n / (res[(lengths[0], name)] / lengths[0])
                print(f"  L={n} {name:4}: {us:7.1f} us  ratio {ratio:.3f}")
    try:
        torch.backends.cuda.preferred_blas_library("cublaslt")
        a, b = ways(256, 193, torch.float32)["bmm"], ways(256, 192, torch.float32)["bmm"]
        ta, tb = graph_us(a, n=10), graph_us(b, n=10)
        print(f"cublaslt bmm fp32 batch 256, 193 (200): {ta:.1f} us, 192: {tb:.1f} us, per-token ratio "
              f"{ta / 193 / (tb / 192):.3f}")
    except Exception as exc:  # a build without cuBLASLt's batched path
        print("cublaslt failed:", exc)


if __name__ == "__main__":
    main()
