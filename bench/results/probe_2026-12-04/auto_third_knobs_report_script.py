"""STM at the defaults (importance_source auto, the third selection's other knobs) on the report images, CPU,
with sign tests against the stored per-image results of tome, prune (CPU = GPU exactly) and random (CPU)."""
import gzip, json, sys
import torch
from stmsearch.evaluation.fidelity import load_proxy, evaluate_cell, LEVELS, paired
from stmsearch.merging.config import MergeConfig
torch.set_num_threads(2)
# run while these knobs were STM's defaults (2026-12-04 22:12), as {"method": "stm"}; written out here
THIRD_AUTO = {"method": "stm", "importance_source": "auto", "runs": 3, "importance": "min", "importance_power": 2.0,
              "weight_power": 4.0}
out = {}
for name in ("vim_proxy", "vim_proxy_clutter"):
    proxy = load_proxy(name, range(500, 1000))
    for t in LEVELS:
        cell = evaluate_cell(proxy, THIRD_AUTO, t)
        out[f"{name} {t}"] = {"accuracy": cell["accuracy"], "correct": "".join("1" if b else "0" for b in cell["correct"].tolist()), "schedule": str(cell["schedule"])}
        print(name, t, round(cell["accuracy"], 3), flush=True)
json.dump(out, open(sys.argv[1], "w"))

# the sign tests (run separately on the JSON above, the same day): against the CPU report's stored rows
old = json.load(gzip.open("bench/results/fidelity.json.gz"))["report"]["rows"]
bits = lambda text: torch.tensor([c == "1" for c in text])
for name in ("vim_proxy", "vim_proxy_clutter"):
    for t in ("0.10", "0.20", "0.30", "0.40"):
        stm = bits(out[f"{name} {float(t)}"]["correct"])
        line = f"{name} {t} stm {stm.float().mean():.3f}"
        for row in ("tome", "prune", "random s0", "random s1", "random s2"):
            other = bits(old[row]["cells"][name][t]["correct"])
            p = paired(stm, other)
            line += f" | {row} {other.float().mean():.3f} +{p['wins']}/-{p['losses']} p={p['p']:.2g}"
        print(line)
