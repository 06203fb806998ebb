"""Finer counts at the fast end: STM (its defaults, 16-unit probe) and prune, windows 0/2/4, digits 0-499, speed-up
predicted by a latency table calibrated here. ``PYTHONPATH=. python fastend_counts.py vim_proxy
bench/results/probe_refit_2026-12-05/vim_proxy.h16.probe.pt`` (code f6475d3, 2-core CPU alone, 2m45s); the JSON
beside it (written to /tmp/fe/ then, copied here)."""
import json, sys, torch
from stmsearch.evaluation.fidelity import load_proxy, correct
from stmsearch.evaluation.latency import calibrate
from stmsearch.merging import MergeConfig, apply
from stmsearch.merging.config import ParametricSchedule, ConfigError
from stmsearch.models import probe as pb
proxy, h16 = sys.argv[1], sys.argv[2]
torch.set_num_threads(2)
P = load_proxy(proxy, range(0, 500)); m = P.model; depth = len(m.layers); T = m.pos_embed.shape[1]
pb.attach(m, pb.load(h16))
rows = {'prune': dict(method='prune'), 'stm': dict(method='stm', importance_source='auto')}
sched = lambda i, c, s='decreasing': ParametricSchedule(start=0, interval=i, count=c, shape=s)
tab = calibrate(m, proxy, [MergeConfig(**o, schedule=sched(2, 10)) for o in rows.values()], torch.device('cpu'), 32, progress=False)
out = []
grid = [(2, c, 'decreasing') for c in range(25, 32)] + [(2, c, 'constant') for c in range(27, 33)] + [(1, c, 'decreasing') for c in range(13, 17)]
for interval, c, shape in grid:
    for row, o in rows.items():
        for w in (0, 2, 4):
            cfg = MergeConfig(**o, window=w, schedule=sched(interval, c, shape))
            try:
                cfg.validate_for(depth, T)
            except ConfigError:
                continue
            sp = tab.predict_ms(None, depth, T) / tab.predict_ms(cfg, depth, T)
            apply(m, cfg)
            with torch.inference_mode():
                acc = correct(m, P.images, P.labels).float().mean().item()
            apply(m, None)
            out.append(dict(row=row, interval=interval, count=c, shape=shape, window=w, speedup=sp, accuracy=acc))
            print(f"int{interval} c{c} {shape[:4]} w{w} {row:6s} speedup {sp:.3f} acc {acc:.3f}", flush=True)
json.dump(out, open(f'/tmp/fe/fine_{proxy}.json', 'w'), indent=1)
