"""Vision Mamba (ViM) with the middle class token, checkpoint-compatible with hustvl/Vim.

Module names and parameter shapes follow the official ``models_mamba.py`` so that an
official state dict loads strictly. The token-merging patch (``stmsearch.merging.patch``)
swaps ``Block``/``VisionMamba`` classes in place; nothing here knows about merging except
the ``cls_index`` the model reads its features from.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.conv import conv_pair, depthwise_conv_silu
from ..ops.layout import gemm_width, is_dense_token_major, padded_empty, padded_tokens, widened
from ..ops.scan import Direction, bidirectional_scan, resolve_backend


@dataclass(frozen=True)
class VimConfig:
    """Architecture of one ViM size."""

    embed_dim: int = 192
    depth: int = 24
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def d_inner(self) -> int:
        return self.expand * self.embed_dim

    @property
    def dt_rank(self) -> int:
        return math.ceil(self.embed_dim / 16)


class RMSNorm(nn.Module):
    """RMSNorm with weight only (eps 1e-5), as in mamba-ssm."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``out``: where to write the result (its dtype and layout), else a new tensor of x's dtype."""
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if out is not None:
            return torch.mul(normed, self.weight.float(), out=out)
        return (normed * self.weight.float()).to(x.dtype)


class PatchEmbed(nn.Module):
    """Conv2d patchify -> (B, num_patches, D)."""

    def __init__(self, cfg: VimConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


# How a layer's activations lie on CUDA under the triton scan: "token", (B, L, C) memory, where every
# GEMM is one over all B*L tokens (cuBLAS tiles a batched GEMM's rows per image, in 64s for fp32, so an
# odd token count cost each image up to 63 more rows); or "channel", (B, C, L) rows padded to 16 tokens
# (ops.layout) with per-image GEMMs over L rounded up to 8, what the mamba_ssm backend always takes
# (its kernels read channel-major rows). A module switch, so benchmarks can time one against the other.
CUDA_LAYOUT = "token"


def _padded_layout(x: torch.Tensor) -> bool:
    """Whether a layer's tensors take the padded channel-major layout of ops.layout: on CUDA outside a
    trace (fvcore's FLOP count needs the plain ops), unless the triton scan runs token-major."""
    if not x.is_cuda or torch.jit.is_tracing():
        return False
    return CUDA_LAYOUT != "token" or resolve_backend(x.device) != "triton"


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a GEMM of x in (the out= forms used here skip autocast)."""
    return torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else x.dtype


def _matmul(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """weight (O, I) applied to x (B, I, L) -> (B, O, L).

    Token-major memory, one GEMM over all B*L tokens (on the CPU what the reference scan's
    time-major loop reads without transposing copies), or channel-major with padded rows where
    :func:`_padded_layout` says.
    """
    if _padded_layout(x):
        # torch.matmul would fold the batch into rows, copying x and the output
        dtype = _compute_dtype(x)
        x, weight = x.to(dtype), weight.to(dtype)
        batch, length = x.shape[0], x.shape[2]
        out = padded_empty(batch, weight.shape[0], length, device=x.device, dtype=dtype)
        width = gemm_width(length)
        wide = widened(x, width)
        if wide is None:
            return torch.bmm(weight.expand(batch, -1, -1), x, out=out)
        return torch.bmm(weight.expand(batch, -1, -1), wide, out=widened(out, width))[..., :length]
    dtype = _compute_dtype(x) if x.is_cuda else x.dtype
    return F.linear(x.transpose(1, 2).to(dtype), weight.to(dtype)).transpose(1, 2)


def _out_proj(y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """y (B, C, L) times weight (C, D) -> (B, L, D).

    y token-major in memory (the triton scan's output in the token layout) is one GEMM over all
    B*L tokens; channel-major y runs per image, on CUDA over its padded tokens.
    """
    batch, channels, length = y.shape
    if is_dense_token_major(y):
        return torch.mm(y.transpose(1, 2).reshape(batch * length, channels), weight).view(batch, length, -1)
    weight = weight.expand(batch, -1, -1)
    wide = widened(y, gemm_width(length)) if _padded_layout(y) else None
    if wide is None:
        return torch.bmm(y.transpose(1, 2), weight)
    out = torch.empty(batch, wide.shape[2], weight.shape[2], device=y.device, dtype=y.dtype)
    return torch.bmm(wide.transpose(1, 2), weight, out=out)[:, :length]


class BiMamba(nn.Module):
    """The bidirectional ("v2") Mamba mixer of ViM, with the official parameter names."""

    def __init__(self, cfg: VimConfig):
        super().__init__()
        d, di, n, r = cfg.embed_dim, cfg.d_inner, cfg.d_state, cfg.dt_rank
        self.d_inner, self.d_state, self.dt_rank = di, n, r
        self.in_proj = nn.Linear(d, 2 * di, bias=False)
        self.out_proj = nn.Linear(di, d, bias=False)
        a_init = torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(di, 1)
        for sfx in ("", "_b"):
            self.add_module("conv1d" + sfx, nn.Conv1d(di, di, cfg.d_conv, groups=di, padding=cfg.d_conv - 1))
            self.add_module("x_proj" + sfx, nn.Linear(di, r + 2 * n, bias=False))
            self.add_module("dt_proj" + sfx, nn.Linear(r, di, bias=True))
            self.register_parameter("D" + sfx, nn.Parameter(torch.ones(di)))
            self._init_dt(getattr(self, "dt_proj" + sfx))
        self.A_log = nn.Parameter(a_init.clone())
        self.A_b_log = nn.Parameter(a_init.clone())
        self._derived: dict[str, tuple] = {}

    def derived(self, key: str, source: torch.Tensor, make: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``make(source)``: a cast or transform of a parameter, kept between gradient-free
        forwards until the parameter changes (in place: its version; or its storage or the GEMM
        dtype), as each costs a kernel launch per layer and forward, and launches are what a
        fast GPU waits for. Autograd and traces (FLOP counts) see the ops every time, and so do
        parameters made under inference mode (they keep no version to see a change by)."""
        if torch.is_grad_enabled() or torch.jit.is_tracing() or source.is_inference():
            return make(source)
        # the tensor itself is kept and compared by identity: a replaced parameter's memory may
        # be reused by its successor at the same address and version
        stamp = (source._version, source.data_ptr(), _compute_dtype(source))
        hit = self._derived.get(key)
        if hit is None or hit[0] is not source or hit[1] != stamp:
            hit = self._derived[key] = (source, stamp, make(source))
        return hit[2]

    def gemm_weight(self, key: str, w: torch.Tensor) -> torch.Tensor:
        """Parameter ``w`` in the dtype GEMMs run in (autocast's, on CUDA), kept as :meth:`derived` says."""
        return self.derived(key, w, lambda v: v.to(_compute_dtype(v)) if v.is_cuda else v)

    @staticmethod
    def _init_dt(proj: nn.Linear, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        """Mamba's dt init: bias = softplus^-1 of a log-uniform step in [dt_min, dt_max]."""
        dt = torch.exp(torch.rand(proj.out_features) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():
            proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def direction(self, u: torch.Tensor, reverse: bool) -> Direction:
        """x_proj and dt_proj of one direction over its conv output u (B, d_inner, L)."""
        sfx = "_b" if reverse else ""
        x_proj, dt_proj = getattr(self, "x_proj" + sfx), getattr(self, "dt_proj" + sfx)
        dt, b, c = _matmul(self.gemm_weight("x_proj" + sfx, x_proj.weight), u).split(
            [self.dt_rank, self.d_state, self.d_state], dim=1)
        a = self.derived("A" + sfx, self.A_b_log if reverse else self.A_log, lambda v: -torch.exp(v.float()))
        d_skip = (self.D_b if reverse else self.D).float()
        if u.is_cuda:  # the scan kernels add dt_proj's bias inside the softplus
            return Direction(u, _matmul(self.gemm_weight("dt_proj" + sfx, dt_proj.weight), dt), a, b, c, d_skip,
                             dt_proj.bias.float())
        # on the CPU an addmm with the bias costs less than the bare mm plus a separate add; the
        # softplus is taken here once, for the scan and for a merge metric that reads the steps
        delta = F.linear(dt.transpose(1, 2), dt_proj.weight.to(u.dtype), dt_proj.bias.to(u.dtype)).transpose(1, 2)
        return Direction(u, delta, a, b, c, d_skip, None, F.softplus(delta.float()))

    def directions(self, x: torch.Tensor, backend: str) -> tuple[Direction, Direction, bool]:
        """Both directions' scan inputs over x (B, d_inner, L), laid out as ``backend`` reads them.

        Returns (forward, backward, backward_flipped). mamba-ssm scans forwards only, so for it
        x is flipped once and the backward direction is built in reversed order, as official
        ViM does; the other backends read the backward direction from the unflipped tensors.
        """
        f, b = self.conv1d, self.conv1d_b
        if backend == "mamba_ssm":
            u_b = depthwise_conv_silu(x.flip(-1), b.weight, b.bias, reverse=False)
            u_f = depthwise_conv_silu(x, f.weight, f.bias, reverse=False)
            return self.direction(u_f, False), self.direction(u_b, True), True
        u_f, u_b = conv_pair(x, f.weight, f.bias, b.weight, b.bias, fused=backend == "triton")
        return self.direction(u_f, False), self.direction(u_b, True), False

    def forward(self, h: torch.Tensor, dt_scale: torch.Tensor | None = None) -> torch.Tensor:
        """h: (B, L, D) -> (B, L, D). ``dt_scale`` (B, L) scales each token's step (size-aware decay).

        Inside, activations are (B, C, L)-shaped, laid out in memory as ``_matmul`` says.
        """
        ht = h.transpose(1, 2)
        w_in = self.gemm_weight("in_proj", self.in_proj.weight)
        x = _matmul(w_in[:self.d_inner], ht)
        z = _matmul(w_in[self.d_inner:], ht)
        # a trace (fvcore's FLOP count) must see plain torch ops, not Triton or extension kernels
        backend = "reference" if torch.jit.is_tracing() else resolve_backend(x.device)
        fwd, bwd, flipped = self.directions(x, backend)
        y = bidirectional_scan(fwd, bwd, z, backend, dt_scale, bwd_flipped=flipped)
        # "divide out" (on for all published models) folded into the small weight
        w_out = self.derived("out_proj", self.out_proj.weight, lambda v: (v * 0.5).to(_compute_dtype(v)).t())
        return _out_proj(y, w_out.to(y.dtype))


class Block(nn.Module):
    """Add -> RMSNorm -> mixer, residual kept in fp32 (``residual_in_fp32=True``)."""

    def __init__(self, cfg: VimConfig):
        super().__init__()
        self.norm = RMSNorm(cfg.embed_dim)
        self.mixer = BiMamba(cfg)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        residual = self.add(hidden, residual)
        return self.mix(residual), residual

    @staticmethod
    def add(hidden: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """The fp32 residual stream after this block's add."""
        return hidden.float() if residual is None else residual + hidden.float()

    def mix(self, residual: torch.Tensor, dt_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Norm and mixer over the residual stream."""
        x = residual.to(self.norm.weight.dtype)
        out = None
        if _padded_layout(x):  # the in_proj GEMMs then run over the padded tokens (ops.layout)
            out = padded_tokens(*x.shape, device=x.device, dtype=_compute_dtype(x))
        return self.mixer(self.norm(x, out), dt_scale)


class VisionMamba(nn.Module):
    """ViM with the class token in the middle of the patch sequence."""

    def __init__(self, cfg: VimConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, cfg.embed_dim))
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm_f = RMSNorm(cfg.embed_dim)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes)
        self.cls_pos = cfg.num_patches // 2
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def embed(self, img: torch.Tensor) -> torch.Tensor:
        """Patches + middle class token + position embedding: (B, num_patches + 1, D)."""
        x = self.patch_embed(img)
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([x[:, :self.cls_pos], cls, x[:, self.cls_pos:]], dim=1)
        return x + self.pos_embed.to(x.dtype)

    def forward_features(self, img: torch.Tensor) -> torch.Tensor:
        """The final-normed class-token feature, (B, D)."""
        hidden, residual = self.embed(img), None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual)
        h = self.norm_f((residual + hidden.float()).to(self.norm_f.weight.dtype))
        return self.class_token(h)

    def class_token(self, h: torch.Tensor) -> torch.Tensor:
        """Pick the class token; the merge patch overrides this with per-item indices."""
        return h[:, self.cls_pos]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(img))
