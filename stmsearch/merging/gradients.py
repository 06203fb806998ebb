"""The rest of a merged model as a differentiable function of one layer's residual stream.

What a merge does to the class prediction, to first order, is the Jacobian of the logits with respect to
the residual stream at the merging layer: one backward through the remaining layers. The saliency probe is
fitted to it (:mod:`stmsearch.models.probe`) and the oracle bench prices merges by it.
"""
from __future__ import annotations

import contextlib
import os

import torch

from ..models import vim
from .features import MergeStep


def tail_logits(model, residual: torch.Tensor, sizes: torch.Tensor, cls: torch.Tensor, layer: int,
                size_aware: bool) -> torch.Tensor:
    """Logits (B, K) of the model run from ``layer``'s mixer on ``residual`` (B, T, C) with no further
    reduction; ``sizes`` (B, T) scale the steps where ``size_aware``; ``cls`` (B,) the class-token index."""
    dt = sizes if size_aware else None
    hidden = model.layers[layer].mix(residual, dt)
    for block in model.layers[layer + 1:]:
        residual = residual + hidden.float()
        hidden = block.mix(residual, dt)
    h = model.norm_f((residual + hidden.float()).to(model.norm_f.weight.dtype))
    return model.head(h[torch.arange(h.shape[0], device=h.device), cls]).float()


@contextlib.contextmanager
def not_recording(info: dict):
    """The tails run the patched mixers, which must not overwrite the direction recorded for this layer."""
    record, info["record"] = info["record"], False
    try:
        yield
    finally:
        info["record"] = record


@contextlib.contextmanager
def differentiable():
    """The model's plain-op path on any device: the reference scan (the GPU kernels have no backward)
    and no padded layout (its out= GEMMs cannot be differentiated)."""
    scan, padded = os.environ.get("STMSEARCH_SCAN"), vim._padded_layout
    os.environ["STMSEARCH_SCAN"], vim._padded_layout = "reference", lambda x: False
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        vim._padded_layout = padded
        if scan is None:
            os.environ.pop("STMSEARCH_SCAN")
        else:
            os.environ["STMSEARCH_SCAN"] = scan


def logit_jacobian(model, step: MergeStep) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, K) of the rest of the model from ``step``'s residual with no further reduction, and their
    Jacobian (K, B, T, C) with respect to that residual (one batched backward through the remaining layers)."""
    info = step.state
    with not_recording(info), differentiable():
        x = step.residual.float().clone().requires_grad_(True)  # a tensor autograd may save
        z = tail_logits(model, x, info["sizes"].clone(), step.cls.clone(), step.layer, step.config.size_aware_decay)
        k = z.shape[1]
        eye = torch.eye(k, device=z.device)[:, None].expand(k, z.shape[0], k)
        g = torch.autograd.grad(z, x, grad_outputs=eye, is_grads_batched=True)[0]
    return z.detach(), g.detach()


def fisher_kl(z: torch.Tensor, dz: torch.Tensor) -> torch.Tensor:
    """KL(softmax(z) || softmax(z + dz)) to second order, 1/2 sum_k p_k (dz_k - p.dz)^2; z (B, K), dz (B, E, K)."""
    p = z.softmax(-1)[:, None]
    dl = dz - (p * dz).sum(-1, keepdim=True)
    return 0.5 * (p * dl.pow(2)).sum(-1)


def fisher_saliency(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(B, T) each token's Fisher norm sum_k p_k ||g_k - sum_j p_j g_j||^2 (over channels): the expected
    squared gradient of the log-likelihood under the model's own prediction, i.e. how far a small move
    of that token moves the prediction (:func:`fisher_kl` of a unit move, summed over the channels)."""
    k, b, t, c = g.shape
    return 2 * fisher_kl(z, g.permute(1, 2, 3, 0).reshape(b, t * c, k)).view(b, t, c).sum(-1)
