# ward_chunks.py (2026-12-06): STM's Ward damage on the CPU as a merge step reads it. On the CPU the recorded steps
# are (B, D, L) views of a (B, L, D) tensor (the mixer's dt_proj runs channels-last), so the metric (B, T, C) is
# contiguous and 3b60206's channels-first branch never ran there. pair_damage at 79d2321 (one (a - b) and a
# second buffer for its square) against now (a few images at a time, squared in place), interleaved, 30 rounds,
# one thread. Run from the project root, alone:  PYTHONPATH=. python bench/results/calib_2026-12-06c/ward_chunks.py
import statistics, time
import torch
import stmsearch
from stmsearch.evaluation.latency import _merge_step
from stmsearch.evaluation.throughput import threads
from stmsearch.merging import MergeConfig, features as ft
from stmsearch.merging.functions import pair_damage


def before(a, b, wa, wb):  # pair_damage's Ward branch at 79d2321, for (B, T, C) inputs
    return (a.float() - b.float()).pow(2).sum(-1) * (wa * wb / (wa + wb))


model = stmsearch.create_model("vim_proxy")
with torch.inference_mode(), threads(1):
    _merge_step(model, MergeConfig(method="stm", schedule=[0]), 197, 32, torch.device("cpu"), torch.float32)
    steps = model._stm["mixer"].steps
    print(f"recorded steps: shape {tuple(steps.shape)}, strides {steps.stride()} (channels-last in memory)")
    x = steps.float().contiguous().transpose(1, 2).contiguous().transpose(1, 2)  # the same layout, our own copy
    metric = x.transpose(1, 2)
    w = torch.rand(32, 197, generator=torch.Generator().manual_seed(1)) + 0.5
    fns = {"before": lambda: before(metric[:, :-1], metric[:, 1:], w[:, :-1], w[:, 1:]),
           "now": lambda: pair_damage(metric[:, :-1], metric[:, 1:], w[:, :-1], w[:, 1:], "ward")}
    same = torch.equal(fns["before"](), fns["now"]())
    ts = {k: [] for k in fns}
    for r in range(30):
        for k in (("before", "now") if r % 2 else ("now", "before")):
            t0 = time.perf_counter()
            fns[k]()
            ts[k].append(1e3 * (time.perf_counter() - t0))
print(f"batch 32, 196 pairs, {metric.shape[-1]} channels; equal: {same}")
for k, v in ts.items():
    print(f"  {k}: median {statistics.median(v):.3f} ms, min {min(v):.3f}, max {max(v):.3f}")
