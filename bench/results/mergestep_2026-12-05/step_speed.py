"""One merge step per method at 197 and 98 tokens (batch 32, one thread, the latency table's ``_merge_step``
on the clutter proxy): medians (range) of 7 rounds of 20 steps. argv[1] labels the code version; run it
alternately on two versions (PYTHONPATH) with nothing else on the CPU."""
import torch, time, sys, statistics
torch.set_num_threads(1)
from stmsearch.merging.config import MergeConfig
from stmsearch.evaluation.latency import _merge_step
from stmsearch.evaluation.fidelity import load_proxy
cfgs = {'stm': MergeConfig(method='stm'), 'stm-norm': MergeConfig(method='stm', importance_source='norm'), 'prune': MergeConfig(method='prune'), 'tome': MergeConfig(method='tome')}
out = {}
with torch.inference_mode():
    model = load_proxy('vim_proxy_clutter', range(0, 32)).model
    for T in (197, 98):
        runs = {k: _merge_step(model, c, T, 32, torch.device('cpu'), torch.float32) for k, c in cfgs.items()}
        for k, run in runs.items():
            for _ in range(5): run()
        res = {k: [] for k in runs}
        for rep in range(7):
            for k, run in runs.items():
                t = time.perf_counter()
                for _ in range(20): run()
                res[k].append((time.perf_counter() - t) / 20 * 1000)
        print(sys.argv[1], T, "  ".join(f"{k} {statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})" for k, v in res.items()), flush=True)
