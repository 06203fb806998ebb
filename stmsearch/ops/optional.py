"""Optional compiled dependencies (mamba-ssm, causal-conv1d), imported on first use only."""
from __future__ import annotations

import functools
import importlib
from typing import Any


@functools.lru_cache(maxsize=None)
def optional_attr(module: str, name: str) -> Any | None:
    """``module.name`` if it imports here, else None.

    Any exception counts as absent: besides ImportError, a CUDA build that does not load on
    this machine raises OSError or RuntimeError at import.
    """
    try:
        return getattr(importlib.import_module(module), name)
    except Exception:
        return None
