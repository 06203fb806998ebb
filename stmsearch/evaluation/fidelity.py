"""Fidelity of token reduction on the trained proxies, image by image.

What ``bench/bench_fidelity.py`` and its test share: a proxy with a range of its held-out
images, the flat schedule every method is given at a token reduction, per-image correctness of
a merge config, and the exact paired sign test between two methods' correctness.

Every method gets the same schedule at a level (:func:`shared_schedule`): the constant schedule
from layer :data:`START` that :func:`~stmsearch.merging.schedules.for_reduction` finds for the
method of largest capacity (pruning, no window), so the schedule reaches the level wherever any
method can. A config whose capacity cannot carry it runs its own closest schedule instead and
the cell says so (``shared: False``, with the reduction it actually ran).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ..merging.config import ConfigError, MergeConfig
from ..merging.schedules import for_reduction
from ..merging.patch import apply
from ..models import create_model
from ..models.vim import VisionMamba
from .datasets import PROXY_MODELS, load_dataset
from .stats import sign_test

PROXY_DATASETS = {model: dataset for dataset, model in PROXY_MODELS.items()}  # proxy -> its held-out set
START = 2  # first merging layer: the first two layers see every token, as in the proxies' earlier figures
REFERENCE = {"method": "prune", "window": 0}  # the largest capacity: its schedule reaches any level
LEVELS = (0.1, 0.2, 0.3, 0.4)  # the report's token reductions
BASELINES = {"tome": {"method": "tome"}, "prune": {"method": "prune"},
             **{f"random s{s}": {"method": "random", "seed": s} for s in range(3)}}  # the report's other rows


def parse_range(text: str, total: int = 1000) -> range:
    """``"0:500"`` -> range(0, 500) of held-out image indices; a clear error otherwise."""
    try:
        lo, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"--images must be START:STOP (e.g. 0:500), got {text!r}") from None
    if not 0 <= lo < hi <= total:
        raise ValueError(f"--images {text}: need 0 <= START < STOP <= {total}")
    return range(lo, hi)


def parse_levels(text: str) -> tuple[float, ...]:
    """``"0.1,0.4"`` -> (0.1, 0.4): token reductions, each a fraction in (0, 1); a clear error otherwise."""
    try:
        levels = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--levels must be comma-separated fractions (e.g. 0.1,0.4), got {text!r}") from None
    if not all(0 < t < 1 for t in levels):
        raise ValueError(f"--levels {text}: each token reduction must lie between 0 and 1")
    return levels


@dataclass
class Proxy:
    """A trained proxy and a range of its held-out images (normalised, on the model's device)."""

    name: str
    dataset: str
    model: VisionMamba
    images: torch.Tensor
    labels: torch.Tensor
    indices: range

    @property
    def depth(self) -> int:
        return len(self.model.layers)

    @property
    def tokens(self) -> int:
        return self.model.pos_embed.shape[1]


def load_proxy(name: str, indices: range, device: str | torch.device = "cpu", layout: int = 0) -> Proxy:
    """The proxy ``name`` with its shipped weights and held-out images ``indices`` on ``device``;
    ``layout`` > 0: the same digits in another layout of the dataset (``mnist5k-clutter:K``)."""
    if name not in PROXY_DATASETS:
        raise ValueError(f"unknown proxy {name!r} (allowed: {', '.join(PROXY_DATASETS)})")
    dataset = PROXY_DATASETS[name] + (f":{layout}" if layout else "")
    data = load_dataset(dataset, "val", device, limit=indices.stop)
    if len(data) < indices.stop:
        raise ValueError(f"{dataset}: holds {len(data)} held-out images, asked for {indices.start}:{indices.stop}")
    images = data.normalize(data.images[indices.start:indices.stop])
    model = create_model(name).to(device).eval()
    return Proxy(name, dataset, model, images, data.labels[indices.start:indices.stop], indices)


@torch.inference_mode()
def correct(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """(N,) bool on the CPU: whether ``model`` classifies each image right (a non-finite logit is wrong)."""
    out = []
    for i in range(0, len(images), batch):
        logits = model(images[i:i + batch])
        ok = (logits.argmax(-1) == labels[i:i + batch]) & torch.isfinite(logits).all(-1)
        out.append(ok)
    return torch.cat(out).cpu()


def shared_schedule(target: float, depth: int, tokens: int = 197):
    """The constant schedule from :data:`START` closest to ``target`` that every method is given."""
    return for_reduction(MergeConfig(**REFERENCE), target, depth, tokens, start=START).schedule


def config_at(overrides: Mapping[str, Any], target: float, depth: int, tokens: int = 197) -> tuple[MergeConfig, bool]:
    """``overrides`` with the shared schedule at ``target`` and True; if its capacity cannot carry
    that, its own closest schedule from :data:`START` and False. Raises ConfigError if none fits."""
    cfg = MergeConfig(**overrides, schedule=shared_schedule(target, depth, tokens))
    try:
        cfg.validate_for(depth, tokens)
        return cfg, True
    except ConfigError:
        return for_reduction(MergeConfig(**overrides), target, depth, tokens, start=START), False


def evaluate_cell(proxy: Proxy, overrides: Mapping[str, Any], target: float, batch: int = 500) -> dict:
    """One method at one level: accuracy, per-image correctness and the schedule it ran."""
    cfg, shared = config_at(overrides, target, proxy.depth, proxy.tokens)
    t0 = time.perf_counter()
    apply(proxy.model, cfg)
    try:
        ok = correct(proxy.model, proxy.images, proxy.labels, batch)
    finally:
        apply(proxy.model, None)
    return {"target": target, "reduction": cfg.token_reduction(proxy.depth, proxy.tokens), "shared": shared,
            "schedule": cfg.validate_for(proxy.depth, proxy.tokens), "accuracy": ok.float().mean().item(),
            "correct": ok, "seconds": time.perf_counter() - t0}


def paired(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Sign test of A against B on the same images: ``wins`` = images only A gets right,
    ``losses`` = images only B gets right, ``p`` = exact two-sided p-value."""
    if a.shape != b.shape:
        raise ValueError(f"paired: correctness of different image sets ({tuple(a.shape)} vs {tuple(b.shape)})")
    wins, losses = int((a & ~b).sum()), int((~a & b).sum())
    return {"wins": wins, "losses": losses, "p": sign_test(wins, losses)}


def paired_by_digit(a: torch.Tensor, b: torch.Tensor, digits: int) -> dict:
    """Sign test of A against B where the images are ``len(a) // digits`` layouts of the same
    ``digits`` digits, layout-major (image k * digits + i is digit i in layout k). Canvases of one
    digit are not independent (a digit hard for one method is hard in every layout), so the unit is
    the digit: ``wins`` = digits whose canvases only A gets right outnumber those only B gets right,
    ``losses`` the reverse, ties carry no information; ``p`` = exact two-sided sign test over them."""
    if a.shape != b.shape or a.numel() % digits:
        raise ValueError(f"paired_by_digit: need two equal sets of layouts of {digits} digits, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    net = ((a & ~b).int() - (~a & b).int()).view(-1, digits).sum(0)
    wins, losses = int((net > 0).sum()), int((net < 0).sum())
    return {"wins": wins, "losses": losses, "p": sign_test(wins, losses)}


def level_table(rows: Mapping[str, list[str]], levels) -> str:
    """A Markdown table: one row per name, one column per token reduction, the given cell texts."""
    lines = ["| row | " + " | ".join(f"-{round(t * 100)}%" for t in levels) + " |", "|---|" + "---|" * len(levels)]
    return "\n".join(lines + [f"| {name} | " + " | ".join(parts) + " |" for name, parts in rows.items()])


def accuracy_text(cell: Mapping[str, Any]) -> str:
    """A cell's accuracy, marked * where it could not run the shared schedule."""
    return f"{cell['accuracy']:.3f}" + ("" if cell["shared"] else "*")


def bits(ok: torch.Tensor) -> str:
    """Per-image correctness as a '0'/'1' string (compact in JSON, exact for later sign tests)."""
    return "".join("1" if v else "0" for v in ok.tolist())
