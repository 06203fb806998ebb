"""The reference scan against a naive step-by-step recurrence, and backend selection."""
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from stmsearch.ops import scan as scan_mod
from stmsearch.ops.scan_reference import selective_scan_reference


def naive_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False):
    """h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t; y_t = C_t . h_t + D x_t, one step at a time (float64)."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, length = u.shape
    h = torch.zeros(batch, dim, A.shape[1], dtype=torch.float64)
    y = torch.zeros(batch, dim, length, dtype=torch.float64)
    order = range(length - 1, -1, -1) if reverse else range(length)
    for t in order:
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * B[:, None, :, t] * u[:, :, t, None]
        y[:, :, t] = (h * C[:, None, :, t]).sum(-1)
    if D is not None:
        y = y + u * D.double()[:, None]
    if z is not None:
        y = y * F.silu(z.double())
    return y


@settings(max_examples=30, deadline=None)
@given(length=st.integers(1, 300), has_d=st.booleans(), has_z=st.booleans(), softplus=st.booleans(),
       reverse=st.booleans(), batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_reference_matches_naive_recurrence(length, has_d, has_z, softplus, reverse, batch, seed):
    g = torch.Generator().manual_seed(seed)
    dim, n = 6, 4
    u = torch.randn(batch, dim, length, generator=g)
    delta = torch.randn(batch, dim, length, generator=g) * 0.5 + (0.0 if softplus else 1.0)
    delta = delta if softplus else delta.abs()
    A = -torch.rand(dim, n, generator=g) * 3
    B, C = torch.randn(batch, n, length, generator=g), torch.randn(batch, n, length, generator=g)
    D = torch.randn(dim, generator=g) if has_d else None
    z = torch.randn(batch, dim, length, generator=g) if has_z else None
    bias = torch.randn(dim, generator=g) * 0.1 if softplus else None
    got = selective_scan_reference(u, delta, A, B, C, D, z, bias, softplus, reverse)
    want = naive_scan(u, delta, A, B, C, D, z, bias, softplus, reverse)
    assert got.shape == want.shape
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_reference_slices_batch_consistently(monkeypatch):
    """Results do not depend on how the CPU batch is sliced."""
    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(5, 8, 33, generator=g), torch.rand(5, 8, 33, generator=g)
    A, B, C = -torch.rand(8, 4, generator=g), torch.randn(5, 4, 33, generator=g), torch.randn(5, 4, 33, generator=g)
    full = selective_scan_reference(u, delta, A, B, C)
    monkeypatch.setattr("stmsearch.ops.scan_reference._CPU_SLICE_ELEMS", 8 * 4 * 33 * 2)
    torch.testing.assert_close(selective_scan_reference(u, delta, A, B, C), full, rtol=0, atol=0)


def test_backend_resolution(monkeypatch):
    monkeypatch.delenv("STMSEARCH_SCAN", raising=False)
    assert scan_mod.resolve_backend("cpu") == "reference"
    monkeypatch.setenv("STMSEARCH_SCAN", "reference")
    assert scan_mod.resolve_backend("cpu") == "reference"
    monkeypatch.setenv("STMSEARCH_SCAN", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        scan_mod.resolve_backend("cpu")
    monkeypatch.setenv("STMSEARCH_SCAN", "mamba_ssm")
    with pytest.raises(RuntimeError, match="CUDA"):
        scan_mod.resolve_backend("cpu")


def test_import_does_not_touch_mamba_ssm():
    import subprocess
    code = ("import sys, torch, stmsearch; m = stmsearch.create_model('vim_proxy', depth=1); "
            "m(torch.randn(1, 1, 28, 28)); "
            "assert not {'mamba_ssm', 'causal_conv1d'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("scaled", [False, True], ids=["plain", "dt_scale"])
def test_forward_only_scan_gets_the_backward_direction_flipped(scaled):
    """The mamba-ssm path's layout logic on the CPU: a scan that only runs forwards (the
    reference called without its reverse flag, as mamba-ssm's kernel is) must reproduce the
    reverse scan, for a backward direction in original order and for one built flipped."""
    g = torch.Generator().manual_seed(3)
    b, d, n, length = 2, 5, 4, 23
    bwd = scan_mod.Direction(torch.randn(b, d, length, generator=g), torch.randn(b, d, length, generator=g) - 1,
                             -torch.rand(d, n, generator=g) - 0.1, torch.randn(b, n, length, generator=g),
                             torch.randn(b, n, length, generator=g), torch.randn(d, generator=g),
                             torch.randn(d, generator=g) * 0.3)
    z = torch.randn(b, d, length, generator=g)
    dt_scale = torch.rand(b, length, generator=g) * 2 + 0.5 if scaled else None

    def forward_only(*args, **kwargs):
        assert "reverse" not in kwargs
        return selective_scan_reference(*args, **kwargs)

    want = scan_mod._one_direction(selective_scan_reference, bwd, z, True, dt_scale)
    as_is = scan_mod._one_direction(forward_only, bwd, z, True, dt_scale)
    pre_flipped = bwd._replace(**{k: getattr(bwd, k).flip(-1) for k in ("u", "delta", "B", "C")})
    built_flipped = scan_mod._one_direction(forward_only, pre_flipped, z, True, dt_scale, flipped=True)
    for got in (as_is, built_flipped):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # a forward scan of the unflipped inputs is a different result: the test can tell
    assert not torch.allclose(scan_mod._one_direction(forward_only, bwd, z, False, dt_scale), want, atol=1e-3)


@pytest.mark.parametrize("config", [None, {"method": "stm"}, {"method": "stm", "weights": "dt", "size_aware_decay": False},
                                    {"method": "stm", "fading": "estimated", "metric": "x"}])
def test_cpu_steps_taken_once_change_nothing(monkeypatch, config):
    """On the CPU a direction carries its step sizes (the softplus taken once, for the scan and a
    merge metric): logits equal those of directions without them (softplus recomputed where used),
    unmerged and merged, with and without size-aware decay."""
    import stmsearch
    from stmsearch.models import vim

    torch.manual_seed(0)
    model = stmsearch.create_model("vim_proxy").eval()
    if config is not None:
        stmsearch.apply(model, stmsearch.MergeConfig(schedule=[0, 0, 12, 0, 8] + [0] * 7, **config))
    images = torch.randn(3, 1, 28, 28)
    steps_seen = []
    original = vim.BiMamba.direction

    def record(self, u, reverse):
        d = original(self, u, reverse)
        steps_seen.append(d.steps is not None)
        return d

    monkeypatch.setattr(vim.BiMamba, "direction", record)
    with torch.no_grad():
        with_steps = model(images)
    assert steps_seen and all(steps_seen)
    monkeypatch.setattr(vim.BiMamba, "direction", lambda self, u, reverse: original(self, u, reverse)._replace(steps=None))
    with torch.no_grad():
        without = model(images)
    torch.testing.assert_close(with_steps, without, rtol=1e-5, atol=1e-5)
