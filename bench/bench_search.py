"""Search quality on a deterministic objective: samplers x seeds x trials on the tabular benchmark.

Every trial is looked up in a precomputed table (bench/tabular: accuracy on the held-out digits,
latency-model speed-up, for every config of a discrete demo space), so a run costs milliseconds
a trial and samplers are compared, not the machine's load. Each run starts like a study: the
unreduced reference first, then the sampler; the space's constraints are told to it as a study
tells them. Hypervolumes share the objectives' reference point (stmsearch.objectives).

    PYTHONPATH=$PWD python bench/bench_search.py                 # 5 seeds x 100 trials, every sampler
    PYTHONPATH=$PWD python bench/bench_search.py --quick         # <= 5 minutes on 2 CPU cores
    PYTHONPATH=$PWD python bench/bench_search.py --table /tmp/dev.json.gz --samplers random,tpe

Prints a table (hypervolume as a fraction of the best known: the table's whole front),
writes results.json and hypervolume.html under --out, and prints as its last line one JSON
object: {"default": NAME, "samplers": {NAME: {"trials_to_95": N or null, "hv_at": {...}}}}.
"""
from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import click
import optuna

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench.tabular, when run as a script
    sys.path.insert(0, str(ROOT))

from bench.tabular.grid import PINNED_STM  # noqa: E402
from bench.tabular.table import Table, TableError, load_table  # noqa: E402
from stmsearch.objectives import normalised, reference_point  # noqa: E402
from stmsearch.pareto import hypervolume  # noqa: E402
from stmsearch.search.ladder import warm_start  # noqa: E402
from stmsearch.search.params import project, reference_params, seed_config, suggest  # noqa: E402
from stmsearch.search.record import constraint_values  # noqa: E402
from stmsearch.search.runner import build_sampler  # noqa: E402
from stmsearch.search.space import SamplerSpec, Seed  # noqa: E402

DEFAULT_TABLE = ROOT / "bench" / "tabular" / "demo_table.json.gz"
TARGET = 0.95  # of the best-known hypervolume
MARKS = (25, 50, 100)
RANDOM_LONGER = 20  # random search runs 20x the trials (it costs nothing), so its trials to 95 % is known
# The demo's warm start before seed_ladder: light, medium and heavy STM schedules by hand (start 2, interval 2);
# the STM knobs are the ones the table was built with, so each is a grid point of it.
_TABLE_STM = {"window": 0, "runs": 2, "fading": "estimated", **PINNED_STM}
HAND_SEEDS = [{"name": f"stm-{c}", "config": {"method": "stm", "schedule": {"start": 2, "interval": 2, "count": c},
                                              **_TABLE_STM}} for c in (6, 14, 22)]
# The 4-rung ladder's rule before 2026-12-03 (the first shape, constant, at every rung), at STM's defaults:
# the ladder's rule now picks each rung's densest shape and widens the window with the rung (stmsearch/search/ladder.py).
_DEFAULT_STM = {"window": 0, "runs": 3, "fading": "fixed", **PINNED_STM}


def _stm_ladder(tag: str, shape: str, windows: tuple[int, ...] = (0, 0, 0, 0), **knobs: Any) -> list[dict[str, Any]]:
    """A former 4-rung ladder as seeds: every layer from layer 0 in ``shape``, STM at its defaults of then
    (``knobs`` override them) at ``windows``."""
    return [{"name": f"{tag}-{c}", "config": {"method": "stm", "schedule": {
        "start": 0, "interval": 1, "count": c, "shape": shape}, **_DEFAULT_STM, **knobs, "window": w}}
        for c, w in zip((2, 10, 14, 22), windows)]


CONSTANT_LADDER = _stm_ladder("const", "constant")
# The ladder's rule before the window rose with the rung (2026-12-03, fourth pass): densest shape, every rung at
# STM's default window 0, so its 14-token rung sits just below min_accuracy (0.489; bench/SEARCH.md).
DENSE_W0_LADDER = _stm_ladder("dense", "decreasing")
# The rule until 2026-12-05: that dense leg alone, the window rising 0 / 4 / 8 / 12 (today's STM default of 2 runs);
# the ladder now adds a sparse leg, the same counts at the widest interval (stmsearch/search/ladder.py).
DENSE_LEG_LADDER = _stm_ladder("rise", "decreasing", (0, 4, 8, 12), runs=2)
# benchmark name -> the space's sampler block (as a search space writes it)
SAMPLERS: dict[str, dict[str, Any]] = {
    "random": {"name": "random"},
    "nsga2-p10": {"name": "nsga2", "population_size": 10},
    "nsga2-p20": {"name": "nsga2", "population_size": 20},
    "nsga2-p50": {"name": "nsga2", "population_size": 50},
    "tpe": {"name": "tpe"},  # multivariate, 10 random trials first
    "tpe-group": {"name": "tpe", "options": {"group": True}},
    "tpe-s5": {"name": "tpe", "n_startup_trials": 5},
    "tpe-s5-warm": {"name": "tpe", "n_startup_trials": 5, "seeds": HAND_SEEDS},  # the demo's before seed_ladder
    "tpe-s5-ladder4": {"name": "tpe", "n_startup_trials": 5, "seed_ladder": 4},  # what the demo space ships
    "tpe-s5-ladder6": {"name": "tpe", "n_startup_trials": 5, "seed_ladder": 6},
    "tpe-s10-ladder4": {"name": "tpe", "seed_ladder": 4},
    "random-ladder4": {"name": "random", "seed_ladder": 4},
    "pls-s5-ladder4": {"name": "pls", "n_startup_trials": 5, "seed_ladder": 4},  # TPE + Pareto local search
    "tpe-s5-const4": {"name": "tpe", "n_startup_trials": 5, "seeds": CONSTANT_LADDER},  # the ladder's rule of 12-02
    "tpe-s5-w0ladder4": {"name": "tpe", "n_startup_trials": 5, "seeds": DENSE_W0_LADDER},  # its rule until 12-03
    "tpe-s5-dense4": {"name": "tpe", "n_startup_trials": 5, "seeds": DENSE_LEG_LADDER},  # its rule until 12-05
    "gp": {"name": "gp"},
    "botorch": {"name": "optuna_integration.BoTorchSampler"},  # qNEHVI; only where it is installed
}
# warm starts are entries too, as a space writes them: "seed_ladder": N (made from the table's space, so its
# rungs are grid points) or "seeds": [{"name": "a", "config": {...}}] (a seed's config must be a grid point)
WARM = ("seeds", "seed_ladder")
SLOW = {"gp", "botorch"}  # seconds a trial (GP: about 6 minutes a 100-trial run on 2 cores): left out of --quick


def available(name: str) -> bool:
    """BoTorch only where optuna-integration and botorch import (never a hard dependency)."""
    spec = SAMPLERS[name]["name"]
    if "." not in spec:
        return True
    return all(importlib.util.find_spec(m) is not None for m in (spec.split(".")[0], "botorch"))


def run(table: Table, sampler: dict[str, Any], seed: int, trials: int) -> list[tuple[float, ...] | None]:
    """One search of ``trials`` trials (the reference first, then the entry's warm start as a study has it: its
    seeds, then its ladder; their own configs, shown to the sampler at their projected parameters): each trial's
    normalised objectives, None if infeasible."""
    spec = SamplerSpec.model_validate({**{k: v for k, v in sampler.items() if k not in WARM}, "seed": seed})
    space = table.space.model_copy(update={"sampler": spec, "seed_ladder": sampler.get("seed_ladder", 0),
                                           "seeds": [Seed.model_validate(s) for s in sampler.get("seeds", [])]})
    warm = warm_start(space)
    objectives = list(space.objectives)
    study = optuna.create_study(directions=space.directions, sampler=build_sampler(space))
    study.enqueue_trial(reference_params(space))  # as a study: the unreduced model first, at the least reduction
    for s in warm:
        study.enqueue_trial(project(space, seed_config(space, s.name)))
    out = []
    for number in range(trials):
        trial = study.ask()
        params = suggest(trial, space)
        if number == 0:
            metrics = table.reference
        elif number <= len(warm):
            metrics = table.config_metrics(seed_config(space, warm[number - 1].name))
        else:
            metrics = table.metrics(params)
        cons = constraint_values(metrics, space.constraints, metrics["speedup"])
        if hasattr(trial, "set_constraint"):  # optuna >= 5; older ones read stored constraints
            for key, value in cons.items():
                trial.set_constraint(key, value)
        trial.set_user_attr("constraint_values", cons)
        study.tell(trial, [metrics[o] for o in objectives])
        feasible = all(c <= 0 for c in cons.values())
        out.append(normalised(metrics, objectives, table.reference) if feasible else None)
    return out


def hv_curve(points: list[tuple[float, ...] | None], ref: tuple[float, ...]) -> list[float]:
    """Hypervolume of the feasible points among the first k, for every k."""
    curve, seen = [], []
    for p in points:
        if p is not None:
            seen.append(p)
        curve.append(hypervolume(seen, ref) if p is not None or not curve else curve[-1])
    return curve


def trials_to(curve: list[float], level: float) -> int | None:
    """The first trial count (1-based, the reference included) at which ``curve`` reaches ``level``."""
    return next((k for k, v in enumerate(curve, 1) if v >= level), None)


def summarise(curves: dict[str, list[list[float]]], best: float) -> dict[str, dict[str, Any]]:
    """Per sampler: mean and sd of the hypervolume fraction per trial, trials to 95 % (of the mean curve
    and of each seed) and the mean fraction at the marks."""
    out = {}
    for name, runs in curves.items():
        frac = [[v / best for v in c] for c in runs]
        n = min(len(c) for c in frac)
        mean = [statistics.fmean(c[k] for c in frac) for k in range(n)]
        sd = [statistics.stdev(c[k] for c in frac) if len(frac) > 1 else 0.0 for k in range(n)]
        per_seed = [trials_to(c, TARGET) for c in frac]
        out[name] = {"mean": mean, "sd": sd, "trials_to_95": trials_to(mean, TARGET), "trials_to_95_per_seed": per_seed,
                     "hv_at": {str(k): (round(mean[k - 1], 4) if k <= n else None) for k in MARKS}}
    return out


def _rounded(values: list[float]) -> list[float]:
    """Curves as saved: 5 decimals (figures are read to 3), so 30 seeds of random's thousands of trials stay small."""
    return [round(v, 5) for v in values]


def write_plot(summary: dict[str, dict[str, Any]], path: Path, title: str, trials: int) -> None:
    """Mean hypervolume fraction against trials, a band of +- one sd, in the dashboard's look."""
    import plotly.graph_objects as go

    from stmsearch.dashboard.figures import STUDY_COLOURS, base_layout

    fig = go.Figure()
    for i, (name, s) in enumerate(summary.items()):
        colour, ks = STUDY_COLOURS[i % len(STUDY_COLOURS)], list(range(1, min(len(s["mean"]), trials) + 1))
        dash = "dash" if i >= len(STUDY_COLOURS) else "solid"
        mean, sd = s["mean"][:len(ks)], s["sd"][:len(ks)]
        hi, lo = [m + d for m, d in zip(mean, sd)], [m - d for m, d in zip(mean, sd)]
        fig.add_trace(go.Scatter(x=ks + ks[::-1], y=hi + lo[::-1], fill="toself", fillcolor=colour, opacity=0.12,
                                 line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=name))
        fig.add_trace(go.Scatter(x=ks, y=mean, name=f"{name} (95 % at {s['trials_to_95'] or '–'})",
                                 line=dict(color=colour, width=2, dash=dash), legendgroup=name,
                                 hovertemplate=f"{name}<br>trial %{{x}}: %{{y:.3f}}<extra></extra>"))
    fig.add_hline(y=TARGET, line=dict(color="#888", dash="dot", width=1))
    fig.update_layout(**base_layout(title, height=520))
    fig.update_xaxes(title_text="trials (the unreduced reference first)")
    fig.update_yaxes(title_text="hypervolume / best known (mean ± sd over seeds)")
    fig.write_html(path, include_plotlyjs="cdn")


def default_name(table: Table, names: list[str]) -> str:
    """The benchmark name of the shipped demo space's sampler (what a user gets by default)."""
    from stmsearch.search.space import load_space

    demo = load_space(ROOT / "search_spaces" / "demo.yaml")
    shipped = demo.sampler.model_dump(exclude={"seed"}, exclude_defaults=True)
    matches = [n for n in names if SamplerSpec.model_validate({k: v for k, v in SAMPLERS[n].items() if k not in WARM})
               .model_dump(exclude={"seed"}, exclude_defaults=True) == shipped]
    # the demo's warm start: the entry with its ladder, and seeds when the shipped space has some of its own
    # (an entry's seeds are the table's grid points, so they stand for the demo's and cannot equal them)
    matches.sort(key=lambda n: (SAMPLERS[n].get("seed_ladder", 0) != demo.seed_ladder,
                                ("seeds" in SAMPLERS[n]) != bool(demo.seeds)))
    return matches[0] if matches else "(not benchmarked)"


def goal_met(summary: dict[str, dict[str, Any]], name: str) -> bool | None:
    """The issue's goal for sampler ``name`` against random (None when either was not run)."""
    if name not in summary or "random" not in summary or name == "random":
        return None
    mine, rand = summary[name], summary["random"]
    # random runs RANDOM_LONGER times as long, so "never" means more trials than it was given
    rand_needs = rand["trials_to_95"] or len(rand["mean"]) + 1
    fast = mine["trials_to_95"] is not None and mine["trials_to_95"] * 4 <= rand_needs
    early = None not in (mine["hv_at"]["25"], rand["hv_at"]["100"]) and mine["hv_at"]["25"] >= rand["hv_at"]["100"]
    return fast or early


@click.command()
@click.option("--table", "table_path", default=str(DEFAULT_TABLE), show_default=True, help="gzip JSON table")
@click.option("--samplers", default=",".join(SAMPLERS), show_default=True)
@click.option("--seeds", default=5, show_default=True, help="seeds per sampler (--first-seed .. +N-1)")
@click.option("--first-seed", default=0, show_default=True,
              help="the first seed: settings chosen on seeds 0..9 are reported on fresh ones (e.g. 10..39)")
@click.option("--trials", default=100, show_default=True, help="trials per run, the reference included")
@click.option("--random-longer", default=RANDOM_LONGER, show_default=True,
              help="random search runs this many times --trials (it costs nothing), so its trials to 95 % is known")
@click.option("--quick", is_flag=True, help="fit 5 minutes on 2 CPU cores: the slow samplers (gp, botorch) are left out")
@click.option("--out", default=str(ROOT / "bench" / "results" / "search"), show_default=True)
def main(table_path: str, samplers: str, seeds: int, first_seed: int, trials: int, random_longer: int, quick: bool,
         out: str) -> None:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        table = load_table(table_path)
    except TableError as exc:
        raise click.ClickException(str(exc)) from None
    names = [s for s in samplers.split(",") if s]
    unknown = [s for s in names if s not in SAMPLERS]
    if unknown:
        raise click.ClickException(f"--samplers: unknown {unknown[0]!r} (known: {', '.join(SAMPLERS)})")
    skipped = [s for s in names if not available(s)]
    names = [s for s in names if s not in skipped]
    for s in skipped:
        print(f"{s}: skipped, {SAMPLERS[s]['name'].split('.')[0]} or botorch is not installed", flush=True)
    if quick:
        slow = [s for s in names if s in SLOW]
        names = [s for s in names if s not in SLOW]
        skipped += slow
        if slow:
            print(f"{', '.join(slow)}: left out of --quick (minutes a run; run without --quick)", flush=True)
    space = table.space
    objectives = list(space.objectives)
    ref = reference_point(objectives, table.reference)
    start = time.perf_counter()
    points: dict[str, list[list]] = {}
    for name in names:
        n = trials * random_longer if name == "random" else trials
        for seed in range(first_seed, first_seed + seeds):
            t0 = time.perf_counter()
            points.setdefault(name, []).append(run(table, SAMPLERS[name], seed, n))
            print(f"{name:10s} seed {seed}: {n} trials in {time.perf_counter() - t0:.1f}s", flush=True)
    union = [p for runs in points.values() for r in runs for p in r if p is not None]
    everything = [normalised(m, objectives, table.reference) for m in table.rows.values()
                  if all(c <= 0 for c in constraint_values(m, space.constraints, m["speedup"]).values())]
    optimum = hypervolume(everything, ref)
    # the table holds every config, so its whole front is the best known, whichever samplers ran
    found = hypervolume(union, ref)
    best = max(found, optimum)
    curves = {name: [hv_curve(r, ref) for r in runs] for name, runs in points.items()}
    summary = summarise(curves, best)
    default = default_name(table, names)

    print(f"\n{len(table.rows)} configs in {table_path} ({table.n} digits); objectives {', '.join(objectives)}; "
          f"best-known hypervolume {best:.4f} (the table's whole front; the union of all runs: {found:.4f})")
    head = f"{'sampler':11s} {'seeds':>5s} {'to 95%':>7s} {'per seed (median, reached)':>27s}" + "".join(
        f"{'HV@' + str(k):>15s}" for k in MARKS)
    print(head)
    for name, s in summary.items():
        reached = [k for k in s["trials_to_95_per_seed"] if k is not None]
        med = f"{statistics.median(reached):.0f}, {len(reached)}/{len(reached) + s['trials_to_95_per_seed'].count(None)}" \
            if reached else f"-, 0/{len(s['trials_to_95_per_seed'])}"
        cells = "".join(f"{'-':>15s}" if s["hv_at"][str(k)] is None else
                        f"{s['mean'][k - 1]:8.3f} ±{s['sd'][k - 1]:.3f}" for k in MARKS)
        print(f"{name + (' *' if name == default else ''):11s} {len(curves[name]):5d} "
              f"{str(s['trials_to_95'] or '-'):>7s} {med:>27s}{cells}")
    print(f"(* the shipped demo space's sampler; HV as a fraction of the best known; {time.perf_counter() - start:.0f}s)")
    goal = goal_met(summary, default)
    if goal is not None:
        print(f"goal (95 % in <= 1/4 of random's trials, or HV@25 >= random's HV@100): "
              f"{'met' if goal else 'not met'} by {default} on seeds {first_seed}-{first_seed + seeds - 1}")

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"table": str(table_path), "table_meta": table.meta, "trials": trials, "quick": quick, "target": TARGET,
              "best_known_hv": best, "table_front_hv": optimum, "runs_front_hv": found, "reference_point": ref,
              "default": default,
              "samplers": {n: {"spec": SAMPLERS[n], **summary[n], "mean": _rounded(summary[n]["mean"]),
                               "sd": _rounded(summary[n]["sd"]), "hv": [_rounded(c) for c in curves[n]]}
                           for n in summary},
              "skipped": skipped, "goal_met": goal}
    (out_dir / "results.json").write_text(json.dumps(result, separators=(",", ":")) + "\n")  # curves: compact
    write_plot(summary, out_dir / "hypervolume.html",
               f"Hypervolume against trials, {len(table.rows)}-config tabular demo space", trials)
    print(f"wrote {out_dir / 'results.json'} and {out_dir / 'hypervolume.html'}")
    print(json.dumps({"default": default, "samplers": {n: {"trials_to_95": s["trials_to_95"], "hv_at": s["hv_at"]}
                                                        for n, s in summary.items()}}))


if __name__ == "__main__":
    main()
