# parts.py: a quick script of 2026-12-05 (its output was printed, not saved; the closing note quotes it). Run from the project root: PYTHONPATH=. python bench/results/calib_2026-12-05/parts.py
import torch, time, statistics
from stmsearch.evaluation.fidelity import load_proxy
from stmsearch.evaluation.latency import _merge_step
from stmsearch.merging import MergeConfig
from stmsearch.merging.config import ParametricSchedule
from stmsearch.merging import features as ft, functions as fn
from stmsearch.merging.features import MergeStep
from stmsearch.models import probe as pb
torch.set_num_threads(2)
P = load_proxy('vim_proxy', range(0, 10)); m = P.model
pb.attach(m, pb.load('bench/results/probe_refit_2026-12-05/vim_proxy.h16.probe.pt'))
s = ParametricSchedule(start=0, interval=2, count=10, shape='decreasing')
cfg = MergeConfig(method='stm', schedule=s)
with torch.inference_mode():
    run = _merge_step(m, cfg, 197, 32, torch.device('cpu'), torch.float32)
    info = m._stm
    saved = {k: info[k] for k in ('cls','sizes','rep','mixer')}
    run()
    import stmsearch.merging.patch as pt
    # capture a step
    cap = {}
    orig = info['method'].plan
    T=197
    gen = torch.Generator().manual_seed(0)
    residual = torch.randn(32, T, 64, generator=gen); hidden = torch.randn(32, T, 64, generator=gen)
    def mk():
        info.update(saved); return MergeStep(cfg if info['config'] is None else info['config'], info, residual, hidden, 16, 1, m.layers[1].mixer)
    st = mk()
    parts = {
      'step_total': lambda: run(),
      'probe': lambda: mk().importance,
      'norm': lambda: mk().norm,
      'metric': lambda: ft.metric(mk()),
      'weights(norm,probe)': lambda: ft.weights(mk()),
      'damage_imp': lambda: ft.damage_importance(mk()),
      'plan': lambda: orig(mk()),
    }
    met = ft.metric(st); w = ft.weights(st)
    parts['pair_damage'] = lambda: fn.pair_damage(met[:, :-1], met[:, 1:], w[:, :-1], w[:, 1:], 'ward')
    d = fn.pair_damage(met[:, :-1], met[:, 1:], w[:, :-1], w[:, 1:], 'ward')
    al = fn.allowed_edges(st.cls, T, 0, 2, 1, 'blocks')
    parts['choose'] = lambda: fn.choose_edges(d, al, 16)
    parts['allowed'] = lambda: fn.allowed_edges(st.cls, T, 0, 2, 1, 'blocks')
    pl = orig(st)
    parts['apply_plan'] = lambda: fn.apply_plan(residual, pl)
    res = {k: [] for k in parts}
    for rep in range(30):
        for k, f in parts.items():
            t = time.perf_counter(); f(); res[k].append(time.perf_counter() - t)
    for k, v in res.items(): print(f'{k:22s} {1e3*statistics.median(v):.3f} ms  ({1e3*min(v):.3f}-{1e3*max(v):.3f})')
