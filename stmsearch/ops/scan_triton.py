"""Fused bidirectional selective scan of one ViM layer as a single Triton kernel.

One program owns a block of channels of one (batch row, direction) and keeps the state h
(N x BLOCK_D) in fp32 registers. Time goes in chunks of T_CHUNK positions: each chunk is one
coalesced (BLOCK_D x T_CHUNK) tile load per input, and the recurrence inside the chunk is an
associative scan over (decay, drive) pairs laid out so that time and state stay inside each
thread (channels across lanes): no shuffles in the scan or in the sum over N.

The backward direction is scanned on the unflipped tensors by walking the addresses from the
last position down (t = L - 1 - j); no flipped copies are made. Positions past the end of the
sequence get step 0 (decay 1, drive 0), so the state passes through them unchanged and the
chunk's last column is always the carry into the next chunk: any L >= 1 works.

Three ways of combining the directions (``mode``), all deterministic:
- ``atomic``: grid (batch, channel blocks, 2); each direction atomically adds its
  gated y into a zeroed output. With exactly two addends onto zero the sum is order-free
  (0 + a + b == 0 + b + a bit for bit), and for bf16 it rounds like the reference (each
  direction rounded, then added). Costs one memset of the output.
- ``split``: same grid into an fp32 (2, batch, D, L) buffer, then one torch add.
- ``fused``: grid (batch, channel blocks); a program scans forwards writing y_fwd, then
  backwards adding y_bwd. No extra traffic, half the parallelism, z read twice.

``import triton`` is guarded, so this module imports on a CPU-only install without it.
"""
from __future__ import annotations

import math
import os
import torch

from .direction import Direction
from .layout import dense_token_major, padded_empty, row_pitch, token_major, token_major_empty, with_pitch


def _interpreting() -> bool:
    """True under Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


try:  # guarded: the module must import on a CPU-only install without triton
    import triton
    import triton.language as tl

    _HAVE_TRITON = True
except Exception:  # ImportError, or a broken install
    triton = tl = None
    _HAVE_TRITON = False


def triton_available() -> bool:
    """True if the kernel can run here: triton imports and CUDA (or the Triton interpreter) is on."""
    return _HAVE_TRITON and (torch.cuda.is_available() or _interpreting())


def _configs() -> list:
    """Autotune candidates; the interpreter gets one small config (it runs every candidate)."""
    if _interpreting():
        return [triton.Config({"BLOCK_D": 4, "T_CHUNK": 8}, num_warps=1)]
    out = []
    # (T_CHUNK x N) per thread lives in registers: these stay at or under ~210 registers on
    # sm_90 without spills (checked with ptxas for fp32 and bf16, all three modes)
    for block_d, t_chunk, warps in [(32, 4, 1), (64, 4, 2), (16, 4, 1), (16, 8, 1), (8, 8, 1),
                                    (8, 16, 1), (32, 2, 1), (4, 16, 1)]:
        out.append(triton.Config({"BLOCK_D": block_d, "T_CHUNK": t_chunk}, num_warps=warps))
    return out


if _HAVE_TRITON:
    @triton.jit
    def _combine(a1, b1, a2, b2):
        # (a1, b1) is the earlier step: h -> a2 * (a1 * h + b1) + b2
        return a1 * a2, a2 * b1 + b2

    @triton.jit
    def _scan_direction(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, Dv_ptr, bias_ptr, z_ptr, scale_ptr, y_ptr,
                        su_b, sdt_b, sB_b, sC_b, sz_b, ss_b, sy_b, pid_b, offs_d, mask_d, D, L, P, s_d, s_t, s_n,
                        s_bt, N: tl.constexpr, BLOCK_D: tl.constexpr, T_CHUNK: tl.constexpr,
                        REVERSE: tl.constexpr, ACCUMULATE: tl.constexpr, ATOMIC: tl.constexpr,
                        HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, HAS_SCALE: tl.constexpr):
        """Scan one direction for one (batch row, channel block); write (or add) gated y.

        u, dt, z and y share one layout: element (d, t) at d * s_d + t * s_t, channel-major
        (s_t = 1, rows P apart) or token-major (s_d = 1); B and C theirs, (n, t) at n * s_n +
        t * s_bt. Triton specialises a stride of 1, so the unit-stride axis is vectorised.

        I/O tiles are (BLOCK_D, T_CHUNK), so loads and stores coalesce along either axis. The
        state math runs on (T_CHUNK, N, BLOCK_D) tensors: Triton's default layout spreads the
        last dim (channels) over lanes and keeps time and state in each thread's registers,
        so the scan over time and the sum over N need no shuffles.
        """
        offs_n = tl.arange(0, N)
        offs_j = tl.arange(0, T_CHUNK)
        # exp(dt*A) as exp2(dt*A*log2e): one MUFU op per (t, n, d)
        A = tl.load(A_ptr + offs_d[None, :] * N + offs_n[:, None], mask=mask_d[None, :], other=0.0)
        A = A.to(tl.float32) * 1.4426950408889634  # (N, BLOCK_D)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        if HAS_D:
            Dv = tl.load(Dv_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        row = offs_d[:, None] * s_d
        h = tl.zeros((N, BLOCK_D), dtype=tl.float32)
        for c in range(0, tl.cdiv(L, T_CHUNK)):
            j = c * T_CHUNK + offs_j
            mask_t = j < L
            if REVERSE:
                t = L - 1 - j
            else:
                t = j
            m2 = mask_d[:, None] & mask_t[None, :]
            # forwards, channel-major rows are read and written whole (up to the pitch P, a multiple
            # of 16 in the padded layout; P = L token-major): masks uniform over 16 steps let Triton
            # vectorise. The padding steps come after every real one, so their garbage reaches only
            # padding.
            if REVERSE:
                mask_io = mask_t
            else:
                mask_io = j < P
            m2_io = mask_d[:, None] & mask_io[None, :]
            io = row + t[None, :] * s_t
            u = tl.load(u_ptr + pid_b * su_b + io, mask=m2_io, other=0.0).to(tl.float32)
            dt = tl.load(dt_ptr + pid_b * sdt_b + io, mask=m2_io, other=0.0).to(tl.float32)
            if HAS_BIAS:
                dt = dt + bias[:, None]
            # softplus with torch's threshold of 20
            dt = tl.where(dt > 20.0, dt, tl.log(1.0 + tl.exp(dt)))
            if HAS_SCALE:
                s = tl.load(scale_ptr + pid_b * ss_b + t, mask=mask_t, other=0.0).to(tl.float32)
                dt = dt * s[None, :]
            dt = tl.where(m2, dt, 0.0)  # padding steps: decay 1, drive 0
            tn = offs_n[None, :] * s_n + t[:, None] * s_bt  # (T_CHUNK, N)
            Bt = tl.load(B_ptr + pid_b * sB_b + tn, mask=mask_io[:, None], other=0.0).to(tl.float32)
            Ct = tl.load(C_ptr + pid_b * sC_b + tn, mask=mask_io[:, None], other=0.0).to(tl.float32)
            dt_td = tl.trans(dt)  # (T_CHUNK, BLOCK_D)
            dtu_td = tl.trans(dt * u)
            decay = tl.exp2(dt_td[:, None, :] * A[None, :, :])  # (T_CHUNK, N, BLOCK_D)
            drive = dtu_td[:, None, :] * Bt[:, :, None]
            # fold the carry into the first step, so the scan's running products are dead code
            drive += tl.where(offs_j[:, None, None] == 0, decay * h[None, :, :], 0.0)
            _, hs = tl.associative_scan((decay, drive), axis=0, combine_fn=_combine)
            y = tl.trans(tl.sum(hs * Ct[:, :, None], axis=1))  # (BLOCK_D, T_CHUNK)
            h = tl.sum(tl.where(offs_j[:, None, None] == T_CHUNK - 1, hs, 0.0), axis=0)
            if HAS_D:
                y = y + u * Dv[:, None]
            zv = tl.load(z_ptr + pid_b * sz_b + io, mask=m2_io, other=0.0).to(tl.float32)
            y = y * (zv / (1.0 + tl.exp(-zv)))
            y_addr = y_ptr + pid_b * sy_b + io
            if ATOMIC:
                tl.atomic_add(y_addr, y.to(y_ptr.dtype.element_ty), mask=m2_io, sem="relaxed")
            else:
                if ACCUMULATE:
                    y = y + tl.load(y_addr, mask=m2_io, other=0.0).to(tl.float32)
                tl.store(y_addr, y.to(y_ptr.dtype.element_ty), mask=m2_io)

    @triton.autotune(configs=_configs(), key=["D", "L_BUCKET", "N", "MODE", "TOKEN_MAJOR"],
                     reset_to_zero=["y_ptr"])
    @triton.jit
    def _bidir_kernel(fu, fdt, fA, fB, fC, fDv, fbias, bu, bdt, bA, bB, bC, bDv, bbias,
                      z_ptr, scale_ptr, y_ptr,
                      fsu, fsdt, fsB, fsC, bsu, bsdt, bsB, bsC, sz_b, ss_b, sy_b, sy_dir, D, L, P, s_d, s_t, s_n,
                      s_bt, L_BUCKET, TOKEN_MAJOR,
                      N: tl.constexpr, MODE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr,
                      HAS_SCALE: tl.constexpr, BLOCK_D: tl.constexpr, T_CHUNK: tl.constexpr):
        """MODE 0 atomic, 1 split, 2 fused; see the module docstring. TOKEN_MAJOR (the layout, see
        _scan_direction) only keys the autotuner: each layout gets its own tile."""
        pid_b = tl.program_id(0)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        if MODE == 2:
            _scan_direction(fu, fdt, fA, fB, fC, fDv, fbias, z_ptr, scale_ptr, y_ptr,
                            fsu, fsdt, fsB, fsC, sz_b, ss_b, sy_b, pid_b, offs_d, mask_d, D, L, P, s_d, s_t, s_n, s_bt,
                            N, BLOCK_D, T_CHUNK, False, False, False, HAS_BIAS, HAS_D, HAS_SCALE)
            # the backward pass reads y_fwd that other threads of this CTA stored
            tl.debug_barrier()
            _scan_direction(bu, bdt, bA, bB, bC, bDv, bbias, z_ptr, scale_ptr, y_ptr,
                            bsu, bsdt, bsB, bsC, sz_b, ss_b, sy_b, pid_b, offs_d, mask_d, D, L, P, s_d, s_t, s_n, s_bt,
                            N, BLOCK_D, T_CHUNK, True, True, False, HAS_BIAS, HAS_D, HAS_SCALE)
        elif tl.program_id(2) == 0:
            _scan_direction(fu, fdt, fA, fB, fC, fDv, fbias, z_ptr, scale_ptr, y_ptr,
                            fsu, fsdt, fsB, fsC, sz_b, ss_b, sy_b, pid_b, offs_d, mask_d, D, L, P, s_d, s_t, s_n, s_bt,
                            N, BLOCK_D, T_CHUNK, False, False, MODE == 0, HAS_BIAS, HAS_D, HAS_SCALE)
        else:
            _scan_direction(bu, bdt, bA, bB, bC, bDv, bbias, z_ptr, scale_ptr, y_ptr + sy_dir,
                            bsu, bsdt, bsB, bsC, sz_b, ss_b, sy_b, pid_b, offs_d, mask_d, D, L, P, s_d, s_t, s_n, s_bt,
                            N, BLOCK_D, T_CHUNK, True, False, MODE == 0, HAS_BIAS, HAS_D, HAS_SCALE)


def _prepare(d: "Direction", n_state: int, p: int | None) -> list[torch.Tensor | None]:
    """Kernel pointers (u, delta, A, B, C, D, bias) of a direction:
    u and delta token-major and dense (``p`` None), or with rows ``p`` apart; a copy only where they
    are not. B and C token-major stay as they lie (views of x_proj's output), see :func:`_state_rows`."""
    if p is None:
        u, delta, B, C = dense_token_major(d.u), dense_token_major(d.delta), d.B, d.C
    else:
        u, delta, B, C = (with_pitch(v, p) for v in (d.u, d.delta, d.B, d.C))
    A = d.A.float().contiguous()
    if A.shape[1] != n_state:
        raise ValueError(f"both directions need the same state size, got {A.shape[1]} and {n_state}")
    Dv = d.D.contiguous() if d.D is not None else None
    bias = d.delta_bias.contiguous() if d.delta_bias is not None else None
    return [u, delta, A, B, C, Dv, bias]


def _batch_strides(ptrs: list) -> list[int]:
    """The batch strides of u, delta, B and C in a :func:`_prepare` list."""
    return [ptrs[0].stride(0), ptrs[1].stride(0), ptrs[3].stride(0), ptrs[4].stride(0)]


def _state_rows(f_ptrs: list, b_ptrs: list) -> tuple[int, int]:
    """(s_n, s_t) that B and C of both directions share (index 3 and 4 of each pointer list): token-major
    views as they lie where all four have the same, else dense token-major copies, in place."""
    mats = [f_ptrs[3], f_ptrs[4], b_ptrs[3], b_ptrs[4]]
    if not all(m.stride(1) == 1 and m.stride()[1:] == mats[0].stride()[1:] for m in mats):
        f_ptrs[3], f_ptrs[4], b_ptrs[3], b_ptrs[4] = mats = [dense_token_major(m) for m in mats]
    return mats[0].stride(1), mats[0].stride(2)


def _check(fwd: "Direction", bwd: "Direction", z: torch.Tensor) -> None:
    """Fail early and clearly on what the kernel cannot do."""
    if not triton_available():
        raise RuntimeError("scan backend 'triton' needs the triton package and a CUDA device "
                           "(or TRITON_INTERPRET=1 for the CPU interpreter)")
    if not (z.is_cuda or _interpreting()):
        raise RuntimeError(f"scan backend 'triton' needs CUDA tensors, got device {z.device}")
    n_state = fwd.A.shape[1]
    if n_state < 1 or n_state & (n_state - 1):
        raise ValueError(f"scan backend 'triton' needs a power-of-two state size N, got {n_state}")
    if fwd.u.shape != z.shape or bwd.u.shape != z.shape:
        raise ValueError(f"u and z shapes differ: {tuple(fwd.u.shape)}, {tuple(bwd.u.shape)}, {tuple(z.shape)}")
    if (fwd.delta_bias is None) != (bwd.delta_bias is None) or (fwd.D is None) != (bwd.D is None):
        raise ValueError("both directions must agree on having delta_bias and D")


MODES = ("atomic", "split", "fused")


def _default_mode() -> str:
    """``$STMSEARCH_TRITON_MODE`` if set (benchmarks compare the modes), else ``fused``.

    On an H200 (B128 D384 N16 fp32, 197 tokens, bench/bench_scan.py) ``fused`` measured
    0.372-0.466 ms over four runs and ``atomic`` 0.381-0.502 ms: which wins depends on the
    autotuner's pick that run. ``fused`` needs no memset and no atomics.
    """
    mode = os.environ.get("STMSEARCH_TRITON_MODE") or "fused"
    if mode not in MODES:
        raise ValueError(f"STMSEARCH_TRITON_MODE must be one of {MODES}, got {mode!r}")
    return mode


def bidirectional_scan_triton(fwd: "Direction", bwd: "Direction", z: torch.Tensor,
                              dt_scale: torch.Tensor | None = None, mode: str | None = None) -> torch.Tensor:
    """``y_fwd + y_bwd`` (each gated by ``silu(z)``) of one ViM layer in one kernel launch.

    Same result as the reference path of :func:`stmsearch.ops.scan.bidirectional_scan`; fp32
    state and accumulation for fp32 and bf16 inputs; returns u's dtype. ``mode`` picks how the
    two directions are combined (module docstring); default ``$STMSEARCH_TRITON_MODE`` or fused.
    The layout follows z's: token-major z (:func:`token_major`) gives a y (B, D, L) that is a view
    of a contiguous (B, L, D) tensor, else y is channel-major with z's row pitch.
    """
    mode = mode or _default_mode()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    _check(fwd, bwd, z)
    if mode == "atomic" and fwd.u.dtype != torch.float32 and z.is_cuda \
            and torch.cuda.get_device_capability(z.device) < (9, 0):
        mode = "split"  # native bf16/fp16 atomic adds need sm_90
    batch, dim, length = z.shape
    n_state = fwd.A.shape[1]
    token = token_major(z)
    if token:
        p, z = length, dense_token_major(z)
        f_ptrs, b_ptrs = _prepare(fwd, n_state, None), _prepare(bwd, n_state, None)
        s_n, s_bt = _state_rows(f_ptrs, b_ptrs)
        s_d, s_t = 1, dim
    else:
        p = row_pitch(z)  # z comes from the in_proj GEMM, padded on CUDA (ops.layout); the others follow it
        f_ptrs, b_ptrs = _prepare(fwd, n_state, p), _prepare(bwd, n_state, p)
        z = with_pitch(z, p)
        s_d, s_t, s_n, s_bt = p, 1, p, 1
    has_scale = dt_scale is not None
    scale = dt_scale.contiguous() if has_scale else z  # z stands in for absent pointers, never read
    f_ptrs = [v if v is not None else z for v in f_ptrs]
    b_ptrs = [v if v is not None else z for v in b_ptrs]
    # tune per power-of-two length bucket, not per length: merged sequences take many lengths
    l_bucket = 1 << max(0, math.ceil(math.log2(length)))
    out_dtype = fwd.u.dtype
    lead = (2, batch) if mode == "split" else (batch,)
    alloc = torch.zeros if mode == "atomic" else torch.empty
    kw = {"device": z.device, "dtype": torch.float32 if mode == "split" else out_dtype}
    y = alloc((*lead, length, dim), **kw).transpose(-1, -2) if token else alloc((*lead, dim, p), **kw)[..., :length]
    sy_dir = y.stride(0) if mode == "split" else 0
    sy_b = y.stride(1) if mode == "split" else y.stride(0)
    n_dirs = 1 if mode == "fused" else 2
    grid = lambda meta: (batch, triton.cdiv(dim, meta["BLOCK_D"]), n_dirs)  # noqa: E731
    _bidir_kernel[grid](*f_ptrs, *b_ptrs, z, scale, y, *_batch_strides(f_ptrs), *_batch_strides(b_ptrs), z.stride(0),
                        scale.stride(0) if has_scale else 0, sy_b, sy_dir, dim, length, p, s_d, s_t, s_n, s_bt,
                        l_bucket, int(token), N=n_state, MODE=MODES.index(mode),
                        HAS_BIAS=fwd.delta_bias is not None, HAS_D=fwd.D is not None, HAS_SCALE=has_scale)
    if mode == "split":
        out = (token_major_empty if token else padded_empty)(batch, dim, length, device=z.device, dtype=out_dtype)
        return torch.add(y[0], y[1], out=out)
    return y
