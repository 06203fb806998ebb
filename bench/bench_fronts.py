"""Searched fronts at matched speed-up: one search per method (STM and the baselines), each front
verified, then compared at equal verified speed-up with exact paired sign tests (issue 15).

Every method gets the same search: demo.yaml's objectives, constraints, parametric schedule
space, sampler (TPE, its seed) and seed ladder, on the proxy's held-out images 0..subset-1, the
same trial budget, each method at its defaults with the same protection-window range (the ladder
is made from each space's first, here only, method, so every method gets one). Speed comes from
the ``model`` estimator with ONE latency table timed once for all methods (what ``stmsearch
calibrate`` makes from a space naming all three), so the searches time nothing and are
deterministic. All studies live in one SQLite file, one study per method. Each front is then
verified as ``stmsearch verify`` does (all 1000 held-out images, speed paired with the unreduced
model), the three methods' points interleaved in one step (``verify_studies``: a drift of the machine
during it falls on every method alike; the runs in bench/results up to ``fronts_*_source80`` verified
one method after another). Verify keeps no per-image correctness, so each verified front point is
evaluated once more image by image (the bench checks that this reproduces the verified accuracy) for the sign tests.

The verified accuracy covers all held-out images, including the 0..subset-1 the search selected
on; the sign tests are reported on all of them and on the images the search never saw.

    PYTHONPATH=. python bench/bench_fronts.py --proxy vim_proxy_clutter --trials 40 \\
        --runs runs/fronts --out bench/results/fronts_clutter.json --lock /tmp/stm-cpu.lock
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from stmsearch.evaluation.fidelity import PROXY_DATASETS, bits, correct, load_proxy, paired
from stmsearch.evaluation.throughput import file_lock
from stmsearch.merging.config import config_from_dict
from stmsearch.merging.patch import apply
from stmsearch.models.checkpoint import file_sha256
from stmsearch.models.probe import attach
from stmsearch.pareto import pareto_mask
from stmsearch.results.records import load_study_data
from stmsearch.results.table import front_records
from stmsearch.search.space import SearchSpace, parse_space
from stmsearch.yamlfile import read_yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "search_spaces" / "demo.yaml"
METHODS = ("stm", "prune", "tome")
WINDOW = {"type": "int", "low": 0, "high": 12, "step": 2}  # demo.yaml's STM window range, given to every method
SHARED = ("objectives", "constraints", "schedule", "sampler", "seed_ladder", "throughput", "batch_size", "device")


# --- the searches ----------------------------------------------------------------------------------------
def base_space(proxy: str, subset: int, trials: int, evaluator: str | None = None,
               count_high: int | None = None, sampler_seed: int | None = None, probe: str | None = None) -> dict:
    """demo.yaml's search settings on ``proxy`` and its dataset, without methods; ``count_high``: the most
    tokens a merging layer may remove, ``sampler_seed``: the sampler's seed, each for every method alike
    (demo.yaml's where None); ``probe``: a saliency probe file for the model instead of its shipped one (the
    space's ``probe:``; only configs reading it, STM's at its defaults, change)."""
    demo = read_yaml(DEMO, "search-space", ValueError)
    data = {k: demo[k] for k in SHARED if k in demo}
    if count_high is not None:
        data["schedule"] = {**data["schedule"], "count": {**data["schedule"]["count"], "high": count_high}}
    if sampler_seed is not None:
        data["sampler"] = {**data["sampler"], "seed": sampler_seed}
    data.update(model=proxy, dataset=PROXY_DATASETS[proxy], subset=subset, budget={"trials": trials}, verify=False)
    if probe:
        data["probe"] = str(Path(probe).resolve())
    if evaluator:
        data["evaluator"] = evaluator
    return data


def method_space(base: dict, methods: tuple[str, ...], table: str | None = None,
                 stm_knobs: dict | None = None) -> SearchSpace:
    """``stm_knobs``: more of STM's knobs its search chooses (name -> knob spec, as in a space file)."""
    knobs = {m: {"window": dict(WINDOW), **((stm_knobs or {}) if m == "stm" else {})} for m in methods}
    data = {**base, "methods": [{"name": m, "knobs": knobs[m]} for m in methods]}
    if table:
        data["throughput"] = {**data.get("throughput", {}), "table": table}
    return parse_space(data, f"bench_fronts:{'+'.join(methods)}")


def cpu_lock(path: str | None) -> contextlib.AbstractContextManager:
    """The lock `flock PATH cmd` takes, so timed steps run alone on the CPU (none without a path)."""
    return file_lock(path) if path else contextlib.nullcontext()


# --- the comparison (pure: synthetic fronts in the tests) -----------------------------------------------
def verified_points(records: list) -> list[dict]:
    """The verified, non-reference trials of a study as {number, accuracy, speedup, ...}."""
    out = []
    for r in records:
        if r.verified and not r.is_reference and r.complete:
            v = r.verified
            out.append({"number": r.number, "accuracy": v["accuracy"], "accuracy_ci": v.get("accuracy_ci"),
                        "speedup": v["speedup"], "speedup_ci": v.get("speedup_ci"), "config": r.config,
                        "search_accuracy": r.value("accuracy"), "search_speedup": r.value("speedup")})
    return out


def front(points: list[dict]) -> list[dict]:
    """The points no other dominates in (accuracy, speed-up), by speed-up."""
    if not points:
        return []
    mask = pareto_mask(np.array([[p["accuracy"], p["speedup"]] for p in points]), ["maximize", "maximize"])
    return sorted((p for p, m in zip(points, mask) if m), key=lambda p: p["speedup"])


def best_at(points: list[dict], speedup: float) -> dict | None:
    """The most accurate point reaching at least ``speedup`` (the slowest of equals), None if none does."""
    reach = [p for p in points if p["speedup"] >= speedup]
    return max(reach, key=lambda p: (p["accuracy"], -p["speedup"])) if reach else None


def speedup_grid(fronts: dict[str, list[dict]], step: float = 0.1) -> list[float]:
    """1 + step, 1 + 2 step, ... up to the largest verified speed-up of any front."""
    top = max((p["speedup"] for pts in fronts.values() for p in pts), default=1.0)
    return [round(1 + step * i, 6) for i in range(1, int(math.floor((top - 1) / step + 1e-9)) + 1)]


def matched_table(fronts: dict[str, list[dict]], grid: list[float]) -> list[dict]:
    """Per grid speed-up, each method's best verified accuracy at or above it (None: not reached)."""
    rows = []
    for s in grid:
        cells = {m: best_at(pts, s) for m, pts in fronts.items()}
        rows.append({"speedup": s, **{m: None if p is None else p["accuracy"] for m, p in cells.items()}})
    return rows


def match(stm: list[dict], point: dict) -> dict | None:
    """The STM front point of the nearest speed-up at or above ``point``'s."""
    reach = [p for p in stm if p["speedup"] >= point["speedup"]]
    return min(reach, key=lambda p: (p["speedup"], -p["accuracy"])) if reach else None


def outcome(stm_point: dict | None, base_point: dict) -> str:
    """win / tie / loss of STM's matched point against one baseline point (no STM point that fast: loss)."""
    if stm_point is None or stm_point["accuracy"] < base_point["accuracy"]:
        return "loss"
    return "win" if stm_point["accuracy"] > base_point["accuracy"] else "tie"


def verdict(outcomes: list[str]) -> str:
    """``dominates``: every baseline point matched at least as accurately, one strictly (the baseline's
    front is weakly dominated); ``ties``: all equal; ``loses``: no win and some loss; else ``mixed``."""
    wins, losses = outcomes.count("win"), outcomes.count("loss")
    if not outcomes or (not wins and not losses):
        return "ties"
    if not losses:
        return "dominates"
    return "loses" if not wins else "mixed"


def compare_fronts(fronts: dict[str, list[dict]], baselines: tuple[str, ...], step: float = 0.1) -> dict:
    """Matched-speed-up table, STM's matched point for every baseline front point, and a verdict per baseline."""
    grid = speedup_grid(fronts, step)
    pairs, verdicts = {}, {}
    for base in baselines:
        rows = []
        for b in fronts[base]:
            s = match(fronts["stm"], b)
            rows.append({"baseline": b["number"], "stm": None if s is None else s["number"],
                         "baseline_speedup": b["speedup"], "stm_speedup": None if s is None else s["speedup"],
                         "baseline_accuracy": b["accuracy"], "stm_accuracy": None if s is None else s["accuracy"],
                         "outcome": outcome(s, b)})
        pairs[base] = rows
        verdicts[base] = verdict([r["outcome"] for r in rows])
    return {"grid": matched_table(fronts, grid), "pairs": pairs, "verdicts": verdicts}


def tally(rows: list[dict], alpha: float = 0.05) -> dict:
    """One baseline's matched pairs counted: STM ahead, tied and behind at the points it reaches (``*_sig``:
    those with the sign test on all images at p < ``alpha``; pairs not tested count as not significant),
    and the baseline points it never reaches, as (speed-up, accuracy)."""
    def sig(r: dict) -> bool:
        return r.get("sign_all") is not None and r["sign_all"]["p"] < alpha

    reached = [r for r in rows if r["stm"] is not None]
    out: dict = {"points": len(rows)}
    for key, want in (("ahead", "win"), ("tied", "tie"), ("behind", "loss")):
        hit = [r for r in reached if r["outcome"] == want]
        out[key], out[f"{key}_sig"] = len(hit), sum(map(sig, hit))
    out["unreached"] = [(r["baseline_speedup"], r["baseline_accuracy"]) for r in rows if r["stm"] is None]
    return out


def unreached_text(t: dict) -> str:
    """How many baseline points of a :func:`tally` STM never reaches, and which."""
    far = ", ".join(f"{s:.2f}x ({a:.3f})" for s, a in t["unreached"])
    return f"{len(t['unreached'])}" + (f": {far}" if far else "")


def tally_text(t: dict) -> str:
    return (f"STM ahead at {t['ahead']} of {t['points']} ({t['ahead_sig']} with p<0.05), tied at {t['tied']}, "
            f"behind at {t['behind']} ({t['behind_sig']} with p<0.05), unreached {unreached_text(t)}")


# --- per-image correctness of the front points ------------------------------------------------------------
def correctness(proxy_name: str, fronts: dict[str, list[dict]], images: range,
                probe: str | None = None) -> dict[tuple[str, int], torch.Tensor]:
    """Per-image correctness of every front point on held-out ``images`` (the model the search evaluated,
    with ``probe`` where one was given)."""
    proxy = load_proxy(proxy_name, images)
    if probe:
        attach(proxy.model, probe)
    out = {}
    for method, pts in fronts.items():
        for p in pts:
            apply(proxy.model, config_from_dict(p["config"], f"{method} trial {p['number']}"))
            try:
                out[method, p["number"]] = correct(proxy.model, proxy.images, proxy.labels)
            finally:
                apply(proxy.model, None)
    return out


def sign_tests(pairs: dict[str, list[dict]], ok: dict, unseen: slice) -> None:
    """Add the exact sign test of each matched pair, on every image and on the ``unseen`` ones (in place)."""
    for base, rows in pairs.items():
        for r in rows:
            if r["stm"] is None:
                continue
            a, b = ok["stm", r["stm"]], ok[base, r["baseline"]]
            r["sign_all"], r["sign_unseen"] = paired(a, b), paired(a[unseen], b[unseen])


# --- steps ----------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    from stmsearch.search.calibration import calibrate_space
    from stmsearch.search.runner import run_search
    from stmsearch.search.verify import verify_studies

    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{(runs / f'fronts-{args.proxy}.db').resolve()}"
    base = base_space(args.proxy, args.subset, args.trials, args.evaluator, args.count_high, args.sampler_seed,
                      args.probe)
    seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(name: str, timed: bool = True) -> Iterator[None]:
        # only the steps that time hold the lock (the searches price from the table, the per-image pass counts
        # digits), so other work may share the CPU with those; each step's seconds start once it may run
        with cpu_lock(args.lock) if timed else contextlib.nullcontext():
            t0 = time.perf_counter()
            print(f"{time.strftime('%H:%M:%S')} {name}", flush=True)
            yield
            seconds[name] = time.perf_counter() - t0

    suffix = "".join(f"-{k}" for k in sorted(args.stm_knobs or {}))
    # another probe: every study and the table its own (STM's step is timed with it)
    probe_sha = file_sha256(args.probe) if args.probe else None
    tag = f"-probe-{probe_sha[:8]}" if probe_sha else ""
    table = None
    if not args.evaluator:  # a stand-in evaluator (the smoke test) predicts its own speed
        # STM's knobs may add merge steps (runs, the probe's importance_source): timed in the same table
        table = runs / f"fronts-{args.proxy}{suffix}{tag}-latency.json"
        if not table.is_file():
            with step("calibrate"):
                calibrate_space(method_space(base, METHODS, stm_knobs=args.stm_knobs)).save(table)
        table = str(table.resolve())
    studies = {}
    for m in METHODS:
        extra = args.stm_knobs if m == "stm" else None
        studies[m] = f"fronts-{args.proxy}-{m}" + (suffix if extra else "") + tag + (
            f"-seed{args.sampler_seed}" if args.sampler_seed is not None else "")
        with step(f"search_{m}", timed=False):
            run_search(method_space(base, (m,), table, extra), f"bench_fronts:{m}", storage_url=url,
                       study=studies[m], executor="local", runs=runs, progress=False)
    # a continued study (more --trials) may have new front points: verify the front again when any lacks it.
    # One step, the methods' points interleaved: a drift of the machine during it falls on all of them alike
    todo = [studies[m] for m in METHODS
            if any(not r.verified for r in front_records(load_study_data(url, studies[m])))]
    if todo:
        with step("verify"):
            verify_studies(url, todo, pairs=args.pairs, progress=False, log=print)
    data = {m: load_study_data(url, studies[m]) for m in METHODS}
    points = {m: verified_points(d.records) for m, d in data.items()}
    fronts = {m: front(p) for m, p in points.items()}
    result = compare_fronts(fronts, METHODS[1:], args.step)
    images = range(0, args.images)
    with step("per_image", timed=False):
        ok = correctness(args.proxy, fronts, images, args.probe)
    sign_tests(result["pairs"], ok, slice(min(args.subset, len(images)), None))
    for m, pts in fronts.items():
        for p in pts:
            p["per_image_accuracy"] = int(ok[m, p["number"]].sum()) / len(images)  # as evaluate_accuracy divides
            p["correct"] = bits(ok[m, p["number"]])
    ref = data["stm"].reference()
    return {"proxy": args.proxy, "dataset": PROXY_DATASETS[args.proxy], "storage": url, "studies": studies,
            "table": table, "trials": args.trials, "subset": args.subset, "images": args.images,
            "count_high": args.count_high, "sampler_seed": base["sampler"]["seed"],
            "pairs": args.pairs, "torch_threads": torch.get_num_threads(), "stm_knobs": args.stm_knobs or {},
            "probe": None if not args.probe else {"file": args.probe, "sha256": probe_sha},
            "reference": None if ref is None else ref.verified,
            "studies_summary": {m: {"trials": len(d.records), "complete": sum(r.complete for r in d.records),
                                    "verified": len(points[m]), "front": len(fronts[m])} for m, d in data.items()},
            "fronts": fronts, **result, "seconds": seconds}


def stm_knobs(text: str) -> dict:
    """--stm-knobs: a YAML mapping of STM knob specs, checked against STM's knobs."""
    import yaml

    try:
        knobs = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"not YAML: {exc}") from None
    if not isinstance(knobs, dict) or not knobs:
        raise argparse.ArgumentTypeError("a mapping of knob name -> spec, e.g. "
                                         "'{drop: {type: categorical, choices: [0.0, 0.5]}}'")
    try:
        parse_space({**base_space("vim_proxy", 10, 2), "methods": [{"name": "stm", "knobs": knobs}]}, "--stm-knobs")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return knobs


def fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def report(out: dict) -> str:
    lines = [f"{out['proxy']} on {out['dataset']}: {out['trials']} trials a method, search on held-out images "
             f"0-{out['subset'] - 1}, verified on all {out['images']}"
             + (f", sampler seed {out['sampler_seed']}" if out.get("sampler_seed") is not None else "")]
    for m, s in out["studies_summary"].items():
        lines.append(f"  {m}: {s['complete']}/{s['trials']} complete, {s['verified']} verified, front {s['front']}")
    lines.append("\nbest verified accuracy at verified speed-up >= s")
    lines.append("s      " + "  ".join(f"{m:>6}" for m in METHODS))
    for row in out["grid"]:
        lines.append(f"{row['speedup']:<6.2f} " + "  ".join(f"{fmt(row[m]):>6}" for m in METHODS))
    for base, rows in out["pairs"].items():
        lines.append(f"\n{base} front point -> STM point of nearest speed-up at or above "
                     f"(sign test: only-STM-right / only-{base}-right, p; all images | unseen)")
        for r in rows:
            sa, su = r.get("sign_all"), r.get("sign_unseen")
            tests = "" if sa is None else (f"  {sa['wins']}/{sa['losses']} p={sa['p']:.2g} | "
                                           f"{su['wins']}/{su['losses']} p={su['p']:.2g}")
            lines.append(f"  {base}#{r['baseline']} {r['baseline_speedup']:.2f}x {r['baseline_accuracy']:.3f}  "
                         f"stm#{r['stm']} {fmt(r['stm_speedup'], '.2f')}x {fmt(r['stm_accuracy'])}  "
                         f"{r['outcome']}{tests}")
        lines.append(f"  verdict: STM {out['verdicts'][base]} {base}; {tally_text(tally(rows))}")
    # within half an image: the same count of right images (the runs of 2026-12-03 stored a float32 mean)
    checked = [abs(p["per_image_accuracy"] - p["accuracy"]) < 0.5 / out["images"]
               for pts in out["fronts"].values() for p in pts]
    lines.append(f"\nper-image pass reproduces the verified accuracy at {sum(checked)} of {len(checked)} front points")
    lines.append("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in out["seconds"].items()))
    return "\n".join(lines)


def run_label(out: dict) -> str:
    probe = out.get("probe")
    return (f"{out['proxy']}, sampler seed {out.get('sampler_seed')}, counts to {out.get('count_high') or 'demo'}, "
            f"{out['trials']} trials" + (f", probe {Path(probe['file']).name}" if probe else "")
            + "".join(f", STM {k} {'/'.join(map(str, v['choices']))}" if v.get("type") == "categorical" else f", STM {k} searched"
                      for k, v in (out.get("stm_knobs") or {}).items()))


def summary(outs: list[dict], baselines: tuple[str, ...] = METHODS[1:]) -> str:
    """A Markdown table of several runs' tallies, one row a run (what the README's tables hold)."""
    head = ["run"]
    for b in baselines:
        head += [f"vs {b}: STM ahead (p<0.05)", "behind (p<0.05)", f"{b} points unreached"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for out in outs:
        cells = [run_label(out)]
        for b in baselines:
            t = tally(out["pairs"][b])
            cells += [f"{t['ahead']} of {t['points']} ({t['ahead_sig']})", f"{t['behind']} ({t['behind_sig']})",
                      unreached_text(t)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--proxy", choices=tuple(PROXY_DATASETS), default="vim_proxy_clutter")
    ap.add_argument("--trials", type=int, default=40, help="trials per method's study (the reference included)")
    ap.add_argument("--subset", type=int, default=500, help="held-out images 0..N-1 each trial is scored on")
    ap.add_argument("--images", type=int, default=1000, help="held-out images of the per-image sign tests "
                    "(verify uses them all: keep 1000 but in smoke runs)")
    ap.add_argument("--pairs", type=int, default=15, help="paired timings per verified point (verify's default)")
    ap.add_argument("--step", type=float, default=0.1, help="speed-up grid step of the matched table")
    ap.add_argument("--runs", default="runs/fronts", help="folder of the SQLite file and the latency table")
    ap.add_argument("--evaluator", help="module:function standing in for evaluate() (smoke tests)")
    ap.add_argument("--lock", help="flock this file around each timed step, calibration and verification (e.g. /tmp/stm-cpu.lock)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--count-high", type=int, default=None, metavar="N",
                    help="the most tokens one merging layer may remove, every method alike (default: demo.yaml's)")
    ap.add_argument("--sampler-seed", type=int, default=None, metavar="N",
                    help="the sampler's seed, every method alike (default: demo.yaml's); its studies are named -seedN")
    ap.add_argument("--stm-knobs", type=stm_knobs, default=None, metavar="YAML",
                    help="more STM knobs its search chooses, as in a space file's knobs, e.g. "
                    "'{drop: {type: categorical, choices: [0.0, 0.25, 0.5, 0.75]}}' (a study of its own)")
    ap.add_argument("--probe", metavar="FILE", help="a saliency probe file for the proxy instead of its shipped "
                    "one (STM's defaults read it; its studies and latency table are named -probe-<sha256 prefix>)")
    ap.add_argument("--out", help="write the JSON here")
    ap.add_argument("--report", metavar="JSON", help="print the report of an earlier run's JSON and stop")
    ap.add_argument("--summary", metavar="JSON", nargs="+", help="print a Markdown table of earlier runs' "
                    "matched points against each baseline, a row a JSON, and stop")
    args = ap.parse_args(argv)
    if args.summary:
        outs = [json.loads(Path(f).read_text()) for f in args.summary]
        print(summary(outs))
        return {"summary": [{b: tally(o["pairs"][b]) for b in o["pairs"]} for o in outs]}
    if args.report:
        out = json.loads(Path(args.report).read_text())
        print(report(out))
        return out
    return run_and_write(args, run, report)


def run_and_write(args: argparse.Namespace, run: Callable[[argparse.Namespace], dict],
                  report: Callable[[dict], str]) -> dict:
    """Run on ``args.threads`` threads, print the report, and write the JSON to ``args.out`` where given."""
    torch.set_num_threads(args.threads)
    out = run(args)
    print(report(out))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
