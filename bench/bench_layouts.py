"""The fidelity report with more power: the report's clutter digits in several layouts.

500 report canvases resolve a gap of about 3 points at best, and on the clutter proxy STM's lead
over pruning is smaller. ``mnist5k-clutter:K`` places the same held-out digits again at new
positions among new fragments, so the report digits (held-out 500-999; the selection never saw
them in any layout) give ``--layouts`` + 1 canvases each. Rows are bench_fidelity.py's report rows
at STM's defaults (STM, tome, prune, random seeds 0-2) under the same shared schedules. Canvases
of one digit are not independent, so the test is by digit
(:func:`stmsearch.evaluation.fidelity.paired_by_digit`: digits where STM is right on more of
their canvases than the row, against the reverse; exact two-sided sign test).

    python bench/bench_layouts.py --layouts 4 --out layouts.json    # 2500 canvases, ~8 min on 2 CPU cores
    python bench/bench_layouts.py --images 500:520 --layouts 1 --levels 0.4   # smoke, seconds
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from stmsearch.evaluation.fidelity import (BASELINES, LEVELS, accuracy_text, bits, evaluate_cell, level_table,
                                           load_proxy, paired, paired_by_digit, parse_levels, parse_range)

PROXY = "vim_proxy_clutter"
ROWS = {"STM (defaults)": {"method": "stm"}, **BASELINES}


def evaluate(images: range, layouts: int, levels, device: str, batch: int) -> dict:
    """Per row and level: correctness on every canvas, layout-major (layout 0 first)."""
    proxies = [load_proxy(PROXY, images, device, layout=k) for k in range(layouts + 1)]
    cells = {}
    for name, over in ROWS.items():
        cells[name] = {}
        for t in levels:
            t0 = time.perf_counter()
            runs = [evaluate_cell(p, over, t, batch) for p in proxies]
            ok = torch.cat([r["correct"] for r in runs])
            cells[name][t] = {"correct": ok, "accuracy": ok.float().mean().item(),
                              "shared": all(r["shared"] for r in runs), "by_layout": [r["accuracy"] for r in runs]}
            print(f"{name:16} -{t:.0%}: {cells[name][t]['accuracy']:.4f} (layouts "
                  + " ".join(f"{a:.3f}" for a in cells[name][t]["by_layout"]) + f"; {time.perf_counter() - t0:.0f} s)",
                  flush=True)
    return cells


def tests(cells: dict, digits: int) -> dict:
    """STM against every other row at every level: by digit (the test) and by canvas (for reference)."""
    head = next(iter(cells))
    return {name: {t: {"by_digit": paired_by_digit(cells[head][t]["correct"], c["correct"], digits),
                       "by_canvas": paired(cells[head][t]["correct"], c["correct"]),
                       "layout0": paired(cells[head][t]["correct"][:digits], c["correct"][:digits])}
                   for t, c in per.items()}
            for name, per in cells.items() if name != head}


def table(cells: dict, tst: dict, levels) -> str:
    rows = {}
    for name, per in cells.items():
        rows[name] = [accuracy_text(per[t]) + ("" if name not in tst else
                      " +{wins}/-{losses} p={p:.2g}".format(**tst[name][t]["by_digit"])) for t in levels]
    return level_table(rows, levels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", default="500:1000", help="held-out digits (START:STOP); default the report's")
    ap.add_argument("--layouts", type=int, default=4, help="layouts beyond the dataset's own (layout 0)")
    ap.add_argument("--levels", default=",".join(str(t) for t in LEVELS), help="token reductions, comma-separated")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--out", help="write accuracies, tests and per-canvas correctness to this JSON")
    args = ap.parse_args()
    try:
        images = parse_range(args.images)
        levels = parse_levels(args.levels)
    except ValueError as exc:
        ap.error(str(exc))
    if args.layouts < 0:
        ap.error(f"--layouts must be >= 0, got {args.layouts}")
    t0 = time.perf_counter()
    cells = evaluate(images, args.layouts, levels, args.device, args.batch)
    tst = tests(cells, len(images))
    n = len(images) * (args.layouts + 1)
    print(f"\n{PROXY}, held-out digits {images.start}-{images.stop - 1} in layouts 0-{args.layouts} ({n} canvases); "
          f"STM against the row by digit: +digits STM gets right on more canvases / -the reverse, exact sign test p "
          f"({time.perf_counter() - t0:.0f} s)\n\n{table(cells, tst, levels)}\n", flush=True)
    if args.out:
        out = {"command": "python " + " ".join(sys.argv), "device": args.device, "torch": torch.__version__,
               "images": args.images, "layouts": args.layouts, "levels": levels,
               "cells": {name: {f"{t:.2f}": {**c, "correct": bits(c["correct"])} for t, c in per.items()}
                         for name, per in cells.items()},
               "tests": {name: {f"{t:.2f}": v for t, v in per.items()} for name, per in tst.items()}}
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
