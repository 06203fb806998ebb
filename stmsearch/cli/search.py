"""``stmsearch search SPACE.yaml``: run or continue a search, print its Pareto table, write its dashboard."""
from __future__ import annotations

import sys
from pathlib import Path

import click
import optuna
from rich.console import Console

from ..results.records import load_study_data
from ..results.table import pareto_table
from ..search import SearchError, SpaceError, load_space, run_search
from ..search.space import with_device
from ..search.executor import EXECUTORS
from .errors import user_errors, writable_dir
from .verify import verify_and_report

SHIPPED = Path(__file__).resolve().parents[2] / "search_spaces"


def resolve_space(arg: str) -> Path:
    """A path, or the name of a shipped space (``demo`` -> search_spaces/demo.yaml)."""
    path = Path(arg)
    if not path.is_file() and (SHIPPED / f"{arg}.yaml").is_file():
        return SHIPPED / f"{arg}.yaml"
    return path


def trial_rate(study: optuna.Study, numbers: list[int]) -> float | None:
    """Trials finished per minute over the trials ``numbers`` (None for fewer than 3)."""
    ends = sorted(t.datetime_complete for t in study.trials if t.number in set(numbers) and t.datetime_complete)
    if len(ends) < 3 or ends[-1] == ends[0]:
        return None
    return 60 * (len(ends) - 1) / (ends[-1] - ends[0]).total_seconds()


def ctrl_c(exc: BaseException | None) -> bool:
    """Ctrl-C, or an error raised while handling one: SQLAlchemy can turn a commit it interrupted
    into an AssertionError, which should end the search as Ctrl-C does, not as a crash."""
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__context__
    return False


def _write_dashboard(storage_url: str, study_name: str, out: Path) -> Path | None:
    try:
        from ..dashboard.build import write_dashboard
    except ImportError:
        return None
    return write_dashboard(storage_url, study_name, out / f"{study_name}.html")


@click.command("search")
@click.argument("space_file", metavar="SPACE.yaml")
@click.option("--trials", type=click.IntRange(min=1), help="Trials the study should hold in all (default: the "
              "space's budget). Re-running continues up to it.")
@click.option("--storage", help="SQLAlchemy URL (default: sqlite:///RUNS/<space>.db; postgresql://... works).")
@click.option("--study", "study_name", help="Study name (default: space name + hash of its content).")
@click.option("--executor", type=click.Choice(list(EXECUTORS)), default="ray", show_default=True,
              help="local: sequential, in this process, without Ray (debugging).")
@click.option("--max-concurrent", type=click.IntRange(min=1), help="Trials at once (default: one per GPU; "
              "1 on CPU so throughput is measured alone).")
@click.option("--address", help="Join a running Ray cluster: HOST:PORT of its head, or auto (the one `ray start` "
              "started here). Token auth: README, Running across machines.")
@click.option("--device", help="Override the space's device (auto, cpu, cuda).")
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Runs folder: default database, Ray logs, dashboard.")
@click.option("--verify/--no-verify", default=None, help="After the search, re-measure the front and the reference "
              "on the whole set (stmsearch verify) [default: the space's verify option].")
@click.option("--no-progress", is_flag=True, help="No live display.")
def search_cmd(space_file: str, trials: int | None, storage: str | None, study_name: str | None, executor: str,
               max_concurrent: int | None, address: str | None, device: str | None, out: str,
               verify: bool | None, no_progress: bool) -> None:
    """Search merge schedules for the model in SPACE.yaml (or a shipped space: demo, vim_tiny_imagenet, ...)."""
    path = resolve_space(space_file)
    try:
        with user_errors(SpaceError, SearchError):
            space = load_space(path)
            if device:
                space = with_device(space, device)
            writable_dir(out)
            result = run_search(space, path, trials=trials, storage_url=storage, study=study_name,
                                executor=executor, max_concurrent=max_concurrent, address=address, runs=out,
                                progress=not no_progress)
    except BaseException as exc:  # noqa: BLE001 - re-raised unless Ctrl-C caused it
        if not ctrl_c(exc):
            raise
        click.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    console = Console(highlight=False)
    if not console.is_terminal:  # logs and pipes: wide enough for the table
        console = Console(highlight=False, width=max(console.width, 150))
    study = optuna.load_study(study_name=result.study_name, storage=result.storage_url)
    verifying = space.verify if verify is None else verify
    if not verifying:
        console.print(pareto_table(load_study_data(result.storage_url, result.study_name)))
    if not any(t.user_attrs.get("feasible") for t in study.trials if t.state.name == "COMPLETE"):
        limits = {k: v for k, v in study.user_attrs.get("constraints", {}).items() if v is not None}
        console.print(f"no completed trial meets the constraints {limits}", style="yellow")
    n_fail = sum(t.state.name == "FAIL" for t in study.trials)
    reaped = f"; {result.reaped} orphaned trials marked failed" if result.reaped else ""
    console.print(f"{len(study.trials)} trials in {result.study_name} ({n_fail} failed; {result.ran} finished by "
                  f"this run in {result.elapsed_s:.0f}s{reaped}), storage {result.storage_url}")
    rate = trial_rate(study, result.numbers)
    if rate is not None:
        console.print(f"trial rate: {rate:.2f} trials/min between this run's first and last finished trial "
                      f"({60 * result.ran / result.elapsed_s:.2f}/min including startup)")
    if verifying:
        try:
            verify_and_report(result.storage_url, [result.study_name], device, console=console)
        except KeyboardInterrupt:
            click.echo(f"interrupted while verifying; the search is complete: finish with `stmsearch verify "
                       f"--storage {result.storage_url} --study {result.study_name}`", err=True)
            sys.exit(130)
    page = _write_dashboard(result.storage_url, result.study_name, Path(out))
    if page is not None:
        console.print(f"dashboard: {page}")
