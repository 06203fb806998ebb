"""Narrowed probes (distilled from the shipped H64 probe, forward passes only, CPU) and STM's defaults with
each on the SELECTION images 0-499 of both proxies at 10-40%. 2-core CPU, 2026-12-05, commit e93f69a:

    PYTHONPATH=. python bench/results/probe_2026-12-05/narrow_select.py 8,16,32

Each narrowed probe is what `stmsearch fit-probe MODEL --dataset D --from stmsearch/models/weights/MODEL.probe.pt
--hidden H --out P` writes (compress_on with its defaults: 300 training images, level 0.4, seed 0)."""
import json, sys, time
import torch
from stmsearch.models import probe as pb
from stmsearch.evaluation.saliency import compress_on
from stmsearch.evaluation.fidelity import load_proxy, evaluate_cell
torch.set_num_threads(2)
OUT = "bench/results/probe_2026-12-05"  # where it wrote the probes (not kept: the command remakes them)
widths = [int(w) for w in sys.argv[1].split(",")] if len(sys.argv) > 1 else [8, 16, 32]
res = {}
for name, ds in (("vim_proxy", "mnist5k"), ("vim_proxy_clutter", "mnist5k-clutter")):
    p = load_proxy(name, range(0, 500))
    full = pb.of(p.model)
    probes = {64: full}
    for h in widths:
        t = time.perf_counter()
        small = compress_on(p.model, full, ds, None, hidden=h)
        small.save(f"{OUT}/{name}.h{h}.probe.pt")
        probes[h] = small
        tr = small.meta["teacher_r2"]
        print(name, "hidden", h, "teacher R2", min(tr.values()), "-", max(tr.values()), f"{time.perf_counter() - t:.0f}s", flush=True)
    for h, pr in probes.items():
        pb.attach(p.model, pr)
        accs = []
        for lv in (0.1, 0.2, 0.3, 0.4):
            c = evaluate_cell(p, {"method": "stm"}, lv)
            accs.append(c["accuracy"])
        res.setdefault(str(h), {})[name] = accs
        print(name, "hidden", h, "macs/token", pr.macs_per_token, "selection acc", [round(a, 3) for a in accs], flush=True)
    pb.attach(p.model, full)
for h, r in res.items():
    print("hidden", h, "mean", round(sum(sum(v) for v in r.values()) / 8, 4))
json.dump(res, open(f"{OUT}/selection.json", "w"), indent=1)
