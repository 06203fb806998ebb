"""STM's longest run per layer (``runs``, ``runs_from``) at the searched fronts' schedules: STM at its defaults
with the 16-unit probes of bench/results/probe_refit_2026-12-05, schedules from layer 0 (every layer, every
second and every third, light to heavy, decreasing as the fronts' fast ends are, and constant), window 0.
Chosen on held-out images 0-499 of both proxies (the highest mean accuracy over every schedule of both),
reported on 500-999: ``python select_runs.py 0 500`` then ``python select_runs.py 500 1000 2:0,4:0,4:0.1`` (the
report: the chosen variant against pairs everywhere and runs everywhere; RUNS:RUNS_FROM,...)."""
import itertools, json, sys
from pathlib import Path
import torch
from stmsearch.evaluation.fidelity import correct, load_proxy
from stmsearch.merging import MergeConfig, apply
from stmsearch.merging.config import ConfigError, ParametricSchedule
from stmsearch.models import probe as pb

HERE = Path(__file__).resolve().parent
PROBES = HERE.parent / "probe_refit_2026-12-05"
VARIANTS = [(2, 0.0), (3, 0.0), (4, 0.0)] + list(itertools.product((3, 4), (0.1, 0.2, 0.3)))
SCHEDULES = {"vim_proxy": [(1, c) for c in (4, 8, 12, 14)] + [(2, c) for c in (8, 16, 22, 26, 28, 30)] + [(3, c) for c in (16, 28, 36, 40)],
             "vim_proxy_clutter": [(1, c) for c in (4, 8, 10)] + [(2, c) for c in (8, 14, 18, 20, 22)] + [(3, c) for c in (12, 24, 28)]}
lo, hi = int(sys.argv[1]), int(sys.argv[2])
if len(sys.argv) > 3:
    VARIANTS = [(int(a), float(b)) for a, b in (v.split(":") for v in sys.argv[3].split(","))]
torch.set_num_threads(2)
rows = []
for proxy, schedules in SCHEDULES.items():
    P = load_proxy(proxy, range(lo, hi))
    m, depth, t = P.model, len(P.model.layers), P.model.pos_embed.shape[1]
    pb.attach(m, pb.load(PROBES / f"{proxy}.h16.probe.pt"))
    for (interval, count), shape in itertools.product(schedules, ("decreasing", "constant")):
        sched = ParametricSchedule(start=0, interval=interval, count=count, shape=shape)
        for runs, runs_from in VARIANTS:
            cfg = MergeConfig(method="stm", window=0, runs=runs, runs_from=runs_from, schedule=sched)
            try:
                cfg.validate_for(depth, t)
            except ConfigError:
                continue
            apply(m, cfg)
            with torch.inference_mode():
                acc = correct(m, P.images, P.labels).float().mean().item()
            apply(m, None)
            rows.append(dict(proxy=proxy, interval=interval, count=count, shape=shape, runs=runs, runs_from=runs_from,
                             reduction=cfg.token_reduction(depth, t), accuracy=acc))
            print(f"{proxy} int{interval} c{count} {shape[:4]} runs {runs} from {runs_from}: {acc:.3f}", flush=True)
# mean over the schedules every variant carries (a heavy constant schedule may exceed pairs' capacity)
keys = {(r["proxy"], r["interval"], r["count"], r["shape"]) for r in rows}
common = [k for k in keys if sum((r["proxy"], r["interval"], r["count"], r["shape"]) == k for r in rows) == len(VARIANTS)]
print(f"images {lo}-{hi - 1}: mean accuracy over the {len(common)} schedules every variant carries")
for v in VARIANTS:
    accs = [r["accuracy"] for r in rows if (r["runs"], r["runs_from"]) == v and (r["proxy"], r["interval"], r["count"], r["shape"]) in common]
    print(f"  runs {v[0]} from {v[1]}: {sum(accs) / len(accs):.4f}")
json.dump(rows, open(HERE / f"select_runs_{lo}_{hi}.json", "w"), indent=1)
