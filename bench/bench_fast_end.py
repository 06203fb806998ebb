"""Where a searched front's fast end is decided (issue 15): can STM reach a baseline's fastest front point with
any configuration of the fronts' space, not only with those a search happened to draw?

The space is bench_fronts.py's (demo.yaml's parametric schedule with ``--count-high``, the window range, each
method at its defaults, ``--stm-knobs`` as there; every grid point clipped to capacity as the search clips it).
One latency table prices every configuration of it, as the searches price them. The baseline's point is either
its fastest configuration above the space's accuracy floor (``min_accuracy``; found by evaluating the baseline's
configurations from the fastest priced down) or a front point of a bench_fronts run (``--front JSON``: the
baseline's fastest verified point, its configuration priced by the same table). Every STM configuration priced
at or above ``--margin`` times that point's speed-up is then evaluated, on the same images as the searches (held-out
0..subset-1): STM reaches the point only with a configuration priced at least as fast and at least as accurate.
The priced speed-ups are the table's; what the table predicts and what paired forwards measure is the README's
"How speed is measured".

    PYTHONPATH=. python bench/bench_fast_end.py --proxy vim_proxy --count-high 28 \\
        --probe bench/results/probe_refit_2026-12-05/vim_proxy.h16.probe.pt \\
        --table runs/fronts/fronts-vim_proxy-probe-a1f85114-latency.json --out fast_end_digits.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).parent))

from bench_fronts import METHODS, base_space, method_space, run_and_write, stm_knobs  # noqa: E402
from stmsearch.evaluation.fidelity import PROXY_DATASETS, correct, load_proxy  # noqa: E402
from stmsearch.evaluation.latency import LatencyTable  # noqa: E402
from stmsearch.merging.config import MergeConfig, config_from_dict  # noqa: E402
from stmsearch.merging.patch import apply  # noqa: E402
from stmsearch.models.probe import attach  # noqa: E402
from stmsearch.search.params import clip_to_capacity, config_from_params, grid  # noqa: E402
from stmsearch.search.space import SearchSpace, model_geometry  # noqa: E402

TOP = 15  # STM configurations the report lists, most accurate first


def method_spaces(base: dict, methods: tuple[str, ...], knobs: dict | None = None) -> dict[str, SearchSpace]:
    """Each method's space of bench_fronts, without its seed ladder (which only seeds a search: here every
    configuration is priced); ``knobs``: STM's extra knobs, as bench_fronts' --stm-knobs."""
    base = {k: v for k, v in base.items() if k != "seed_ladder"}
    return {m: method_space(base, (m,), stm_knobs=knobs if m == "stm" else None) for m in methods}


def space_configs(space: SearchSpace) -> list[MergeConfig]:
    """Every configuration of a one-method space, clipped to capacity as the search clips a trial's (distinct
    after clipping, in grid order)."""
    depth, tokens = model_geometry(space.model)
    values = grid(space)
    out, seen = [], set()
    for combo in itertools.product(*values.values()):
        cfg, _ = clip_to_capacity(config_from_params(space, dict(zip(values, combo))), depth, tokens)
        key = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(cfg)
    return out


def priced(configs: list[MergeConfig], table: LatencyTable, depth: int, tokens: int) -> list[tuple[float, MergeConfig]]:
    """(speed-up over the unreduced model, config) as the table prices them, fastest first (grid order among equals)."""
    ref = table.predict_ms(None, depth, tokens)
    out = [(ref / table.predict_ms(c, depth, tokens), c) for c in configs]
    return sorted(out, key=lambda p: -p[0])


def scored(speedup: float, cfg: MergeConfig, accuracy: Callable[[MergeConfig], float]) -> dict:
    """A priced configuration with its accuracy, as the JSON holds it: {speedup, accuracy, config}."""
    return {"speedup": speedup, "accuracy": accuracy(cfg), "config": cfg.model_dump(mode="json")}


def fastest_above(points: list[tuple[float, MergeConfig]], accuracy: Callable[[MergeConfig], float],
                  floor: float) -> tuple[dict | None, list[dict]]:
    """The first of ``points`` (fastest first) whose accuracy is at least ``floor``, and every point evaluated
    on the way, as {speedup, accuracy, config}."""
    seen = []
    for s, cfg in points:
        row = scored(s, cfg, accuracy)
        seen.append(row)
        if row["accuracy"] >= floor:
            return row, seen
    return None, seen


def reaching(points: list[tuple[float, MergeConfig]], accuracy: Callable[[MergeConfig], float],
             speedup: float) -> list[dict]:
    """Every point priced at or above ``speedup``, evaluated, fastest first."""
    return [scored(s, cfg, accuracy) for s, cfg in points if s >= speedup]


def verdict(target: dict, candidates: list[dict]) -> dict | None:
    """The most accurate candidate at least as fast and as accurate as ``target`` (the slowest of equals), or None."""
    ok = [c for c in candidates if c["speedup"] >= target["speedup"] and c["accuracy"] >= target["accuracy"]]
    return max(ok, key=lambda c: (c["accuracy"], -c["speedup"])) if ok else None


def front_point(path: str, baseline: str) -> MergeConfig:
    """The configuration of ``baseline``'s fastest verified front point in a bench_fronts JSON."""
    out = json.loads(Path(path).read_text())
    points = out["fronts"].get(baseline) or []
    if not points:
        raise SystemExit(f"{path}: fronts.{baseline}: no verified front points")
    p = max(points, key=lambda p: p["speedup"])
    return config_from_dict(p["config"], f"{path}: fronts.{baseline} #{p['number']}")


def schedule_text(cfg: dict) -> str:
    s = cfg["schedule"]
    return (f"{s['start']}/{s['interval']}/{s['count']}/{s['shape']}" if isinstance(s, dict) else str(s))


def knobs_text(cfg: dict, defaults: dict) -> str:
    """The config's knobs that differ from ``defaults`` (the window always)."""
    diff = [f"{k}={v}" for k, v in cfg.items() if k not in ("method", "schedule", "window") and defaults.get(k) != v]
    return f"window {cfg['window']}" + "".join(f", {d}" for d in diff)


def run(args: argparse.Namespace) -> dict:
    base = base_space(args.proxy, args.subset, 1, count_high=args.count_high, probe=args.probe)
    floor = base["constraints"]["min_accuracy"] if args.floor is None else args.floor
    table = LatencyTable.load(args.table)
    spaces = method_spaces(base, ("stm", args.baseline), args.stm_knobs)
    depth, tokens = model_geometry(spaces["stm"].model)
    proxy = load_proxy(args.proxy, range(0, args.subset))
    if args.probe:
        attach(proxy.model, args.probe)
    evaluated = 0

    def accuracy(cfg: MergeConfig) -> float:
        nonlocal evaluated
        apply(proxy.model, cfg)
        try:
            ok = correct(proxy.model, proxy.images, proxy.labels)
        finally:
            apply(proxy.model, None)
        evaluated += 1
        if evaluated % 50 == 0:
            print(f"{time.strftime('%H:%M:%S')} {evaluated} configurations evaluated", file=sys.stderr, flush=True)
        return int(ok.sum()) / len(ok)

    t0 = time.perf_counter()
    points = {m: priced(space_configs(s), table, depth, tokens) for m, s in spaces.items()}
    if args.front:
        ((s, cfg),) = priced([front_point(args.front, args.baseline)], table, depth, tokens)
        target, walked = scored(s, cfg, accuracy), []
    else:
        target, walked = fastest_above(points[args.baseline], accuracy, floor)
        if target is None:
            raise SystemExit(f"no {args.baseline} configuration of the space reaches the floor {floor}")
    stm = reaching(points["stm"], accuracy, args.margin * target["speedup"])
    best = verdict(target, stm)
    return {"proxy": args.proxy, "dataset": PROXY_DATASETS[args.proxy], "subset": args.subset,
            "count_high": args.count_high, "probe": args.probe, "table": str(args.table), "floor": floor,
            "baseline": args.baseline, "front": args.front, "margin": args.margin,
            "stm_knobs": args.stm_knobs or {},
            "configs": {m: len(p) for m, p in points.items()}, "evaluated": evaluated,
            "target": target, "baseline_walked": len(walked), "stm": stm, "reached_by": best,
            "seconds": time.perf_counter() - t0}


def report(out: dict) -> str:
    defaults = {m: MergeConfig(method=m).model_dump(mode="json") for m in METHODS}
    t = out["target"]
    how = (f"its fastest verified front point in {out['front']}" if out["front"]
           else f"its fastest configuration at or above the floor {out['floor']} ({out['baseline_walked']} evaluated "
                "from the fastest priced down)")
    lines = [f"{out['proxy']}: every configuration of the fronts' space (counts to {out['count_high'] or 'demo'}), "
             f"priced by {Path(out['table']).name}; accuracy on held-out images 0-{out['subset'] - 1}",
             "configurations: " + ", ".join(f"{m} {n}" for m, n in out["configs"].items()),
             f"{out['baseline']}: {how}: {t['speedup']:.3f}x, accuracy {t['accuracy']:.3f}, "
             f"{schedule_text(t['config'])}, {knobs_text(t['config'], defaults[out['baseline']])}",
             f"stm configurations priced at or above {out['margin']:g} x {t['speedup']:.3f}x: {len(out['stm'])}"]
    for c in sorted(out["stm"], key=lambda c: -c["accuracy"])[:TOP]:
        lines.append(f"  {c['speedup']:.3f}x  {c['accuracy']:.3f}  {schedule_text(c['config'])}  "
                     f"{knobs_text(c['config'], defaults['stm'])}")
    r = out["reached_by"]
    lines.append("verdict: " + ("STM reaches it: " + f"{r['speedup']:.3f}x, {r['accuracy']:.3f}, "
                                f"{schedule_text(r['config'])}, {knobs_text(r['config'], defaults['stm'])}"
                                if r else f"no STM configuration of the space reaches {out['baseline']}'s point"))
    lines.append(f"{out['evaluated']} configurations evaluated in {out['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--proxy", choices=tuple(PROXY_DATASETS), default="vim_proxy_clutter")
    ap.add_argument("--table", required=True, help="a latency table of the proxy (e.g. a bench_fronts run's "
                    "runs/fronts-<proxy>...-latency.json) that prices STM and the baseline")
    ap.add_argument("--baseline", choices=METHODS[1:], default="prune")
    ap.add_argument("--front", metavar="JSON", help="a bench_fronts run: take the baseline's fastest verified front "
                    "point instead of searching the space for its fastest configuration above the floor")
    ap.add_argument("--subset", type=int, default=500, help="held-out images 0..N-1 (bench_fronts' --subset)")
    ap.add_argument("--count-high", type=int, default=None, metavar="N", help="as bench_fronts' --count-high")
    ap.add_argument("--stm-knobs", type=stm_knobs, default=None, metavar="YAML", help="as bench_fronts' --stm-knobs "
                    "(categorical or stepped ranges: every value is priced)")
    ap.add_argument("--probe", metavar="FILE", help="as bench_fronts' --probe")
    ap.add_argument("--floor", type=float, default=None, help="the accuracy floor (default: the space's min_accuracy)")
    ap.add_argument("--margin", type=float, default=0.97, help="evaluate STM configurations priced at or above this "
                    "share of the point's speed-up (near misses are listed too)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the JSON here")
    return run_and_write(ap.parse_args(argv), run, report)


if __name__ == "__main__":
    main()
