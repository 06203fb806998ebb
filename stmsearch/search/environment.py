"""Where a trial ran: hardware and software, recorded with every trial."""
from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache
from importlib import metadata

# Looked up by distribution metadata, never imported (mamba_ssm must not load on CPU workers).
PACKAGES = ("stmsearch", "torch", "numpy", "optuna", "ray", "pydantic", "fvcore", "mamba-ssm", "causal-conv1d",
            "triton")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=None)
def software() -> dict:
    """Versions of Python and the packages that shape a measurement."""
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    torch = sys.modules.get("torch")
    if torch is not None:
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    out["scan_backend"] = os.environ.get("STMSEARCH_SCAN", "auto")
    return out


def hardware(device: str | None) -> dict:
    """The measuring device (as evaluate() reported it), CPU, GPU and host."""
    out = {"device": device, "host": platform.node(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
           "platform": platform.platform()}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        idx = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        out.update(gpu=props.name, gpu_memory_mb=props.total_memory // 2**20, gpu_count=torch.cuda.device_count(),
                   cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    return out
