# cal.py: a quick script of 2026-12-05 (its output was printed, not saved; the closing note quotes it). Run from the project root: PYTHONPATH=. python bench/results/calib_2026-12-05/cal.py
import torch
from stmsearch.evaluation.fidelity import load_proxy
from stmsearch.evaluation.latency import calibrate
from stmsearch.merging import MergeConfig
from stmsearch.merging.config import ParametricSchedule
from stmsearch.models import probe as pb
torch.set_num_threads(2)
P = load_proxy('vim_proxy', range(0, 10)); m = P.model
pb.attach(m, pb.load('bench/results/probe_refit_2026-12-05/vim_proxy.h16.probe.pt'))
s = ParametricSchedule(start=0, interval=2, count=10, shape='decreasing')
cfgs = [MergeConfig(method='stm', schedule=s), MergeConfig(method='prune', schedule=s)]
tab = calibrate(m, 'vim_proxy', cfgs, torch.device('cpu'), 32, progress=False)
print('tokens', tab.tokens); print('layer', [round(x,2) for x in tab.layer_ms]); print('sad', [round(x,2) for x in tab.layer_sad_ms]); print('stem', tab.stem_ms)
print({k: [round(x, 2) for x in v] for k, v in tab.merge_ms.items()})
tab.save('/tmp/cal_table.json')
