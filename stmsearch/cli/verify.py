"""``stmsearch verify``: re-measure a study's front and reference on the whole set (see :mod:`stmsearch.search.verify`)."""
from __future__ import annotations

import click
from rich.console import Console

from ..results.records import load_study_data
from ..results.table import pareto_table
from ..search.verify import VERIFY_PAIRS, VerifyError, verify_studies
from .errors import user_errors


def verify_and_report(storage: str, studies: list[str], device: str | None = None, pairs: int = VERIFY_PAIRS,
                      console: Console | None = None) -> None:
    """Verify (several studies: their points interleaved), then print each table of verified figures; errors
    become one-line CLI errors."""
    console = console or Console(highlight=False)
    with user_errors(VerifyError, ValueError, RuntimeError):
        done = verify_studies(storage, studies, device=device, pairs=pairs,
                              log=lambda m: console.print(m, style="dim"))
        for name in studies:
            console.print(pareto_table(load_study_data(storage, name)))
    for name in studies:
        console.print(f"verified {len(done[name])} trial(s) of {name} (the reference and the front) on the whole "
                      f"set, speed paired with the unreduced model over {pairs} pairs")


@click.command("verify")
@click.option("--storage", required=True, help="Optuna storage URL, e.g. sqlite:///runs/demo.db.")
@click.option("--study", "studies", required=True, multiple=True,
              help="Study name; repeat it to verify several studies with their points interleaved, so that their "
                   "speed-ups are measured over the same minutes (fairer to compare).")
@click.option("--device", default=None, help="Override the study's device (auto, cpu, cuda).")
@click.option("--pairs", type=click.IntRange(min=2), default=VERIFY_PAIRS, show_default=True,
              help="Paired timings (config, unreduced model) per verified trial.")
def verify_cmd(storage: str, studies: tuple[str, ...], device: str | None, pairs: int) -> None:
    """Re-measure a study's Pareto front and reference trial on the whole evaluation set."""
    verify_and_report(storage, list(studies), device, pairs)
