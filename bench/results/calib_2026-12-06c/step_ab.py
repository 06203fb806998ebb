# step_ab.py (2026-12-06): STM's CPU merge step as the latency table times it (one thread, batch 32, STM's defaults
# with the 16-unit probe), the code before this change (79d2321's probe prediction and Ward damage, copied below)
# against now, interleaved in one process, with prune's step (window 4) as a yardstick. Run from the project root,
# alone:  PYTHONPATH=. python bench/results/calib_2026-12-06c/step_ab.py [ROUNDS]
import statistics, sys, time
import torch
import torch.nn.functional as F
import stmsearch.merging.functions as fn
from stmsearch.evaluation.fidelity import load_proxy
from stmsearch.evaluation.latency import _merge_step
from stmsearch.evaluation.throughput import threads
from stmsearch.merging import MergeConfig
from stmsearch.models import probe as pb
sys.path.insert(0, 'bench/results/calib_2026-12-06c')
from probe_parts import before as predict_before  # noqa: E402


def damage_before(a, b, wa, wb, kind):  # pair_damage at 79d2321
    if kind == "ward":
        wa, wb = wa.float(), wb.float()
        scale = wa * wb / (wa + wb)
        if a.dim() == 3 and a.stride(1) == 1 != a.stride(2) and b.stride(1) == 1:
            d = a.transpose(1, 2).float() - b.transpose(1, 2).float()
            return (d.square() if d.requires_grad else d.square_()).sum(1) * scale
        return (a.float() - b.float()).pow(2).sum(-1) * scale
    return 1.0 - (F.normalize(a.float(), dim=-1) * F.normalize(b.float(), dim=-1)).sum(-1)


CODE = {'before': (predict_before, damage_before), 'now': (pb.SaliencyProbe.predict, fn.pair_damage)}
if __name__ == '__main__':
    ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    PROBES = {'vim_proxy': 'bench/results/probe_refit_2026-12-05/vim_proxy.h16.probe.pt',
              'vim_proxy_clutter': 'bench/results/probe_refit_2026-12-05/vim_proxy_clutter.h16.probe.pt'}
    stm, prune = MergeConfig(method='stm', schedule=[0], window=0), MergeConfig(method='prune', schedule=[0], window=4)
    for name, path in PROBES.items():
        m = load_proxy(name, range(0, 1)).model
        pb.attach(m, pb.load(path))
        for tokens in (197, 99):
            with torch.inference_mode(), threads(1):
                outs, ts = {}, {k: [] for k in ('before', 'now', 'prune')}
                for r in range(ROUNDS):
                    order = ['before', 'now', 'prune'] if r % 2 else ['prune', 'now', 'before']
                    for k in order:
                        predict, damage = CODE.get(k, CODE['now'])
                        pb.SaliencyProbe.predict, fn.pair_damage = predict, damage
                        f = _merge_step(m, prune if k == 'prune' else stm, tokens, 32, torch.device('cpu'), torch.float32)
                        outs[k] = f()
                        t0 = time.perf_counter()
                        for _ in range(5):
                            f()
                        ts[k].append(1e3 * (time.perf_counter() - t0) / 5)
                pb.SaliencyProbe.predict, fn.pair_damage = CODE['now']
            same = torch.allclose(outs['before'], outs['now'], atol=1e-5)
            ratio = statistics.median(b / n for b, n in zip(ts['before'], ts['now']))
            print(f"{name}, {tokens} tokens: " + ', '.join(f"{k} {statistics.median(v):.3f} ms" for k, v in ts.items())
                  + f"; before/now per round, median {ratio:.2f}; merged tokens equal: {same}")
