"""Throughput of the full ViM per scan backend.

GPU: vim_tiny / vim_small at batch 1/64/256/512 (fp32, CUDA events, median of timed runs).
CPU: batch 8 with the reference scan, and its time per image.
Anchor (../shared/gpu/README.md, 24 stacked bidirectional mamba-ssm layers, bs512, fp32, no
embedding or head): vim_tiny ~3203 img/s, vim_small ~1630 img/s.

    python bench/bench_model.py [--models vim_tiny,vim_small] [--batches 1,64,256,512] [--cpu]
"""
from __future__ import annotations

import argparse
import os

import torch

import stmsearch
from stmsearch.evaluation.throughput import measure_throughput
from stmsearch.ops import BACKENDS, mamba_ssm_available

ANCHOR = {"vim_tiny": 3203, "vim_small": 1630}


def gpu_backends() -> list[str]:
    names = ["reference"] + (["mamba_ssm"] if mamba_ssm_available() else [])
    try:
        from stmsearch.ops.scan_triton import triton_available
        names += ["triton"] if triton_available() else []
    except ImportError:
        pass
    return [n for n in names if n in BACKENDS]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="vim_tiny,vim_small")
    ap.add_argument("--batches", default="1,64,256,512")
    ap.add_argument("--cpu", action="store_true", help="CPU only: batch 8, reference scan")
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and not args.cpu
    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu'}  torch {torch.__version__}")
    print(f"{'model':10} {'backend':10} {'batch':>5} {'img/s':>9} {'ms/img':>8}  vs anchor")
    for name in args.models.split(","):
        model = stmsearch.create_model(name)
        if not cuda:
            r = measure_throughput(model, (3, 224, 224), 8, "cpu", runs=3, warmup=1)
            print(f"{name:10} {'reference':10} {8:>5} {r['throughput']:9.1f} {1000 / r['throughput']:8.1f}")
            continue
        model = model.cuda()
        for backend in gpu_backends():
            os.environ["STMSEARCH_SCAN"] = backend
            for bs in (int(b) for b in args.batches.split(",")):
                if backend == "reference" and bs > 64:
                    continue  # the reference scan is a Python loop: only a floor figure
                r = measure_throughput(model, (3, 224, 224), bs, "cuda", runs=args.runs, warmup=3)
                anchor = f"{r['throughput'] / ANCHOR[name]:.2f}x of {ANCHOR[name]}" if bs == 512 and name in ANCHOR else ""
                print(f"{name:10} {backend:10} {bs:>5} {r['throughput']:9.1f} {1000 / r['throughput']:8.3f}  {anchor}",
                      flush=True)
        os.environ.pop("STMSEARCH_SCAN", None)


if __name__ == "__main__":
    main()
