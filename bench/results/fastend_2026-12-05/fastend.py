"""Fast-end map: schedules from layer 0, decreasing, window 0, at interval 1 and 2; accuracy on held-out 0-499,
speed-up predicted from latency tables calibrated here (one with the shipped probe, one with the 16-unit one)."""
import json, sys, torch
from stmsearch.evaluation.fidelity import load_proxy, correct
from stmsearch.evaluation.latency import calibrate
from stmsearch.merging import MergeConfig, apply
from stmsearch.merging.config import ParametricSchedule, ConfigError
from stmsearch.models import probe as pb
proxy = sys.argv[1]; h16 = sys.argv[2] if len(sys.argv) > 2 else None  # a 16-unit probe's file (its rows left out without one)
torch.set_num_threads(2)
P = load_proxy(proxy, range(0, 500))
m = P.model
depth = len(m.layers)
full = pb.of(m)
rows = {'prune': dict(method='prune'), 'stm norm': dict(method='stm', importance_source='norm'),
        'stm probe': dict(method='stm', importance_source='auto'), 'stm h16': dict(method='stm', importance_source='auto')}
if h16 is None:
    del rows['stm h16']
sched = lambda i, c: ParametricSchedule(start=0, interval=i, count=c, shape='decreasing')
tabs = {}
for name, probe in (('full', full),) + ((('h16', pb.load(h16)),) if h16 else ()):
    pb.attach(m, probe)
    cfgs = [MergeConfig(**o, schedule=sched(2, 10)) for o in rows.values()]
    tabs[name] = calibrate(m, proxy, cfgs, torch.device('cpu'), 32, progress=False)
    print(name, 'merge ms at 197', {k: round(v[-1], 2) for k, v in tabs[name].merge_ms.items()}, flush=True)
pb.attach(m, full)
out = []
for interval, counts in ((2, range(16, 33, 2)), (1, range(6, 17, 2))):
    for c in counts:
        for row, o in rows.items():
            cfg = MergeConfig(**o, window=0, schedule=sched(interval, c))
            try:
                cfg.validate_for(depth, 197)
            except ConfigError:
                continue
            tab = tabs['h16' if row == 'stm h16' else 'full']
            sp = tab.predict_ms(None, depth, 197) / tab.predict_ms(cfg, depth, 197)
            pb.attach(m, pb.load(h16) if row == 'stm h16' else full)
            apply(m, cfg)
            with torch.inference_mode():
                acc = correct(m, P.images, P.labels).float().mean().item()
            apply(m, None)
            out.append(dict(row=row, interval=interval, count=c, reduction=cfg.token_reduction(depth, 197), speedup=sp, accuracy=acc))
            print(f"int{interval} c{c} red {out[-1]['reduction']:.3f} {row:10s} speedup {sp:.3f} acc {acc:.3f}", flush=True)
json.dump(out, open(f'bench/results/fastend_2026-12-05/fastend_{proxy}.json', 'w'), indent=1)
