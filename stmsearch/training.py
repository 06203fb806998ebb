"""Training the embedded proxy (``vim_proxy`` on the 4000 mnist5k training digits).

Seeded and reproducible; meant for a GPU with mamba-ssm (under 4 minutes on an H200), and it
runs on the CPU too, slowly. ``stmsearch train-proxy`` writes the checkpoint that
``create_model("vim_proxy")`` loads by default.
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .models import create_model


def _augment(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (zero fill), one offset per image."""
    if shift == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (b,), generator=gen).tolist()
    dx = torch.randint(0, 2 * shift + 1, (b,), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


def _seed_all(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train_proxy(epochs: int = 60, batch_size: int = 128, lr: float = 2e-3, weight_decay: float = 0.05,
                shift: int = 2, seed: int = 0, device: str = "auto", progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train ``vim_proxy`` from scratch; returns the model (eval mode) and a summary dict."""
    from .evaluation.accuracy import evaluate_accuracy
    from .evaluation.datasets import load_dataset

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    gen = _seed_all(seed)
    model = create_model("vim_proxy", pretrained=False).to(dev).train()
    train, val = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "val", device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(train.labels) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    bar = tqdm(total=steps, desc="train vim_proxy", disable=not progress)
    for epoch in range(epochs):
        order = torch.randperm(len(train.labels), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            x = _augment(train.normalize(train.images[idx]), shift, gen).to(dev)
            loss = F.cross_entropy(model(x), train.labels[idx].to(dev), label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    acc = evaluate_accuracy(model, val, batch_size=500, progress=False)
    return model, {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "device": str(dev), **acc}
