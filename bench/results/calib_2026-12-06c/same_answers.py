# same_answers.py (2026-12-06): does the cheaper STM step change any image's answer? STM at its defaults (the
# shipped probes) at 10/20/30/40% fewer token-layers on all 1000 held-out images of both proxies, with the code
# before it (79d2321's probe prediction and Ward damage, from step_ab.py) and now; prints the accuracies and how
# many images' correctness differ. Run from the project root:
#   PYTHONPATH=. python bench/results/calib_2026-12-06c/same_answers.py
import sys
import torch
import stmsearch.merging.functions as fn
from stmsearch.evaluation.fidelity import evaluate_cell, load_proxy
from stmsearch.models import probe as pb
sys.path.insert(0, 'bench/results/calib_2026-12-06c')
from step_ab import CODE  # noqa: E402  (importing it runs nothing: its timing sits under __main__)

torch.set_num_threads(2)
for name in ('vim_proxy', 'vim_proxy_clutter'):
    proxy = load_proxy(name, range(0, 1000))
    for level in (0.1, 0.2, 0.3, 0.4):
        cells = {}
        for k in ('before', 'now'):
            pb.SaliencyProbe.predict, fn.pair_damage = CODE[k]
            cells[k] = evaluate_cell(proxy, {'method': 'stm'}, level)
        pb.SaliencyProbe.predict, fn.pair_damage = CODE['now']
        differ = int((cells['before']['correct'] != cells['now']['correct']).sum())
        print(f"{name} -{int(level * 100)}%: accuracy before {cells['before']['accuracy']:.3f}, now "
              f"{cells['now']['accuracy']:.3f}; images answered differently: {differ} of 1000", flush=True)
