"""Loading checkpoints strictly: a bare state dict, or a training checkpoint holding one.

Official hustvl/Vim files are DeiT-style training checkpoints, ``{"model", "optimizer",
"lr_scheduler", "epoch", "model_ema", "scaler", "args"}`` with ``args`` an
``argparse.Namespace``. They are read with ``torch.load(weights_only=True)``, allowing
``argparse.Namespace`` for that one load only; anything else that is not plain data (a
class or function a pickle would call) is still refused without being run.
"""
from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

import torch
import torch.nn as nn

# Beyond torch's weights-only types: what DeiT-style training scripts pickle besides tensors.
# A Namespace is rebuilt from a dict of already-unpickled (so already-allowed) values: it runs no code.
TRAINING_GLOBALS = (argparse.Namespace,)
STATE_KEYS = ("model", "model_ema")  # where a training checkpoint keeps weights


class CheckpointError(ValueError):
    """A checkpoint file does not match the model it is loaded into."""


def _reason(exc: Exception) -> str:
    """One line from torch's (multi-line) unpickling error: the refused global when there is one."""
    text = str(exc)
    found = re.search(r"WeightsUnpickler error: (.*?)(?: Please use|\n|$)", text)
    return found.group(1).strip() if found else (text.strip().splitlines() or [type(exc).__name__])[0]


def read_checkpoint(path: str | Path) -> object:
    """The object stored at ``path``, unpickled weights-only (plus :data:`TRAINING_GLOBALS`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    allowed = torch.serialization.get_safe_globals()
    extra = [g for g in TRAINING_GLOBALS if g not in allowed]  # leave a caller's own allow-list as it was
    try:
        with torch.serialization.safe_globals(extra):  # scoped to this load, not process-wide
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, refused globals
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({_reason(exc)})") from exc


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_module(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix DistributedDataParallel (and timm's ModelEmaV2) put on every key."""
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def read_state_dict(path: str | Path, key: str = "model") -> dict[str, torch.Tensor]:
    """The state dict stored at ``path``: the file's ``key`` entry, or the file itself if it is one.

    ``key`` is ``"model"`` (a training checkpoint's weights; a bare state dict also loads) or
    ``"model_ema"`` (its exponential moving average, which must be present).
    """
    if key not in STATE_KEYS:
        raise ValueError(f"key must be one of {STATE_KEYS}, got {key!r}")
    obj = read_checkpoint(path)
    if isinstance(obj, dict) and key in obj:
        obj = obj[key]
        where = f"{path}: '{key}'"
    elif key == "model" and _is_state_dict(obj):
        where = str(path)
    else:
        keys = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: no '{key}' entry holding a state dict (found: {keys or 'an empty dict'})")
    if not _is_state_dict(obj):
        raise CheckpointError(f"{where} is not a state dict of tensors (got {type(obj).__name__})")
    return _strip_module(obj)


def _first(items: list[str], n: int = 5) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def check_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming the first missing, unexpected or mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch: {_first(shapes, 3)}")
    if problems:
        raise CheckpointError(f"{source} does not match {type(model).__name__}: " + "; ".join(problems))
    broken = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"{source}: non-finite weights (NaN or inf) in {_first(broken)}")


def load_checkpoint(model: nn.Module, path: str | Path, key: str = "model") -> nn.Module:
    """Load ``path`` (its ``key`` entry, see :func:`read_state_dict`) into ``model`` strictly."""
    sd = read_state_dict(path, key)
    check_state_dict(model, sd, source=str(path) if key == "model" else f"{path} ({key})")
    model.load_state_dict(sd, strict=True)
    return model


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, for manifests."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
