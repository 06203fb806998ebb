"""Merge cost on the GPU: each method and knob against the no-merge-cost bound.

    python bench/bench_merge.py [--models vim_tiny,vim_small] [--batches 64,256] [--dtypes fp32,bf16]
                                [--levels 0.1,0.2,0.3,0.4] [--variants all|NAME,...] [--json FILE]
    python bench/bench_merge.py --profile stm --levels 0.4        # top CUDA kernels, merged against bound
    python bench/bench_merge.py --lengths 192-200,96-104          # odd token counts against multiples of 8
    python bench/bench_merge.py --records                         # cost of recording a metric's features
    python bench/bench_merge.py ... --json rows.json --resume     # time only the rows rows.json lacks

The **bound** of a schedule is the same model timed on sequences already shortened to the same
tokens per layer with no merge step (the residual stream is cut, which costs nothing): what
free merges would give. Per method, knob and reduction the table gives the bound's speed-up
over the unreduced model, the measured one, and their ratio (measured / bound). The unreduced
model, the bound and the merged model are timed in turns in one process (interleaved rounds,
CUDA events), so the ratio compares like with like. Variants whose bound is the same forward (one
schedule at one level; see ``timing_groups``) are timed in one interleaved set with it, each on its
own copy of the model.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch

import stmsearch
from stmsearch.evaluation.throughput import _graphed, interleaved_times
from stmsearch.merging import patch
from stmsearch.models import vim
from stmsearch.merging.methods import get_method
from stmsearch.merging.schedules import for_reduction

DEV = "cuda"  # --device cpu: a smoke run of the script itself (its timings mean nothing)

# name -> config overrides; "stm" runs STM's defaults, the others one knob away from them
VARIANTS: dict[str, dict] = {
    "stm": {"method": "stm"},
    "stm metric=hidden": {"method": "stm", "metric": "hidden"},
    "stm metric=x": {"method": "stm", "metric": "x"},
    "stm metric=B": {"method": "stm", "metric": "B"},
    "stm fading=estimated": {"method": "stm", "fading": "estimated"},
    "stm fading=layer": {"method": "stm", "fading": "layer"},
    "stm fading=none": {"method": "stm", "fading": "none"},
    "stm weights=size": {"method": "stm", "weights": "size"},
    "stm weights=dt": {"method": "stm", "weights": "dt"},
    "stm damage=cosine": {"method": "stm", "damage": "cosine"},
    "stm symmetric": {"method": "stm", "symmetric": True},
    "stm runs=2": {"method": "stm", "runs": 2},
    "stm runs=4": {"method": "stm", "runs": 4},
    "stm weights=mean": {"method": "stm", "weights": "mean"},
    "stm importance=none": {"method": "stm", "importance": "none"},
    "stm importance=max": {"method": "stm", "importance": "max"},
    "stm importance=mean": {"method": "stm", "importance": "mean"},
    "stm importance_power=1": {"method": "stm", "importance_power": 1.0},
    "stm weight_power=1": {"method": "stm", "weight_power": 1.0},
    "stm edges=free": {"method": "stm", "edges": "free"},
    "stm drop=0.5": {"method": "stm", "drop": 0.5},
    "stm 2d": {"method": "stm", "neighbourhood": "2d"},
    "stm size_aware_decay=False": {"method": "stm", "size_aware_decay": False},
    "tome": {"method": "tome"},
    "tome metric=x": {"method": "tome", "metric": "x"},
    "tome metric=dt": {"method": "tome", "metric": "dt"},
    "tome weights=dt": {"method": "tome", "weights": "dt"},
    "prune": {"method": "prune"},
    "random": {"method": "random"},
    "random weights=dt": {"method": "random", "weights": "dt"},
}


def cut_tokens(info: dict, residual: torch.Tensor, hidden: torch.Tensor, r: int, layer: int, mixer) -> torch.Tensor:
    """The bound's merge step: drop the last ``r`` tokens (a view: no kernel runs)."""
    t = residual.shape[1] - r
    info["cls"] = info["cls"].clamp_max(t - 1)
    info["sizes"], info["rep"] = info["sizes"][:, :t], info["rep"][:, :t]
    return residual[:, :t]


class Bound:
    """Inside the block, a patched model runs its schedule without merge cost."""

    def __enter__(self):
        self._original = patch.reduce_tokens, patch.plan_ahead
        patch.reduce_tokens, patch.plan_ahead = cut_tokens, lambda info, layer: None

    def __exit__(self, *exc):
        patch.reduce_tokens, patch.plan_ahead = self._original


GRAPHS = False  # --graphs: every timed forward is a CUDA graph replay (no host launch cost)
LABEL = None  # --label: written into every row (e.g. the commit timed, which a device copy cannot look up)


def forward_fn(model, x, dtype: str, bound: bool = False):
    """A no-argument forward of ``model`` as patched (``bound``: with its merge steps cut)."""
    def run():
        with torch.autocast(DEV if DEV == "cuda" else "cpu", dtype=torch.bfloat16, enabled=dtype == "bf16",
                            cache_enabled=not GRAPHS):
            if bound:
                with Bound():
                    return model(x)
            return model(x)
    return _graphed(run, warmup=2) if GRAPHS else run


LOOP_IMAGES = 1024  # images a timed call runs, in forwards of one batch (--images; a CPU smoke test lowers it)


def seconds(fns, rounds: int, batch: int) -> list[float]:
    """Median seconds of one forward of each of ``fns``, timed in turns.

    Each timed call runs several forwards back to back, as an inference loop does: where the
    host cannot launch kernels as fast as the GPU runs them (small batches), that is what the
    user waits for, and it is timed as such, not hidden behind a queue of idle GPU work.
    """
    repeat = max(1, LOOP_IMAGES // batch)
    looped = [lambda f=f: [f() for _ in range(repeat)] for f in fns]
    times = interleaved_times(looped, torch.device(DEV), rounds, warmup=2)
    return [statistics.median(t) / repeat for t in times]


def make_model(model_name: str):
    """The model on DEV, made outside inference mode, as a user's model is, so it keeps its
    parameter casts between forwards."""
    with torch.inference_mode(False):
        return stmsearch.create_model(model_name).to(DEV).eval()


def pair(model_name: str):
    """Two copies of one model: the unreduced reference and the one each config patches."""
    model = make_model(model_name)
    with torch.inference_mode(False):
        return model, copy.deepcopy(model)


def schedules(names: list[str], levels: list[float], depth: int) -> dict:
    out = {}
    for name in names:
        for level in levels:
            try:
                out[name, level] = for_reduction(stmsearch.MergeConfig(**VARIANTS[name]), level, depth)
            except stmsearch.ConfigError as exc:
                out[name, level] = exc
    return out


def images(model, batch: int) -> torch.Tensor:
    """A random batch of the model's input shape, on DEV."""
    c = model.cfg
    return torch.randn(batch, c.in_chans, c.img_size, c.img_size, device=DEV)


def timing_groups(configs: dict, names: list[str], levels: list[float]) -> dict[tuple, list[tuple]]:
    """Rows that share an unreduced model and a bound, timed in one interleaved set: per level, the
    variants whose bound is the same forward (the schedule, and what the cut model still runs: the
    scaled steps of size-aware decay, the features recorded for a metric). Key -> [(name, level, cfg)]."""
    out: dict[tuple, list[tuple]] = {}
    for level in levels:
        for name in names:
            cfg = configs[name, level]
            if isinstance(cfg, Exception):
                continue
            key = (level, tuple(cfg.schedule), cfg.size_aware_decay, get_method(cfg.method).records(cfg))
            out.setdefault(key, []).append((name, level, cfg))
    return out


@torch.inference_mode()
def table(model_name: str, batch: int, dtype: str, names: list[str], levels: list[float], rounds: int,
          configs: dict, on_row=lambda row: None, done: frozenset = frozenset()) -> list[dict]:
    """Each variant's row at each level. The unreduced model, a group's bound and its variants (one
    model copy each) take turns in one interleaved set (:func:`timing_groups`), so a bound shared by
    n variants costs one timing, not n. ``done``: (variant, level) rows to leave out (``--resume``)."""
    for (name, level), cfg in configs.items():  # schedules() made exactly names x levels
        if isinstance(cfg, Exception):
            print(f"{name:28} {level:5.0%}  no valid schedule: {cfg}")
    groups = [[g for g in group if (g[0], g[1]) not in done] for group in timing_groups(configs, names, levels).values()]
    groups = [g for g in groups if g]
    if not groups:
        print(f"\n{model_name}, batch {batch}, {dtype}: every row is in the --json file already")
        return []
    plain = make_model(model_name)
    depth = len(plain.layers)
    x = images(plain, batch)
    base = forward_fn(plain, x, dtype)
    rows = []
    print(f"\n{model_name}, batch {batch}, {dtype}  (speed-ups over the unreduced model; ratio = measured / bound)")
    print(f"{'variant':28} {'level':>5} {'reduction':>9} {'bound':>7} {'measured':>8} {'ratio':>6}")
    for group in groups:
        with torch.inference_mode(False):
            models = [copy.deepcopy(plain) for _ in range(len(group) + 1)]
        for m, (_, _, cfg) in zip(models, [group[0]] + group):
            stmsearch.apply(m, cfg)
        fns = [base, forward_fn(models[0], x, dtype, bound=True)]
        fns += [forward_fn(m, x, dtype) for m in models[1:]]
        t_base, t_bound, *t_runs = seconds(fns, rounds, batch)
        for (name, level, cfg), t_run in zip(group, t_runs):
            row = {"model": model_name, "batch": batch, "dtype": dtype, "variant": name, "level": level, "label": LABEL,
                   "reduction": cfg.token_reduction(depth), "unreduced_img_s": batch / t_base,
                   "bound": t_base / t_bound, "measured": t_base / t_run, "ratio": t_bound / t_run}
            rows.append(row)
            on_row(row)
            print(f"{name:28} {level:5.0%} {row['reduction']:9.1%} {row['bound']:6.2f}x {row['measured']:7.2f}x "
                  f"{row['ratio']:6.3f}", flush=True)
        del models, fns
    return rows


@torch.inference_mode()
def profile(model_name: str, batch: int, dtype: str, name: str, level: float, top: int, sort: str) -> None:
    """CUDA kernel totals of one merged forward and of its bound (which kernels the merges add)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CUDA] + ([ProfilerActivity.CPU] if sort.startswith("cpu") else [])

    model = make_model(model_name)
    cfg = for_reduction(stmsearch.MergeConfig(**VARIANTS[name]), level, len(model.layers))
    x = images(model, batch)
    stmsearch.apply(model, cfg)
    for bound in (False, True):
        fn = forward_fn(model, x, dtype, bound=bound)
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        with torch_profile(activities=activities) as prof:
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
        print(f"\n{'bound' if bound else 'merged'}: {name} at {level:.0%}, {model_name} batch {batch} {dtype} (3 forwards)")
        print(prof.key_averages().table(sort_by=sort, row_limit=top, max_name_column_width=50))


@torch.inference_mode()
def lengths(model_name: str, batch: int, dtype: str, spans: str, rounds: int) -> None:
    """img/s with every layer at one token count, each against the nearest multiple of 8."""
    a, b = pair(model_name)
    x = images(a, batch)
    tokens = sorted({t for span in spans.split(",") for t in range(int(span.split("-")[0]), int(span.split("-")[-1]) + 1)})
    cfg = lambda t: stmsearch.MergeConfig(method="stm", window=0, runs=8, schedule=[197 - t]) if t < 197 else None  # noqa: E731
    print(f"\n{model_name}, batch {batch}, {dtype}: every layer at T tokens (bound: cut before layer 0)")
    print(f"{'T':>4} {'img/s':>8} {'nearest x8':>10} {'its img/s':>9} {'T / x8 speed, per token':>24}")
    for t in tokens:
        m8 = min(max(8, 8 * round(t / 8)), 8 * (197 // 8))
        stmsearch.apply(a, cfg(t))
        stmsearch.apply(b, cfg(m8))
        ta, tb = seconds([forward_fn(a, x, dtype, bound=True), forward_fn(b, x, dtype, bound=True)], rounds, batch)
        # per-token speed, so a length and its neighbour of 8 compare at equal work
        rel = (tb / m8) / (ta / t)
        print(f"{t:4d} {batch / ta:8.0f} {m8:10d} {batch / tb:9.0f} {rel:24.3f}", flush=True)


@torch.inference_mode()
def records(model_name: str, batch: int, dtype: str, rounds: int) -> None:
    """Forward time with a metric's features recorded (no merges) against without."""
    a, b = pair(model_name)
    x = images(a, batch)
    depth = len(a.layers)
    plain = stmsearch.MergeConfig(method="stm", metric="hidden", fading="fixed", weights="mean",
                                  size_aware_decay=False, schedule=[0] * depth)
    print(f"\n{model_name}, batch {batch}, {dtype}: recording features, no merges")
    for metric in ("x", "B", "dt"):
        stmsearch.apply(a, plain)
        stmsearch.apply(b, plain.model_copy(update={"metric": metric}))
        ta, tb = seconds([forward_fn(a, x, dtype), forward_fn(b, x, dtype)], rounds, batch)
        print(f"  metric {metric:3}: {100 * (tb / ta - 1):+.2f}% of the forward", flush=True)


ROW_KEYS = ("model", "batch", "dtype", "variant", "level", "ratio")


def read_rows(path: Path) -> list[dict]:
    """The rows of a ``--json`` file; exits with one line naming the file where it is not one."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        sys.exit(f"{path}: not bench_merge rows ({exc})")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        sys.exit(f"{path}: not bench_merge rows (not a JSON list of objects)")
    missing = next((k for r in rows for k in ROW_KEYS if k not in r), None)
    if missing:
        sys.exit(f"{path}: not bench_merge rows (no {missing!r} in a row)")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="vim_tiny")
    ap.add_argument("--batches", default="256")
    ap.add_argument("--dtypes", default="fp32")
    ap.add_argument("--levels", default="0.1,0.2,0.3,0.4")
    ap.add_argument("--variants", default="all")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--images", type=int, default=1024,
                    help="images a timed call runs, in back-to-back forwards of one batch (default %(default)s)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--resume", action="store_true", help="keep --json's rows and time only the missing ones")
    ap.add_argument("--label", help="a label written into every row (e.g. the commit)")
    ap.add_argument("--profile", metavar="VARIANT", help="profile one variant instead of the table")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--lengths", metavar="SPANS", help="token-count spans, e.g. 192-200,96-104")
    ap.add_argument("--records", action="store_true", help="cost of recording the metrics' features")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--graphs", action="store_true", help="time CUDA graph replays (merges are sync-free, so they capture)")
    ap.add_argument("--sort", default="cuda_time_total", help="--profile's sort key (e.g. cpu_time_total)")
    ap.add_argument("--layout", choices=["token", "channel"], default=vim.CUDA_LAYOUT,
                    help="CUDA activations under the triton scan (models.vim.CUDA_LAYOUT): token-major with "
                         "GEMMs over all tokens, or padded channel-major rows with per-image GEMMs")
    args = ap.parse_args()
    vim.CUDA_LAYOUT = args.layout
    global DEV, GRAPHS, LOOP_IMAGES, LABEL
    DEV, GRAPHS, LOOP_IMAGES, LABEL = args.device, args.graphs, args.images, args.label
    if DEV == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_merge.py needs a CUDA GPU")
    models, batches, dtypes = args.models.split(","), [int(b) for b in args.batches.split(",")], args.dtypes.split(",")
    levels = [float(v) for v in args.levels.split(",")]
    print(f"{torch.cuda.get_device_name() if DEV == 'cuda' else DEV}, torch {torch.__version__}, scan backend "
          f"{stmsearch.ops.resolve_backend(DEV)}, {'CUDA graphs' if GRAPHS else 'eager'}, {args.layout} layout, "
          f"{LOOP_IMAGES} images a timed call, {args.rounds} rounds")
    for m in models:
        for b in batches:
            for d in dtypes:
                if args.profile:
                    profile(m, b, d, args.profile, levels[-1], args.top, args.sort)
                if args.lengths:
                    lengths(m, b, d, args.lengths, args.rounds)
                if args.records:
                    records(m, b, d, args.rounds)
    if args.profile or args.lengths or args.records:
        return
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"--variants: unknown {unknown} (known: {', '.join(VARIANTS)})")
    if args.resume and not args.json:
        sys.exit("--resume needs --json FILE (the rows to keep)")
    rows = read_rows(args.json) if args.resume and args.json.exists() else []

    def keep(row: dict) -> None:  # each row is written as it comes: a run cut short keeps what it measured
        rows.append(row)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=1))

    for m in models:
        configs = schedules(names, levels, len(stmsearch.create_model(m).layers))
        for b in batches:
            for d in dtypes:
                done = frozenset((r["variant"], r["level"]) for r in rows  # a superseded row is timed again
                                 if (r["model"], r["batch"], r["dtype"]) == (m, b, d) and not r.get("superseded"))
                table(m, b, d, names, levels, args.rounds, configs, keep, done)
    if any(not r.get("superseded") for r in rows):
        print("\n" + summary(rows))


def summary(rows: list[dict]) -> str:
    """The worst current row and how many current rows reach 0.9 (superseded rows are history, not the code)."""
    current = [r for r in rows if not r.get("superseded")]
    worst = min(current, key=lambda r: r["ratio"])
    return (f"worst ratio {worst['ratio']:.3f}: {worst['variant']} at {worst['level']:.0%}, {worst['model']} batch "
            f"{worst['batch']} {worst['dtype']}; {sum(r['ratio'] >= 0.9 for r in current)}/{len(current)} at >= 0.9")


if __name__ == "__main__":
    main()
