# ward_layout.py: a quick script of 2026-12-06 (output in ward_layout.log). Run from the project root, alone:
#   PYTHONPATH=. python bench/results/calib_2026-12-06b/ward_layout.py
# STM's Ward damage on the CPU reads the recorded steps (B, C, T) through a (B, T, C) view; the same sums
# taken in the steps' own layout, interleaved in one process, 30 rounds, one thread.
import statistics
import time

import torch

import stmsearch
from stmsearch.merging.functions import pair_damage

torch.set_num_threads(1)
for name in ("vim_proxy", "vim_proxy_clutter"):
    di = stmsearch.create_model(name).layers[0].mixer.d_inner
    B, L = 32, 197
    x = torch.rand(B, di, L, generator=torch.Generator().manual_seed(0)) + 0.01
    w = torch.rand(B, L, generator=torch.Generator().manual_seed(1)) + 0.5
    metric = x.transpose(1, 2)

    def now():
        return pair_damage(metric[:, :-1], metric[:, 1:], w[:, :-1], w[:, 1:], "ward")

    def own_layout():
        d = x[:, :, 1:] - x[:, :, :-1]
        return d.square_().sum(1) * (w[:, :-1] * w[:, 1:] / (w[:, :-1] + w[:, 1:]))

    a, b = now(), own_layout()
    ts = {"now": [], "own layout": []}
    for r in range(30):
        for k, f in ((("now", now), ("own layout", own_layout)) if r % 2 else (("own layout", own_layout), ("now", now))):
            t0 = time.perf_counter()
            f()
            ts[k].append(1e3 * (time.perf_counter() - t0))
    print(f"{name}: d_inner {di}, batch {B}, {L} tokens; largest relative difference {((a - b).abs() / a.abs()).max().item():.2e}")
    for k, v in ts.items():
        print(f"  {k}: median {statistics.median(v):.3f} ms, min {min(v):.3f}, max {max(v):.3f}")
