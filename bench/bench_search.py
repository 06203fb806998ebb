"""Search quality: hypervolume after N trials for NSGA-II, TPE and random search, several seeds.

Every run searches the same space (default: the embedded demo, vim_proxy on mnist5k) with the
local executor; only the sampler and its seed change. Evaluations are cached by config, so
a config two runs both try is measured once, and every run normalises against the same
reference measurement: the hypervolumes share one reference point (accuracy 0, speed-up 0,
FLOPs 1.1x the unreduced model; see stmsearch.search.pareto).

    python bench/bench_search.py                       # 3 samplers x 3 seeds x 40 trials
    python bench/bench_search.py --trials 12 --seeds 0 # a quick check

Prints mean and spread of the hypervolume at every 10 trials and writes a JSON summary.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import click
import optuna
from optuna.trial import TrialState

from stmsearch.search import load_space, run_search
from stmsearch.search import objective
from stmsearch.objectives import normalised, reference_point
from stmsearch.pareto import hypervolume
from stmsearch.search.record import reference_metrics

ROOT = Path(__file__).resolve().parents[1]
SAMPLER_OPTS = {"nsga2": {"population_size": 10}, "tpe": {"n_startup_trials": 10}, "random": {}}


def cache_evaluations(path: Path) -> None:
    """Wrap the search's single evaluate() call with a JSON cache keyed by config and settings."""
    cache = json.loads(path.read_text()) if path.is_file() else {}
    inner = objective.call_evaluate

    def cached(space, cfg):
        key = json.dumps([cfg.to_dict(), space.model, space.dataset, space.subset, space.device,
                          space.throughput.model_dump()], sort_keys=True)
        if key not in cache:
            cache[key] = inner(space, cfg)
            path.write_text(json.dumps(cache))
        return cache[key]

    objective.call_evaluate = cached


def hv_curve(study: optuna.Study, objectives: list[str], every: int) -> list[float]:
    """Hypervolume of the feasible completed trials among the first k, for k = every, 2*every, ..."""
    ref = reference_metrics(study)
    trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)),
                    key=lambda t: t.number)
    out = []
    for k in range(every, len(trials) + 1, every):
        ok = [t for t in trials[:k] if t.state == TrialState.COMPLETE and t.user_attrs.get("feasible", True)]
        points = [normalised(t.user_attrs["metrics"], objectives, ref) for t in ok]
        out.append(hypervolume(points, reference_point(objectives, ref, [t.user_attrs["metrics"] for t in ok])))
    return out


@click.command()
@click.option("--space", "space_path", default=str(ROOT / "search_spaces" / "demo.yaml"), show_default=True)
@click.option("--trials", default=40, show_default=True)
@click.option("--samplers", default="nsga2,tpe,random", show_default=True)
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--subset", type=int, help="Override the space's images per trial.")
@click.option("--evaluator", help="Override the space's evaluator (module:function).")
@click.option("--out", default="runs/bench_search", show_default=True)
def main(space_path: str, trials: int, samplers: str, seeds: str, subset: int | None, evaluator: str | None,
         out: str) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = load_space(space_path)
    base = base.model_copy(update={k: v for k, v in (("subset", subset), ("evaluator", evaluator)) if v})
    cache_evaluations(out_dir / "evaluations.json")
    url = f"sqlite:///{out_dir / 'bench.db'}"
    every = 10 if trials >= 10 else trials
    results: dict[str, list[list[float]]] = {}
    for name in samplers.split(","):
        for seed in (int(s) for s in seeds.split(",")):
            sampler = base.sampler.model_copy(update={"name": name, "seed": seed, "population_size": None,
                                                      "n_startup_trials": None, **SAMPLER_OPTS.get(name, {})})
            space = base.model_copy(update={"sampler": sampler})
            study_name = f"bench-{name}-s{seed}-{space.identity()}"
            start = time.perf_counter()
            run_search(space, space_path, trials=trials, storage_url=url, study=study_name, executor="local",
                       progress=False)
            study = optuna.load_study(study_name=study_name, storage=url)
            curve = hv_curve(study, list(space.objectives), every)
            results.setdefault(name, []).append(curve)
            print(f"{name:7s} seed {seed}: hypervolume {curve[-1]:.4f} after {len(study.trials)} trials "
                  f"({time.perf_counter() - start:.0f}s)", flush=True)
    print(f"\nhypervolume (normalised; mean +- sd over seeds {seeds}) after k trials, space {space_path}, "
          f"objectives {', '.join(base.objectives)}, subset {base.subset}")
    ks = [every * (i + 1) for i in range(min(len(c) for cs in results.values() for c in cs))]
    print("sampler  " + "".join(f"{k:>18d}" for k in ks))
    for name, curves in results.items():
        cells = []
        for i in range(len(ks)):
            vals = [c[i] for c in curves]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):10.4f} +- {sd:.4f}")
        print(f"{name:8s} " + "".join(f"{c:>18s}" for c in cells))
    summary = {"space": space_path, "trials": trials, "seeds": seeds, "subset": base.subset, "every": every,
               "objectives": base.objectives, "hypervolume": results}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nwritten: {out_dir / 'summary.json'}")


if __name__ == "__main__":
    main()
