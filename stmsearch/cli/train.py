"""``stmsearch train-proxy``: retrain an embedded proxy and save its checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from ..models.zoo import default_checkpoint
from ..evaluation.datasets import PROXY_MODELS
from ..training import train_proxy


@click.command("train-proxy")
@click.option("--dataset", type=click.Choice(list(PROXY_MODELS)), default="mnist5k", show_default=True,
              help="mnist5k trains vim_proxy, mnist5k-clutter trains vim_proxy_clutter")
@click.option("--epochs", default=60, show_default=True)
@click.option("--batch-size", default=128, show_default=True)
@click.option("--lr", default=2e-3, show_default=True)
@click.option("--shift", type=int, default=None, help="random shift in pixels [default: one patch]")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="checkpoint file [default: the model's default checkpoint in the package]")
def train_proxy_cmd(dataset: str, epochs: int, batch_size: int, lr: float, shift: int | None, seed: int,
                    device: str, out: Path | None) -> None:
    """Train the embedded proxy of DATASET from scratch and save its checkpoint."""
    model, summary = train_proxy(epochs, batch_size, lr, shift=shift, seed=seed, device=device, dataset=dataset)
    out = out or default_checkpoint(summary["model"])
    out.parent.mkdir(parents=True, exist_ok=True)
    # fp32 weights in the official {"model": state_dict} layout
    torch.save({"model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}}, out)
    click.echo(json.dumps({**summary, "checkpoint": str(out), "bytes": out.stat().st_size}))
