"""Registered ViM sizes and their published weights. Adding a size is one decorated function."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .hub import HubFile
from .registry import register_model
from .vim import VimConfig, VisionMamba

WEIGHTS = Path(__file__).with_name("weights")
PROXY_CHECKPOINT = WEIGHTS / "vim_proxy.pt"
CLUTTER_PROXY_CHECKPOINT = WEIGHTS / "vim_proxy_clutter.pt"

# The CPU proxy: ImageNet's 197-token sequence (196 patches of 2x2 pixels + class token) on
# 28x28 digits, sized so a 1000-digit pass fits the 2-core budget (see README). d_state 4
# rather than 8: the scan's (token, channel, state) work dominates there, and the same code
# measured 0.69x the time of d_state 8 per forward; it trains to 98.5% (d_state 8: 98.1%).
PROXY = VimConfig(embed_dim=64, depth=12, img_size=28, patch_size=2, in_chans=1,
                  num_classes=10, d_state=4)

# The harder proxy, for mnist5k-clutter: 56x56 canvases in 4x4 patches, again 196 + 1 tokens.
# PROXY's width and mixer with 16 layers rather than 12 (more layers for schedules, as ViM has
# 24): bench/bench_proxy_size.py measured 1.33-1.35x PROXY's CPU time (about 17.5 s per 1000
# held-out images; D=80 x 16 layers measured 1.67x, about 22 s, too close to the budget).
CLUTTER_PROXY = replace(PROXY, img_size=56, patch_size=4, depth=16)


@dataclass(frozen=True)
class Pretrained:
    """Where a model's published weights are (timm's ``pretrained_cfg``).

    ``shipped``: a file inside the package, loaded by default. ``hub``: the official file on the
    Hugging Face Hub, loaded only with ``create_model(name, pretrained=True)``. ``probe``: a saliency
    probe fitted to the shipped weights, attached whenever they are loaded.
    """

    shipped: Path | None = None
    hub: HubFile | None = None
    probe: Path | None = None  # a saliency probe fitted to the shipped weights (stmsearch.models.probe)


PRETRAINED: dict[str, Pretrained] = {}


def pretrained(cfg: Pretrained) -> Callable[[Callable], Callable]:
    """Decorator: record ``cfg`` as the published weights of the model function below it."""
    def record(fn: Callable) -> Callable:
        PRETRAINED[fn.__name__] = cfg
        return fn
    return record


def _build(cfg: VimConfig, **overrides) -> VisionMamba:
    return VisionMamba(replace(cfg, **overrides))


@register_model
@pretrained(Pretrained(hub=HubFile("hustvl/Vim-tiny-midclstok", "vim_t_midclstok_76p1acc.pth")))
def vim_tiny(**overrides) -> VisionMamba:
    """ViM-Ti: D=192, 24 layers (7.15M params)."""
    return _build(VimConfig(embed_dim=192), **overrides)


@register_model
@pretrained(Pretrained(hub=HubFile("hustvl/Vim-small-midclstok", "vim_s_midclstok_80p5acc.pth")))
def vim_small(**overrides) -> VisionMamba:
    """ViM-S: D=384, 24 layers (25.8M params)."""
    return _build(VimConfig(embed_dim=384), **overrides)


@register_model
@pretrained(Pretrained(hub=HubFile("hustvl/Vim-base-midclstok", "vim_b_midclstok_81p9acc.pth")))
def vim_base(**overrides) -> VisionMamba:
    """ViM-B: D=768, 24 layers (97.6M params)."""
    return _build(VimConfig(embed_dim=768), **overrides)


@register_model
@pretrained(Pretrained(shipped=PROXY_CHECKPOINT, probe=WEIGHTS / "vim_proxy.probe.pt"))
def vim_proxy(**overrides) -> VisionMamba:
    """The embedded CPU proxy for 28x28 grey digits (197 tokens); see ``PROXY``."""
    return _build(PROXY, **overrides)


@register_model
@pretrained(Pretrained(shipped=CLUTTER_PROXY_CHECKPOINT, probe=WEIGHTS / "vim_proxy_clutter.probe.pt"))
def vim_proxy_clutter(**overrides) -> VisionMamba:
    """The CPU proxy for 56x56 cluttered digits (197 tokens); see ``CLUTTER_PROXY``."""
    return _build(CLUTTER_PROXY, **overrides)


def default_checkpoint(name: str) -> Path | None:
    """The weights file shipped for ``name`` (what ``create_model(name)`` loads when given none)."""
    cfg = PRETRAINED.get(name)
    return cfg.shipped if cfg is not None else None
