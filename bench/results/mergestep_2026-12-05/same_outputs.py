"""Logits of both proxies under STM (with its probe), prune, ToMe and random merging on held-out images 0-63,
at two fast-end schedules (every 2nd layer from 0, 22 tokens, and every 3rd, 28, decreasing), saved to
argv[1]. Run on two versions of the code and compare with ``python same_outputs.py --compare A B``."""
import sys

import torch

from stmsearch.evaluation.fidelity import load_proxy
from stmsearch.merging import MergeConfig, apply
from stmsearch.merging.config import ParametricSchedule

torch.set_num_threads(2)
if sys.argv[1] == "--compare":
    a, b = torch.load(sys.argv[2]), torch.load(sys.argv[3])
    for key in a:
        print(key, "equal" if torch.equal(a[key], b[key]) else f"differ by {(a[key] - b[key]).abs().max():.3g}")
    sys.exit(0)
out = {}
for name in ("vim_proxy", "vim_proxy_clutter"):
    proxy = load_proxy(name, range(0, 64))
    for method in ("stm", "prune", "tome", "random"):
        for interval, count in ((2, 22), (3, 28)):
            apply(proxy.model, MergeConfig(method=method, schedule=ParametricSchedule(
                start=0, interval=interval, count=count, shape="decreasing")))
            with torch.inference_mode():
                out[(name, method, interval, count)] = proxy.model(proxy.images)
            apply(proxy.model, None)
torch.save(out, sys.argv[1])
