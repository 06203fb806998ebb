"""At the fronts' fastest schedule (start 0, interval 2, COUNT, decreasing): STM with the probe, STM with the
output norm, prune, and STM with the 16- and 32-unit narrowed probes (written by narrow_select.py; its OUT):
accuracy on held-out 0-499 and paired CPU speed (batch 32, 2 threads, alone on the CPU, 9 pairs).

    PYTHONPATH=. python bench/results/probe_2026-12-05/fast_end.py vim_proxy 24     # then 28

fast_end.log holds what it printed on 2026-12-05 (2-core CPU, commit e93f69a), copied from the terminal."""
import torch, sys
from stmsearch import MergeConfig
from stmsearch.evaluation.fidelity import load_proxy, correct
from stmsearch.evaluation.speed import paired_speed
from stmsearch.evaluation.api import input_shape
from stmsearch.merging.patch import apply
torch.set_num_threads(2)
sched = {"start": 0, "interval": 2, "count": int(sys.argv[2]) if len(sys.argv) > 2 else 24, "shape": "decreasing"}
p = load_proxy(sys.argv[1], range(0, 500))
from stmsearch.models import probe as pb
full = pb.of(p.model)
narrowed = {h: pb.load(f"bench/results/probe_2026-12-05/{sys.argv[1]}.h{h}.probe.pt") for h in (16, 32)}
rows = {"stm probe": dict(method="stm", window=4), "stm norm": dict(method="stm", window=4, importance_source="norm"),
        "prune": dict(method="prune", window=6)}
rows.update({f"stm h{h}": dict(method="stm", window=4) for h in narrowed})
for name, kw in rows.items():
    pb.attach(p.model, narrowed[int(name[5:])] if name.startswith("stm h") else full)
    cfg = MergeConfig(schedule=sched, **kw)
    apply(p.model, cfg); acc = correct(p.model, p.images, p.labels).float().mean().item(); apply(p.model, None)
    s = paired_speed(p.model, cfg, input_shape(p.model), 32, torch.device("cpu"), pairs=9, warmup=2); apply(p.model, None)
    print(sys.argv[1], sched["count"], name, f"acc {acc:.3f} speedup {s['speedup']:.3f} {[round(v, 3) for v in s['speedup_ci']]}", flush=True)
