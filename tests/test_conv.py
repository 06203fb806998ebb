"""The depthwise convs of a ViM layer and the backward direction's layouts.

- CPU: the anti-causal conv equals flip -> causal conv -> flip; the mamba-ssm layout (x
  flipped once, backward direction built in reversed order) gives the same layer output as
  the unflipped one, through the reference scan.
- The fused Triton conv pair against the torch convs: on a GPU, and on the CPU through
  Triton's interpreter when ``TRITON_INTERPRET=1`` is set.
"""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

import stmsearch
from stmsearch.ops.layout import pitch
from stmsearch.ops.conv import conv_pair, depthwise_conv_silu
from stmsearch.ops.scan import bidirectional_scan

HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def conv_inputs(dim: int, length: int, dtype: torch.dtype, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, dim, length, generator=g)
    w_f, w_b = torch.randn(dim, 1, 4, generator=g), torch.randn(dim, 1, 4, generator=g)
    b_f, b_b = torch.randn(dim, generator=g), torch.randn(dim, generator=g)
    return [t.to(device, dtype) for t in (x, w_f, b_f, w_b, b_b)]


@pytest.mark.parametrize("length", [1, 2, 5, 50])
def test_anticausal_is_flipped_causal(length: int) -> None:
    x, w, b, _, _ = conv_inputs(6, length, torch.float32, "cpu")
    flipped = depthwise_conv_silu(x.flip(-1), w, b, reverse=False).flip(-1)
    torch.testing.assert_close(depthwise_conv_silu(x, w, b, reverse=True), flipped, rtol=1e-6, atol=1e-6)
    # and it is not the causal conv (the test could tell them apart)
    if length > 1:
        assert not torch.allclose(depthwise_conv_silu(x, w, b, reverse=False), flipped, atol=1e-3)


def test_flipped_backward_layout_gives_same_layer_output() -> None:
    torch.manual_seed(0)
    mixer = stmsearch.create_model("vim_proxy", pretrained=False, depth=1).layers[0].mixer
    x, z = torch.randn(2, mixer.d_inner, 37), torch.randn(2, mixer.d_inner, 37)
    dt_scale = torch.rand(2, 37) * 2 + 0.5
    with torch.no_grad():
        fwd, bwd, flipped = mixer.directions(x, "reference")
        fwd_m, bwd_m, flipped_m = mixer.directions(x, "mamba_ssm")
        assert (flipped, flipped_m) == (False, True)
        torch.testing.assert_close(bwd_m.u, bwd.u.flip(-1))
        for scale in (None, dt_scale):
            want = bidirectional_scan(fwd, bwd, z, "reference", scale)
            got = bidirectional_scan(fwd_m, bwd_m, z, "reference", scale, bwd_flipped=True)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            wrong = bidirectional_scan(fwd_m, bwd_m, z, "reference", scale, bwd_flipped=False)
            assert not torch.allclose(wrong, want, atol=1e-3)


def _check_pair(device: str, dtype: torch.dtype, dim: int, length: int) -> None:
    x, w_f, b_f, w_b, b_b = conv_inputs(dim, length, dtype, device)
    u_f, u_b = conv_pair(x, w_f, b_f, w_b, b_b, fused=True)
    r_f, r_b = (depthwise_conv_silu(x.float(), w.float(), b.float(), reverse=rev)
                for w, b, rev in ((w_f, b_f, False), (w_b, b_b, True)))
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # bf16: one output rounding (2**-8 relative)
    for got, want in ((u_f, r_f), (u_b, r_b)):
        assert got.dtype == dtype and got.shape == want.shape
        assert got.stride(-1) == 1 and got.stride(1) == pitch(length)  # rows padded for the GEMMs after it
        err = ((got.float() - want).abs().max() / want.abs().max()).item()
        assert err <= tol, f"rel err {err:.2e}"
    # token-major x (the token layout's in_proj output; here half of a wider GEMM's rows) gives token-major
    # outputs with the same values: the same arithmetic, only the addresses differ
    xt = torch.randn(x.shape[0], length, 2 * dim, device=device).to(dtype)[..., :dim].transpose(1, 2).copy_(x)
    t_f, t_b = conv_pair(xt, w_f, b_f, w_b, b_b, fused=True)
    for got, want in ((t_f, u_f), (t_b, u_b)):
        assert got.stride() == (length * dim, 1, dim)
        assert torch.equal(got, want)


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and HAS_TRITON), reason="needs a CUDA GPU and triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("length", [1, 3, 99, 197, 300])
def test_conv_pair_triton_gpu(length: int, dtype: torch.dtype) -> None:
    _check_pair("cuda", dtype, 40, length)  # 40 channels: not a multiple of the channel block


@pytest.mark.skipif(not (INTERPRET and HAS_TRITON),
                    reason="set TRITON_INTERPRET=1 with triton installed to run the kernel on the CPU")
@pytest.mark.parametrize("length", [1, 3, 130])
def test_conv_pair_triton_interpreter(length: int) -> None:
    _check_pair("cpu", torch.float32, 20, length)
