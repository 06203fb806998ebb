"""STM's new defaults on a model without a probe (importance_source norm, the choice's other knobs)."""
import json, sys, time
import torch
from stmsearch.evaluation.fidelity import load_proxy, evaluate_cell, LEVELS
torch.set_num_threads(2)
# "new knobs": the fifth selection's, STM's defaults when this ran (written out here)
rows = {"norm, new knobs": {"method": "stm", "importance_source": "norm", "runs": 2, "importance": "mean",
                            "importance_power": 4.0, "weight_power": 2.0},
        "old defaults": {"method": "stm", "importance_source": "norm", "importance": "min", "importance_power": 2.0,
                         "weight_power": 4.0, "runs": 3}}
out = {}
for images in (range(0, 500), range(500, 1000)):
    for name in ("vim_proxy", "vim_proxy_clutter"):
        proxy = load_proxy(name, images)
        for row, over in rows.items():
            accs = [evaluate_cell(proxy, over, t)["accuracy"] for t in LEVELS]
            out[f"{name} {images.start}-{images.stop - 1} {row}"] = accs
            print(name, images.start, row, " ".join(f"{a:.3f}" for a in accs), f"mean {sum(accs)/4:.4f}", time.strftime("%H:%M:%S"), flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
