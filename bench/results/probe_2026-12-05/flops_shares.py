"""fvcore MACs per image of STM's fidelity schedules (constant from layer 2) with the output norm and
with the saliency probe, as shares of the unreduced model's, on both proxies; and the probe's MACs per
token against a layer's at the proxies' and ViM-Ti's widths.

    PYTHONPATH=. python bench/results/probe_2026-12-05/flops_shares.py
"""
import torch

import stmsearch
from stmsearch.evaluation.fidelity import config_at
from stmsearch.evaluation.flops import count_flops
from stmsearch.models import probe as pb

for name, side in (("vim_proxy", 28), ("vim_proxy_clutter", 56)):
    model = stmsearch.create_model(name)
    depth, tokens = len(model.layers), model.pos_embed.shape[1]
    base = count_flops(model, (1, side, side))["flops"]
    probe = pb.of(model)
    row = []
    for level in (0.2, 0.3, 0.4):
        cfg, _ = config_at({"method": "stm"}, level, depth, tokens)
        shares = []
        for source in ("norm", "probe"):
            stmsearch.apply(model, cfg.model_copy(update={"importance_source": source}))
            shares.append(count_flops(model, (1, side, side))["flops"] / base)
            stmsearch.apply(model, None)
        row.append(f"{level:.0%} {shares[0]:.2f}x / {shares[1]:.2f}x")
    print(f"{name}: unreduced {base / 1e6:.1f} M MACs; output norm / probe: " + ", ".join(row))
    print(f"  probe {probe.macs_per_token} MACs a token (the MLP over formed features: "
          f"{probe.w1.shape[1] * probe.w1.shape[2] + probe.b1.shape[1]}); a layer "
          f"{base / depth / tokens:.0f} a token")
tiny = stmsearch.create_model("vim_tiny", pretrained=False)
tiny_tokens = tiny.pos_embed.shape[1]
per_layer = count_flops(tiny, (3, 224, 224))["flops"] / len(tiny.layers) / tiny_tokens
c, h = tiny.pos_embed.shape[-1], 64
g = torch.Generator().manual_seed(0)
shape = pb.SaliencyProbe((2,), torch.randn(1, 3 * c + pb.EXTRA, h, generator=g), torch.zeros(1, h), torch.zeros(1, h),
                         torch.zeros(1))
print(f"vim_tiny (C = {c}): a layer {per_layer:.0f} MACs a token (stem and head included); a 64-wide probe "
      f"{shape.macs_per_token} ({shape.macs_per_token / per_layer:.1%}); the MLP over formed features "
      f"{shape.w1.shape[1] * h + h} ({(shape.w1.shape[1] * h + h) / per_layer:.1%})")
