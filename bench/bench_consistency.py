"""Hidden-state consistency: cosine similarity of the final class-token feature to the
unreduced model's, for STM, tome, prune and random at 20/40/60% token reduction.

    python bench/bench_consistency.py --model vim_tiny            # random weights, random images
    python bench/bench_consistency.py --model vim_proxy           # trained proxy, 1000 val digits

The schedule for each level is found for STM (runs 2, or 4 where pairs cannot reach it) and
used for every method that can run it; otherwise that method's own closest schedule.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import stmsearch
from stmsearch.merging.config import ConfigError
from stmsearch.merging.schedules import for_reduction


def features(model, images: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model.forward_features(images[i:i + batch]) for i in range(0, len(images), batch)])


def inputs(name: str, n: int, device: str) -> torch.Tensor:
    if name == "vim_proxy":
        from stmsearch.evaluation.datasets import load_dataset
        data = load_dataset("mnist5k", "val", limit=n)
        return data.normalize(data.images).to(device)
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 224, 224, generator=g).to(device)


def schedule_for(method: str, target: float, depth: int) -> stmsearch.MergeConfig:
    for runs in (2, 4):
        try:
            stm = for_reduction(stmsearch.MergeConfig(method="stm", runs=runs), target, depth)
        except ConfigError:
            continue
        if abs(stm.token_reduction(depth) - target) <= 0.01:
            break
    cfg = stmsearch.MergeConfig(method=method, schedule=stm.schedule, runs=stm.runs)
    try:
        cfg.validate_for(depth)
        return cfg
    except ConfigError:
        return for_reduction(stmsearch.MergeConfig(method=method), target, depth)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vim_tiny")
    ap.add_argument("-n", type=int, default=None, help="images (default 32 for vim_tiny, 1000 for the proxy)")
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = stmsearch.create_model(args.model).to(device)
    depth = len(model.layers)
    n = args.n or (1000 if args.model == "vim_proxy" else 32)
    x = inputs(args.model, n, device)
    ref = features(model, x, args.batch)
    print(f"{args.model} ({'trained' if args.model == 'vim_proxy' else 'random weights'}), {n} images, {device}")
    print(f"{'method':7} " + " ".join(f"{f'{t:.0%} (cos / actual)':>22}" for t in (0.2, 0.4, 0.6)))
    for method in ("stm", "tome", "prune", "random"):
        cells = []
        for target in (0.2, 0.4, 0.6):
            cfg = schedule_for(method, target, depth)
            stmsearch.apply(model, cfg)
            cos = F.cosine_similarity(features(model, x, args.batch).float(), ref.float(), dim=-1).mean().item()
            cells.append(f"{cos:.4f} / {cfg.token_reduction(depth):.1%}")
            stmsearch.apply(model, None)
        print(f"{method:7} " + " ".join(f"{c:>22}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
