"""Top-1 accuracy of a model over an :class:`~stmsearch.evaluation.datasets.ImageSet`."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .datasets import ImageSet
from .stats import wilson_interval


@torch.inference_mode()
def evaluate_accuracy(model: torch.nn.Module, data: ImageSet, batch_size: int = 256,
                      device: str | torch.device | None = None, progress: bool = True,
                      amp_bf16: bool = False) -> dict:
    """``{"accuracy": top-1 in [0, 1], "n": images, "accuracy_ci": [lo, hi]}`` of ``model`` (on ``device``).

    ``accuracy_ci`` is the Wilson 95% interval of the top-1 over these ``n`` images: where the
    accuracy on the whole population the images were drawn from lies, 19 times in 20.

    Images stay uint8 until their batch is on ``device`` (default: where ``data`` lives) and are
    normalised there. Counts accumulate on the device, so the loop never waits for the host.
    If any logit is not finite the accuracy is NaN: a broken configuration must not score.
    """
    n = len(data)
    if n == 0:
        raise ValueError(f"{data.name}: no images to evaluate")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else data.images.device
    correct = torch.zeros((), dtype=torch.long, device=device)
    broken = torch.zeros((), dtype=torch.long, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp_bf16)
    with autocast, tqdm(total=n, desc=f"eval {data.name}", unit="img", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            x = data.normalize(data.images[start:start + batch_size].to(device, non_blocking=True))
            y = data.labels[start:start + batch_size].to(device, non_blocking=True)
            logits = model(x)
            correct += (logits.argmax(-1) == y).sum()
            broken += (~torch.isfinite(logits).all(-1)).sum()
            bar.update(y.shape[0])
    if int(broken):
        return {"accuracy": float("nan"), "n": n, "accuracy_ci": None}
    return {"accuracy": int(correct) / n, "n": n, "accuracy_ci": list(wilson_interval(int(correct), n))}
