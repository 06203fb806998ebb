"""Build the tabular benchmark: every config of the discrete demo space, its accuracy and predicted speed.

    PYTHONPATH=$PWD python -m bench.tabular.build_table --device cuda            # the shipped table
    PYTHONPATH=$PWD python -m bench.tabular.build_table --limit 20 --out /tmp/t.json.gz   # smoke test
    PYTHONPATH=$PWD python -m bench.tabular.build_table --subset 100 --set ... --out /tmp/dev.json.gz

Accuracy: the number of the held-out digits (all 1000 of mnist5k's val split, or the first
``--subset``) each config classifies correctly, one batch per config. Speed: the latency
model's prediction (``--latency``, a table calibrated once and shipped, so the objective is
deterministic) as the speed-up over the unreduced model, as the demo's ``speedup`` objective.
Rows land in ``<out>.partial.jsonl`` as they are measured; a re-run continues from it.

Imports no Optuna, plotly or fvcore (the GPU box has none of them).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

from stmsearch.search.space import model_geometry

from .grid import DEFAULT_SETS, DEMO, discrete_space, distinct_configs, row_key

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "demo_table.json.gz"
DEFAULT_LATENCY = HERE / "latency_cpu.json"
TABLE_VERSION = 1

_worker: dict = {}


def _init(model: str, checkpoint: str | None, dataset: str, subset: int | None, device: str, scan: str | None,
          threads: int | None) -> None:
    """Per process: the model and the digits on ``device``, loaded once."""
    import torch

    from stmsearch.evaluation.datasets import load_dataset
    from stmsearch.models import create_model

    if scan:
        os.environ["STMSEARCH_SCAN"] = scan
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    _worker.update(model=create_model(model, checkpoint).to(dev), data=load_dataset(dataset, "val", dev, subset),
                   device=dev)


def _correct(item: tuple[str, dict | None]) -> tuple[str, int, int]:
    """(key, digits correct, digits) of one config (None: the unreduced model), the whole set in one batch."""
    from stmsearch.evaluation.accuracy import evaluate_accuracy
    from stmsearch.merging import MergeConfig, apply

    key, cfg = item
    model, data = apply(_worker["model"], None if cfg is None else MergeConfig.model_validate(cfg)), _worker["data"]
    out = evaluate_accuracy(model, data, len(data), _worker["device"], progress=False)
    if out["accuracy_ci"] is None:  # non-finite logits: the config is broken, it scores nothing
        return key, -1, out["n"]
    return key, round(out["accuracy"] * out["n"]), out["n"]


def speeds(rows: dict[str, dict | None], latency_path: Path, model: str) -> tuple[dict[str, float], dict]:
    """Predicted ms per batch of each row (by key) from the latency table, and the table's meta."""
    from stmsearch.evaluation.latency import LatencyTable
    from stmsearch.merging import MergeConfig

    table = LatencyTable.load(latency_path)
    if table.meta.get("model") != model:
        raise SystemExit(f"{latency_path}: latency table of {table.meta.get('model')!r}, the space's model is {model!r}")
    depth, tokens = model_geometry(model)
    return {k: table.predict_ms(None if c is None else MergeConfig.model_validate(c), depth, tokens)
            for k, c in rows.items()}, table.meta


def _read_partial(path: Path) -> dict[str, list[int]]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[rec["key"]] = [rec["correct"], rec["n"]]
    return done


def build(args: argparse.Namespace) -> Path:
    space = discrete_space(args.space, args.set)
    depth, tokens = model_geometry(space.model)
    t0 = time.perf_counter()
    configs = distinct_configs(space)
    rows: dict[str, dict | None] = {row_key(None, depth, tokens): None}  # the unreduced model first
    rows.update({k: c.to_dict() for k, c in configs.items()})
    print(f"space {args.space} with {' '.join(args.set) or 'no changes'}: {len(rows) - 1} distinct configs "
          f"+ the unreduced model (enumerated in {time.perf_counter() - t0:.1f}s)", flush=True)
    ms, latency_meta = speeds(rows, Path(args.latency), space.model)
    todo_keys = list(rows)[: None if args.limit is None else args.limit + 1]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.jsonl")
    done = _read_partial(partial)
    stale = {n for _, n in done.values()} - {args.subset or 1000}
    if stale:
        raise SystemExit(f"{partial}: holds rows measured on {sorted(stale)} digits, this run uses "
                         f"{args.subset or 1000}; delete it or use another --out")
    todo = [(k, rows[k]) for k in todo_keys if k not in done]
    print(f"{len(todo_keys) - len(todo)} already in {partial.name}, {len(todo)} to evaluate on {args.device} "
          f"({args.subset or 'all 1000'} digits each, {args.workers} worker(s))", flush=True)
    init = (space.model, space.checkpoint, space.dataset, args.subset, args.device, args.scan, args.threads)
    start, last = time.perf_counter(), 0.0
    with partial.open("a", buffering=1) as log:  # line-buffered: a killed run keeps every row it measured
        if args.workers > 1:
            import torch.multiprocessing as mp

            pool = mp.get_context("spawn").Pool(args.workers, _init, init)
            results = pool.imap_unordered(_correct, todo, chunksize=4)
        else:
            _init(*init)
            pool, results = None, map(_correct, todo)
        for i, (key, correct, n) in enumerate(results, 1):
            done[key] = [correct, n]
            log.write(json.dumps({"key": key, "correct": correct, "n": n}) + "\n")
            now = time.perf_counter() - start
            if args.time_limit and now > args.time_limit and i < len(todo):
                print(f"{i}/{len(todo)} configs after {now:.0f}s: --time-limit reached; run again to continue",
                      flush=True)
                break
            if i == len(todo) or i in (1, 5) or now - last > args.every:
                log.flush()
                last, rate = now, i / now
                print(f"{i}/{len(todo)} configs, {rate:.2f}/s, {now:.0f}s so far, about "
                      f"{(len(todo) - i) / rate:.0f}s left", flush=True)
        if pool is not None:
            pool.terminate()  # all results are in (or the time limit stopped the loop)
            pool.join()
    missing = [k for k in rows if k not in done]
    ref = done.get(next(iter(rows)))
    if ref:  # a check against the CPU figure (98.5% of the 1000 digits on the reference scan)
        print(f"unreduced model: {ref[0]}/{ref[1]} digits correct ({100 * ref[0] / ref[1]:.1f}%)", flush=True)
    data = {"version": TABLE_VERSION, "complete": not missing, "source_space": str(args.space), "sets": list(args.set),
            "space": space.model_dump(mode="json"), "dataset": space.dataset, "split": "val",
            "n": args.subset or 1000, "accuracy_device": args.device, "scan": args.scan or "auto",
            "latency": {"file": Path(args.latency).name, "meta": latency_meta},
            "rows": [{"key": k, "config": c, "correct": done[k][0], "ms": ms[k]} for k, c in rows.items() if k in done]}
    with gzip.open(out, "wt") as f:
        json.dump(data, f, separators=(",", ":"))
    print(f"wrote {out}: {len(data['rows'])} rows ({'complete' if not missing else f'{len(missing)} missing'}), "
          f"{out.stat().st_size / 1024:.0f} KiB, {time.perf_counter() - start:.0f}s of evaluation", flush=True)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", default=str(DEMO), help="parametric space to discretise (default: the demo)")
    p.add_argument("--set", action="append", default=None, metavar="NAME=YAML",
                   help=f"replace a knob spec (list: choices; mapping: updates the range); default {DEFAULT_SETS}")
    p.add_argument("--device", default="cpu", help="where accuracies are measured (cuda on the GPU box)")
    p.add_argument("--subset", type=int, help="first N held-out digits only (a CPU dev table); default all 1000")
    p.add_argument("--limit", type=int, help="evaluate the unreduced model and the first N configs only (smoke test)")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the device (a GPU idles between "
                   "one process' small kernels)")
    p.add_argument("--threads", type=int, help="torch threads per process")
    p.add_argument("--scan", choices=("reference", "mamba_ssm", "triton"),
                   help="scan backend (STMSEARCH_SCAN); default: triton on cuda, else automatic")
    p.add_argument("--latency", default=str(DEFAULT_LATENCY), help="latency table JSON the speed-ups are predicted from")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="gzip JSON table to write")
    p.add_argument("--time-limit", type=float, help="stop after this many seconds of evaluation and write what "
                   "is done (the table says complete: false; a re-run continues)")
    p.add_argument("--every", type=float, default=15.0, help="seconds between progress lines")
    args = p.parse_args(argv)
    if args.set is None:
        args.set = list(DEFAULT_SETS)
    if args.scan is None and args.device.startswith("cuda"):
        args.scan = "triton"  # the fused kernel: the reference scan loops over tokens in Python
    return args


def main(argv: list[str] | None = None) -> None:
    try:
        build(parse_args(argv))
    except (ValueError, OSError) as exc:
        sys.exit(f"build_table: {exc}")


if __name__ == "__main__":  # through the package, so spawned workers find _init and _correct by name
    from bench.tabular.build_table import main as package_main

    package_main()
