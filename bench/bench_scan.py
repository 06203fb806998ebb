"""Time the bidirectional selective scan of one ViM layer per backend and token count.

Usage (GPU machine, from the repository root):
    python bench/bench_scan.py --batch 128 --dim 384 --tokens 197,158,119,99 --dtype fp32 [--e2e]

Each row times ``stmsearch.ops.scan.bidirectional_scan(fwd, bwd, z, backend=...)``: both
directions of one layer, as the model calls it (mamba_ssm includes its flipped copies). The
triton backend is timed once per combine mode (``triton:atomic`` etc., see scan_triton).
Timing: CUDA events around each call, after warm-up (which also runs Triton's autotuning);
the median of ``--iters`` (>= 20) runs.

Useful traffic (the GB/s column) counts what a scan must move at least, per layer:
    2 directions x (u + delta + z  [batch*D*L each]  +  B + C  [batch*N*L each])   read
  + y                                                 [batch*D*L, once]            written
in the input dtype; A, D and delta_bias (a few KB) are left out. "HBM %" is that rate over
the H200's 4.8 TB/s. "vs mamba" is mamba_ssm's time over the row's time (higher is better).
The "err" column is max |out - ref| / max |ref| against the reference backend.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch

from stmsearch.evaluation.throughput import cuda_times

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from stmsearch.ops.scan import Direction, bidirectional_scan, mamba_ssm_available  # noqa: E402
from stmsearch.ops.scan_triton import MODES, bidirectional_scan_triton, triton_available  # noqa: E402

HBM_PEAK = 4.8e12  # bytes/s, H200
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def make_layer(batch: int, dim: int, length: int, n_state: int, dtype: torch.dtype,
               seed: int = 0) -> tuple[Direction, Direction, torch.Tensor]:
    """Random inputs of one ViM layer on CUDA, both directions with their own parameters."""
    g = torch.Generator(device="cuda").manual_seed(seed)

    def rand(*shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", generator=g) * scale + shift

    def direction() -> Direction:
        A = -torch.exp(rand(dim, n_state, scale=0.5))
        return Direction(rand(batch, dim, length).to(dtype), rand(batch, dim, length, scale=0.5, shift=-2).to(dtype),
                         A, rand(batch, n_state, length).to(dtype), rand(batch, n_state, length).to(dtype),
                         rand(dim), rand(dim, scale=0.3))

    return direction(), direction(), rand(batch, dim, length).to(dtype)


def useful_bytes(batch: int, dim: int, length: int, n_state: int, dtype: torch.dtype) -> int:
    """Bytes a bidirectional scan must move at least (see the module docstring)."""
    e = torch.finfo(dtype).bits // 8
    per_direction = (3 * batch * dim * length + 2 * batch * n_state * length) * e
    return 2 * per_direction + batch * dim * length * e


def time_ms(fn: Callable[[], torch.Tensor], warmup: int, iters: int) -> float:
    """Median wall time of ``fn`` on the GPU in ms, by CUDA events."""
    return statistics.median(cuda_times(fn, iters, warmup)) * 1e3


def scan_backends() -> dict[str, Callable[[Direction, Direction, torch.Tensor], torch.Tensor]]:
    """Name -> callable for every backend usable here; triton once per combine mode."""
    out: dict[str, Callable] = {"reference": lambda f, b, z: bidirectional_scan(f, b, z, backend="reference")}
    if mamba_ssm_available():
        out["mamba_ssm"] = lambda f, b, z: bidirectional_scan(f, b, z, backend="mamba_ssm")
    if triton_available():
        for mode in MODES:
            out[f"triton:{mode}"] = lambda f, b, z, m=mode: bidirectional_scan_triton(f, b, z, mode=m)
    return out


def bench_kernels(args: argparse.Namespace) -> None:
    dtype = DTYPES[args.dtype]
    backends = scan_backends()
    print(f"\nbidirectional scan, one layer: batch {args.batch}, D {args.dim}, N {args.state}, {args.dtype}; "
          f"median of {args.iters} runs")
    print("target: mamba-ssm single-direction B128 D384 L197 N16 fp32 = 0.392 ms; goal >= 2x its time")
    header = f"{'backend':<16}{'tokens':>7}{'time ms':>10}{'GB/s':>9}{'HBM %':>8}{'vs mamba':>10}{'err':>10}"
    print(header + "\n" + "-" * len(header))
    for length in args.tokens:
        fwd, bwd, z = make_layer(args.batch, args.dim, length, args.state, dtype)
        ref = backends["reference"](fwd, bwd, z).float()
        nbytes = useful_bytes(args.batch, args.dim, length, args.state, dtype)
        times = {}
        for name, fn in backends.items():
            times[name] = time_ms(lambda fn=fn: fn(fwd, bwd, z), args.warmup, args.iters)
        for name, fn in backends.items():
            ms = times[name]
            err = ((fn(fwd, bwd, z).float() - ref).abs().max() / ref.abs().max()).item()
            speedup = f"{times['mamba_ssm'] / ms:.2f}x" if "mamba_ssm" in times else "n/a"
            gbs = nbytes / (ms * 1e-3) / 1e9
            print(f"{name:<16}{length:>7}{ms:>10.3f}{gbs:>9.0f}{100 * gbs * 1e9 / HBM_PEAK:>7.1f}%"
                  f"{speedup:>10}{err:>10.1e}")


def fixed_length(model: torch.nn.Module, length: int) -> None:
    """Every layer at ``length`` tokens: STM removes 197 - length tokens before layer 0."""
    import stmsearch

    stmsearch.apply(model, None if length >= 197 else
                    stmsearch.MergeConfig(method="stm", window=0, runs=8, schedule=[197 - length]))


def bench_e2e(args: argparse.Namespace) -> None:
    """img/s of vim_tiny per backend (default triton mode) with every layer at each token count."""
    import stmsearch
    from stmsearch.evaluation.throughput import measure_throughput

    dtype = DTYPES[args.dtype]
    names = [n for n in ("reference", "mamba_ssm", "triton")
             if (n != "reference" or args.e2e_reference) and (n != "mamba_ssm" or mamba_ssm_available())]
    print(f"\nend to end: vim_tiny, {args.dtype}, inference; every layer at the given token count "
          f"(STM removes the rest before layer 0)")
    print(f"{'tokens':>7}{'batch':>7}" + "".join(f"{n + ' img/s':>17}" for n in names) + f"{'triton/mamba':>14}")
    model = stmsearch.create_model("vim_tiny").cuda().eval()
    for bs in args.e2e_batch:
        for length in args.tokens:
            fixed_length(model, length)
            rate = {}
            for name in names:
                os.environ["STMSEARCH_SCAN"] = name
                rate[name] = measure_throughput(model, (3, 224, 224), bs, "cuda", runs=args.e2e_runs, warmup=3,
                                                bf16=dtype != torch.float32)["throughput"]
            ratio = f"{rate['triton'] / rate['mamba_ssm']:.2f}x" if {"triton", "mamba_ssm"} <= set(rate) else "n/a"
            print(f"{length:>7}{bs:>7}" + "".join(f"{rate[n]:>17.0f}" for n in names) + f"{ratio:>14}", flush=True)
    fixed_length(model, 197)
    os.environ.pop("STMSEARCH_SCAN", None)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--state", type=int, default=16)
    p.add_argument("--tokens", type=lambda s: [int(t) for t in s.split(",")], default=[197, 158, 119, 99])
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--e2e", action="store_true", help="also time vim_tiny img/s per backend and token count")
    p.add_argument("--e2e-runs", type=int, default=10)
    p.add_argument("--e2e-batch", type=lambda s: [int(t) for t in s.split(",")], default=[256, 512])
    p.add_argument("--e2e-reference", action="store_true", help="include the (slow) reference backend end to end")
    args = p.parse_args(argv)
    if args.iters < 20:
        p.error("--iters must be at least 20")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_scan.py needs a CUDA GPU")
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | mamba_ssm: {mamba_ssm_available()} "
          f"| triton: {triton_available()}")
    bench_kernels(args)
    if args.e2e:
        bench_e2e(args)


if __name__ == "__main__":
    main()
