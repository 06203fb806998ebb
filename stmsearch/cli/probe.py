"""``stmsearch fit-probe``: fit a model's saliency probe (``importance_source: probe``) and save it."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..evaluation.api import resolve_device
from ..merging import load_config
from ..evaluation.saliency import compress_on, fit_on
from ..models.probe import ProbeError, load
from ..models import create_model, zoo
from .errors import user_errors, writable_dir


@click.command("fit-probe")
@click.argument("model_name", metavar="MODEL")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), help="weights [default: the shipped ones]")
@click.option("--dataset", required=True, help="training images to fit on (its train split), e.g. mnist5k-clutter")
@click.option("--images", default=1000, show_default=True, help="images to fit on")
@click.option("--holdout", default=300, show_default=True, help="more images, kept out of the fit, for its R^2")
@click.option("--level", default=0.4, show_default=True,
              help="token reduction of the path the saliency is read along (STM at its defaults, constant from layer 2)")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="a merge config YAML whose path to read along instead of --level's")
@click.option("--hidden", type=click.IntRange(1), default=None,
              help="the MLP's width [default: 64]; with --from: narrow that probe to this many units, distilled "
                   "on --compress-images training images (forward passes only)")
@click.option("--steps", default=3000, show_default=True, help="Adam steps per layer")
@click.option("--batch", default=1300, show_default=True, help="images per backward (GPU memory)")
@click.option("--rank", type=click.IntRange(1), default=None,
              help="then compress the probe's first layer to this rank, distilled on --compress-images training "
                   "images (forward passes only)")
@click.option("--from", "source", type=click.Path(exists=True, dir_okay=False),
              help="with --rank or --hidden: make this probe file smaller instead of fitting one (no backward passes)")
@click.option("--compress-images", default=300, show_default=True,
              help="training images --rank (and --hidden with --from) distil on")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="probe file [default: the model's shipped probe, when its shipped weights are used]")
def fit_probe_cmd(model_name: str, checkpoint: str | None, dataset: str, images: int, holdout: int, level: float,
                  config_file: str | None, hidden: int | None, steps: int, batch: int, rank: int | None, source: str | None,
                  compress_images: int, seed: int, device: str, out: Path | None) -> None:
    """Fit MODEL's saliency probe on DATASET's training images: one backward per merging layer gives each
    token's Fisher saliency, and a small MLP per layer learns it from the merge step's features. With
    --rank, its first layer is then made low-rank; --from P --hidden H narrows an existing probe P to H units
    (either is cheaper at every merge)."""
    with user_errors(ProbeError, ValueError):
        if source and rank is None and hidden is None:
            raise click.UsageError("--from needs --rank or --hidden (it makes an existing probe smaller)")
        shipped = zoo.PRETRAINED.get(model_name, zoo.Pretrained()).probe
        if out is None:
            if checkpoint is not None or shipped is None:
                raise click.UsageError("--out is required unless the model's shipped weights are used")
            out = shipped
        writable_dir(out.parent)
        model = create_model(model_name, checkpoint).to(resolve_device(device))
        config = load_config(config_file) if config_file else None
        if source:
            probe = load(source)
        else:
            probe = fit_on(model, dataset, images, holdout, level, config, hidden=hidden or 64, steps=steps, seed=seed,
                           batch=batch, log=lambda s: click.echo(s, err=True))
            probe.meta.update(model=model_name, checkpoint=checkpoint)
        narrow = hidden if source else None
        if rank is not None or narrow is not None:
            probe = compress_on(model, probe, dataset, rank, compress_images, level, config, seed=seed, hidden=narrow)
        probe.save(out)
    keys = ("heldout_r2", "seconds", "rank", "narrowed_from", "teacher_r2")
    summary = {k: probe.meta.get(k) for k in keys if k in probe.meta}
    click.echo(json.dumps({"probe": str(out), "layers": list(probe.layers), **summary,
                           "macs_per_token": probe.macs_per_token, "bytes": out.stat().st_size}))
