"""ViM models: registry, sizes, checkpoint loading."""
from __future__ import annotations

from pathlib import Path

from . import zoo
from .checkpoint import CheckpointError, load_checkpoint
from .registry import list_models, model_constructor, register_model
from .vim import VimConfig, VisionMamba


def create_model(name: str, checkpoint: str | Path | None = None, pretrained: bool = True,
                 **overrides) -> VisionMamba:
    """Build a registered model in eval mode, optionally loading ``checkpoint`` strictly.

    With no ``checkpoint``, models that ship default weights (``vim_proxy``) load them
    unless ``pretrained=False``. ``overrides`` change :class:`VimConfig` fields.
    """
    model = model_constructor(name)(**overrides)
    if checkpoint is None and pretrained:
        default = zoo.DEFAULT_CHECKPOINTS.get(name)
        if default is not None and default.is_file() and not overrides:
            checkpoint = default
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()


__all__ = ["create_model", "list_models", "register_model", "load_checkpoint", "CheckpointError",
           "VimConfig", "VisionMamba"]
