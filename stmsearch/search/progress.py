"""Live search progress: trials done/failed, best per objective, Pareto-front size, hypervolume.

A rich Live panel on a terminal; one plain line per landed trial otherwise (logs, CI).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..objectives import direction, fmt
from .pareto import feasible_trials, pareto_trials, study_hypervolume
from .record import reference_metrics
from .space import SearchSpace


@dataclass
class Snapshot:
    """The study's state as shown."""

    done: int = 0
    failed: int = 0
    running: int = 0
    best: dict[str, tuple[float, int]] = field(default_factory=dict)  # objective -> (value, trial number)
    front: int = 0
    hypervolume: float = 0.0


def snapshot(study: optuna.Study, space: SearchSpace) -> Snapshot:
    """Counts, best feasible value per objective, front size and normalised hypervolume."""
    trials = study.get_trials(deepcopy=False)
    snap = Snapshot(done=sum(t.state == TrialState.COMPLETE for t in trials),
                    failed=sum(t.state == TrialState.FAIL for t in trials),
                    running=sum(t.state == TrialState.RUNNING for t in trials))
    feasible = feasible_trials(study)
    for i, name in enumerate(space.objectives):
        pick = max if direction(name) == "maximize" else min
        if feasible:
            best = pick(feasible, key=lambda t: t.values[i])
            snap.best[name] = (best.values[i], best.number)
    snap.front = len(pareto_trials(feasible, space.directions))
    snap.hypervolume = study_hypervolume(study, space.objectives, reference_metrics(study))
    return snap


def line(snap: Snapshot, budget: int, elapsed: float) -> str:
    """The one-line form."""
    best = ", ".join(f"{n} {fmt(n, v)} (#{k})" for n, (v, k) in snap.best.items())
    return (f"[{elapsed:6.0f}s] trials {snap.done + snap.failed}/{budget} (done {snap.done}, failed {snap.failed})"
            f" | best: {best or '-'} | Pareto front {snap.front} | hypervolume {snap.hypervolume:.4f}")


def panel(snap: Snapshot, budget: int, elapsed: float, title: str) -> Table:
    """The live table form."""
    table = Table(title=title, show_header=False, box=None, padding=(0, 1))
    table.add_row("trials", f"{snap.done + snap.failed}/{budget}  done {snap.done}  failed {snap.failed}  "
                            f"running {snap.running}  ({elapsed:.0f}s)")
    for name, (value, number) in snap.best.items():
        table.add_row(f"best {name}", f"{fmt(name, value)}  (trial {number})")
    table.add_row("Pareto front", f"{snap.front} trials")
    table.add_row("hypervolume", f"{snap.hypervolume:.4f}  (normalised to the unreduced model)")
    return table


class SearchProgress:
    """Call :meth:`update` whenever a trial lands; the live panel's clock ticks in between."""

    def __init__(self, study: optuna.Study, space: SearchSpace, budget: int, console: Console | None = None,
                 enabled: bool = True):
        self.study, self.space, self.budget, self.enabled = study, space, budget, enabled
        self.console = console or Console()
        self._start, self._live, self._shown = time.perf_counter(), None, -1
        self._snap = Snapshot()

    def __enter__(self) -> "SearchProgress":
        if self.enabled and self.console.is_terminal:
            self._snap = snapshot(self.study, self.space)
            self._live = Live(self, console=self.console, refresh_per_second=1)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._snap = snapshot(self.study, self.space)
            self._live.stop()

    def __rich__(self) -> Table:  # rendered by Live's refresh thread: no storage access here
        return panel(self._snap, self.budget, time.perf_counter() - self._start, f"stmsearch: {self.study.study_name}")

    def update(self) -> None:
        if not self.enabled:
            return
        self._snap = snapshot(self.study, self.space)
        if self._live is not None:
            self._live.refresh()
        elif self._snap.done + self._snap.failed != self._shown:
            self._shown = self._snap.done + self._snap.failed
            self.console.print(line(self._snap, self.budget, time.perf_counter() - self._start), highlight=False,
                               soft_wrap=True)
