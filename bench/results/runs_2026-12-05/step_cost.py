"""STM's merge step with runs 2 / 3 / 4 and prune's, as the latency model times them (two calibrations of a table
in a row), vim_proxy with the 16-unit probe, batch 32. ``PYTHONPATH=. python step_cost.py vim_proxy
bench/results/probe_refit_2026-12-05/vim_proxy.h16.probe.pt`` (code f6475d3, 2-core CPU alone; output in the log)."""
import sys, torch
from stmsearch.evaluation.fidelity import load_proxy
from stmsearch.evaluation.latency import calibrate
from stmsearch.merging import MergeConfig
from stmsearch.merging.config import ParametricSchedule
from stmsearch.models import probe as pb
proxy, h16 = sys.argv[1], sys.argv[2]
torch.set_num_threads(2)
P = load_proxy(proxy, range(0, 10)); m = P.model
pb.attach(m, pb.load(h16))
s = ParametricSchedule(start=0, interval=2, count=10, shape='decreasing')
cfgs = [MergeConfig(method='stm', runs=k, schedule=s) for k in (2, 3, 4)] + [MergeConfig(method='prune', schedule=s)]
for rep in range(2):
    tab = calibrate(m, proxy, cfgs, torch.device('cpu'), 32, progress=False)
    print({k: [round(x, 2) for x in v] for k, v in tab.merge_ms.items()})
    print('grid', getattr(tab, 'merge_tokens', None) or getattr(tab, 'tokens', None))
