# stm_band.py (2026-12-06): every STM configuration of the digits fronts' space priced 2.47-2.52x by the digits table (the
# band below bench_fast_end.py's 97% margin), evaluated on held-out images 0-499. Run from the project root:
#   PYTHONPATH=. python bench/results/fast_end_2026-12-06/stm_band.py
import sys, torch; sys.path.insert(0, 'bench')
from bench_fast_end import (LatencyTable, apply, attach, base_space, correct, load_proxy, method_spaces, priced,  # noqa: E402
                            schedule_text, space_configs)
torch.set_num_threads(1)
base = base_space('vim_proxy', 500, 1, count_high=28, probe='bench/results/probe_refit_2026-12-05/vim_proxy.h16.probe.pt')
t = LatencyTable.load('bench/results/fast_end_2026-12-06/digits_table_8e38067.json')
sp = method_spaces(base, ('stm',))['stm']
pts = priced(space_configs(sp), t, 12, 197)
band = [(s, c) for s, c in pts if 2.47 <= s < 2.52]
p = load_proxy('vim_proxy', range(0, 500)); attach(p.model, 'bench/results/probe_refit_2026-12-05/vim_proxy.h16.probe.pt')
for s, c in band:
    apply(p.model, c); ok = correct(p.model, p.images, p.labels); apply(p.model, None)
    print(f"{s:.3f}x {ok.float().mean():.3f} {schedule_text(c.model_dump(mode='json'))} w{c.window}", flush=True)
