"""The depthwise conv1d + SiLU of a ViM direction, per device.

- CPU: k shifted multiply-adds on whatever memory layout x has (several times faster than a
  grouped ``conv1d`` there).
- CUDA, causal: causal-conv1d's fused kernel when importable (the ``gpu`` extra; what
  mamba-ssm's own layers use), else cuDNN.
- CUDA, both directions at once: :func:`stmsearch.ops.conv_triton.conv_pair_triton` reads x
  once for the causal and the anti-causal output (the triton backend uses it).

causal-conv1d is imported lazily, so ``import stmsearch`` never touches it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .optional import optional_attr


def depthwise_conv_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, reverse: bool) -> torch.Tensor:
    """Depthwise conv1d + SiLU over (B, C, L), causal or (reverse) anti-causal.

    weight: (C, 1, k); bias: (C,). The anti-causal form equals flip -> causal conv -> flip,
    without the copies.
    """
    k, length = weight.shape[-1], x.shape[-1]
    w = weight.to(x.dtype)
    if x.is_cuda:
        fused = optional_attr("causal_conv1d", "causal_conv1d_fn")
        # a trace (fvcore's FLOP count) cannot see into the extension: cuDNN's op then
        if fused is not None and not reverse and x.stride(-1) == 1 and not torch.jit.is_tracing():
            return fused(x, w.reshape(-1, k), bias.to(x.dtype), activation="silu")
        w = w.flip(-1) if reverse else w
        out = F.conv1d(x, w, bias.to(x.dtype), padding=k - 1, groups=x.shape[1])
        return F.silu(out[..., k - 1:] if reverse else out[..., :length])
    out = torch.empty_like(x)
    out.copy_(bias.to(x.dtype)[:, None].expand_as(x))
    for j in range(k):
        shift = k - 1 - j  # tap j reads `shift` steps back (ahead when reverse)
        if shift >= length:
            continue
        src, dst = (slice(shift, None), slice(None, length - shift)) if reverse else \
                   (slice(None, length - shift), slice(shift, None))
        out[..., dst].addcmul_(x[..., src], w[:, :, j])
    return F.silu(out)


def conv_pair(x: torch.Tensor, w_f: torch.Tensor, b_f: torch.Tensor, w_b: torch.Tensor, b_b: torch.Tensor,
              fused: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(causal, anti-causal) conv + SiLU of the same x; ``fused`` (CUDA) does both in one Triton kernel."""
    if fused:
        from .conv_triton import conv_pair_triton

        return conv_pair_triton(x, w_f, b_f, w_b, b_b)
    return depthwise_conv_silu(x, w_f, b_f, reverse=False), depthwise_conv_silu(x, w_b, b_b, reverse=True)
