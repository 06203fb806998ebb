# runs_cost.py: a quick script of 2026-12-05 (its output was printed, not saved; the closing note quotes it). Run from the project root: PYTHONPATH=. python bench/results/calib_2026-12-05/runs_cost.py
import torch, time, statistics
from stmsearch.evaluation.fidelity import load_proxy
from stmsearch.evaluation.latency import _merge_step
from stmsearch.merging import MergeConfig
from stmsearch.merging.config import ParametricSchedule
from stmsearch.models import probe as pb
torch.set_num_threads(2)
P = load_proxy('vim_proxy', range(0, 10)); m = P.model
pb.attach(m, pb.load('bench/results/probe_refit_2026-12-05/vim_proxy.h16.probe.pt'))
s = ParametricSchedule(start=0, interval=2, count=10, shape='decreasing')
cfgs = {'pairs': MergeConfig(method='stm', schedule=s), 'runs4': MergeConfig(method='stm', runs=4, schedule=s),
        'runs4rf': MergeConfig(method='stm', runs=4, runs_from=0.1, schedule=s), 'runs3': MergeConfig(method='stm', runs=3, schedule=s),
        'prune': MergeConfig(method='prune', schedule=s)}
with torch.inference_mode():
  for T in (197, 131):
    runs = {k: _merge_step(m, c, T, 32, torch.device('cpu'), torch.float32) for k, c in cfgs.items()}
    res = {k: [] for k in runs}
    for rep in range(40):
        for k, f in runs.items():
            t = time.perf_counter(); f(); res[k].append(time.perf_counter() - t)
    print(T, '  '.join(f'{k} {1e3*statistics.median(v[5:]):.2f}' for k, v in res.items()))
