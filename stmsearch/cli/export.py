"""``stmsearch export``: write chosen configs of a study and their manifest (see :mod:`stmsearch.export`)."""
from __future__ import annotations

from pathlib import Path

import click

from ..export import PICKS, ExportError, export_configs
from .errors import user_errors


@click.command("export")
@click.option("--storage", required=True, help="Optuna storage URL, e.g. sqlite:///studies.db.")
@click.option("--study", required=True, help="Study name.")
@click.option("--pick", type=click.Choice(PICKS), default="knee", show_default=True, help="Which trials to export.")
@click.option("--min-accuracy", type=click.FloatRange(0, 1), default=None, help="Top-1 floor, as a fraction.")
@click.option("--max-drop", type=click.FloatRange(0, 1), default=None,
              help="Largest accuracy loss vs the reference trial, as a fraction (0.01 = 1 point).")
@click.option("--min-throughput", type=click.FloatRange(0), default=None, help="Throughput floor in img/s.")
@click.option("--unverified", is_flag=True, help="Export from a study whose front was never verified "
              "(figures from the search's subset and single timings).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the YAML configs and manifest.json.")
def export_cmd(storage: str, study: str, pick: str, min_accuracy: float | None, max_drop: float | None,
               min_throughput: float | None, unverified: bool, out_dir: Path) -> None:
    """Export chosen configs of a study as YAML, with a manifest of their provenance."""
    with user_errors(ExportError):
        manifest = export_configs(storage, study, pick, out_dir, unverified=unverified, min_accuracy=min_accuracy,
                                  max_drop=max_drop, min_throughput=min_throughput)
    for e in manifest["configs"]:
        m = e["verified"] or e["metrics"]
        speed = (f", {m['speedup']:.2f}x speed-up" if m.get("speedup") is not None else
                 f", {m['throughput']:.1f} img/s" if m.get("throughput") is not None else "")
        click.echo(f"{out_dir / e['file']}: trial {e['trial']}, top-1 {100 * m['accuracy']:.2f} % "
                   f"on {m.get('n')} images{speed} ({'verified' if e['verified'] else 'unverified'})")
    click.echo(f"{out_dir / 'manifest.json'}: {len(manifest['configs'])} config(s)")
