"""Parity of the fused bidirectional Triton scan with the pure-PyTorch reference.

Tolerances (max |out - ref| / max |ref| over the whole output):
- fp32: 1e-4. Both sides keep fp32 state; the kernel's chunked scan only reorders roundings.
- bf16: 2e-2. The reference rounds each direction to bf16 and adds in bf16; the kernel
  rounds the sum once more (fused/atomic) or once less (split). Each bf16 rounding is at most
  2**-8 relative, so two extra roundings of values up to max |ref| stay under ~1.2e-2.

GPU tests run wherever CUDA is present and are skipped otherwise. The interpreter tests run
the same kernel on the CPU through Triton's interpreter when ``TRITON_INTERPRET=1`` is set and
triton imports (slow: tiny shapes only).
"""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F

from stmsearch.ops.layout import pitch
from stmsearch.ops.scan import Direction, bidirectional_scan
from stmsearch.ops.scan_reference import selective_scan_reference
from stmsearch.ops.scan_triton import MODES, bidirectional_scan_triton, triton_available

HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
_needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and HAS_TRITON),
                                reason="needs a CUDA GPU and triton (the kernel is CUDA-only)")


def gpu(fn):
    """The project's ``gpu`` marker plus the skip when no GPU (or no triton) is here."""
    return pytest.mark.gpu(_needs_gpu(fn))


interpreter = pytest.mark.skipif(not (INTERPRET and HAS_TRITON),
                                 reason="set TRITON_INTERPRET=1 with triton installed to run the kernel on the CPU")
TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


def make_inputs(batch: int, dim: int, length: int, n_state: int, dtype: torch.dtype, device: str,
                seed: int = 0) -> tuple[Direction, Direction, torch.Tensor, torch.Tensor]:
    """Random ViM-like inputs: two directions with their own parameters, a shared z, a dt_scale."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale + shift

    def direction() -> Direction:
        A = -(torch.rand(dim, n_state, generator=g) * 4 + 0.1)  # stable decays, like -exp(A_log)
        return Direction(
            u=rand(batch, dim, length).to(device, dtype),
            delta=rand(batch, dim, length, scale=0.5, shift=-2.0).to(device, dtype),
            A=A.to(device),
            B=rand(batch, n_state, length).to(device, dtype),
            C=rand(batch, n_state, length).to(device, dtype),
            D=rand(dim).to(device),
            delta_bias=rand(dim, scale=0.3).to(device),
        )

    z = rand(batch, dim, length).to(device, dtype)
    dt_scale = (torch.rand(batch, length, generator=g) * 3 + 0.5).to(device)
    return direction(), direction(), z, dt_scale


def reference(fwd: Direction, bwd: Direction, z: torch.Tensor, dt_scale: torch.Tensor | None) -> torch.Tensor:
    """``y_fwd + y_bwd`` straight from :func:`selective_scan_reference` (backward: reverse=True)."""

    def one(d: Direction, reverse: bool) -> torch.Tensor:
        delta, bias, softplus = d.delta, d.delta_bias, True
        if dt_scale is not None:
            delta = F.softplus(delta.float() + bias.float()[:, None]) * dt_scale.float()[:, None, :]
            bias, softplus = None, False
        return selective_scan_reference(d.u, delta, d.A, d.B, d.C, d.D, z, bias,
                                        delta_softplus=softplus, reverse=reverse)

    return one(fwd, False) + one(bwd, True)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30)).item()


def check(batch: int, dim: int, length: int, n_state: int, dtype: torch.dtype, device: str,
          scaled: bool, mode: str) -> float:
    fwd, bwd, z, dt_scale = make_inputs(batch, dim, length, n_state, dtype, device)
    scale = dt_scale if scaled else None
    out = bidirectional_scan_triton(fwd, bwd, z, scale, mode=mode)
    ref = reference(fwd, bwd, z, scale)
    assert out.shape == ref.shape and out.dtype == dtype
    err = rel_err(out, ref)
    assert err <= TOL[dtype], f"rel err {err:.3e} > {TOL[dtype]:.0e}"
    check_token_major(fwd, bwd, z, scale, mode, out)
    return err


def _token(x: torch.Tensor) -> torch.Tensor:
    """x's values laid out token-major: a (B, R, L) view of a (B, L, R) tensor."""
    return torch.empty(x.shape[0], x.shape[2], x.shape[1], dtype=x.dtype, device=x.device).transpose(1, 2).copy_(x)


def check_token_major(fwd: Direction, bwd: Direction, z: torch.Tensor, scale: torch.Tensor | None, mode: str,
                      out: torch.Tensor) -> None:
    """Token-major inputs (u, delta, z dense; B and C as views of one (B, L, R + 2N) x_proj output, as the
    token layout hands them over) give the channel-major ``out``'s values in a contiguous (B, L, C) y: bit
    for bit in the interpreter (one kernel config: the same arithmetic, only the addresses differ); on a
    GPU the autotuner may pick another chunking per layout, so within the parity tolerance."""
    def token(d: Direction) -> Direction:
        n = d.B.shape[1]
        proj = torch.empty(d.B.shape[0], d.B.shape[2], 3 + 2 * n, dtype=d.B.dtype, device=d.B.device)
        bc = proj.transpose(1, 2)[:, 3:]
        bc[:, :n], bc[:, n:] = d.B, d.C
        return d._replace(u=_token(d.u), delta=_token(d.delta), B=bc[:, :n], C=bc[:, n:])

    tm = bidirectional_scan_triton(token(fwd), token(bwd), _token(z), scale, mode=mode)
    batch, dim, length = z.shape
    assert tm.shape == out.shape and tm.dtype == out.dtype and tm.stride() == (length * dim, 1, dim)
    if INTERPRET:
        assert torch.equal(tm, out)
    else:
        assert rel_err(tm, out) <= TOL[out.dtype]
    # a mixed hand-over (channel-major u and C) is copied to z's layout, with the same result
    mixed = bidirectional_scan_triton(token(fwd)._replace(u=fwd.u, C=fwd.C), token(bwd), _token(z), scale, mode=mode)
    assert torch.equal(mixed, tm) if INTERPRET else rel_err(mixed, out) <= TOL[out.dtype]


def test_imports_without_gpu() -> None:
    """The module imports anywhere; availability is a plain bool."""
    assert isinstance(triton_available(), bool)
    if not triton_available():
        fwd, bwd, z, _ = make_inputs(1, 4, 3, 8, torch.float32, "cpu")
        with pytest.raises(RuntimeError, match="triton"):
            bidirectional_scan_triton(fwd, bwd, z)


@gpu
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("scaled", [False, True], ids=["plain", "dt_scale"])
@pytest.mark.parametrize("length", [1, 7, 97, 197])
def test_parity_gpu(length: int, scaled: bool, dtype: torch.dtype, mode: str) -> None:
    # dim 40 is not a multiple of any channel block, so the channel mask is exercised too
    check(3, 40, length, 16, dtype, "cuda", scaled, mode)


@gpu
@pytest.mark.parametrize("n_state", [8, 16])
def test_parity_gpu_vim_width(n_state: int) -> None:
    check(2, 384, 197, n_state, torch.float32, "cuda", True, "atomic")


@gpu
def test_strided_views_and_dispatch_gpu() -> None:
    """z as half of an xz projection (a strided view) and the backend switch of bidirectional_scan."""
    fwd, bwd, _, dt_scale = make_inputs(2, 64, 99, 16, torch.float32, "cuda")
    xz = torch.randn(2, 128, 99, device="cuda")
    z = xz[:, 64:]  # stride (128*99, 99, 1): used in place, no copy
    out = bidirectional_scan(fwd, bwd, z, backend="triton", dt_scale=dt_scale)
    ref = reference(fwd, bwd, z, dt_scale)
    assert rel_err(out, ref) <= TOL[torch.float32]


@gpu
def test_deterministic_gpu() -> None:
    fwd, bwd, z, dt_scale = make_inputs(4, 96, 158, 16, torch.float32, "cuda")
    for mode in MODES:
        first = bidirectional_scan_triton(fwd, bwd, z, dt_scale, mode=mode)
        assert torch.equal(first, bidirectional_scan_triton(fwd, bwd, z, dt_scale, mode=mode)), mode


@interpreter
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scaled", [False, True], ids=["plain", "dt_scale"])
@pytest.mark.parametrize("length", [1, 7, 33])
def test_parity_interpreter(length: int, scaled: bool, mode: str) -> None:
    check(2, 6, length, 8, torch.float32, "cpu", scaled, mode)


@interpreter
@pytest.mark.parametrize("mode", ["split", "fused"])  # the interpreter has no bf16 atomics
def test_parity_interpreter_bf16(mode: str) -> None:
    check(1, 5, 19, 8, torch.bfloat16, "cpu", True, mode)


@interpreter
def test_parity_interpreter_long() -> None:
    check(1, 4, 197, 16, torch.float32, "cpu", True, "atomic")


def _padded(x: torch.Tensor, p: int) -> torch.Tensor:
    """x's values in a (B, R, p) buffer (garbage in the padding), as a view of its first L columns."""
    out = torch.full((*x.shape[:2], p), float("nan"), dtype=x.dtype, device=x.device)[..., :x.shape[-1]]
    return out.copy_(x)


@interpreter
@pytest.mark.parametrize("mode", MODES)
def test_padded_rows_interpreter(mode: str) -> None:
    """Rows at a padded pitch (ops.layout): read and written in place, NaN padding never read, and
    inputs at another pitch than z's are copied to it. The output keeps z's pitch."""
    length = 13
    fwd, bwd, z, dt_scale = make_inputs(2, 6, length, 8, torch.float32, "cpu")
    ref = reference(fwd, bwd, z, dt_scale)
    p = pitch(length)
    pad = lambda d: Direction(_padded(d.u, p), _padded(d.delta, p), d.A, _padded(d.B, p), d.C,  # noqa: E731
                              d.D, d.delta_bias)  # C stays packed: copied to the pitch
    out = bidirectional_scan_triton(pad(fwd), pad(bwd), _padded(z, p), dt_scale, mode=mode)
    assert rel_err(out, ref) <= TOL[torch.float32]
    if mode != "split":
        assert out.stride(1) == p
    check_token_major(pad(fwd), pad(bwd), _padded(z, p), dt_scale, mode, out)


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_token_layout_model_equals_channel_layout_gpu(monkeypatch, dtype: torch.dtype) -> None:
    """A merged model laid out token-major (every GEMM one over all tokens) gives the logits of the padded
    channel-major layout (per-image GEMMs); only GEMM and scan rounding differ."""
    import stmsearch
    from stmsearch.models import vim

    monkeypatch.setenv("STMSEARCH_SCAN", "triton")
    torch.manual_seed(0)
    model = stmsearch.create_model("vim_tiny", depth=4).eval().cuda()
    stmsearch.apply(model, stmsearch.MergeConfig(method="stm", schedule=[3, 5, 1, 0]))
    img = torch.randn(3, 3, 224, 224, device="cuda")
    outs = {}
    for layout in ("token", "channel"):
        monkeypatch.setattr(vim, "CUDA_LAYOUT", layout)
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            outs[layout] = model(img).float()
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    assert rel_err(outs["token"], outs["channel"]) <= tol


@interpreter
def test_token_layout_mixer_interpreter(monkeypatch) -> None:
    """A ViM mixer run the token layout's way (every GEMM one over all tokens, as on the CPU) with the
    triton conv and scan (here through the interpreter) gives the reference backend's output: the x_proj
    split's strided B, C and dt views, the conv over token-major x and the token-major y into out_proj."""
    from stmsearch.models import vim
    from stmsearch.ops import scan as scan_mod

    torch.manual_seed(0)
    mixer = vim.BiMamba(vim.VimConfig(embed_dim=8, depth=1, d_state=4)).eval()
    h = torch.randn(2, 13, 8)
    with torch.inference_mode():
        ref = mixer(h)
        monkeypatch.setattr(vim, "resolve_backend", lambda device, requested=None: "triton")
        monkeypatch.setattr(scan_mod, "resolve_backend", lambda device, requested=None: "triton")
        calls = []
        real = vim.bidirectional_scan

        def spy(fwd, bwd, z, *a, **k):
            calls.append((fwd.u.stride(), fwd.B.stride(), z.stride()))
            return real(fwd, bwd, z, *a, **k)

        monkeypatch.setattr(vim, "bidirectional_scan", spy)
        out = mixer(h)
    di = mixer.d_inner
    assert calls and calls[0][0] == (13 * di, 1, di) and calls[0][1][1] == 1 and calls[0][2] == (13 * di, 1, di)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
