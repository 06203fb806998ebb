"""The first look (2026-12-05, before select_runs.py): STM at its defaults with the 16-unit probe, runs 2 / 3 / 4 at
every layer, from layer 0, decreasing, window 0, on held-out images LO..HI-1, with each schedule's fill of pairs'
capacity per merging layer. ``python sweep_runs.py PROXY PROBE 0 500`` (JSON beside it)."""
import json, sys, torch
from stmsearch.evaluation.fidelity import load_proxy, correct
from stmsearch.merging import MergeConfig, apply
from stmsearch.merging.config import ParametricSchedule, ConfigError
from stmsearch.merging.capacity import side_capacity, block_offset, eligible, worst_split
from stmsearch.models import probe as pb
proxy, h16, lo, hi = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(2)
P = load_proxy(proxy, range(lo, hi)); m = P.model; depth = len(m.layers); T = m.pos_embed.shape[1]
pb.attach(m, pb.load(h16))
sched = lambda i, c, s='decreasing', st=0: ParametricSchedule(start=st, interval=i, count=c, shape=s)
def fills(s, runs, w=0):
    t, out = T, []
    for l, r in enumerate(s):
        if r:
            cap = worst_split(eligible(t, w), lambda n: side_capacity(n, runs, block_offset(l, runs)))
            out.append(round(r / cap, 2)); t -= r
    return out
grid = [(2, c) for c in range(16, 31, 2)] + [(1, c) for c in range(6, 16, 2)] + [(3, c) for c in range(24, 41, 4)]
res = []
for i, c in grid:
    s = None
    for runs in (2, 3, 4):
        cfg = MergeConfig(method='stm', window=0, runs=runs, schedule=sched(i, c))
        try:
            s = cfg.validate_for(depth, T)
        except ConfigError:
            print(i, c, runs, 'invalid'); continue
        apply(m, cfg)
        with torch.inference_mode():
            acc = correct(m, P.images, P.labels).float().mean().item()
        apply(m, None)
        res.append(dict(interval=i, count=c, runs=runs, acc=acc, fills2=fills(s, 2), fills=fills(s, runs)))
        print(f"int{i} c{c} runs{runs} acc {acc:.3f} fill(2) max {max(fills(s,2)):.2f} {fills(s,2)}", flush=True)
json.dump(res, open(f'/tmp/fe/runs_{proxy}_{lo}.json', 'w'), indent=1)
