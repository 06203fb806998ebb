"""How far do a CPU latency table's predictions move from one calibration to the next? Calibrates
``--tables`` tables in a row (one process; nothing else should run) and predicts, from each, the
speed-ups of ``--configs`` seeded random schedules of the front runs' space (every layer to every third,
2-28 tokens, windows 0-12), each under stm, prune and tome, three ways: from the medians as timed
(``meta["timed"]``: each count and each size-aware count on its own, as tables were before 2026-12-06),
from those medians smoothed over the token counts with size-aware layers as one ratio, and from the
table as it prices (each round steadied by its load, then smoothed; :func:`~stmsearch.evaluation.latency.calibrate`).
Prints, for each, the median and 90th percentile over configs of a config's spread over the tables
(largest over smallest predicted speed-up, less 1), and the same for STM's speed-up over prune's at one
schedule and window.

    PYTHONPATH=. python bench/bench_table_repeat.py --probe \
        bench/results/probe_refit_2026-12-05/vim_proxy_clutter.h16.probe.pt --proxy vim_proxy_clutter
"""
from __future__ import annotations

import argparse
import json
import random

import numpy as np
import torch

from stmsearch.evaluation.fidelity import load_proxy
from stmsearch.evaluation.latency import LatencyTable, calibrate, price_series
from stmsearch.merging import MergeConfig
from stmsearch.models import probe as pb
from stmsearch.search.params import clip_to_capacity

METHODS = ("stm", "prune", "tome")


def random_schedules(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"schedule": {"start": rng.choice([0, 1]), "interval": rng.choice([1, 2, 3]),
                          "count": rng.randrange(2, 29, 2), "shape": rng.choice(["constant", "decreasing"])},
             "window": rng.randrange(0, 13, 2)} for _ in range(n)]


def as_timed(tab: LatencyTable, smoothed: bool) -> LatencyTable:
    """``tab`` priced from its plain medians, as timed or through the table's own pricing (:func:`price_series`)."""
    timed = tab.meta["timed"]
    layer, sad, steps = timed["layer_ms"], timed["layer_sad_ms"], timed["merge_ms"]
    if smoothed:
        layer, sad, steps, _ = price_series(tab.tokens, tab.merge_tokens, layer, sad, steps, True)
    return LatencyTable(tab.meta, tab.tokens, layer, sad, tab.stem_ms, tab.merge_tokens, steps)


def spreads(values: np.ndarray) -> tuple[float, float]:
    """Median and 90th percentile over configs (columns) of max/min - 1 over tables (rows)."""
    s = values.max(0) / values.min(0) - 1
    return float(np.median(s)), float(np.percentile(s, 90))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--proxy", default="vim_proxy_clutter")
    ap.add_argument("--probe", help="a saliency probe file to attach (STM reads it, as in the front runs)")
    ap.add_argument("--tables", type=int, default=3)
    ap.add_argument("--configs", type=int, default=40, help="random schedules, each under every method")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the predictions here")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    model = load_proxy(args.proxy, range(0, 1)).model
    if args.probe:
        pb.attach(model, pb.load(args.probe))
    depth, tokens = model.cfg.depth, model.cfg.num_patches + 1
    # capped where a layer cannot remove its count, as a search's trials are
    cfgs = [clip_to_capacity(MergeConfig(method=m, **draw), depth, tokens)[0]
            for draw in random_schedules(args.configs, args.seed) for m in METHODS]
    pred = {"as timed": [], "timed, smoothed": [], "table": []}
    for i in range(args.tables):
        tab = calibrate(model, args.proxy, cfgs, torch.device("cpu"), 32, progress=False)
        for name, t in (("as timed", as_timed(tab, False)), ("timed, smoothed", as_timed(tab, True)), ("table", tab)):
            full = t.predict_ms(None, depth, tokens)
            pred[name].append([full / t.predict_ms(c, depth, tokens) for c in cfgs])
        print(f"table {i + 1}: a layer at {tab.tokens[-1]} tokens {tab.meta['timed']['layer_ms'][-1]:.2f} ms as timed, "
              f"{tab.layer_ms[-1]:.2f} in the table; size-aware ratio {tab.meta['sad_ratio']:.3f}", flush=True)
    out = {"configs": [c.model_dump(mode="json") for c in cfgs], "predictions": pred}
    for name, rows in pred.items():
        v = np.asarray(rows)
        stm_over_prune = v[:, 0::3] / v[:, 1::3]
        med, p90 = spreads(v)
        smed, sp90 = spreads(stm_over_prune)
        print(f"{name}: {v.shape[1]} configs' speed-up spread over {v.shape[0]} tables: median {100 * med:.1f}%, "
              f"90th percentile {100 * p90:.1f}%; STM over prune at one schedule: median {100 * smed:.1f}%, "
              f"90th percentile {100 * sp90:.1f}%")
        out[name] = {"spread_median": med, "spread_p90": p90, "stm_over_prune_median": smed, "stm_over_prune_p90": sp90}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
