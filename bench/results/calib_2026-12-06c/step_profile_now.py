# step_profile_now.py (2026-12-06): torch profiler of one merge step as the latency table times it, on the code of 8e38067,
# grouped by input shape (where the rest of STM's CPU step goes). Run from the project root, alone:
#   PYTHONPATH=. python bench/results/calib_2026-12-06c/step_profile_now.py stm
import sys, torch
from torch.profiler import profile, ProfilerActivity
from stmsearch.evaluation.fidelity import load_proxy
from stmsearch.evaluation.latency import _merge_step
from stmsearch.evaluation.throughput import threads
from stmsearch.merging import MergeConfig
from stmsearch.models import probe as pb
m = load_proxy('vim_proxy', range(0, 1)).model
pb.attach(m, pb.load('bench/results/probe_refit_2026-12-05/vim_proxy.h16.probe.pt'))
with torch.inference_mode(), threads(1):
    f = _merge_step(m, MergeConfig(method=sys.argv[1], schedule=[0], window=0), 197, 32, torch.device('cpu'), torch.float32)
    for _ in range(5): f()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
        for _ in range(10): f()
print(p.key_averages(group_by_input_shape=True).table(sort_by='self_cpu_time_total', row_limit=30, max_name_column_width=22, max_shapes_column_width=60))
