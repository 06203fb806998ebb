"""The saliency probe: how much each token moves the class prediction, predicted from what a merge step holds.

The output norm that pruning ranks by, and that STM scaled its damage and weights by, does not predict
which tokens the rest of the model reads: on the clutter proxy its log explains 0-17% of the variance of
the tokens' Fisher saliency (:func:`stmsearch.merging.gradients.fisher_saliency`). The exact saliency
needs a backward pass per merging layer; the probe learns it once per model and weights (``fit``, on
training images along STM's own path; :mod:`stmsearch.evaluation.saliency`) and a plan then pays one small MLP per token: features (3C + 8) ->
H -> 1 (log saliency over the image's mean). ``importance_source: probe`` (or ``auto`` where the model
carries one) makes it STM's importance (:attr:`~stmsearch.merging.features.MergeStep.importance`).

A probe is a file of plain tensors and numbers (read with ``weights_only=True``); :func:`attach` puts it on a
model, and ``create_model`` attaches the shipped one with a proxy's shipped weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

FORMAT = "stmsearch-saliency-probe"
TAUS = (1.0, 4.0, 16.0, 64.0)  # distance scales (tokens) of the position features
EXTRA = len(TAUS) + 4  # position features, signed position, log output norm, log size, constant


class ProbeError(ValueError):
    """A probe file that cannot be used (the message names the file and the field)."""


def position_features(d: torch.Tensor) -> list[torch.Tensor]:
    """The position features of tokens at offsets ``d`` (float) from the class token: decays at each of
    :data:`TAUS` and a signed one."""
    return [torch.exp(-d.abs() / tau) for tau in TAUS] + [torch.sign(d) * torch.exp(-d.abs() / 16)]


def features(residual: torch.Tensor, hidden: torch.Tensor, cls: torch.Tensor, sizes: torch.Tensor,
             norm: torch.Tensor) -> torch.Tensor:
    """(B, T, 3C + 8) per-token inputs: the RMS-normalised residual, the previous mixer's output over the
    image's mean norm, their product with the class token's normalised residual (what the image's own
    prediction reads), distance to the class token, and log output norm (``norm``) and size, each over
    nothing but the image itself, so an image's features do not depend on its batch."""
    x = residual.float()
    b, t, _ = x.shape
    xn = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    h = hidden.float()
    hn = h / (norm.mean(-1)[:, None, None] + 1e-6)
    xc = xn[torch.arange(b, device=x.device), cls]
    d = (torch.arange(t, device=x.device)[None] - cls[:, None]).float()
    extra = torch.stack(position_features(d) + [torch.log(norm / norm.mean(-1, keepdim=True) + 1e-6),
                                                torch.log(sizes.float()), torch.ones_like(d)], -1)
    return torch.cat([xn, hn, xn * xc[:, None], extra], -1)


def centred_log(saliency: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) log saliency less its mean over the image's tokens other than the class token (only ratios
    within an image choose merges), and (B, T) the mask of those tokens."""
    y = torch.log(saliency + 1e-20)
    mask = torch.ones_like(y, dtype=torch.bool)
    mask[torch.arange(y.shape[0], device=y.device), cls] = False
    return y - (y * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True), mask


@dataclass
class SaliencyProbe:
    """Per fitted layer, a 2-layer MLP (``w1`` (L, F, H), ``b1`` (L, H), ``w2`` (L, H), ``b2`` (L,)) from
    :func:`features` to centred log saliency. A layer it was not fitted at uses the nearest fitted one.
    With ``v`` (L, K, H) the first layer is low-rank, ``w1`` (L, F, K) then ``v``: (F + H) K MACs a token
    rather than F H (:func:`stmsearch.evaluation.saliency.compress`)."""

    layers: tuple[int, ...]
    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor
    meta: dict = field(default_factory=dict)  # how it was fitted (plain data)
    v: torch.Tensor | None = None
    _on: dict = field(default_factory=dict, repr=False)  # the weights per device

    @property
    def embed_dim(self) -> int:
        return (self.w1.shape[1] - EXTRA) // 3

    def _row(self, layer: int) -> int:
        return min(range(len(self.layers)), key=lambda i: (abs(self.layers[i] - layer), self.layers[i]))

    def _weights(self, device: torch.device) -> list:
        if device not in self._on:
            self._on[device] = [None if t is None else t.to(device, torch.float32)
                                for t in (self.w1, self.b1, self.w2, self.b2, self.v)]
        return self._on[device]

    def log_saliency(self, layer: int, feats: torch.Tensor) -> torch.Tensor:
        """(B, T) predicted centred log saliency at ``layer`` from :func:`features` (B, T, F)."""
        w1, b1, w2, b2, v = self._weights(feats.device)
        i = self._row(layer)
        pre = feats @ w1[i] if v is None else (feats @ w1[i]) @ v[i]
        return F.gelu(pre + b1[i]) @ w2[i] + b2[i]

    def _positions(self, i: int, t: int, device: torch.device) -> torch.Tensor:
        """(2T - 1, K) the first layer's response to the position features and the constant at each offset
        -T+1..T-1 from the class token (with ``b1`` where the layer is not low-rank): the same for every
        image, so made once per row and length."""
        key = ("positions", i, t, device)
        if key not in self._on:
            w1, b1, _, _, v = self._weights(device)
            c = self.embed_dim
            with torch.inference_mode(False), torch.no_grad():  # kept across calls: not an inference tensor
                pos = torch.stack(position_features(torch.arange(-t + 1, t, device=device, dtype=torch.float32)), -1)
                const = w1[i, -1] if v is not None else w1[i, -1] + b1[i]
                # as a sum of products, not a matmul: made once, it is no image's MACs, so fvcore should not
                # count it on the first trace and not on the next
                self._on[key] = const + (pos[:, :, None] * w1[i, 3 * c:3 * c + len(TAUS) + 1]).sum(1)
        return self._on[key]

    def predict(self, layer: int, residual: torch.Tensor, hidden: torch.Tensor, cls: torch.Tensor,
                sizes: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        """``log_saliency(layer, features(...))`` with a third fewer MACs and no (B, T, F) features: the
        product term is the residual times a per-image weight, (xn * xc) W = xn (diag(xc) W), the mixer
        output's per-image scale moves onto its weight, and the position features depend on the offset
        only (:meth:`_positions`). Equal up to fp32 rounding."""
        w1, b1, w2, b2, v = self._weights(residual.device)
        if torch.is_grad_enabled() and any(t.requires_grad for t in (residual, hidden, norm, w1)):
            # the in-place writes below cannot carry gradients; the formed features can
            return self.log_saliency(layer, features(residual, hidden, cls, sizes, norm))
        i, c = self._row(layer), self.embed_dim
        x, h = residual.float(), hidden.float()
        b, t, _ = x.shape
        # the RMS normalisation is a factor per token, taken after the product: no normalised (B, T, C) copy and
        # no concatenated inputs (1.8 against 3.3 ms on the CPU at 32 x 197 x 64; calib_2026-12-06c/probe_parts.log)
        scale = torch.rsqrt(torch.linalg.vector_norm(x, dim=-1).square_().div_(c).add_(1e-6))
        rows = torch.arange(b, device=x.device)
        xc = x[rows, cls] * scale[rows, cls, None]
        # not addcmul: fvcore counts that as the conv's taps
        wx = torch.mul(xc[:, :, None], w1[i, 2 * c:3 * c]).add_(w1[i, :c])
        mean_norm = norm.mean(-1, keepdim=True)
        wh = torch.mul(w1[i, c:2 * c], 1.0 / (mean_norm[:, :, None] + 1e-6))
        extra = torch.stack([torch.log(norm / mean_norm + 1e-6), torch.log(sizes.float())], -1)
        pre = torch.bmm(x, wx).mul_(scale[..., None]).baddbmm_(h, wh).baddbmm_(extra, w1[i, -3:-1].expand(b, 2, -1))
        offset = torch.arange(t, device=x.device)[None] - cls[:, None] + t - 1
        # index_select, not [offset]: the same rows, 5x faster on the CPU (45 against 260 us at 32 x 197 x 64)
        pre += self._positions(i, t, x.device).index_select(0, offset.view(-1)).view(b, t, -1)
        if v is not None:
            pre = torch.addmm(b1[i], pre.view(b * t, -1), v[i]).view(b, t, -1)
        return torch.addmv(b2[i], torch.ops.aten.gelu_(pre).view(b * t, -1), w2[i]).view(b, t)

    @property
    def macs_per_token(self) -> int:
        """Multiply-accumulates of one token's prediction in :meth:`predict` (what fvcore counts for it)."""
        c, k = self.embed_dim, self.w1.shape[2]
        hidden = self.b1.shape[1]
        return (2 * c + 2) * k + (0 if self.v is None else k * hidden) + hidden

    def saliency(self, step: Any) -> torch.Tensor:
        """(B, T) the predicted root saliency of ``step``'s tokens (positive; a norm's units: the image's
        scale cancels wherever STM reads an importance)."""
        log = self.predict(step.layer, step.residual, step.hidden, step.cls, step.state["sizes"], step.norm)
        return torch.exp(0.5 * log.clamp(-60.0, 60.0))

    def save(self, path: str | Path) -> None:
        extra = {} if self.v is None else {"v": self.v.cpu()}
        torch.save({"format": FORMAT, "version": 1, "layers": list(self.layers), "w1": self.w1.cpu(),
                    "b1": self.b1.cpu(), "w2": self.w2.cpu(), "b2": self.b2.cpu(), "meta": self.meta, **extra}, path)


def load(path: str | Path) -> SaliencyProbe:
    """Read a probe file (plain tensors and numbers only); a clear error names the file and field."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ProbeError(f"{path}: no such saliency probe file") from None
    except Exception as exc:  # pickle and zip errors alike: not a probe file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ProbeError(f"{path}: not a saliency probe file ({type(exc).__name__}: {reason})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ProbeError(f"{path}: format: not a saliency probe file (expected {FORMAT!r})")
    for key in ("layers", "w1", "b1", "w2", "b2"):
        if key not in obj:
            raise ProbeError(f"{path}: {key}: missing")
    layers, w1 = tuple(int(v) for v in obj["layers"]), obj["w1"]
    if w1.dim() != 3 or w1.shape[0] != len(layers) or (w1.shape[1] - EXTRA) % 3:
        raise ProbeError(f"{path}: w1: shape {tuple(w1.shape)} does not fit {len(layers)} layers of 3C + {EXTRA} inputs")
    hidden = obj["b1"].shape[-1] if "v" in obj else w1.shape[2]
    shapes = {"b1": (len(layers), hidden), "w2": (len(layers), hidden), "b2": (len(layers),)}
    if "v" in obj:
        shapes["v"] = (len(layers), w1.shape[2], hidden)
    for key, shape in shapes.items():
        if tuple(obj[key].shape) != shape:
            raise ProbeError(f"{path}: {key}: shape {tuple(obj[key].shape)}, expected {shape}")
    return SaliencyProbe(layers, w1.float(), obj["b1"].float(), obj["w2"].float(), obj["b2"].float(),
                         dict(obj.get("meta", {})), v=obj["v"].float() if "v" in obj else None)


def attach(model: torch.nn.Module, probe: SaliencyProbe | str | Path | None) -> torch.nn.Module:
    """Give ``model`` a saliency probe (a :class:`SaliencyProbe` or its file; None removes it)."""
    source = probe
    if isinstance(probe, (str, Path)):
        probe = load(probe)
    if probe is not None and probe.embed_dim != model.pos_embed.shape[-1]:
        raise ProbeError(f"{source}: w1: fitted for embed_dim {probe.embed_dim}, the model has "
                         f"{model.pos_embed.shape[-1]}")
    model.__dict__["saliency_probe"] = probe  # a plain attribute: not a submodule, not in the state dict
    return model


def of(model: torch.nn.Module) -> SaliencyProbe | None:
    """The probe attached to ``model``, or None."""
    return model.__dict__.get("saliency_probe")
