"""ViM models: registry, sizes, checkpoint loading."""
from __future__ import annotations

import warnings
from pathlib import Path

from . import zoo
from .checkpoint import CheckpointError, load_checkpoint
from .hub import hub_download
from .probe import attach
from .registry import list_models, model_constructor, register_model
from .vim import VimConfig, VisionMamba


def _weights(name: str, pretrained: bool | None, overridden: bool) -> Path | None:
    """The published weights ``pretrained`` asks for (see :func:`create_model`), or None."""
    if pretrained is False:
        return None
    cfg = zoo.PRETRAINED.get(name, zoo.Pretrained())
    if pretrained is None:  # shipped weights only, and only for the architecture they fit
        if cfg.shipped is None or overridden:
            return None
        if not cfg.shipped.is_file():
            # not an error: timing, FLOPs and tests need no weights; but say so
            warnings.warn(f"{name}: default checkpoint {cfg.shipped} not found, so its weights are random "
                          f"(`stmsearch train-proxy` writes it)", stacklevel=3)
            return None
        return cfg.shipped
    if cfg.shipped is not None:
        return cfg.shipped
    if cfg.hub is not None:
        return hub_download(cfg.hub)
    raise CheckpointError(f"{name}: no published weights (pretrained=True); pass checkpoint=PATH")


def create_model(name: str, checkpoint: str | Path | None = None, pretrained: bool | None = None,
                 ema: bool = False, probe: str | Path | None = None, **overrides) -> VisionMamba:
    """Build a registered model in eval mode, loading weights strictly (never a partial load).

    Weights come from ``checkpoint`` (a local file) when given, else from ``pretrained``:
    ``None`` (default) loads the weights shipped in the package (``vim_proxy``'s) when the
    model has them and no ``overrides`` change its shape, and never uses the network;
    ``True`` loads the model's published weights: the shipped file, or the official file on the
    Hugging Face Hub (``vim_tiny``/``vim_small``/``vim_base``, through huggingface_hub's cache;
    needs ``stmsearch[hub]``); ``False`` loads none. ``ema=True`` loads a training checkpoint's
    ``model_ema`` entry instead of ``model``. ``overrides`` change :class:`VimConfig` fields.
    Shipped weights come with their saliency probe where one is shipped (``importance_source``);
    ``probe`` (a probe file fitted to these weights, :mod:`stmsearch.models.probe`) attaches that one instead.
    """
    model = model_constructor(name)(**overrides)
    if checkpoint is None:
        checkpoint = _weights(name, pretrained, bool(overrides))
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, key="model_ema" if ema else "model")
        shipped = zoo.PRETRAINED.get(name, zoo.Pretrained())
        if shipped.shipped is not None and Path(checkpoint).resolve() == shipped.shipped.resolve() \
                and shipped.probe is not None and shipped.probe.is_file():
            attach(model, shipped.probe)  # the probe fits these weights only
    elif ema:
        raise ValueError(f"{name}: ema=True needs weights to load: pass checkpoint=PATH or pretrained=True")
    if probe is not None:
        attach(model, probe)
    return model.eval()


__all__ = ["create_model", "list_models", "register_model", "load_checkpoint", "CheckpointError",
           "VimConfig", "VisionMamba"]
