# step_profile.py: a quick script of 2026-12-06 (output in step_profile.log). Run from the project root, alone:
#   PYTHONPATH=. python bench/results/calib_2026-12-06b/step_profile.py 197 PROXY PROBE
# Where the CPU time of STM's merge step goes against pruning's, one thread, batch 32, as the latency table times it.
# profile STM's and prune's merge steps on the CPU, 1 thread, as the latency table times them
import sys, time, statistics
import torch
from torch.profiler import profile, ProfilerActivity
from stmsearch.evaluation.fidelity import load_proxy
from stmsearch.evaluation.latency import _merge_step
from stmsearch.evaluation.throughput import threads
from stmsearch.merging import MergeConfig
from stmsearch.models import probe as pb
torch.set_num_threads(2)
m = load_proxy(sys.argv[2] if len(sys.argv) > 2 else 'vim_proxy_clutter', range(0, 1)).model
pb.attach(m, pb.load(sys.argv[3] if len(sys.argv) > 3 else 'bench/results/probe_refit_2026-12-05/vim_proxy_clutter.h16.probe.pt'))
cfgs = {'stm': MergeConfig(method='stm', schedule=[0], window=0), 'prune': MergeConfig(method='prune', schedule=[0], window=4)}
T = int(sys.argv[1]) if len(sys.argv) > 1 else 197
with torch.inference_mode(), threads(1):
    fns = {k: _merge_step(m, c, T, 32, torch.device('cpu'), torch.float32) for k, c in cfgs.items()}
    for k, f in fns.items():
        # _merge_step patched the model for its config: re-make right before timing each
        f = _merge_step(m, cfgs[k], T, 32, torch.device('cpu'), torch.float32)
        for _ in range(3): f()
        ts = []
        for _ in range(20):
            t0 = time.perf_counter(); f(); ts.append(1e3 * (time.perf_counter() - t0))
        print(k, T, 'median ms %.3f min %.3f' % (statistics.median(ts), min(ts)))
        with profile(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(10): f()
        print(p.key_averages().table(sort_by='self_cpu_time_total', row_limit=25))
