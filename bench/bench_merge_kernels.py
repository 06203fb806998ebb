"""Per-kernel device time of each merge method's fast path at the shapes a real forward records
(each launch captured 20 times in a CUDA graph and replayed), and edge_scores tiles on the same inputs.

    STMSEARCH_SCAN=triton python bench/bench_merge_kernels.py vim_tiny:64:bf16:0.4 vim_tiny:64:fp32:0.4 \
        [--variants "tome,tome metric=dt"] [--no-tiles]

Arguments MODEL:BATCH:DTYPE:LEVEL; ``--variants`` names rows of bench_merge.VARIANTS. Needs a CUDA GPU.
"""
import argparse, statistics, sys, torch, stmsearch
from pathlib import Path
from stmsearch.ops import merge_triton as mt
from stmsearch.merging.schedules import for_reduction
sys.path.insert(0, str(Path(__file__).parent))
from bench_merge import VARIANTS  # noqa: E402

DEV = "cuda"
NAMES = ["edge_scores", "select_chain", "importance_vectors", "prune_plan", "tome_plan", "stm_2d_plan", "dt_weights",
         "mean_decay", "drop_scores", "apply_drops", "merge_segments"]
DEFAULT = ["stm", "stm metric=x", "stm metric=hidden", "stm weights=dt", "stm fading=estimated", "tome", "prune",
           "random"]


def graph_us(fn, n=20, rounds=7):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n):
            fn()
    g.replay(); torch.cuda.synchronize()
    out = []
    for _ in range(rounds):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); g.replay(); b.record(); torch.cuda.synchronize()
        out.append(a.elapsed_time(b) * 1000 / n)
    return statistics.median(out)


def record_calls(model, x, dtype, names):
    """The merge kernels ``names`` one forward of ``model`` (as patched) calls, as (name, args, kwargs) in call
    order, and the kernels themselves (name -> function)."""
    calls, originals = [], {n: getattr(mt, n) for n in names}
    for n in names:
        setattr(mt, n, lambda *a, _n=n, **k: calls.append((_n, a, k)) or originals[_n](*a, **k))
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            model(x)
    finally:
        for n in names:
            setattr(mt, n, originals[n])
    return calls, originals


@torch.inference_mode()
def main(model_name, batch, dtype, level, names=DEFAULT, tiles_sweep=True):
    model = stmsearch.create_model(model_name).to(DEV).eval()
    x = torch.randn(batch, 3, 224, 224, device=DEV)
    depth = len(model.layers)
    for variant in (VARIANTS[n] for n in names):
        cfg = for_reduction(stmsearch.MergeConfig(**variant), level, depth)
        stmsearch.apply(model, cfg)
        calls, originals = record_calls(model, x, dtype, NAMES)
        per = {}
        for n, a, k in calls:
            per.setdefault(n, []).append(graph_us(lambda: originals[n](*a, **k)))
        steps = sum(1 for c in calls if c[0] == "merge_segments")
        desc = " ".join(f"{k}={v}" for k, v in variant.items())
        tot = sum(sum(v) for v in per.values())
        print(f"{model_name} b{batch} {dtype} {level:.0%} {desc}: {steps} merge steps, kernels {tot:.0f} us/forward: "
              + ", ".join(f"{n} {statistics.mean(v):.1f}us x{len(v)}" for n, v in per.items()), flush=True)
        if tiles_sweep and batch == 64 and variant in ({"method": "stm"}, {"method": "stm", "metric": "x"},
                                       {"method": "stm", "metric": "hidden"}):
            es = [(a, k) for n, a, k in calls if n == "edge_scores"]
            a, k = es[len(es) // 2]
            cf, chans = a[1], a[0].shape[1 if a[1] else 2]
            res = []
            base = [(16, 64, 4), (32, 64, 4), (64, 32, 4), (64, 64, 4), (128, 16, 4), (128, 32, 4), (128, 32, 8),
                    (256, 16, 8), (64, 128, 8), (16, 128, 4), (8, 256, 4), (32, 128, 8), (32, 32, 2), (64, 16, 2),
                    (8, 512, 4), (16, 512, 8), (4, 512, 4), (16, 256, 4)]
            for tiles in [t + (False,) for t in base] + [t + (True,) for t in base if t[0] >= 8]:
                try:
                    res.append((graph_us(lambda: originals["edge_scores"](*a, **k, tiles=tiles)), tiles))
                except Exception as exc:  # noqa: BLE001
                    print("  tiles", tiles, "failed", type(exc).__name__, str(exc)[:80])
            res.sort()
            print(f"  edge_scores tiles ({'channels-first' if cf else 'channels-last'}, C={chans}, "
                  f"feat {tuple(a[0].shape)} strides {a[0].stride()} {a[0].dtype}): "
                  + ", ".join(f"{t} {us:.1f}" for us, t in res[:6]) + f" | default {mt.edge_tiles(cf, chans)}", flush=True)
    stmsearch.apply(model, None)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="+", metavar="MODEL:BATCH:DTYPE:LEVEL")
    ap.add_argument("--variants", default=",".join(DEFAULT))
    ap.add_argument("--no-tiles", action="store_true", help="skip the edge_scores tile sweep")
    args = ap.parse_args()
    chosen = [v.strip() for v in args.variants.split(",")]
    if unknown := [v for v in chosen if v not in VARIANTS]:
        sys.exit(f"--variants: unknown {unknown} (known: {', '.join(VARIANTS)})")
    for spec in args.specs:
        m, b, d, l = spec.split(":")
        main(m, int(b), d, float(l), chosen, not args.no_tiles)
