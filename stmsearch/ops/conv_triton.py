"""Both depthwise convolutions of a ViM layer (causal and anti-causal, each + SiLU) in one kernel.

A ViM layer convolves the same x twice: causally for the forward direction and
anti-causally (flip -> causal -> flip) for the backward one. One program loads a
(channels x positions) tile of x once, with a halo of k - 1 positions on each side, and
writes both SiLU outputs: one read of x instead of two, and no padded conv outputs or
separate SiLU passes. fp32 accumulation for any input dtype.

``import triton`` is guarded like :mod:`stmsearch.ops.scan_triton`.
"""
from __future__ import annotations

import torch

from .layout import padded_empty, token_major, token_major_empty, widened
from .scan_triton import _HAVE_TRITON, triton, tl


if _HAVE_TRITON:

    @triton.jit
    def _conv_pair_kernel(x_ptr, wf_ptr, bf_ptr, wb_ptr, bb_ptr, uf_ptr, ub_ptr, dim, length, x_len, u_len,
                          sx_b, sx_c, sx_t, su_b, su_c, su_t, K: tl.constexpr, BLOCK_C: tl.constexpr,
                          BLOCK_L: tl.constexpr):
        # x_len, u_len (>= length): how far a row of x may be read and of u written. At a padded
        # pitch (a multiple of 16) the masks are uniform over 16 lanes, so Triton vectorises the
        # accesses; an odd ``length`` there would make every one scalar (twice the time).
        # Token-major (sx_c = su_c = 1) the channels are the vectorised axis and x_len = u_len = length.
        pid_l, pid_c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        t = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
        c_ok = c < dim
        x_row = x_ptr + b * sx_b + c[:, None] * sx_c
        acc_f = tl.zeros((BLOCK_C, BLOCK_L), tl.float32) + tl.load(bf_ptr + c, c_ok, 0.0).to(tl.float32)[:, None]
        acc_b = tl.zeros((BLOCK_C, BLOCK_L), tl.float32) + tl.load(bb_ptr + c, c_ok, 0.0).to(tl.float32)[:, None]
        for j in tl.static_range(K):
            shift = K - 1 - j  # tap j reads `shift` steps back (forward) and ahead (backward)
            back, ahead = t - shift, t + shift
            x_back = tl.load(x_row + back[None, :] * sx_t,
                             c_ok[:, None] & ((back >= 0) & (back < x_len))[None, :], 0.0).to(tl.float32)
            x_ahead = tl.load(x_row + ahead[None, :] * sx_t, c_ok[:, None] & (ahead < x_len)[None, :],
                              0.0).to(tl.float32)
            x_ahead = tl.where((ahead < length)[None, :], x_ahead, 0.0)  # the sequence ends at length
            acc_f += tl.load(wf_ptr + c * K + j, c_ok, 0.0).to(tl.float32)[:, None] * x_back
            acc_b += tl.load(wb_ptr + c * K + j, c_ok, 0.0).to(tl.float32)[:, None] * x_ahead
        ok = c_ok[:, None] & (t < u_len)[None, :]
        out = b * su_b + c[:, None] * su_c + t[None, :] * su_t
        tl.store(uf_ptr + out, (acc_f * tl.sigmoid(acc_f)).to(uf_ptr.dtype.element_ty), ok)
        tl.store(ub_ptr + out, (acc_b * tl.sigmoid(acc_b)).to(ub_ptr.dtype.element_ty), ok)


# (channels, positions) of a program. Token-major, channels are the vectorised axis and the position
# count sets the granularity of odd lengths. Measured on an H200 (bench/bench_conv_tiles.py, batch 256,
# 384 channels, us at 192 / 193 tokens): 128 x 16 bf16 60.9 / 67.1, fp32 75.6 / 77.9, against 64 x 32's
# 99.2 / 113.7 and 82.4 / 82.5 (7 tiles of 32 at 193 where 192 take 6); README "Odd token counts"
TOKEN_TILES = (128, 16)
PADDED_TILES = (16, 128)


def conv_pair_triton(x: torch.Tensor, w_f: torch.Tensor, b_f: torch.Tensor, w_b: torch.Tensor,
                     b_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``silu(causal conv(x))`` and ``silu(anti-causal conv(x))``, each (B, C, L) in x's layout:
    token-major x (:func:`~stmsearch.ops.layout.token_major`) gives views of contiguous
    (B, L, C) tensors, any other x is read with unit stride along L (a copy where it is not) and
    gives rows padded as :mod:`stmsearch.ops.layout` says.
    """
    if not _HAVE_TRITON:
        raise RuntimeError("conv_pair_triton needs triton")
    token = token_major(x)
    if not token and x.stride(-1) != 1:
        x = x.contiguous()
    batch, dim, length = x.shape
    k = w_f.shape[-1]
    w_f, w_b = w_f.reshape(dim, k).contiguous(), w_b.reshape(dim, k).contiguous()
    if token:
        u_f, u_b = (token_major_empty(batch, dim, length, device=x.device, dtype=x.dtype) for _ in range(2))
        (block_c, block_l), x_len = TOKEN_TILES, length
    else:
        u_f, u_b = (padded_empty(batch, dim, length, device=x.device, dtype=x.dtype) for _ in range(2))
        block_c, block_l = PADDED_TILES
        x_len = x.stride(1) if widened(x, x.stride(1)) is not None else length
    u_len = length if token else u_f.stride(1)
    grid = (triton.cdiv(length, block_l), triton.cdiv(dim, block_c), batch)
    _conv_pair_kernel[grid](x, w_f, b_f.contiguous(), w_b, b_b.contiguous(), u_f, u_b, dim, length, x_len, u_len,
                            *x.stride(), *u_f.stride(), K=k, BLOCK_C=block_c, BLOCK_L=block_l)
    return u_f, u_b
