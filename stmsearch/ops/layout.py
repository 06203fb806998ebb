"""Channel-major activations with padded rows: the layout a ViM layer keeps on CUDA.

Between merges a sequence can have any length. At an odd length cuBLAS falls back to slow
GEMM kernels (measured on the H200: bf16 193 tokens ran 1.24x longer per token than 192), and
Triton vectorises a row's loads only where its pitch divides by 16. So a layer's tensors live in
buffers padded to P = L rounded up to ``PAD`` tokens, as views of their first L: (B, C, P)
channel-major and (B, P, C) token-major. The GEMMs run over L rounded up to ``GEMM_ALIGN`` tokens
(:func:`gemm_width`, :func:`widened`: the padding holds garbage, which only ever reaches padding,
as each output token of a GEMM reads one input token), what cuBLAS needs for its fast kernels
at the least extra work; the conv reads and writes whole padded rows and zeroes what lies past L.

Under the triton scan CUDA lays a layer out token-major instead (:func:`token_major`): every GEMM
is then one over all B*L tokens and needs no padding (models.vim.CUDA_LAYOUT).
"""
from __future__ import annotations

import torch

PAD = 16
GEMM_ALIGN = 8


def pitch(length: int) -> int:
    """The row pitch of a padded (B, C, ``length``) tensor."""
    return -(-length // PAD) * PAD


def gemm_width(length: int) -> int:
    """The tokens a GEMM over a padded (B, C, ``length``) tensor runs over."""
    return -(-length // GEMM_ALIGN) * GEMM_ALIGN


def padded_empty(batch: int, rows: int, length: int, **kw) -> torch.Tensor:
    """An uninitialised (batch, rows, length) view of a (batch, rows, pitch(length)) buffer."""
    return torch.empty(batch, rows, pitch(length), **kw)[..., :length]


def with_pitch(x: torch.Tensor, p: int) -> torch.Tensor:
    """x (B, R, L) with unit stride in L and rows ``p`` apart (whole rows of ``p`` readable: the
    scan reads its forward direction's up to the pitch); a padded copy only if it is not."""
    if x.stride(-1) == 1 and x.stride(1) == p and (p == x.shape[-1] or x.shape[1] > 1):
        return x
    out = torch.empty(x.shape[0], x.shape[1], p, device=x.device, dtype=x.dtype)[..., :x.shape[-1]]
    return out.copy_(x)


def row_pitch(x: torch.Tensor) -> int:
    """The pitch x's rows already have, where it is a usable one (unit stride, rows >= L apart), else L."""
    length = x.shape[-1]
    if x.stride(-1) == 1 and x.shape[1] > 1 and x.stride(1) >= length:
        return x.stride(1)
    return length


def padded_tokens(batch: int, length: int, dim: int, **kw) -> torch.Tensor:
    """An uninitialised (batch, ``length``, dim) view of a (batch, pitch(length), dim) buffer."""
    return torch.empty(batch, pitch(length), dim, **kw)[:, :length]


def widened(x: torch.Tensor, length: int) -> torch.Tensor | None:
    """x (B, R, L) seen with ``length`` >= L along its last dim, at the same strides, where the
    memory x lies in holds that (a padded buffer's tail); None where it would read past it."""
    if x.shape[-1] == length:
        return x
    size = (*x.shape[:-1], length)
    last = x.storage_offset() + sum((n - 1) * s for n, s in zip(size, x.stride()))
    if min(x.stride()) < 0 or (last + 1) * x.element_size() > x.untyped_storage().nbytes():
        return None
    return x.as_strided(size, x.stride())


def token_major(x: torch.Tensor) -> bool:
    """Whether (B, R, L) x lies token-major (unit stride over R, rows of at least R): the layout a
    GEMM over all B*L tokens writes (the CPU's, and CUDA's under the triton scan)."""
    return x.stride(1) == 1 and x.stride(2) >= x.shape[1] and (x.shape[1] > 1 or x.shape[2] == 1)


def is_dense_token_major(x: torch.Tensor) -> bool:
    """Whether (B, R, L) x is a view of a whole contiguous (B, L, R) tensor (one GEMM's (B*L, R) rows)."""
    return x.stride(1) == 1 and x.stride(2) == x.shape[1] and x.stride(0) == x.shape[1] * x.shape[2]


def token_major_empty(batch: int, rows: int, length: int, **kw) -> torch.Tensor:
    """An uninitialised (batch, rows, length) view of a contiguous (batch, length, rows) tensor: the
    token layout's counterpart of :func:`padded_empty`."""
    return torch.empty(batch, length, rows, **kw).transpose(1, 2)


def dense_token_major(x: torch.Tensor) -> torch.Tensor:
    """x as a (B, R, L) view of a contiguous (B, L, R) tensor (a copy only if it is not one)."""
    if is_dense_token_major(x):
        return x
    return token_major_empty(*x.shape, device=x.device, dtype=x.dtype).copy_(x)
