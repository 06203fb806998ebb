"""Measured speed-up of STM with and without the saliency probe (throwaway, issue 15)."""
import json, os, sys, time
import torch
from stmsearch.models import create_model, probe as P
from stmsearch.merging.config import MergeConfig
from stmsearch.evaluation.fidelity import config_at
from stmsearch.evaluation.speed import paired_speed

out_dir, device = sys.argv[1], torch.device(sys.argv[2])
models = sys.argv[3].split(",")
batches = [int(b) for b in sys.argv[4].split(",")]
pairs = int(sys.argv[5])
CHOICE = {"method": "stm", "importance_source": "auto", "importance": "mean", "importance_power": 4.0,
          "weight_power": 2.0, "runs": 2}
# "stm": STM's defaults when this ran (the third selection's, output norm), written out here
ROWS = {"stm": {"method": "stm", "importance_source": "norm", "runs": 3, "importance": "min", "importance_power": 2.0,
                "weight_power": 4.0}, "stm_probe": CHOICE, "stm_rank8": CHOICE, "prune": {"method": "prune"}}


def random_probe(c, layers, rank=None, g=torch.Generator().manual_seed(0)):
    f, h, n = 3 * c + P.EXTRA, 64, len(layers)
    w1 = torch.randn(n, f, rank or h, generator=g) / f ** 0.5
    v = None if rank is None else torch.randn(n, rank, h, generator=g) / rank ** 0.5
    return P.SaliencyProbe(tuple(layers), w1, torch.zeros(n, h), torch.randn(n, h, generator=g) / 8, torch.zeros(n), v=v)


res = []
for name in models:
    model = create_model(name).to(device).eval()
    depth, c = len(model.layers), model.pos_embed.shape[-1]
    tokens = model.pos_embed.shape[1]
    full = P.of(model) or random_probe(c, range(2, depth))
    r8 = (P.load(f"bench/results/probe_2026-12-04/{name}.rank8.probe.pt") if P.of(model) else random_probe(c, range(2, depth), 8))
    for batch in batches:
        for level in (0.2, 0.3, 0.4):
            for row, over in ROWS.items():
                P.attach(model, r8 if row == "stm_rank8" else full)
                cfg, _ = config_at(over, level, depth, tokens)
                from stmsearch.evaluation.api import input_shape
                t0 = time.time()
                s = paired_speed(model, cfg, input_shape(model), batch, device, pairs=pairs, warmup=3)
                rec = {"model": name, "batch": batch, "level": level, "row": row, "speedup": s["speedup"],
                       "ci": s["speedup_ci"], "throughput": s["throughput"], "ref": s["reference_throughput"],
                       "schedule": list(cfg.schedule), "seconds": time.time() - t0}
                res.append(rec)
                print(json.dumps(rec), flush=True)
            from stmsearch.merging.patch import apply
            apply(model, None)
    json.dump(res, open(os.path.join(out_dir, "speed_probe.json"), "w"), indent=1)
json.dump(res, open(os.path.join(out_dir, "speed_probe.json"), "w"), indent=1)
