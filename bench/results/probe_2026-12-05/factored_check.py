"""The factored saliency probe (SaliencyProbe.predict) against the MLP over the formed features (what it
replaced): STM's defaults at the fidelity levels on all 1000 held-out images of both proxies, 2 threads.
Prints, per proxy and level, the images whose answer differs and the largest logit difference.

    PYTHONPATH=. python bench/results/probe_2026-12-05/factored_check.py
"""
import torch

import stmsearch
from stmsearch.evaluation.fidelity import LEVELS, config_at, load_proxy
from stmsearch.models import probe as pb

torch.set_num_threads(2)
factored = pb.SaliencyProbe.predict


def formed(self, layer, residual, hidden, cls, sizes, norm):
    return self.log_saliency(layer, pb.features(residual, hidden, cls, sizes, norm))


@torch.inference_mode()
def logits(proxy, cfg):
    stmsearch.apply(proxy.model, cfg)
    try:
        return torch.cat([proxy.model(proxy.images[i:i + 500]) for i in range(0, len(proxy.images), 500)])
    finally:
        stmsearch.apply(proxy.model, None)


for name in ("vim_proxy_clutter", "vim_proxy"):
    proxy = load_proxy(name, range(0, 1000))
    for level in LEVELS:
        cfg, _ = config_at({"method": "stm"}, level, proxy.depth, proxy.tokens)
        out = {}
        for label, fn in (("factored", factored), ("formed", formed)):
            pb.SaliencyProbe.predict = fn
            out[label] = logits(proxy, cfg)
        pb.SaliencyProbe.predict = factored
        ok = {k: v.argmax(-1) == proxy.labels for k, v in out.items()}
        print(f"{name} {level:.0%}: accuracy factored {ok['factored'].float().mean():.3f}, formed "
              f"{ok['formed'].float().mean():.3f}; answers differ on {(out['factored'].argmax(-1) != out['formed'].argmax(-1)).sum().item()}"
              f" of {len(proxy.labels)} images; max |logit difference| {(out['factored'] - out['formed']).abs().max():.2e}",
              flush=True)
