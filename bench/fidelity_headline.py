"""STM at the third selection's defaults on held-out images 500-999 of both proxies, sign-tested against the rows of
bench_fidelity's stored report (bench/results/fidelity_powers.json.gz, per-image results): how issue 15's
third selection's tie, corrected afterwards, was reported without re-running every row (bench/FIDELITY.md).

    PYTHONPATH=. python bench/fidelity_headline.py
"""
import gzip, json, torch
from stmsearch.evaluation.fidelity import load_proxy, evaluate_cell, paired
d = json.load(gzip.open("bench/results/fidelity_powers.json.gz"))
rows = d["report"]["rows"]
# the third selection's defaults, written out: STM's defaults have moved on since (the fifth selection)
THIRD = {"method": "stm", "importance_source": "norm", "runs": 3, "importance": "min", "importance_power": 2.0,
         "weight_power": 4.0}
for name in ("vim_proxy", "vim_proxy_clutter"):
    p = load_proxy(name, range(500, 1000))
    for t in ("0.10", "0.20", "0.30", "0.40"):
        c = evaluate_cell(p, THIRD, float(t))
        out = [f"{name} {t} STM defaults {c['accuracy']:.3f}" + ("" if c["shared"] else "*")]
        for row in ("STM (chosen)", "stm (current default)", "tome", "prune", "random s0", "random s1", "random s2"):
            other = rows[row]["cells"][name][t]
            b = torch.tensor([ch == "1" for ch in other["correct"]])
            r = paired(c["correct"], b)
            out.append(f"{row} {other['accuracy']:.3f} +{r['wins']}/-{r['losses']} p={r['p']:.2g}")
        print(" | ".join(out), flush=True)
