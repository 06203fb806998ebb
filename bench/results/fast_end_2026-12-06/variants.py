# variants.py (2026-12-06): STM's knobs one at a time at the fast end against prune at windows 4 and 8, every schedule
# decreasing from layer 0 (interval, counts as the 4th argument); accuracy on held-out images 0-299 / all 1000 (the
# fronts' searches score on 0-499), speed-up as the table prices it (?x: the table has no key for that knob's step).
# Run from the project root:
#   PYTHONPATH=. python bench/results/fast_end_2026-12-06/variants.py vim_proxy_clutter \
#     bench/results/probe_refit_2026-12-05/vim_proxy_clutter.h16.probe.pt TABLE "((2,(20,22,24,26,28)),(3,(24,26,28)))"
import ast, sys, torch
from stmsearch.evaluation.fidelity import load_proxy, correct
from stmsearch.evaluation.latency import LatencyTable
from stmsearch.merging import MergeConfig
from stmsearch.merging.config import ParametricSchedule
from stmsearch.merging.patch import apply
from stmsearch.models.probe import attach
proxy, probe, table = sys.argv[1:4]
INTS = ast.literal_eval(sys.argv[4])
torch.set_num_threads(2)
p = load_proxy(proxy, range(0, 1000)); attach(p.model, probe)
t = LatencyTable.load(table)
depth = len(p.model.layers)
ref = t.predict_ms(None, depth, 197)
VAR = {"def": {}, "r3": {"runs": 3}, "r4": {"runs": 4}, "r4f.1": {"runs": 4, "runs_from": 0.1}, "free": {"edges": "free"},
       "d.25": {"drop": 0.25}, "d.5": {"drop": 0.5}, "norm": {"importance_source": "norm"}, "sym": {"symmetric": True}}
for interval, counts in INTS:
  for count in counts:
    row = []
    sched = ParametricSchedule(start=0, interval=interval, count=count, shape="decreasing")
    for name, kn in list(VAR.items()) + [("prune4", 4), ("prune8", 8)]:
        cfg = MergeConfig(method="prune", schedule=sched, window=kn) if isinstance(kn, int) else MergeConfig(method="stm", schedule=sched, window=0, **kn)
        try:
            cfg.validate_for(depth, 197)
        except Exception:
            row.append(f"{name}: -"); continue
        apply(p.model, cfg)
        with torch.inference_mode():
            ok = correct(p.model, p.images, p.labels)
        apply(p.model, None)
        try:
            sp = f"{ref / t.predict_ms(cfg, depth, 197):.2f}x"
        except Exception:
            sp = "?x"
        row.append(f"{name} {sp} {ok[:300].float().mean():.3f}/{ok.float().mean():.3f}")
    print(f"0/{interval}/{count}/dec", " | ".join(row), flush=True)
