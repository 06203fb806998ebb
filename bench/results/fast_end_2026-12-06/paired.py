# paired.py (2026-12-06): whole forwards at the fast end, each config's speed-up over the unreduced model, timed
# interleaved in shuffled rounds in one process (one thread, batch 32). Run from the project root, alone:
#   PYTHONPATH=. python bench/results/fast_end_2026-12-06/paired.py vim_proxy_clutter \
#     bench/results/probe_refit_2026-12-05/vim_proxy_clutter.h16.probe.pt \
#     "{'stm22':('stm',0,2,22,0),'stm20':('stm',0,2,20,0),'pr3_28':('prune',0,3,28,4),'pr20':('prune',0,2,20,8)}" 15
# (name: (method, start, interval, count, window), every schedule decreasing)
import ast, sys, statistics as st, torch
from stmsearch.evaluation.fidelity import load_proxy
from stmsearch.evaluation.throughput import interleaved_times
from stmsearch.merging import MergeConfig
from stmsearch.merging.config import ParametricSchedule
from stmsearch.merging.patch import apply
from stmsearch.models.probe import attach
proxy, probe, spec = sys.argv[1], sys.argv[2], ast.literal_eval(sys.argv[3])
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 15
p = load_proxy(proxy, range(0, 32)); attach(p.model, probe)
x = p.images[:32]
cfgs = {"ref": None}
for name, (m, s, i, c, w) in spec.items():
    cfgs[name] = MergeConfig(method=m, schedule=ParametricSchedule(start=s, interval=i, count=c, shape="decreasing"), window=w)
def fwd(cfg):
    def run():
        apply(p.model, cfg)
        return p.model(x)
    return run
with torch.inference_mode():
    times = interleaved_times([fwd(c) for c in cfgs.values()], torch.device("cpu"), rounds, warmup=2, shuffle=True)
t = dict(zip(cfgs, times))
for k in cfgs:
    ratios = [a / b for a, b in zip(t["ref"], t[k])]
    q = sorted(ratios)
    print(f"{k:10s} {st.median(t[k])*1e3:8.1f} ms  speed-up median {st.median(ratios):.3f} (per-round {q[0]:.3f}-{q[-1]:.3f})")
names = list(spec)
for a in names:
    for b in names:
        if a < b:
            r = [x / y for x, y in zip(t[a], t[b])]
            print(f"time {a}/{b}: median {st.median(r):.3f}, rounds {sorted(r)[2]:.3f}-{sorted(r)[-3]:.3f} (3rd lowest-3rd highest)")
