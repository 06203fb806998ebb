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


def collect(model, images: torch.Tensor, config, batch: int, split: int | None = None,
            saliency: bool = True) -> tuple[dict, dict]:
    """Per merging layer of ``config``: lists of (features (N, F) fp16, centred log saliency (N,)) of every
    token but the class token, on the CPU, for images before ``split`` and from it on (two dicts), read
    along ``config``'s own path (its plans are not changed). ``saliency=False``: features only (no
    backward; the saliency is then zeros)."""
    split = len(images) if split is None else split
    parts: tuple[dict, dict] = ({}, {})
    offset = [0]

    def observe(step) -> None:
        sal = fisher_saliency(*logit_jacobian(model, step)) if saliency else torch.ones_like(step.norm)
        y, mask = centred_log(sal, step.cls)
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
    config, x = _path_and_images(model, dataset, images + holdout, level, config)
    probe = fit(model, x, config, holdout=holdout, **options)
    probe.meta.update(dataset=dataset, level=level if default else None, torch=str(torch.__version__),
                      device=str(device))
    return probe


def _distil(params: list[torch.Tensor], student: Callable, f: torch.Tensor, teacher: torch.Tensor, steps: int,
            g: torch.Generator, batch: int) -> list[torch.Tensor]:
    """Adam on the squared difference of ``student(f, *params)`` and the teacher's predictions."""
    params = [p.requires_grad_(True) for p in params]
    opt = torch.optim.Adam(params, lr=1e-3)
    with torch.inference_mode(False), torch.enable_grad():
        for _ in range(steps):
            idx = torch.randint(0, len(f), (min(batch, len(f)),), generator=g)
            loss = (student(f[idx], *params) - teacher[idx]).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return [p.detach() for p in params]


def _low_rank(f: torch.Tensor, a: torch.Tensor, b: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
              b2: torch.Tensor) -> torch.Tensor:
    return F.gelu(f @ a @ b + b1) @ w2 + b2


def _mlp(f: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    return F.gelu(f @ w1 + b1) @ w2 + b2


def _shrunk(probe: SaliencyProbe, feats: dict[int, torch.Tensor], start: Callable, student: Callable, steps: int,
            seed: int, batch: int) -> tuple[list[torch.Tensor], dict]:
    """Per layer of ``probe``: ``start(i, f)`` (the student's first parameters from the teacher's row ``i`` on
    features ``f``), distilled; returns the parameters stacked over layers and each layer's agreement (R^2 of
    the student against the teacher on ``feats``)."""
    g = torch.Generator().manual_seed(seed)
    rows, agree = [], {}
    for i, layer in enumerate(probe.layers):
        f = feats[layer].float()
        with torch.no_grad():
            teacher = probe.log_saliency(layer, f)
            params = start(i, f)
        rows.append(_distil(params, student, f, teacher, steps, g, batch))
        with torch.no_grad():
            agree[str(layer)] = round(r_squared(student(f, *rows[-1]), teacher), 4)
    return [torch.stack([r[j] for r in rows]) for j in range(len(rows[0]))], agree


def _student_meta(teacher: SaliencyProbe, feats: dict[int, torch.Tensor], agree: dict, **how) -> dict:
    """A distilled probe's meta: the teacher's, whose held-out R^2 against the saliency is the teacher's own
    (kept as ``teacher_heldout_r2``), with the student's agreement with it (``teacher_r2``) and how it was made."""
    meta = {k: v for k, v in teacher.meta.items() if k != "heldout_r2"}
    if "heldout_r2" in teacher.meta:
        meta["teacher_heldout_r2"] = teacher.meta["heldout_r2"]
    return {**meta, **how, "teacher_r2": agree, "compress_tokens": {str(k): len(v) for k, v in feats.items()}}


def compress(probe: SaliencyProbe, feats: dict[int, torch.Tensor], rank: int, steps: int = 1000, seed: int = 0,
             batch: int = 4096) -> SaliencyProbe:
    """``probe`` with a rank-``rank`` first layer, distilled from it on ``feats`` (layer -> (N, F) features,
    e.g. from :func:`collect` with ``saliency=False``; no backward needed): the principal directions of its
    pre-activations on them first, then Adam on the squared difference of the two probes' predictions."""

    def start(i: int, f: torch.Tensor) -> list[torch.Tensor]:
        pre = f @ probe.w1[i]
        mean = pre.mean(0)
        v = torch.linalg.svd(pre - mean, full_matrices=False).Vh[:rank].T  # (H, K)
        return [probe.w1[i] @ v, v.T.clone(), probe.b1[i] + mean - (mean @ v) @ v.T, probe.w2[i].clone(),
                probe.b2[i].clone()]

    (a, b, b1, w2, b2), agree = _shrunk(probe, feats, start, _low_rank, steps, seed, batch)
    return SaliencyProbe(probe.layers, a, b1, w2, b2, _student_meta(probe, feats, agree, rank=rank,
                                                                     compress_steps=steps), v=b)


def narrow(probe: SaliencyProbe, feats: dict[int, torch.Tensor], hidden: int, steps: int = 3000, seed: int = 0,
           batch: int = 4096) -> SaliencyProbe:
    """``probe`` (full rank) with ``hidden`` units, distilled from it on ``feats`` as :func:`compress` does: its
    ``hidden`` units of largest contribution first (output weight times the spread of the unit's activation
    on ``feats``; the others' mean output moved into the bias), then Adam. Unlike a low rank, it shrinks the
    work on every unit (the first layer, the activation, the output), which is most of a merge's probe time."""
    if probe.v is not None:
        raise ProbeError("narrow: the probe is low-rank; narrow the full probe, then compress it")
    if not 1 <= hidden <= probe.w1.shape[2]:
        raise ProbeError(f"narrow: hidden {hidden} must lie in 1..{probe.w1.shape[2]} (the probe's width)")

    def start(i: int, f: torch.Tensor) -> list[torch.Tensor]:
        act = F.gelu(f @ probe.w1[i] + probe.b1[i])
        keep = (probe.w2[i].abs() * act.std(0)).argsort(descending=True)[:hidden]
        rest = torch.ones_like(probe.w2[i], dtype=torch.bool).index_fill_(0, keep, False)
        b2 = probe.b2[i] + act.mean(0)[rest] @ probe.w2[i][rest]
        return [probe.w1[i][:, keep].clone(), probe.b1[i][keep].clone(), probe.w2[i][keep].clone(), b2.clone()]

    (w1, b1, w2, b2), agree = _shrunk(probe, feats, start, _mlp, steps, seed, batch)
    meta = _student_meta(probe, feats, agree, hidden=hidden, narrowed_from=probe.w1.shape[2], narrow_steps=steps)
    return SaliencyProbe(probe.layers, w1, b1, w2, b2, meta)


def _path_and_images(model, dataset: str, n: int, level: float, config):
    """``config`` (default: STM at its defaults with the output norm, constant from layer 2 at ``level``) and
    the first ``n`` normalised training images of ``dataset`` on the model's device."""
    device = next(model.parameters()).device
    if config is None:
        depth, tokens = len(model.layers), model.pos_embed.shape[1]
        config = for_reduction(MergeConfig(method="stm", importance_source="norm"), level, depth, tokens, start=2)
    data = load_dataset(dataset, "train", device, limit=n)
    if len(data) < n:
        raise ProbeError(f"{dataset}: its train split holds {len(data)} images, asked for {n}")
    return config, data.normalize(data.images[:n])


def compress_on(model, probe: SaliencyProbe, dataset: str, rank: int | None, images: int = 300, level: float = 0.4,
                config=None, batch: int = 100, hidden: int | None = None, **options) -> SaliencyProbe:
    """:func:`narrow` ``probe`` to ``hidden`` units and/or :func:`compress` it to ``rank``, on the features of
    ``images`` training images of ``dataset`` along the path :func:`fit_on` reads (forward passes only, so a
    CPU does it in minutes)."""
    config, x = _path_and_images(model, dataset, images, level, config)
    feats, _ = collect(model, x, config, batch, saliency=False)
    feats = {k: torch.cat([a for a, _ in v]).float() for k, v in feats.items()}
    if hidden is not None:
        probe = narrow(probe, feats, hidden, **options)
    return probe if rank is None else compress(probe, feats, rank, **options)
