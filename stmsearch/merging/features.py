"""What a merge plan reads at one layer: the similarity features, merge weights and distance fading.

Every quantity here is computed per image, from that image's own tokens and the model's
parameters, so a merged model gives an image the same answer whatever else is in its batch.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .capacity import eligible, layer_runs


@dataclass
class MergeStep:
    """One merging layer as a method's plan function sees it.

    ``state`` is the model's shared merge state: ``cls`` (B,) class-token index per image,
    ``sizes`` (B, T) patches per token, ``rep`` (B, T) grid anchor per token, ``grid`` (side of
    the patch grid) and ``mixer`` (the previous layer's recorded forward direction, or None).
    """

    config: Any  # the MergeConfig
    state: dict
    residual: torch.Tensor  # (B, T, C) residual stream after this block's add
    hidden: torch.Tensor  # (B, T, C) the previous mixer's output
    r: int
    layer: int
    mixer: torch.nn.Module  # this layer's mixer

    @property
    def cls(self) -> torch.Tensor:
        return self.state["cls"]

    @property
    def window(self) -> int:
        return self.config.protect

    @property
    def runs(self) -> int:
        """The longest run this layer merges (``runs``, or pairs on a layer lighter than ``runs_from``)."""
        return layer_runs(self.config.runs, self.config.runs_from, self.r,
                          eligible(self.state["sizes"].shape[1], self.window))

    @property
    def recorded(self) -> Any:
        return self.state["mixer"]

    @functools.cached_property
    def norm(self) -> torch.Tensor:
        """(B, T) the norm of the previous mixer's output (what pruning ranks by; small on empty or
        cluttered background, large on the object). Accumulated in fp32 inside one kernel, not over an
        fp32 copy of a bf16 stream."""
        return torch.linalg.vector_norm(self.hidden, dim=-1, dtype=torch.float32)

    @functools.cached_property
    def importance(self) -> torch.Tensor:
        """(B, T) how much each token carries: the saliency probe's prediction where the config's
        ``importance_source`` resolved to one (``state["probe"]``, :mod:`stmsearch.models.probe`), else
        :attr:`norm`. Kept: `norm` weights and importance-scaled damage both read it in one merge."""
        probe = self.state.get("probe")
        return self.norm if probe is None else probe.saliency(self)


def step_sizes(d: Any) -> torch.Tensor:
    """Positive step sizes (B, D, L) of a recorded direction."""
    if d.steps is not None:
        return d.steps.float()
    delta = d.delta.float()
    return F.softplus(delta if d.delta_bias is None else delta + d.delta_bias[:, None])


def metric_source(step: MergeStep) -> tuple[torch.Tensor, bool, torch.Tensor | None]:
    """The similarity features as recorded: (tensor, channels_first, softplus bias).

    ``channels_first``: the tensor is (B, C, T) (the mixer's layout), else (B, T, C). A bias
    (C,) means the features are pre-activation steps: softplus(tensor + bias) is compared.
    """
    d, name = step.recorded, step.config.metric
    if d is None or name == "hidden":
        return step.residual, False, None
    if name == "x":
        return d.u, True, None
    if name == "B":
        return d.B, True, None
    if d.steps is not None:
        return d.steps, True, None
    bias = d.delta_bias if d.delta_bias is not None else d.delta.new_zeros(d.delta.shape[1])
    return d.delta, True, bias


def metric(step: MergeStep) -> torch.Tensor:
    """(B, T, C) similarity features the config names; the residual where no mixer ran yet."""
    feat, channels_first, bias = metric_source(step)
    if bias is not None:
        feat = step_sizes(step.recorded)
    return feat.transpose(1, 2) if channels_first else feat


def importance(step: MergeStep) -> torch.Tensor:
    """(B, T) :attr:`MergeStep.importance`."""
    return step.importance


def powered(imp: torch.Tensor, power: float) -> torch.Tensor:
    """(B, T) importance ** ``power``, over each image's mean importance first (a factor per image, which
    neither a weighted mean nor a choice of edges within the image sees), so fp32 neither overflows
    nor underflows; ``imp`` itself at power 1."""
    if power == 1:
        return imp
    imp = imp.clamp_min(1e-6)
    return (imp / imp.mean(-1, keepdim=True)).pow(power).clamp(1e-12, 1e12)


def damage_importance(step: MergeStep) -> torch.Tensor | None:
    """(B, T) the importance that scales STM's merge damage (``importance``), raised to
    ``importance_power`` (steeper: faint pairs merge first, more like pruning); None when off."""
    cfg = step.config
    return None if cfg.importance == "none" else powered(importance(step), cfg.importance_power)


def weights(step: MergeStep, dt_weights: Callable | None = None) -> torch.Tensor:
    """(B, T) weight of each token's features in a merged token. ``dt_weights(delta, bias, sizes)``:
    another way to compute the ``dt`` weights from the recorded steps (the GPU's one kernel)."""
    sizes, name = step.state["sizes"], step.config.weights
    if name == "mean":
        return torch.ones_like(sizes)
    if name == "norm":  # Ward's damage divides by w_a + w_b: kept above 0
        return sizes * powered(importance(step).clamp_min(1e-6), step.config.weight_power)
    if name == "dt" and step.recorded is not None:
        d = step.recorded
        if dt_weights is not None:
            return dt_weights(d.delta, d.delta_bias, sizes)
        return sizes * step_sizes(d).mean(1)
    return sizes


def weights_or_none(step: MergeStep) -> torch.Tensor | None:
    """:func:`weights`, or None where they are all 1 (plans and kernels then skip them)."""
    return None if step.config.weights == "mean" else weights(step)


def _decay(dt: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Mean per-step decay exp(dt * A) over channels and states; dt (..., D), A (D, N) -> (...)."""
    return torch.exp(dt.unsqueeze(-1) * a).mean((-2, -1))


def fading(step: MergeStep, mean_decay: Callable | None = None) -> float | torch.Tensor | None:
    """Per-step decay gamma for distance fading: a float, a tensor of one or (B,) per image, or None.

    ``estimated``: each image's mean step on the previous layer, softplus of the mean
    pre-activation over its tokens (one (B, D) reduction, no pass over every step); at the
    first layer, and for ``layer``, the zero-input step of this layer's own parameters.
    ``mean_decay(delta, bias, A)``: another way to compute the estimated one (the GPU's one kernel).
    """
    cfg = step.config
    if cfg.fading == "none":
        return None
    if cfg.fading == "fixed":  # a float: a host-to-device copy of it would stall the GPU queue every layer
        return cfg.gamma
    d = step.recorded
    if cfg.fading == "layer" or d is None:
        m = step.mixer
        return _decay(F.softplus(m.dt_proj.bias.float()), -torch.exp(m.A_log.float()))
    if mean_decay is not None:
        return mean_decay(d.delta, d.delta_bias, d.A)
    mean = d.delta.float().mean(-1)
    return _decay(F.softplus(mean if d.delta_bias is None else mean + d.delta_bias), d.A)


def records(cfg: Any) -> bool:
    """Whether the mixers must keep their forward direction for the next layer's features."""
    return cfg.metric != "hidden" or cfg.fading == "estimated" or cfg.weights == "dt"
