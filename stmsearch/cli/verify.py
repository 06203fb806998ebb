"""``stmsearch verify``: re-measure a study's front and reference on the whole set (see :mod:`stmsearch.search.verify`)."""
from __future__ import annotations

import click
from rich.console import Console

from ..results.records import load_study_data
from ..results.table import pareto_table
from ..search.verify import VERIFY_PAIRS, VerifyError, verify_study
from .errors import user_errors


def verify_and_report(storage: str, study: str, device: str | None = None, pairs: int = VERIFY_PAIRS,
                      console: Console | None = None) -> None:
    """Verify, then print the table of verified figures; errors become one-line CLI errors."""
    console = console or Console(highlight=False)
    with user_errors(VerifyError, ValueError, RuntimeError):
        done = verify_study(storage, study, device=device, pairs=pairs, log=lambda m: console.print(m, style="dim"))
        console.print(pareto_table(load_study_data(storage, study)))
    console.print(f"verified {len(done)} trial(s) of {study} (the reference and the front) on the whole set, "
                  f"speed paired with the unreduced model over {pairs} pairs")


@click.command("verify")
@click.option("--storage", required=True, help="Optuna storage URL, e.g. sqlite:///runs/demo.db.")
@click.option("--study", required=True, help="Study name.")
@click.option("--device", default=None, help="Override the study's device (auto, cpu, cuda).")
@click.option("--pairs", type=click.IntRange(min=2), default=VERIFY_PAIRS, show_default=True,
              help="Paired timings (config, unreduced model) per verified trial.")
def verify_cmd(storage: str, study: str, device: str | None, pairs: int) -> None:
    """Re-measure a study's Pareto front and reference trial on the whole evaluation set."""
    verify_and_report(storage, study, device, pairs)
