# forward_vs_table.py: a quick script of 2026-12-06 (its output printed; the closing note quotes it).
# Run from the project root, alone: PYTHONPATH=. python bench/results/calib_2026-12-06/forward_vs_table.py
# Does the latency table price STM's whole forward as well as prune's? One table calibrated, then whole
# forwards of the clutter rung (every third layer from 0, 28 tokens; STM window 0, prune window 4, as in the
# front run) and of the unreduced model, interleaved in one process, each round in its own order.
import random, statistics, time
import torch
from stmsearch.evaluation.fidelity import load_proxy
from stmsearch.evaluation.latency import calibrate
from stmsearch.evaluation.throughput import threads
from stmsearch.merging import MergeConfig, apply
from stmsearch.models import probe as pb
from stmsearch.search.params import clip_to_capacity
torch.set_num_threads(2)
m = load_proxy('vim_proxy_clutter', range(0, 1)).model
pb.attach(m, pb.load('bench/results/probe_refit_2026-12-05/vim_proxy_clutter.h16.probe.pt'))
depth, tokens = m.cfg.depth, m.cfg.num_patches + 1
s = {'start': 0, 'interval': 3, 'count': 28, 'shape': 'decreasing'}
cfgs = {'stm': MergeConfig(method='stm', schedule=s, window=0), 'prune': MergeConfig(method='prune', schedule=s, window=4)}
cfgs = {k: clip_to_capacity(c, depth, tokens)[0] for k, c in cfgs.items()}
tab = calibrate(m, 'vim_proxy_clutter', list(cfgs.values()), torch.device('cpu'), 32, progress=False)
tab.save("bench/results/calib_2026-12-06/forward_vs_table.table.json")
img = torch.randn(32, m.cfg.in_chans, m.cfg.img_size, m.cfg.img_size, generator=torch.Generator().manual_seed(0))
runs = {**cfgs, 'none': None}
res = {k: [] for k in runs}
with torch.inference_mode(), threads(1):  # the table and the verification time on one thread
    for k, c in runs.items():
        apply(m, c); m(img)
    for r in range(15):
        for k in random.Random(r).sample(list(runs), len(runs)):
            apply(m, runs[k]); t0 = time.perf_counter(); m(img); res[k].append(1e3 * (time.perf_counter() - t0))
full = statistics.median(res['none'])
for k, c in runs.items():
    pred = tab.predict_ms(c, depth, tokens)
    meas = statistics.median(res[k])
    sp = [a / b for a, b in zip(res['none'], res[k])]
    print(f'{k:6s} table {pred:7.1f} ms, measured {meas:7.1f} ms (ratio {meas / pred:.3f}); speed-up table '
          f'{tab.predict_ms(None, depth, tokens) / pred:.3f}, measured {statistics.median(sp):.3f} (per round {min(sp):.3f}-{max(sp):.3f})')
ratio = [a / b for a, b in zip(res['stm'], res['prune'])]
print(f"stm over prune: table {tab.predict_ms(cfgs['stm'], depth, tokens) / tab.predict_ms(cfgs['prune'], depth, tokens):.3f}, "
      f"measured {statistics.median(ratio):.3f} (per round {min(ratio):.3f}-{max(ratio):.3f})")
