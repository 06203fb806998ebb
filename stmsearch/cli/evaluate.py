"""``stmsearch eval`` and ``stmsearch profile``: one model + merge config, measured here."""
from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from ..evaluation.datasets import DatasetError
from ..merging import ConfigError, load_config
from ..models import CheckpointError
from ..objectives import fmt

DEVICE = click.Choice(["auto", "cpu", "cuda"])
_ERRORS = (ConfigError, CheckpointError, DatasetError, ValueError, RuntimeError, FileNotFoundError)


def _run(as_json: bool, title: str, config_path: str | None, **kwargs) -> None:
    """Call ``evaluate`` and print its metrics; input errors become clean CLI errors."""
    from ..evaluation.api import evaluate  # fvcore and the models load only when a command runs

    try:
        metrics = evaluate(config=load_config(config_path) if config_path else None, **kwargs)
    except _ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(metrics))
    else:
        Console().print(metrics_table(metrics, title))


def metrics_table(metrics: dict, title: str) -> Table:
    """The metrics as a two-column rich table."""
    table = Table(title=title, show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in metrics.items():
        table.add_row(key, fmt(key, value) if value is not None else "n/a (not measured on this device)")
    return table


def _common(fn):
    """Options both commands share."""
    for option in reversed([
        click.option("--model", "model_name", required=True, help="Registered model, e.g. vim_tiny or vim_proxy."),
        click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False),
                     help="Weights to load (default: the model's shipped weights, if any)."),
        click.option("--probe", type=click.Path(exists=True, dir_okay=False),
                     help="Saliency probe fitted to these weights (stmsearch fit-probe; default: the shipped one "
                          "with shipped weights, none otherwise)."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="Merge config file (YAML/JSON); default: no token reduction."),
        click.option("--device", type=DEVICE, default="auto", show_default=True),
        click.option("--bf16", is_flag=True, help="bf16 autocast."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
    ]):
        fn = option(fn)
    return fn


@click.command("eval")
@_common
@click.option("--dataset", required=True,
              help="mnist5k, imagefolder:PATH or imagenet-val:PATH[?devkit=DIR|labels=FILE] (val split).")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate the first N images (stratified).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--skip-bad-images", is_flag=True,
              help="Leave out image files that cannot be decoded (reported as 'skipped') instead of failing.")
def eval_cmd(model_name, checkpoint, probe, config_path, device, bf16, as_json, dataset, limit, batch_size,
             skip_bad_images):
    """Top-1 accuracy of a model (and merge config) on real images."""
    _run(as_json, f"eval {model_name} on {dataset}", config_path, model_name=model_name, checkpoint=checkpoint,
         probe=probe, dataset=dataset, limit=limit, device=device, batch_size=batch_size,
         measure=("accuracy",), bf16=bf16, progress=True, skip_bad_images=skip_bad_images)


@click.command("profile")
@_common
@click.option("--dataset", help="Feed real images from this dataset (default: random inputs).")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Throughput batch size [default: 256 on a GPU, 64 on the CPU].")
@click.option("--runs", type=click.IntRange(min=1), help="Timed runs [default: 5 on a GPU, 3 on the CPU].")
@click.option("--cuda-graphs", is_flag=True, help="Time CUDA-graph replays (GPU, merge-free forwards only).")
@click.option("--estimator", type=click.Choice(["measured", "paired"]), default="measured", show_default=True,
              help="paired: time the config and the unreduced model in turns and report the speed-up with its "
                   "95%% interval (--runs pairs).")
def profile_cmd(model_name, checkpoint, probe, config_path, device, bf16, as_json, dataset, batch_size, runs,
                cuda_graphs, estimator):
    """FLOPs, parameters, tokens per layer, throughput, latency and peak memory."""
    _run(as_json, f"profile {model_name}", config_path, model_name=model_name, checkpoint=checkpoint,
         probe=probe, dataset=dataset, device=device, batch_size=batch_size or 256, throughput_batch=batch_size,
         measure=("speed", "flops"), bf16=bf16, cuda_graphs=cuda_graphs, runs=runs, estimator=estimator)
