"""Search: YAML search spaces, Optuna multi-objective studies in SQL storage, Ray Tune workers.

``load_space`` reads and checks a space; ``run_search`` runs or continues its study.
The study side (and with it Optuna) loads on first use, so the space schema serves scripts
on machines without Optuna (the tabular benchmark's builder on the GPU box).
"""
from __future__ import annotations

import importlib
from typing import Any

from .space import SearchSpace, SpaceError, load_space, parse_space

_LAZY = {"SearchError": ".executor", "SearchResult": ".runner", "run_search": ".runner"}
__all__ = ["SearchError", "SearchResult", "SearchSpace", "SpaceError", "load_space", "parse_space", "run_search"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
