"""What the saliency probe costs in measured speed: STM with the output norm, with the full probe and with
a rank-8 probe, and pruning, each at STM's fidelity schedules (10-40% fewer token-layers, constant from
layer 2), paired with the unreduced model (``stmsearch.evaluation.speed.paired_speed``: median ratio and
bootstrap 95% interval over the pairs).

A model without a shipped probe (vim_tiny, vim_small) gets one of random weights with a fitted probe's
shapes (layers 2 onwards, hidden 64): the time does not depend on the weights, and every row removes the
same tokens. The proxies use their shipped probes, and the rank-8 ones in bench/results/probe_2026-12-04/.

    python bench/bench_probe_speed.py --device cuda --models vim_proxy,vim_proxy_clutter,vim_tiny --batches 64,256
    python bench/bench_probe_speed.py --models vim_proxy_clutter --batches 32 --pairs 15     # CPU, alone on it
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from stmsearch.evaluation.api import input_shape
from stmsearch.evaluation.fidelity import config_at, parse_levels
from stmsearch.evaluation.speed import paired_speed
from stmsearch.merging.patch import apply
from stmsearch.models import create_model, probe

RANK8 = Path(__file__).resolve().parent / "results" / "probe_2026-12-04"
ROWS = {"stm, output norm": {"method": "stm", "importance_source": "norm"},
        "stm, probe": {"method": "stm", "importance_source": "probe"},
        "stm, rank-8 probe": {"method": "stm", "importance_source": "probe"},
        "prune": {"method": "prune"}}


def random_probe(dim: int, layers: range, rank: int | None = None, hidden: int = 64) -> probe.SaliencyProbe:
    g = torch.Generator().manual_seed(0)
    f, n = 3 * dim + probe.EXTRA, len(layers)
    w1 = torch.randn(n, f, rank or hidden, generator=g) / f ** 0.5
    v = None if rank is None else torch.randn(n, rank, hidden, generator=g) / rank ** 0.5
    return probe.SaliencyProbe(tuple(layers), w1, torch.zeros(n, hidden), torch.randn(n, hidden, generator=g) / 8,
                               torch.zeros(n), meta={"random": True}, v=v)


def probes(name: str, model: torch.nn.Module) -> dict[str, probe.SaliencyProbe]:
    depth, dim = len(model.layers), model.pos_embed.shape[-1]
    full = probe.of(model) or random_probe(dim, range(2, depth))
    rank8 = RANK8 / f"{name}.rank8.probe.pt"
    return {"stm, probe": full,
            "stm, rank-8 probe": probe.load(rank8) if probe.of(model) and rank8.is_file()
            else random_probe(dim, range(2, depth), rank=8)}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="vim_proxy_clutter")
    ap.add_argument("--batches", default="32")
    ap.add_argument("--levels", default="0.2,0.3,0.4")
    ap.add_argument("--pairs", type=int, default=21)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="write every row to this JSON")
    args = ap.parse_args(argv)
    device, rows = torch.device(args.device), []
    for name in args.models.split(","):
        model = create_model(name).to(device).eval()
        own = probes(name, model)
        depth, tokens = len(model.layers), model.pos_embed.shape[1]
        for batch in (int(b) for b in args.batches.split(",")):
            print(f"{name}, batch {batch}: speed-up over the unreduced model (95% interval)")
            for level in parse_levels(args.levels):
                for row, overrides in ROWS.items():
                    saved = probe.of(model)
                    probe.attach(model, own.get(row, saved))
                    cfg, _ = config_at(overrides, level, depth, tokens)
                    s = paired_speed(model, cfg, input_shape(model), batch, device, pairs=args.pairs, warmup=3)
                    apply(model, None)
                    probe.attach(model, saved)
                    lo, hi = s["speedup_ci"]
                    rows.append({"model": name, "batch": batch, "level": level, "row": row, "speedup": s["speedup"],
                                 "speedup_ci": [lo, hi], "throughput": s["throughput"], "device": str(device)})
                    print(f"  -{level:.0%} {row:18s} {s['speedup']:.3f} ({lo:.3f}-{hi:.3f})", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
