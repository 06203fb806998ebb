"""GPU parity: the same random vim_tiny gives the same logits from every scan backend on CUDA."""
import pytest
import torch

import stmsearch
from stmsearch.ops import mamba_ssm_available

# every test here is also marked ``gpu``, so ``pytest -m gpu`` on a GPU machine runs them with the others
pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")


def _backend_available(backend: str) -> bool:
    if backend == "mamba_ssm":
        return mamba_ssm_available()
    from stmsearch.ops.scan_triton import triton_available
    return triton_available()


def _error_vs_reference(monkeypatch, model, img, backend) -> tuple[float, float]:
    """(relative L2, max abs) error of ``backend``'s fp32 logits against the reference backend's."""
    if not _backend_available(backend):
        pytest.skip(f"{backend} is not importable here (mamba_ssm: install the 'gpu' extra)")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out = {}
    for name in ("reference", backend):
        monkeypatch.setenv("STMSEARCH_SCAN", name)
        with torch.inference_mode():
            out[name] = model(img).double()
    diff = out[backend] - out["reference"]
    return (diff.norm() / out["reference"].norm()).item(), diff.abs().max().item()


@needs_cuda
@pytest.mark.parametrize("backend", ["mamba_ssm", "triton"])
def test_backend_matches_reference_on_vim_tiny(monkeypatch, backend):
    torch.manual_seed(0)
    model = stmsearch.create_model("vim_tiny").cuda()
    rel, max_abs = _error_vs_reference(monkeypatch, model, torch.randn(8, 3, 224, 224, device="cuda"), backend)
    print(f"vim_tiny fp32 logits, {backend} vs reference: relative L2 error {rel:.2e}, max abs {max_abs:.2e}")
    assert rel <= 1e-3


@needs_cuda
@pytest.mark.parametrize("backend", ["mamba_ssm", "triton"])
def test_backend_matches_reference_when_merging(monkeypatch, backend):
    """Merged (variable-length) sequences with size-aware decay: dt_scale through every layout."""
    torch.manual_seed(0)
    model = stmsearch.create_model("vim_tiny", depth=4).cuda()
    stmsearch.apply(model, stmsearch.MergeConfig(method="stm", schedule=[0, 30, 20, 20], size_aware_decay=True))
    rel, _ = _error_vs_reference(monkeypatch, model, torch.randn(4, 3, 224, 224, device="cuda"), backend)
    assert rel <= 1e-3, rel


@needs_cuda
@pytest.mark.parametrize("method", ["stm", "tome", "prune", "random"])
def test_merges_run_on_cuda_in_bf16(method):
    torch.manual_seed(0)
    model = stmsearch.create_model("vim_tiny", depth=4).cuda()
    cfg = stmsearch.MergeConfig(method=method, schedule=[0, 20, 20, 20])
    stmsearch.apply(model, cfg)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(torch.randn(4, 3, 224, 224, device="cuda"))
    assert torch.isfinite(out.float()).all()
    assert [t["tokens"] for t in stmsearch.trace(model)] == [197, 177, 157, 137]


@needs_cuda
@pytest.mark.parametrize("layout", ["token", "channel"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_odd_lengths_run_without_copies(monkeypatch, dtype, layout):
    """At token counts that are no multiple of 8 the scan never copies an input into its layout: token-major
    tensors arrive dense (B and C as views of x_proj's output), channel-major ones keep rows at the padded
    pitch (ops.layout); logits as the reference backend's."""
    from stmsearch.models import vim
    from stmsearch.ops import scan_triton

    copies = []
    name = "dense_token_major" if layout == "token" else "with_pitch"
    original = getattr(scan_triton, name)

    def counting(x, *args):
        out = original(x, *args)
        if out is not x:
            copies.append(tuple(x.shape))
        return out

    monkeypatch.setattr(scan_triton, name, counting)
    monkeypatch.setattr(vim, "CUDA_LAYOUT", layout)
    monkeypatch.setenv("STMSEARCH_SCAN", "triton")
    torch.manual_seed(0)
    model = stmsearch.create_model("vim_tiny", depth=4).cuda().eval()
    # 96, 93, 88, 87 tokens; runs 3, as STM's default 2 lets a layer merge at most 97 of 197
    stmsearch.apply(model, stmsearch.MergeConfig(method="stm", runs=3, schedule=[101, 3, 5, 1]))
    img = torch.randn(4, 3, 224, 224, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        out = model(img).float()
    assert [t["tokens"] for t in stmsearch.trace(model)] == [96, 93, 88, 87]
    assert copies == []
    monkeypatch.setenv("STMSEARCH_SCAN", "reference")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        ref = model(img).float()
    tol = 1e-3 if dtype == "fp32" else 5e-2
    assert ((out - ref).norm() / ref.norm()).item() <= tol
