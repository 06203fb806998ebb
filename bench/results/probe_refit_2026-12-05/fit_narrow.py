"""The narrow refits on the GPU: ``fit_on`` with the shipped probe's path config (``*_path.yaml`` here, from its
meta) and options, but HIDDEN units. One H100 80GB, torch 2.11, 2026-12-05; BATCH images per backward (the
saliency does not depend on it; the shipped fits' 1300 did not fit the H100's memory): 650 for
vim_proxy_clutter.h16, 400 for the other two (run beside each other):

    PYTHONPATH=.whl/py:. python bench/results/probe_refit_2026-12-05/fit_narrow.py MODEL DATASET PATH.yaml HIDDEN OUT [BATCH]
"""
import json
import sys
import time

from stmsearch.evaluation.saliency import fit_on
from stmsearch.merging.config import load_config
from stmsearch.models import create_model

name, dataset, path, hidden, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
model = create_model(name).to("cuda")
t = time.time()
probe = fit_on(model, dataset, 1000, 300, 0.4, load_config(path), hidden=hidden, steps=3000, seed=0,
               batch=int(sys.argv[6]) if len(sys.argv) > 6 else 1300, log=lambda s: print(s, flush=True))
probe.meta.update(model=name, checkpoint=None)
probe.save(out)
print(json.dumps({"probe": out, "heldout_r2": probe.meta.get("heldout_r2"), "seconds": time.time() - t,
                  "macs_per_token": probe.macs_per_token}), flush=True)
