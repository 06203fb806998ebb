"""Training the embedded proxies: ``vim_proxy`` on the 4000 mnist5k training digits,
``vim_proxy_clutter`` on the same digits in mnist5k-clutter.

Seeded and reproducible; meant for a GPU with mamba-ssm (vim_proxy: under 4 minutes on an
H200), and it runs on the CPU too, slowly. ``stmsearch train-proxy [--dataset D]`` writes the
checkpoint that ``create_model`` loads by default for the dataset's model.
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .evaluation.datasets import PROXY_MODELS
from .models import create_model
from .ops.scan import resolve_backend

# dataset -> the proxy trained on it (its default checkpoint is where training writes)


def proxy_model(dataset: str) -> str:
    """The model that ``train-proxy`` trains on ``dataset``; a clear error for other datasets."""
    try:
        return PROXY_MODELS[dataset]
    except KeyError:
        raise ValueError(f"train-proxy: --dataset must be one of {', '.join(PROXY_MODELS)}, got {dataset!r}") from None


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
                shift: int | None = None, seed: int = 0, device: str = "auto", progress: bool = True,
                dataset: str = "mnist5k", limit: int | None = None,
                overrides: dict | None = None) -> tuple[torch.nn.Module, dict]:
    """Train ``dataset``'s proxy from scratch; returns the model (eval mode) and a summary dict.

    ``shift``: random translation in pixels, default one patch (2 on 28x28 digits, 4 on the
    56x56 canvas: within MNIST's 4-pixel margin, so the digit itself is never cut).
    ``limit`` (train and validate on the first N images of each split) and ``overrides``
    (:class:`VimConfig` changes, e.g. ``{"depth": 2}``) are for quick checks.
    """
    from .evaluation.accuracy import evaluate_accuracy
    from .evaluation.datasets import load_dataset

    name = proxy_model(dataset)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    if resolve_backend(dev) == "triton":
        # its output carries no gradient: layers below each scan would silently stop learning
        raise ValueError("train-proxy: the triton scan backend is forward-only; unset STMSEARCH_SCAN "
                         "(mamba_ssm on CUDA when installed, else reference)")
    gen = _seed_all(seed)
    model = create_model(name, pretrained=False, **(overrides or {})).to(dev).train()
    shift = model.cfg.patch_size if shift is None else shift
    train, val = load_dataset(dataset, "train", limit=limit), load_dataset(dataset, "val", device=dev, limit=limit)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(train.labels) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    bar = tqdm(total=steps, desc=f"train {name}", disable=not progress)
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
    return model, {"model": name, "dataset": dataset, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                   "shift": shift, "seed": seed, "device": str(dev), "scan": resolve_backend(dev), **acc}
