"""``stmsearch calibrate``: make a latency table (the ``model`` speed estimator; see :mod:`stmsearch.evaluation.latency`)."""
from __future__ import annotations

from pathlib import Path

import click

from ..search import SpaceError, load_space
from ..search.calibration import calibrate_space
from ..search.space import model_geometry, with_device
from .errors import user_errors, writable_dir
from .search import resolve_space


@click.command("calibrate")
@click.argument("space_file", metavar="SPACE.yaml")
@click.option("--device", help="Override the space's device (auto, cpu, cuda).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="JSON file to write; name it in the space as throughput.table.")
def calibrate_cmd(space_file: str, device: str | None, out: Path) -> None:
    """Time the space's model, and every merge step it can choose, on this machine into a latency table."""
    path = resolve_space(space_file)
    with user_errors(SpaceError):
        space = load_space(path)
        if device:
            space = with_device(space, device)
        writable_dir(out.parent)
        try:
            table = calibrate_space(space)
        except (ValueError, RuntimeError) as exc:  # e.g. an unknown or absent device
            raise click.ClickException(f"{path}: {exc}") from None
        table.save(out)
    click.echo(f"wrote {out}: {table.meta['model']} on {table.meta['device']}, batch {table.meta['batch']}, "
               f"{len(table.tokens)} token counts, {len(table.merge_ms)} merge steps; "
               f"unreduced forward {table.predict_ms(None, *model_geometry(space.model)):.1f} ms")
