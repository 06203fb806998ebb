"""Fidelity of STM against the baselines on both trained proxies, with exact paired sign tests,
and STM's default knobs chosen by measurement on images the report does not use.

    # choose on held-out images 0-499 of both proxies, report on 500-999 (one command, ~3 min on an H200)
    python bench/bench_fidelity.py --device cuda --mode all --out fidelity.json --markdown bench/FIDELITY.md
    python bench/bench_fidelity.py --mode select --select-images 0:50 --limit 4       # CPU smoke
    python bench/bench_fidelity.py --mode all --select-images 0:20 --report-images 500:520 --limit 4 \
        --levels 0.4 --stage2 weights,importance --out /tmp/f.json --markdown /tmp/F.md   # CPU end to end, < 1 min
    python bench/bench_fidelity.py --mode report --chosen fidelity.json --report-images 0:1000

Schedules: at each level (10/20/30/40% fewer token-layers) every method runs the same constant
schedule from layer 2 (stmsearch.evaluation.fidelity.shared_schedule); a config that cannot carry
it runs its own closest schedule, marked * with the reduction it ran.

Select (images --select-images, both proxies, every level):
  stage 1: every combination of metric x damage x fading x window (0/4/8) x runs (--stage1), other
           knobs at their current defaults; stage 2: every combination of the remaining categorical STM knobs of
           the method table (neighbourhood, symmetric, weights, size_aware_decay, damage, importance) around the
           stage-1 winner (--stage2 names a subset). Choices come from the method table's ``knobs``.
  rule:    the variant with the highest mean accuracy over both proxies and all levels, among
           variants that ran the shared schedule in every cell (all, if none did); ties go to the earlier variant
           (grid order puts each knob's current default first).
Report (images --report-images): the chosen STM (or the current default if nothing was chosen),
the current default, STM variants one knob away from the chosen one, tome, prune and random
(seeds 0-2); exact two-sided sign test of the chosen STM against every other row: ``+W/-L p``
(W images only STM gets right, L images only the other row gets right).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

from stmsearch.evaluation.fidelity import (BASELINES, LEVELS, PROXY_DATASETS, bits, evaluate_cell, load_proxy, paired,
                                           parse_levels, parse_range)
from stmsearch.merging.config import ConfigError, MergeConfig
from stmsearch.merging.methods import get_method

WINDOWS = (0, 4, 8)  # the window's table range is 0-16; these span "none" to the current default
STAGE1 = ("metric", "damage", "fading", "window", "runs")  # --stage1 changes it
RULE = ("highest mean accuracy over both proxies and all levels on the selection images, among variants "
        "that ran the shared schedule in every cell (all variants if none did); ties to the earlier variant "
        "(defaults first)")


def _choices(knob: str) -> list:
    """The knob's values, the current default first (so ties keep the default)."""
    default = getattr(MergeConfig(), knob)
    spec = get_method("stm").knobs[knob]
    values = list(WINDOWS) if knob == "window" else list(spec["choices"])
    if knob == "window":
        default = MergeConfig().protect
    return [default] + [v for v in values if v != default]


def stage2_knobs(stage1=STAGE1, only=None) -> list[str]:
    """Categorical STM knobs of the method table that stage 1 does not vary (those in ``only``, if given)."""
    return [k for k, spec in get_method("stm").knobs.items()
            if k not in stage1 and spec.get("type") == "categorical" and (only is None or k in only)]


def grid(knobs: list[str], base: dict) -> list[dict]:
    """Every combination of ``knobs`` (their table choices) on top of ``base``; invalid configs left out."""
    out = []
    for values in itertools.product(*(_choices(k) for k in knobs)):
        over = {"method": "stm", **base, **dict(zip(knobs, values))}
        try:
            MergeConfig(**over)
        except ValueError:
            continue  # e.g. runs > 4 with 2d neighbours
        out.append(over)
    return out


def canonical(over: dict) -> dict:
    """The config ``over`` stands for, window resolved (None and the method's default are one config)."""
    cfg = MergeConfig(**over)
    return {**cfg.model_dump(exclude={"schedule"}), "window": cfg.protect}


def label(over: dict) -> str:
    """The method and the knobs that differ from its current default (``stm (current default)``)."""
    cfg, default = canonical(over), canonical({"method": over.get("method", "stm")})
    diff = " ".join(f"{k}={cfg[k]}" for k in cfg if cfg[k] != default[k])
    if cfg["method"] == "stm" and not diff:
        return "stm (current default)"
    return f"{cfg['method']} {diff}".strip()


def run_variant(proxies: list, over: dict, levels, batch: int) -> dict:
    """Cells {proxy: {level: cell}} of one config; a level no schedule fits is left out (None)."""
    cells = {}
    for p in proxies:
        cells[p.name] = {}
        for t in levels:
            try:
                cells[p.name][t] = evaluate_cell(p, over, t, batch)
            except ConfigError as exc:
                print(f"  {label(over)} on {p.name} at {t:.0%}: no schedule fits ({exc})", file=sys.stderr)
                cells[p.name][t] = None
    return cells


def _cell_text(cell) -> str:
    if cell is None:
        return "  n/a "
    return f"{cell['accuracy']:.3f}" + (" " if cell["shared"] else "*")


def summarise(cells: dict) -> tuple[float, bool]:
    """(mean accuracy over all cells, whether every cell ran the shared schedule)."""
    flat = [c for per in cells.values() for c in per.values()]
    if any(c is None for c in flat):
        return float("nan"), False
    return sum(c["accuracy"] for c in flat) / len(flat), all(c["shared"] for c in flat)


def select(proxies: list, levels, batch: int, limit: int | None, stage1=STAGE1, stage2=None) -> dict:
    """Stage 1 and stage 2 of the grid; returns every variant's figures and the chosen overrides."""
    variants, t0 = [], time.perf_counter()

    def run_stage(stage: int, overs: list[dict]) -> None:
        overs = overs[:limit] if limit else overs
        for i, over in enumerate(overs, 1):
            if any(canonical(v["overrides"]) == canonical(over) for v in variants):
                continue  # stage 2 repeats the stage-1 winner
            cells = run_variant(proxies, over, levels, batch)
            mean, qualified = summarise(cells)
            variants.append({"stage": stage, "overrides": over, "label": label(over), "cells": cells,
                             "mean": mean, "qualified": qualified})
            row = " | ".join(" ".join(_cell_text(c) for c in per.values()) for per in cells.values())
            print(f"stage {stage} [{i:3}/{len(overs)}] {label(over):60} | {row} | mean {mean:.4f}"
                  + ("" if qualified else " (not qualified)"), flush=True)

    run_stage(1, grid(list(stage1), {}))
    best1 = best(variants)
    run_stage(2, grid(stage2_knobs(stage1, stage2), {k: best1["overrides"][k] for k in stage1}))
    chosen = best(variants)
    evals = sum(1 for v in variants for per in v["cells"].values() for c in per.values() if c is not None)
    return {"rule": RULE, "variants": variants, "stage1_winner": best1["overrides"], "chosen": chosen["overrides"],
            "chosen_label": chosen["label"], "chosen_mean": chosen["mean"], "evals": evals,
            "seconds": time.perf_counter() - t0}


def best(variants: list[dict]) -> dict:
    """The rule: highest mean among qualified variants (all variants if none qualifies), first on ties."""
    pool = [v for v in variants if v["qualified"]] or [v for v in variants if v["mean"] == v["mean"]]
    if not pool:
        raise SystemExit("bench_fidelity: no variant could run at every level")
    # max keeps the first of equal means; rounded, so means of equal counts summed in another order tie
    return max(pool, key=lambda v: round(v["mean"], 7))  # float32 accuracies: errors near 1e-8


def neighbours(chosen: dict) -> dict[str, dict]:
    """STM rows one knob away from ``chosen``: the knobs the proxies' earlier figures found to matter."""
    cfg = MergeConfig(**chosen)
    flips = {"fading": "none" if cfg.fading != "none" else "estimated", "symmetric": not cfg.symmetric,
             "window": 0 if cfg.protect else 8, "metric": "x" if cfg.metric == "hidden" else "hidden",
             "runs": 2 if cfg.runs != 2 else 4, "damage": "ward" if cfg.damage == "cosine" else "cosine",
             "importance": "none" if cfg.importance != "none" else "mean",
             "weights": "mean" if cfg.weights == "norm" else "norm",
             "importance_power": 1.0 if cfg.importance_power != 1 else 4.0}
    return {label({**chosen, k: v}): {**chosen, k: v} for k, v in flips.items()}


def report(proxies: list, levels, batch: int, chosen: dict | None) -> dict:
    """Every row of the report and the sign test of the headline STM against each other row."""
    t0 = time.perf_counter()
    head = chosen or {"method": "stm"}
    rows = {"STM (chosen)" if chosen else "STM (current default)": head}
    if chosen:
        rows["stm (current default)"] = {"method": "stm"}
    for name, over in {**neighbours(head), **BASELINES}.items():
        if all(canonical(over) != canonical(o) for o in rows.values()):
            rows[name] = over
    results = {}
    for name, over in rows.items():
        cells = run_variant(proxies, over, levels, batch)
        results[name] = {"overrides": over, "cells": cells}
        print(f"report {name:50} | " + " | ".join(" ".join(_cell_text(c) for c in per.values())
                                                  for per in cells.values()), flush=True)
    headline = next(iter(results))
    tests = {}
    for p in proxies:
        tests[p.name] = {}
        for t in levels:
            ref = results[headline]["cells"][p.name][t]
            tests[p.name][t] = {name: paired(ref["correct"], r["cells"][p.name][t]["correct"])
                                for name, r in results.items()
                                if name != headline and ref is not None and r["cells"][p.name][t] is not None}
    evals = sum(1 for r in results.values() for per in r["cells"].values() for c in per.values() if c is not None)
    return {"headline": headline, "rows": results, "tests": tests, "evals": evals,
            "seconds": time.perf_counter() - t0}


def tables(rep: dict, proxies: list, levels, markdown: bool) -> str:
    """One table per proxy: accuracy per level and the headline's sign test against the row."""
    out = []
    for p in proxies:
        n = len(p.indices)
        title = f"{p.name} on {p.dataset}, held-out images {p.indices.start}-{p.indices.stop - 1} ({n})"
        head = ["method"] + [f"-{t:.0%}" for t in levels]
        lines = []
        for name, r in rep["rows"].items():
            cells = []
            for t in levels:
                c = r["cells"][p.name][t]
                if c is None:
                    cells.append("n/a")
                    continue
                text = f"{c['accuracy']:.3f}" + ("" if c["shared"] else f"* ({c['reduction']:.1%})")
                test = rep["tests"][p.name][t].get(name)
                if test is not None:
                    text += f" +{test['wins']}/-{test['losses']} p={test['p']:.2g}"
                cells.append(text)
            lines.append([name] + cells)
        random_rows = [r for name, r in rep["rows"].items() if name.startswith("random s")]
        if random_rows:
            cells = []
            for t in levels:
                accs = [r["cells"][p.name][t]["accuracy"] for r in random_rows if r["cells"][p.name][t]]
                ps = [rep["tests"][p.name][t][name]["p"] for name in rep["rows"]
                      if name.startswith("random s") and name in rep["tests"][p.name][t]]
                cells.append(f"{sum(accs) / len(accs):.3f} max p={max(ps):.2g}" if accs and ps else "n/a")
            lines.append([f"random (mean of {len(random_rows)} seeds)"] + cells)
        if markdown:
            out += [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            out += ["| " + " | ".join(row) + " |" for row in lines] + [""]
        else:
            width = max(len(r[0]) for r in lines) + 1
            out += [title, f"{head[0]:{width}}" + "".join(f"{h:>34}" for h in head[1:])]
            out += [f"{row[0]:{width}}" + "".join(f"{c:>34}" for c in row[1:]) for row in lines] + [""]
    out.append(f"Row figures: accuracy, then {rep['headline']} against the row: +W images only it gets right, "
               "-L images only the row gets right, exact two-sided sign test p. * = the row's capacity could not "
               "carry the shared schedule; it ran its own closest one (reduction in brackets).")
    return "\n".join(out)


def selection_text(sel: dict, top: int = 10) -> str:
    """Markdown: the rule, the chosen variant and the best ``top`` variants by it (the evidence)."""
    ranked = sorted(sel["variants"], key=lambda v: (not v["qualified"], -v["mean"]))[:top]
    default = next((v for v in sel["variants"] if v["label"] == "stm (current default)"), None)
    proxies = list(sel["variants"][0]["cells"])
    out = [f"Rule: {RULE}.", "", f"Chosen: `{sel['chosen_label']}` (overrides `{json.dumps(sel['chosen'])}`), "
           f"mean accuracy {sel['chosen_mean']:.4f}"
           + (f"; the current default: {default['mean']:.4f}" + ("" if default["qualified"] else
                                                                  " (not qualified: it could not carry every shared schedule)")
              if default else "") + ".", "",
           f"{len(sel['variants'])} variants, {sel['evals']} evaluations in {sel['seconds']:.0f} s. Best {top}:", "",
           "| variant | stage | " + " | ".join(f"{p} mean" for p in proxies) + " | mean | qualified |",
           "|---|---|" + "---|" * len(proxies) + "---|---|"]
    for v in ranked:
        per = [sum(c["accuracy"] for c in v["cells"][p].values() if c) / max(1, sum(1 for c in v["cells"][p].values() if c))
               for p in proxies]
        out.append(f"| {v['label']} | {v['stage']} | " + " | ".join(f"{m:.4f}" for m in per)
                   + f" | {v['mean']:.4f} | {'yes' if v['qualified'] else 'no'} |")
    return "\n".join(out)


def document(out: dict, rep: dict, proxies: list, levels) -> str:
    """bench/FIDELITY.md: how the figures were made, the selection's evidence and the report tables."""
    lines = ["# Fidelity of STM against the baselines (bench/bench_fidelity.py)", "",
             f"Device {out['device']}, torch {out['torch']}; command: `{out['command']}`.", "",
             "Every method runs the same constant schedule from layer 2 at each level (10-40% fewer "
             "token-layers) where its capacity allows (* otherwise, with the reduction it ran).", ""]
    if "select" in out:
        lines += [f"## STM's defaults, chosen on held-out images {out['select']['images']}", "",
                  selection_text(out["select"]), ""]
    lines += [f"## Report on held-out images {rep['images'] if 'images' in rep else ''}", "",
              tables(rep, proxies, levels, markdown=True)]
    return "\n".join(lines) + "\n"


def _jsonable(obj):
    if isinstance(obj, torch.Tensor):
        return bits(obj)
    if isinstance(obj, dict):
        return {(f"{k:.2f}" if isinstance(k, float) else k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("select", "report", "all"), default="all")
    ap.add_argument("--proxy", choices=(*PROXY_DATASETS, "both"), default="both")
    ap.add_argument("--select-images", default="0:500", help="held-out images the selection uses (START:STOP)")
    ap.add_argument("--report-images", default="500:1000", help="held-out images the report uses (START:STOP)")
    ap.add_argument("--levels", default=",".join(str(t) for t in LEVELS), help="token reductions, comma-separated")
    ap.add_argument("--chosen", help="report mode: a JSON written by --mode select/all; its chosen STM is the headline")
    ap.add_argument("--limit", type=int, help="at most this many variants per selection stage (smoke runs)")
    ap.add_argument("--stage1", default=",".join(STAGE1),
                    help="STM knobs stage 1 crosses (the other categorical knobs go to stage 2)")
    ap.add_argument("--stage2", help="STM knobs stage 2 crosses, comma-separated (default: every categorical knob "
                    "stage 1 leaves; the others stay at their current defaults)")
    ap.add_argument("--plan", action="store_true", help="print how many evaluations the run would make, and stop")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--out", help="write everything (per-image correctness included) to this JSON")
    ap.add_argument("--markdown", help="write the report tables as Markdown to this file")
    args = ap.parse_args()
    try:
        levels = parse_levels(args.levels)
        sel_range, rep_range = parse_range(args.select_images), parse_range(args.report_images)
    except ValueError as exc:
        ap.error(str(exc))
    if args.mode == "all" and set(sel_range) & set(rep_range):
        ap.error(f"--select-images {args.select_images} and --report-images {args.report_images} overlap: "
                 "choosing on the report's images would tune to the test")
    names = list(PROXY_DATASETS) if args.proxy == "both" else [args.proxy]
    stage1 = tuple(args.stage1.split(","))
    unknown = [k for k in stage1 if k not in get_method("stm").knobs or k == "gamma"]
    if unknown:
        ap.error(f"--stage1: {unknown[0]!r} is not a categorical STM knob (allowed: window, "
                 + ", ".join(stage2_knobs(("window",))) + ")")
    stage2 = tuple(args.stage2.split(",")) if args.stage2 else None
    left = stage2_knobs(stage1)
    if stage2 and any(k not in left for k in stage2):
        ap.error(f"--stage2: {next(k for k in stage2 if k not in left)!r} is not a categorical STM knob stage 1 "
                 f"leaves (allowed: {', '.join(left)})")
    cells = len(names) * len(levels)
    n1 = min(len(grid(list(stage1), {})), args.limit or 10 ** 9)
    n2 = min(len(grid(stage2_knobs(stage1, stage2), {})), args.limit or 10 ** 9)
    n_select = (n1 + n2) * cells if args.mode != "report" else 0
    n_report = (2 + len(neighbours({"method": "stm"})) + len(BASELINES)) * cells if args.mode != "select" else 0
    print(f"plan: select {n1} + at most {n2} variants x {cells} cells = {n_select} evaluations of "
          f"{len(sel_range)} images; report at most {n_report} evaluations of {len(rep_range)} images", flush=True)
    if args.plan:
        return
    out: dict = {"device": args.device, "levels": levels, "proxies": names, "torch": torch.__version__,
                 "command": "python " + " ".join(sys.argv)}
    chosen = None
    if args.chosen:
        try:
            out["select"] = json.loads(Path(args.chosen).read_text())["select"]  # its evidence goes to --markdown
        except (OSError, ValueError, KeyError) as exc:
            ap.error(f"--chosen {args.chosen}: not a JSON written by --mode select/all ({exc})")
        chosen = out["select"]["chosen"]
    if args.mode in ("select", "all"):
        proxies = [load_proxy(n, sel_range, args.device) for n in names]
        print(f"select on images {args.select_images} of {', '.join(names)}, levels {levels}, {args.device}", flush=True)
        sel = select(proxies, levels, args.batch, args.limit, stage1, stage2)
        out["select"] = {"images": args.select_images, **sel}
        chosen = sel["chosen"]
        print(f"chosen ({RULE}): {sel['chosen_label']}, mean {sel['chosen_mean']:.4f}; "
              f"{sel['evals']} evaluations of {len(sel_range)} images in {sel['seconds']:.1f} s "
              f"({sel['seconds'] / max(sel['evals'], 1):.3f} s each)", flush=True)
    if args.mode in ("report", "all"):
        proxies = [load_proxy(n, rep_range, args.device) for n in names]
        print(f"report on images {args.report_images}", flush=True)
        rep = {"images": args.report_images, **report(proxies, levels, args.batch, chosen)}
        out["report"] = rep
        print(f"{rep['evals']} evaluations of {len(rep_range)} images in {rep['seconds']:.1f} s "
              f"({rep['seconds'] / max(rep['evals'], 1):.3f} s each)\n")
        print(tables(rep, proxies, levels, markdown=False))
        if args.markdown:
            Path(args.markdown).write_text(document(out, rep, proxies, levels))
            print(f"wrote {args.markdown}")
    if args.out:
        Path(args.out).write_text(json.dumps(_jsonable(out), indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
