# sad_cost.py: a quick script of 2026-12-06 (its output printed; the closing note quotes it).
# Run from the project root, alone: PYTHONPATH=. python bench/results/calib_2026-12-06/sad_cost.py
# What size-aware decay really costs on the CPU: layer stacks with and without it, and whole forwards of
# one clutter ladder rung (every 3rd layer from 0, 28 tokens) under STM (with and without it) and prune,
# all interleaved in one process, each round in its own order.
import random, statistics, time
import torch
from stmsearch.evaluation.fidelity import load_proxy
from stmsearch.evaluation.latency import _layers
from stmsearch.merging import MergeConfig, apply
from stmsearch.merging.config import ParametricSchedule
from stmsearch.models import probe as pb
torch.set_num_threads(2)
P = load_proxy('vim_proxy_clutter', range(0, 32)); m = P.model
pb.attach(m, pb.load('bench/results/probe_refit_2026-12-05/vim_proxy_clutter.h16.probe.pt'))
s = ParametricSchedule(start=0, interval=3, count=28, shape='decreasing')
cfgs = {'stm': MergeConfig(method='stm', schedule=s), 'stm_nosad': MergeConfig(method='stm', schedule=s, size_aware_decay=False),
        'prune': MergeConfig(method='prune', schedule=s, window=4), 'prune_sad': MergeConfig(method='prune', schedule=s, window=4, size_aware_decay=True)}
gen = torch.Generator().manual_seed(0)
img = torch.randn(32, m.cfg.in_chans, m.cfg.img_size, m.cfg.img_size, generator=gen)
fns = {}
for t in (197, 131, 65):
    h = torch.randn(32, t, m.cfg.embed_dim, generator=gen)
    fns[f'stack{t}'] = _layers(m, h, None)
    fns[f'stack{t}_sad'] = _layers(m, h, torch.ones(32, t))
def fwd(c):
    def run():
        apply(m, c); return m(img)
    return run
for k, c in cfgs.items():
    fns[k] = fwd(c)
res = {k: [] for k in fns}
with torch.inference_mode():
    for f in fns.values(): f()
    for r in range(15):
        for k in random.Random(r).sample(list(fns), len(fns)):
            t0 = time.perf_counter(); fns[k](); res[k].append(1e3 * (time.perf_counter() - t0))
for k, v in res.items():
    q = statistics.quantiles(v, n=4)
    print(f'{k:12s} median {statistics.median(v):8.1f} ms  IQR {q[0]:.1f}-{q[2]:.1f}')
for t in (197, 131, 65):
    ratios = [b / a for a, b in zip(res[f'stack{t}'], res[f'stack{t}_sad'])]
    print(f'sad/plain stack {t}: median {statistics.median(ratios):.3f} (per-round {min(ratios):.3f}-{max(ratios):.3f})')
for a, b in (('stm', 'stm_nosad'), ('stm', 'prune'), ('stm_nosad', 'prune'), ('prune_sad', 'prune')):
    ratios = [x / y for x, y in zip(res[a], res[b])]
    print(f'{a}/{b}: median {statistics.median(ratios):.3f} (per-round {min(ratios):.3f}-{max(ratios):.3f})')
