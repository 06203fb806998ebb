# step_parts.py (2026-12-06): STM's CPU merge step split into its parts, as the latency table times it
# (one thread, batch 32, the 16-unit probe). Run from the project root, alone:
#   PYTHONPATH=. python bench/results/calib_2026-12-06c/step_parts.py PROXY PROBE [TOKENS]
import sys, time, statistics
import torch
from stmsearch.evaluation.fidelity import load_proxy
from stmsearch.evaluation.latency import _merge_step
from stmsearch.evaluation.throughput import threads
from stmsearch.merging import MergeConfig
from stmsearch.merging import features as ft, functions as fn
from stmsearch.merging.features import MergeStep
from stmsearch.models import probe as pb

m = load_proxy(sys.argv[1], range(0, 1)).model
pb.attach(m, pb.load(sys.argv[2]))
T = int(sys.argv[3]) if len(sys.argv) > 3 else 197
cfgs = {'stm': MergeConfig(method='stm', schedule=[0], window=0), 'prune': MergeConfig(method='prune', schedule=[0], window=4)}


def med(f, n=40):
    for _ in range(3): f()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); f(); ts.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(ts)


with torch.inference_mode(), threads(1):
    out = {}
    for rnd in range(3):
        for k, c in cfgs.items():
            f = _merge_step(m, c, T, 32, torch.device('cpu'), torch.float32)
            out.setdefault(k + ' whole step', []).append(med(f))
        f = _merge_step(m, cfgs['stm'], T, 32, torch.device('cpu'), torch.float32)
        info = m._stm
        f()  # leaves info as the step saw it? rebuild the state the step reads
        from stmsearch.evaluation import latency as lat
        # the closure's cells: state, recorded, residual, hidden, r
        cells = dict(zip(f.__code__.co_freevars, (c.cell_contents for c in f.__closure__)))
        info.update(cells['state'], mixer=cells['recorded'])
        res, hid, r = cells['residual'], cells['hidden'], cells['r']
        mixer = m.layers[1].mixer

        def step():
            return MergeStep(info['config'], info, res, hid, r, 1, mixer)
        probe = info['probe']
        out.setdefault('probe saliency', []).append(med(lambda: probe.saliency(step())))
        out.setdefault('norm', []).append(med(lambda: step().norm))
        s0 = step(); s0.importance  # cached
        def plan_only():
            s = step(); s.__dict__['importance'] = s0.importance; s.__dict__['norm'] = s0.norm
            return info['method'].plan(s)
        out.setdefault('plan (importance given)', []).append(med(plan_only))
        def metric_only():
            return ft.metric(step())
        out.setdefault('metric', []).append(med(metric_only))
        def damage_only():
            s = step(); s.__dict__['importance'] = s0.importance
            mt = ft.metric(s); w = ft.weights(s)
            return fn.pair_damage(mt[:, :-1], mt[:, 1:], w[:, :-1], w[:, 1:], 'ward')
        out.setdefault('ward damage (with weights)', []).append(med(damage_only))
        plan = plan_only()
        out.setdefault('apply + state', []).append(med(lambda: (fn.reduce_sum(info['sizes'], plan), fn.kept_positions(plan), fn.apply_plan(res, plan))))
    for k, v in out.items():
        print(f'{k:32s} ' + ' '.join(f'{x:7.3f}' for x in v) + ' ms')
