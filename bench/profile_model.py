"""Where a full ViM forward spends its GPU time, per scan backend: torch.profiler kernel table.

Prints, per backend, the top CUDA kernels by total time over ``--iters`` forwards, with call
counts and their share of all kernel time, and the median forward time from CUDA events.

    python bench/profile_model.py [--model vim_tiny] [--batch 256] [--backends mamba_ssm,triton]
"""
from __future__ import annotations

import argparse
import os
import statistics

import torch
from torch.profiler import ProfilerActivity, profile

import stmsearch
from stmsearch.evaluation.throughput import cuda_times


def kernel_table(model: torch.nn.Module, x: torch.Tensor, iters: int, top: int) -> tuple[str, float]:
    """The top kernels as text, and kernel milliseconds per forward."""
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(iters):
                model(x)
            torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.self_device_time_total for e in events)
    events.sort(key=lambda e: -e.self_device_time_total)
    lines = [f"{'ms/fwd':>8} {'share':>6} {'calls/fwd':>9}  kernel"]
    for e in events[:top]:
        lines.append(f"{e.self_device_time_total / 1e3 / iters:8.3f} {e.self_device_time_total / total:6.1%} "
                     f"{e.count / iters:9.1f}  {e.key[:110]}")
    return "\n".join(lines), total / 1e3 / iters


@torch.inference_mode()
def wall_ms(model: torch.nn.Module, x: torch.Tensor, iters: int) -> float:
    """Median milliseconds of one forward, by CUDA events."""
    return statistics.median(cuda_times(lambda: model(x), iters, warmup=1)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vim_tiny")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--backends", default="mamba_ssm,triton")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    model = stmsearch.create_model(args.model).cuda().eval()
    x = torch.randn(args.batch, 3, model.cfg.img_size, model.cfg.img_size, device="cuda")
    for backend in args.backends.split(","):
        os.environ["STMSEARCH_SCAN"] = backend
        table, kernel_ms = kernel_table(model, x, args.iters, args.top)
        ms = wall_ms(model, x, args.iters)
        print(f"\n== {args.model} bs{args.batch} fp32, backend {backend}: {ms:.2f} ms/forward "
              f"({args.batch / ms * 1e3:.0f} img/s), kernels {kernel_ms:.2f} ms/forward")
        print(table, flush=True)


if __name__ == "__main__":
    main()
