"""GPU parity: the same random vim_tiny gives the same logits from every scan backend on CUDA."""
import pytest
import torch

import stmsearch
from stmsearch.ops import mamba_ssm_available

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")


@needs_cuda
@pytest.mark.skipif(not mamba_ssm_available(), reason="mamba_ssm is not importable (install the 'gpu' extra)")
def test_mamba_ssm_matches_reference_on_vim_tiny(monkeypatch):
    torch.manual_seed(0)
    model = stmsearch.create_model("vim_tiny").cuda()
    img = torch.randn(8, 3, 224, 224, device="cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out = {}
    for backend in ("reference", "mamba_ssm"):
        monkeypatch.setenv("STMSEARCH_SCAN", backend)
        with torch.inference_mode():
            out[backend] = model(img).double()
    rel = ((out["mamba_ssm"] - out["reference"]).norm() / out["reference"].norm()).item()
    print(f"vim_tiny fp32 logits, mamba_ssm vs reference: relative L2 error {rel:.2e}, "
          f"max abs {(out['mamba_ssm'] - out['reference']).abs().max().item():.2e}")
    assert rel <= 1e-3


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
