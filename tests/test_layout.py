"""Padded layouts (stmsearch.ops.layout): pitch rounding, views, copies only when needed, widened views,
and a model forced onto the padded layout on the CPU giving the same logits with NaN padding."""
from __future__ import annotations

import torch

import pytest

import stmsearch
from stmsearch.models import vim
from stmsearch.ops import layout
from stmsearch.ops.layout import PAD, padded_empty, padded_tokens, pitch, row_pitch, widened, with_pitch


def test_pitch_rounds_up_to_the_pad() -> None:
    assert [pitch(n) for n in (1, 7, 8, 9, 96, 97, 197)] == [16, 16, 16, 16, 96, 112, 208]
    assert all(pitch(n) % PAD == 0 and 0 <= pitch(n) - n < PAD for n in range(1, 300))


def test_padded_empty_is_a_view_with_padded_rows() -> None:
    x = padded_empty(2, 3, 13)
    assert x.shape == (2, 3, 13) and x.stride() == (3 * 16, 16, 1)
    assert row_pitch(x) == 16
    t = padded_tokens(2, 13, 5)
    assert t.shape == (2, 13, 5) and t.stride() == (16 * 5, 5, 1)


def test_with_pitch_copies_only_when_needed() -> None:
    x = padded_empty(2, 3, 13).normal_()
    assert with_pitch(x, 16) is x
    packed = torch.randn(2, 3, 13)
    assert row_pitch(packed) == 13
    y = with_pitch(packed, 16)
    assert y.stride(1) == 16 and torch.equal(y, packed)
    # a channel-minor tensor (transposed view) is copied to unit stride along L
    t = torch.randn(2, 13, 3).transpose(1, 2)
    assert row_pitch(t) == 13
    z = with_pitch(t, 16)
    assert z.stride(-1) == 1 and z.stride(1) == 16 and torch.equal(z, t)


def test_widened_views_only_memory_the_tensor_lies_in() -> None:
    x = padded_empty(2, 3, 13).normal_()
    w = widened(x, 16)
    assert w.shape == (2, 3, 16) and w.data_ptr() == x.data_ptr() and torch.equal(w[..., :13], x)
    assert widened(x, 17) is None  # past the last row's padding
    t = padded_tokens(2, 13, 5).transpose(1, 2)  # the in_proj GEMM's token-major input
    assert widened(t, 16).shape == (2, 5, 16)
    packed = torch.randn(2, 3, 13)
    assert widened(packed, 16) is None  # the last row would read past the tensor
    assert widened(packed[:1], 16) is not None  # ... unless the storage goes on (garbage only, never past it)


def _nan_filled(fn):
    """``fn`` (a padded allocator) with its whole buffer, padding included, NaN."""
    def filled(*a, **kw):
        out = fn(*a, **kw)
        out.as_strided((out.untyped_storage().nbytes() // out.element_size(),), (1,)).fill_(float("nan"))
        return out
    return filled


@pytest.mark.parametrize("schedule", [[101, 3, 5, 1], [0, 30, 20, 20]])
def test_padded_layout_never_lets_padding_into_tokens(monkeypatch, schedule) -> None:
    """The CUDA layout (GEMMs over padded tokens, widened views) forced onto the CPU, its padding
    NaN: the logits equal the plain CPU path's, so no padding reaches a real token."""
    monkeypatch.setenv("STMSEARCH_SCAN", "reference")  # the CPU scan (a GPU machine may name triton)
    torch.manual_seed(0)
    model = stmsearch.create_model("vim_tiny", depth=4).eval()
    stmsearch.apply(model, stmsearch.MergeConfig(method="stm", schedule=schedule, runs=3))  # 101: runs 3's capacity
    img = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        ref = model(img)
    calls = []
    monkeypatch.setattr(vim, "_padded_layout", lambda x: calls.append(x.shape) or True)
    monkeypatch.setattr(vim, "padded_empty", _nan_filled(layout.padded_empty))
    monkeypatch.setattr(vim, "padded_tokens", _nan_filled(layout.padded_tokens))
    with torch.inference_mode():
        out = model(img)
    assert calls and any(pitch(s[-1]) != s[-1] for s in calls)  # odd lengths went through it
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_gemms_run_over_the_padding_and_return_only_tokens(monkeypatch) -> None:
    """_matmul and _out_proj on padded inputs whose padding is NaN: widened GEMMs, real tokens exact."""
    monkeypatch.setattr(vim, "_padded_layout", lambda x: True)
    torch.manual_seed(0)
    x = padded_empty(2, 6, 13)
    widened(x, pitch(13)).fill_(float("nan"))
    x.copy_(torch.randn(2, 6, 13))
    w = torch.randn(5, 6)
    out = vim._matmul(w, x)
    assert out.shape == (2, 5, 13) and out.stride(1) == pitch(13)
    assert torch.isnan(widened(out, pitch(13))[..., 13:]).all()  # the GEMM ran over the padding
    torch.testing.assert_close(out, torch.einsum("oi,bil->bol", w, x))
    y = vim._out_proj(x, w.t())
    assert y.shape == (2, 13, 5) and y.stride(0) == pitch(13) * 5
    torch.testing.assert_close(y, torch.einsum("bil,io->blo", x, w.t()))


def test_out_proj_over_token_major_y_is_one_gemm_over_all_tokens(monkeypatch) -> None:
    """y (B, C, L) laid out token-major (the triton scan's CUDA output): one (B*L, C) mm, no bmm."""
    torch.manual_seed(0)
    y = torch.randn(3, 13, 6).transpose(1, 2)  # (B, C, L) view of a contiguous (B, L, C)
    w = torch.randn(6, 5)
    calls = []
    real_mm, real_bmm = torch.mm, torch.bmm
    monkeypatch.setattr(torch, "mm", lambda *a, **k: calls.append("mm") or real_mm(*a, **k))
    monkeypatch.setattr(torch, "bmm", lambda *a, **k: calls.append("bmm") or real_bmm(*a, **k))
    out = vim._out_proj(y, w)
    assert calls == ["mm"] and out.shape == (3, 13, 5)
    torch.testing.assert_close(out, torch.einsum("bil,io->blo", y, w))
    calls.clear()
    vim._out_proj(y.contiguous(), w)  # channel-major: per image
    assert calls == ["bmm"]
