"""STM with the factored saliency probe under bf16 autocast on a GPU (since b853f03 its first layer is an in-place
baddbmm_, which autocast leaves in fp32): it runs, and how its answers compare with fp32, on all 1000 held-out
images of both proxies at STM's fidelity schedules. Prints correct counts, agreement and the largest logit gap."""
import torch

from stmsearch.evaluation.fidelity import config_at, load_proxy
from stmsearch.merging import apply

dev = torch.device("cuda")
for name in ("vim_proxy", "vim_proxy_clutter"):
    p = load_proxy(name, range(1000), dev)
    for level in (0.2, 0.3, 0.4):
        cfg, _ = config_at({"method": "stm", "importance_source": "probe"}, level, len(p.model.layers), p.tokens)
        apply(p.model, cfg)
        with torch.inference_mode():
            fp32 = p.model(p.images).float()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                bf16 = p.model(p.images).float()
        apply(p.model, None)
        ok32, ok16 = (fp32.argmax(-1) == p.labels), (bf16.argmax(-1) == p.labels)
        same = (fp32.argmax(-1) == bf16.argmax(-1)).sum().item()
        print(f"{name} -{level:.0%}: correct fp32 {ok32.sum().item()} bf16 {ok16.sum().item()} of 1000, same answer "
              f"{same}, max |logit gap| {(fp32 - bf16).abs().max().item():.3g}", flush=True)
