"""ViM models: registry, sizes, checkpoint loading."""
from __future__ import annotations

import warnings
from pathlib import Path

from . import zoo
from .checkpoint import CheckpointError, load_checkpoint
from .registry import list_models, model_constructor, register_model
from .vim import VimConfig, VisionMamba


def create_model(name: str, checkpoint: str | Path | None = None, pretrained: bool = True,
                 **overrides) -> VisionMamba:
    """Build a registered model in eval mode, optionally loading ``checkpoint`` strictly.

    With no ``checkpoint``, models that have default weights (``zoo.DEFAULT_CHECKPOINTS``) load
    them unless ``pretrained=False``; while that file is absent the model keeps its random
    initialisation and a warning says so. ``overrides`` change :class:`VimConfig` fields.
    """
    model = model_constructor(name)(**overrides)
    default = zoo.DEFAULT_CHECKPOINTS.get(name) if checkpoint is None and pretrained and not overrides else None
    if default is not None:
        if default.is_file():
            checkpoint = default
        else:
            # not an error: timing, FLOPs and tests need no weights; but say so, once per call site
            warnings.warn(f"{name}: default checkpoint {default} not found, so its weights are random "
                          f"(`stmsearch train-proxy` writes it)", stacklevel=2)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()


__all__ = ["create_model", "list_models", "register_model", "load_checkpoint", "CheckpointError",
           "VimConfig", "VisionMamba"]
