"""STM's other knobs at the digits fast end (every second layer from 0, 29 and 30 tokens, decreasing), one at a
time from its defaults with the 16-unit probe, windows 0 and 8, digits 0-499. ``PYTHONPATH=. python fastend_knobs.py
vim_proxy bench/results/probe_refit_2026-12-05/vim_proxy.h16.probe.pt`` (code f6475d3, 2-core CPU alone, 67 s; its
output, the log beside it)."""
import json, sys, torch, itertools
from stmsearch.evaluation.fidelity import load_proxy, correct
from stmsearch.evaluation.latency import calibrate
from stmsearch.merging import MergeConfig, apply
from stmsearch.merging.config import ParametricSchedule, ConfigError
from stmsearch.models import probe as pb
proxy, h16 = sys.argv[1], sys.argv[2]
torch.set_num_threads(2)
P = load_proxy(proxy, range(0, 500)); m = P.model; depth = len(m.layers); T = m.pos_embed.shape[1]
pb.attach(m, pb.load(h16))
sched = lambda i, c, s='decreasing': ParametricSchedule(start=0, interval=i, count=c, shape=s)
variants = [{}, {'importance_power': 8.0}, {'importance_power': 2.0}, {'weight_power': 4.0}, {'weight_power': 1.0},
            {'drop': 0.25}, {'drop': 0.5}, {'drop': 0.75}, {'runs': 3}, {'runs': 4}, {'metric': 'x'}, {'metric': 'hidden'},
            {'weights': 'size'}, {'importance': 'max'}, {'fading': 'estimated'}, {'edges': 'free'}, {'symmetric': True}]
for c in (29, 30):
    for v in variants:
        for w in (0, 8):
            cfg = MergeConfig(method='stm', window=w, schedule=sched(2, c), **v)
            try:
                cfg.validate_for(depth, T)
            except ConfigError as e:
                print(c, v, w, 'invalid'); continue
            apply(m, cfg)
            with torch.inference_mode():
                acc = correct(m, P.images, P.labels).float().mean().item()
            apply(m, None)
            print(f"c{c} w{w} {v} acc {acc:.3f}", flush=True)
