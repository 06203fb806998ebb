"""The one selective-scan entry point and its backends.

Backends (``STMSEARCH_SCAN`` overrides the automatic choice):
- ``reference``: pure PyTorch (:mod:`stmsearch.ops.scan_reference`), CPU and GPU.
- ``mamba_ssm``: mamba-ssm's CUDA ``selective_scan_fn``; chosen automatically on CUDA when
  importable. Imported lazily so ``import stmsearch`` never touches mamba-ssm.
- ``triton``: the fused bidirectional Triton kernel (:mod:`stmsearch.ops.scan_triton`), CUDA only,
  selected explicitly.

A ViM layer calls :func:`bidirectional_scan` once; backends that scan one direction at a
time get the backward direction as a reversed scan.
"""
from __future__ import annotations

import os
from typing import Callable

import torch
import torch.nn.functional as F

from .direction import Direction
from .optional import optional_attr
from .scan_reference import selective_scan_reference

BACKENDS = ("reference", "mamba_ssm", "triton")


def _mamba_ssm_fn() -> Callable | None:
    return optional_attr("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn")


def mamba_ssm_available() -> bool:
    """True if mamba-ssm's CUDA scan imports here (never true on a CPU-only install)."""
    return _mamba_ssm_fn() is not None


def resolve_backend(device: torch.device | str, requested: str | None = None) -> str:
    """The backend a scan on ``device`` uses: ``requested``, else ``$STMSEARCH_SCAN``, else auto."""
    name = requested or os.environ.get("STMSEARCH_SCAN") or ""
    device = torch.device(device)
    if not name:
        return "mamba_ssm" if device.type == "cuda" and mamba_ssm_available() else "reference"
    if name not in BACKENDS:
        raise ValueError(f"STMSEARCH_SCAN / backend must be one of {BACKENDS}, got {name!r}")
    if name != "reference" and device.type != "cuda":
        raise RuntimeError(f"scan backend {name!r} needs a CUDA tensor, got device {device}")
    if name == "mamba_ssm" and not mamba_ssm_available():
        raise RuntimeError("scan backend 'mamba_ssm' requested but mamba_ssm is not importable "
                           "(install the 'gpu' extra on a CUDA machine)")
    return name


def _one_direction(fn: Callable, d: Direction, z: torch.Tensor | None, reverse: bool,
                   dt_scale: torch.Tensor | None, flipped: bool = False) -> torch.Tensor:
    """One direction through ``fn``, output in original order.

    ``flipped``: d is in reversed order already (z and dt_scale are not), so it is scanned
    forwards and its output flipped back. mamba-ssm scans forwards only, so a backward
    direction in original order is flipped here; the reference scans it in reverse.
    """
    flip = lambda t: None if t is None else t.flip(-1)  # noqa: E731
    if flipped:
        z, dt_scale = flip(z), flip(dt_scale)
    delta, bias, softplus = d.delta, d.delta_bias, True
    if d.steps is not None:
        delta, bias, softplus = d.steps, None, False
    if dt_scale is not None:  # size-aware decay scales the step after the softplus
        if softplus:
            delta = F.softplus(delta.float() + (0 if bias is None else bias.float()[:, None]))
        delta = delta.float() * dt_scale.float()[:, None, :]
        bias, softplus = None, False
    extra = {}
    if fn is selective_scan_reference:
        extra["reverse"] = reverse and not flipped
    elif reverse and not flipped:
        d, delta, z, flipped = d._replace(u=flip(d.u), B=flip(d.B), C=flip(d.C)), flip(delta), flip(z), True
    y = fn(d.u, delta, d.A, d.B, d.C, d.D, z, bias, delta_softplus=softplus, **extra)
    return y.flip(-1) if flipped else y


def bidirectional_scan(fwd: Direction, bwd: Direction, z: torch.Tensor, backend: str | None = None,
                       dt_scale: torch.Tensor | None = None, bwd_flipped: bool = False) -> torch.Tensor:
    """``y_fwd + y_bwd`` of a ViM layer, both gated by ``silu(z)``, in original order.

    ``dt_scale`` (batch, L), if given, multiplies each position's step after the softplus
    (size-aware decay: a token standing for s patches decays s steps). ``bwd_flipped``: bwd's
    tensors are in reversed sequence order (built from a flipped x, the layout mamba-ssm's
    forward-only scan reads); z and dt_scale stay in original order. The triton backend's y
    takes z's memory layout (token- or channel-major); the others return their own.
    """
    name = resolve_backend(fwd.u.device, backend)
    if name == "triton":
        from .scan_triton import bidirectional_scan_triton

        if bwd_flipped:
            raise ValueError("the triton backend reads the backward direction unflipped")
        return bidirectional_scan_triton(fwd, bwd, z, dt_scale)
    if name == "reference":  # gate the sum once: half the silu and multiply passes
        fn = selective_scan_reference
        y = _one_direction(fn, fwd, None, False, dt_scale).float()
        y += _one_direction(fn, bwd, None, True, dt_scale, bwd_flipped)
        return y.mul_(F.silu(z.float())).to(z.dtype)
    fn = _mamba_ssm_fn()
    return (_one_direction(fn, fwd, z, False, dt_scale)
            + _one_direction(fn, bwd, z, True, dt_scale, bwd_flipped))
