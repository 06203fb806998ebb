"""Where the seed ladder's rungs land on a proxy: STM and prune at their defaults, from layer 0, decreasing,
at every layer / every second / every third layer and several windows; accuracy on held-out images 0-499
(the searches' images), speed-up predicted by a latency table (the one bench_fronts.py calibrated).

    PYTHONPATH=. python bench/results/ladder_2026-12-05/rungs.py vim_proxy_clutter runs/fronts-vim_proxy_clutter-latency.json
"""
import sys

import torch

from stmsearch.evaluation.fidelity import correct, load_proxy
from stmsearch.evaluation.latency import LatencyTable
from stmsearch.merging.config import config_from_dict
from stmsearch.merging.patch import apply
from stmsearch.merging.schedule import walk
from stmsearch.search.space import model_geometry

torch.set_num_threads(2)
proxy_name, table_path = sys.argv[1], sys.argv[2]
table = LatencyTable.load(table_path)
depth, tokens = model_geometry(proxy_name)
proxy = load_proxy(proxy_name, range(0, 500))
reference_ms = table.predict_ms(None, depth, tokens)


def evaluate(method: str, start: int, interval: int, count: int, window: int) -> tuple[float, float]:
    cfg = config_from_dict({"method": method, "window": window, "schedule": {
        "start": start, "interval": interval, "count": count, "shape": "decreasing"}}, "rung")
    cfg = config_from_dict({**cfg.to_dict(), "schedule": list(walk(cfg, depth, tokens, clip=True).schedule)}, "rung")
    apply(proxy.model, cfg)
    try:
        accuracy = correct(proxy.model, proxy.images, proxy.labels).float().mean().item()
    finally:
        apply(proxy.model, None)
    return reference_ms / table.predict_ms(cfg, depth, tokens), accuracy


GRID = [(1, (2, 6, 10, 14, 20, 28)), (2, (10, 16, 20, 22, 24, 28)), (3, (10, 20, 24, 28))]
for method in ("stm", "prune"):
    for interval, counts in GRID:
        for count in counts:
            cells = []
            for window in (0, 4, 8, 12):
                speedup, accuracy = evaluate(method, 0, interval, count, window)
                cells.append(f"w{window} {speedup:.2f}x {accuracy:.3f}")
            print(f"{method} every {interval} from 0, {count} tokens: " + " | ".join(cells), flush=True)
