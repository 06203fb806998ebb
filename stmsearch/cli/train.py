"""``stmsearch train-proxy``: retrain an embedded proxy and save its checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from ..models.zoo import PROXY_CHECKPOINT
from ..training import train_proxy


@click.command("train-proxy")
@click.option("--epochs", default=60, show_default=True)
@click.option("--batch-size", default=128, show_default=True)
@click.option("--lr", default=2e-3, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=PROXY_CHECKPOINT, show_default=True)
def train_proxy_cmd(epochs: int, batch_size: int, lr: float, seed: int, device: str, out: Path) -> None:
    """Train the embedded vim_proxy on mnist5k and save its checkpoint."""
    model, summary = train_proxy(epochs, batch_size, lr, seed=seed, device=device)
    out.parent.mkdir(parents=True, exist_ok=True)
    # fp32 weights in the official {"model": state_dict} layout
    torch.save({"model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}}, out)
    click.echo(json.dumps({**summary, "checkpoint": str(out), "bytes": out.stat().st_size}))
