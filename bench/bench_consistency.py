"""Hidden-state consistency: cosine similarity of the final class-token feature to the
unreduced model's, for STM, tome, prune and random at 10/20/30/40% fewer token-layers.

    python bench/bench_consistency.py --model vim_tiny              # random weights, random images
    python bench/bench_consistency.py --model vim_proxy             # trained proxy, 1000 val digits
    python bench/bench_consistency.py --model proxies --device cuda # both trained proxies (digits, clutter)
    python bench/bench_consistency.py --model proxies --chosen fidelity.json   # STM as bench_fidelity chose it

Every method runs the schedule bench_fidelity gives it (stmsearch.evaluation.fidelity.config_at:
the same constant schedule from layer 2 for all where capacity allows; * marks a method that ran
its own closest schedule, with the reduction it reached).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

import stmsearch
from stmsearch.evaluation.fidelity import PROXY_DATASETS, config_at, load_proxy
from stmsearch.merging.config import ConfigError


def features(model, images: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model.forward_features(images[i:i + batch]) for i in range(0, len(images), batch)])


def inputs(name: str, n: int, device: str) -> tuple[torch.nn.Module, torch.Tensor, str]:
    """The model, its images and a description: a trained proxy's held-out set, else random images."""
    if name in PROXY_DATASETS:
        p = load_proxy(name, range(0, n), device)
        return p.model, p.images, f"trained, {n} held-out {p.dataset} images"
    torch.manual_seed(0)
    model = stmsearch.create_model(name).to(device).eval()
    c = model.cfg
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, c.in_chans, c.img_size, c.img_size, generator=g)
    return model, images.to(device), f"random weights, {n} random images"


def run(name: str, n: int, levels: list[float], stm: dict, batch: int, device: str) -> dict:
    model, x, what = inputs(name, n, device)
    depth, tokens = len(model.layers), model.pos_embed.shape[1]
    ref = features(model, x, batch)
    print(f"{name} ({what}), {device}; STM: {stm}")
    print(f"{'method':7} " + " ".join(f"{f'{t:.0%} (cos / actual)':>24}" for t in levels))
    out = {}
    for method, over in (("stm", stm), ("tome", {"method": "tome"}), ("prune", {"method": "prune"}),
                         ("random", {"method": "random"})):
        cells, out[method] = [], {}
        for target in levels:
            try:
                cfg, shared = config_at(over, target, depth, tokens)
            except ConfigError:
                cells.append("n/a")
                continue
            stmsearch.apply(model, cfg)
            try:
                cos = F.cosine_similarity(features(model, x, batch).float(), ref.float(), dim=-1).mean().item()
            finally:
                stmsearch.apply(model, None)
            red = cfg.token_reduction(depth, tokens)
            out[method][f"{target:.2f}"] = {"cosine": cos, "reduction": red, "shared": shared}
            cells.append(f"{cos:.4f} / {red:.1%}" + ("" if shared else "*"))
        print(f"{method:7} " + " ".join(f"{c:>24}" for c in cells), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vim_tiny", help="a registered model, or 'proxies' for both trained proxies")
    ap.add_argument("-n", type=int, default=None, help="images (default 32 for vim_tiny, 1000 for a proxy)")
    ap.add_argument("--levels", default="0.1,0.2,0.3,0.4", help="token reductions, comma-separated (beyond 0.4 only "
                    "pruning can carry a flat schedule from layer 2 on the proxies)")
    ap.add_argument("--chosen", help="a bench_fidelity JSON: use its chosen STM knobs (default: the current defaults)")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", help="write the figures to this JSON")
    args = ap.parse_args()
    stm = json.loads(Path(args.chosen).read_text())["select"]["chosen"] if args.chosen else {"method": "stm"}
    levels = [float(v) for v in args.levels.split(",")]
    names = list(PROXY_DATASETS) if args.model == "proxies" else [args.model]
    results = {}
    for name in names:
        n = args.n or (1000 if name in PROXY_DATASETS else 32)
        results[name] = run(name, n, levels, stm, args.batch, args.device)
    if args.out:
        Path(args.out).write_text(json.dumps({"stm": stm, "results": results}, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
