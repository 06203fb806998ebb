"""Fitting a model's saliency probe (:mod:`stmsearch.models.probe`): the tokens' Fisher saliency read by
backward passes along STM's own path on training images, and a small MLP per merging layer fitted to it."""
from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn.functional as F

from ..merging.config import MergeConfig
from ..merging.gradients import fisher_saliency, logit_jacobian
from ..merging.patch import apply
from ..merging.schedules import for_reduction
from ..models.probe import ProbeError, SaliencyProbe, centred_log, features
from .datasets import load_dataset


def collect(model, images: torch.Tensor, config, batch: int, split: int | None = None) -> tuple[dict, dict]:
    """Per merging layer of ``config``: lists of (features (N, F) fp16, centred log saliency (N,)) of every
    token but the class token, on the CPU, for images before ``split`` and from it on (two dicts), read
    along ``config``'s own path (its plans are not changed)."""
    split = len(images) if split is None else split
    parts: tuple[dict, dict] = ({}, {})
    offset = [0]

    def observe(step) -> None:
        y, mask = centred_log(fisher_saliency(*logit_jacobian(model, step)), step.cls)
        f = features(step.residual, step.hidden, step.cls, step.state["sizes"], step.norm)
        cut = min(max(split - offset[0], 0), len(f))
        for part, rows in zip(parts, (slice(0, cut), slice(cut, None))):
            if len(f[rows]):
                part.setdefault(step.layer, []).append((f[rows][mask[rows]].half().cpu(), y[rows][mask[rows]].cpu()))

    apply(model, config)
    model._stm.update(observers=[observe], ahead=False)
    try:
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                offset[0] = i
                model(images[i:i + batch])
    finally:
        apply(model, None)
    return parts


def fit_mlp(f: torch.Tensor, y: torch.Tensor, hidden: int, steps: int, seed: int, batch: int = 8192):
    """A 2-layer GELU MLP fitted by Adam (cosine schedule) to least squares; returns (w1, b1, w2, b2)."""
    g = torch.Generator().manual_seed(seed)
    n, d = f.shape
    params = [torch.randn(d, hidden, generator=g) / math.sqrt(d), torch.zeros(hidden),
              torch.randn(hidden, generator=g) / math.sqrt(hidden), torch.zeros(())]
    params = [p.to(f.device).requires_grad_(True) for p in params]
    opt = torch.optim.Adam(params, lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    with torch.inference_mode(False), torch.enable_grad():
        for _ in range(steps):
            idx = torch.randint(0, n, (min(batch, n),), generator=g).to(f.device)
            w1, b1, w2, b2 = params
            loss = (F.gelu(f[idx] @ w1 + b1) @ w2 + b2 - y[idx]).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return [p.detach() for p in params]


def r_squared(pred: torch.Tensor, y: torch.Tensor) -> float:
    return 1.0 - (pred - y).pow(2).mean().item() / max(y.var().item(), 1e-12)


def fit(model, images: torch.Tensor, config, *, holdout: int = 0, hidden: int = 64, steps: int = 3000, seed: int = 0,
        batch: int = 256, log: Callable[[str], None] = lambda s: None) -> SaliencyProbe:
    """Fit a probe for ``model`` on ``images`` (normalised, on the model's device) along ``config``'s path.

    The last ``holdout`` images are kept out of the fit; the probe's ``meta`` records each layer's R^2 on
    them (and how it was fitted). Collection costs one backward per merging layer per batch (the reference
    scan): minutes for a thousand images on a GPU, far longer on a CPU."""
    if holdout >= len(images):
        raise ValueError(f"holdout {holdout} leaves no images to fit (of {len(images)})")
    t0 = time.perf_counter()
    n = len(images) - holdout
    train, held = collect(model, images, config, batch, n)
    log(f"collected saliency at {len(train)} layers in {time.perf_counter() - t0:.0f} s")
    device = images.device
    layers, rows, r2 = sorted(train), [], {}
    for layer in layers:
        f = torch.cat([a for a, _ in train[layer]]).float().to(device)
        y = torch.cat([b for _, b in train[layer]]).float().to(device)
        rows.append(fit_mlp(f, y, hidden, steps, seed + layer))
        if layer in held:
            fv = torch.cat([a for a, _ in held[layer]]).float().to(device)
            yv = torch.cat([b for _, b in held[layer]]).float().to(device)
            w1, b1, w2, b2 = rows[-1]
            r2[str(layer)] = round(r_squared(F.gelu(fv @ w1 + b1) @ w2 + b2, yv), 4)
        log(f"layer {layer}: {len(y)} tokens" + (f", held-out R^2 {r2[str(layer)]:.3f}" if str(layer) in r2 else ""))
    w1, b1, w2, b2 = (torch.stack([r[i] for r in rows]).cpu() for i in range(4))
    meta = {"images": n, "holdout": holdout, "hidden": hidden, "steps": steps, "seed": seed,
            "config": config.model_dump(mode="json"), "heldout_r2": r2, "seconds": round(time.perf_counter() - t0, 1)}
    return SaliencyProbe(tuple(layers), w1, b1, w2, b2, meta)


def fit_on(model, dataset: str, images: int = 1000, holdout: int = 300, level: float = 0.4, config=None,
           **options) -> SaliencyProbe:
    """:func:`fit` on the first ``images`` + ``holdout`` training images of ``dataset`` (the train split, so
    never the held-out images a report reads), along ``config``'s path, by default STM at its defaults with
    the output norm as importance, constant from layer 2 at token reduction ``level`` (the fidelity bench's
    schedules)."""
    device, default = next(model.parameters()).device, config is None
    if default:
        depth, tokens = len(model.layers), model.pos_embed.shape[1]
        config = for_reduction(MergeConfig(method="stm", importance_source="norm"), level, depth, tokens, start=2)
    data = load_dataset(dataset, "train", device, limit=images + holdout)
    if len(data) < images + holdout:
        raise ProbeError(f"{dataset}: its train split holds {len(data)} images, asked for {images} + {holdout}")
    probe = fit(model, data.normalize(data.images[:images + holdout]), config, holdout=holdout, **options)
    probe.meta.update(dataset=dataset, level=level if default else None, torch=str(torch.__version__),
                      device=str(device))
    return probe
