"""How well the latency model predicts speed-ups: predicted against paired-measured, over random configs.

Calibrates a latency table (stmsearch.evaluation.latency) for the model on this device, draws
``--configs`` random merge configs (methods, knobs and parametric schedules like the shipped
spaces', clipped to capacity), and for each prints the predicted speed-up, the paired-measured one
(stmsearch.evaluation.speed.paired_speed) and their relative error; then the median and 90th
percentile absolute error. Goal (issue #11): median <= 5% on the H200, <= 10% on the CPU.

    python bench/bench_latency_model.py                                   # CPU: vim_proxy, batch 32
    STMSEARCH_SCAN=triton python bench/bench_latency_model.py --model vim_tiny --device cuda --batch 256
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

import stmsearch
from stmsearch.evaluation.api import resolve_device
from stmsearch.evaluation.latency import calibrate
from stmsearch.evaluation.speed import paired_speed
from stmsearch.merging.schedule import walk

KNOBS = {"stm": {"metric": ["dt", "hidden", "x", "B"], "fading": ["estimated", "layer", "fixed", "none"], "runs": [2, 3, 4],
                 "window": [0, 4, 8]},
         "tome": {"metric": ["hidden", "x"], "window": [0, 4]}, "prune": {"window": [0, 4]},
         "random": {"window": [0, 4]}}


def random_configs(n: int, depth: int, tokens: int, seed: int, most: float = 0.5) -> list[stmsearch.MergeConfig]:
    """``n`` distinct valid configs between about 5% and ``most`` fewer token-layers (counts to 28 past 0.5)."""
    rng, out, seen = random.Random(seed), [], set()
    while len(out) < n:
        method = rng.choice(list(KNOBS))
        knobs = {k: rng.choice(v) for k, v in KNOBS[method].items()}
        schedule = {"start": rng.randint(0, depth // 3), "interval": rng.randint(1, 3),
                    "count": rng.randrange(2, 17 if most <= 0.5 else 29, 2), "shape": rng.choice(["constant", "increasing", "decreasing"])}
        asked = stmsearch.MergeConfig(method=method, schedule=schedule, **knobs)
        cfg = asked.model_copy(update={"schedule": walk(asked, depth, tokens, clip=True).schedule})
        key = json.dumps(cfg.to_dict(), sort_keys=True)
        if key not in seen and 0.05 <= cfg.token_reduction(depth, tokens) <= most:
            seen.add(key)
            out.append(cfg)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vim_proxy")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--configs", type=int, default=50)
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-reduction", type=float, default=0.5,
                    help="the most fewer token-layers a drawn config may have (the fronts' fast ends reach 0.6-0.7)")
    ap.add_argument("--json", help="Write the per-config results here.")
    args = ap.parse_args()
    device = resolve_device(args.device)
    model = stmsearch.create_model(args.model).to(device)
    depth, tokens = model.cfg.depth, model.cfg.num_patches + 1
    configs = random_configs(args.configs, depth, tokens, args.seed, args.max_reduction)
    t0 = time.perf_counter()
    table = calibrate(model, args.model, configs, device, args.batch, args.bf16)
    print(f"calibrated in {time.perf_counter() - t0:.0f} s: {len(table.tokens)} token counts, "
          f"{len(table.merge_ms)} merge steps; {table.meta['device']}, batch {args.batch}"
          f"{', bf16' if args.bf16 else ''}; scan backend {stmsearch.ops.resolve_backend(device)}")
    shape = (model.cfg.in_chans, model.cfg.img_size, model.cfg.img_size)
    rows, reference_ms = [], table.predict_ms(None, depth, tokens)
    print(f"{'#':>3} {'method':7} {'merged':>7} {'predicted':>9} {'measured':>9} {'95% CI':>15} {'error':>7}")
    for i, cfg in enumerate(configs):
        predicted = reference_ms / table.predict_ms(cfg, depth, tokens)
        m = paired_speed(model, cfg, shape, args.batch, device, pairs=args.pairs, bf16=args.bf16)
        err = predicted / m["speedup"] - 1
        rows.append({"config": cfg.to_dict(), "token_reduction": cfg.token_reduction(depth, tokens),
                     "predicted": predicted, "measured": m["speedup"], "ci": m["speedup_ci"], "error": err})
        ci = f"{m['speedup_ci'][0]:.3f}-{m['speedup_ci'][1]:.3f}"
        print(f"{i:>3} {cfg.method:7} {100 * rows[-1]['token_reduction']:6.1f}% {predicted:9.3f} "
              f"{m['speedup']:9.3f} {ci:>15} {100 * err:+6.1f}%", flush=True)
    errors = sorted(abs(r["error"]) for r in rows)
    p90 = errors[min(len(errors) - 1, int(0.9 * len(errors)))]
    print(f"median absolute error {100 * statistics.median(errors):.1f}%, 90th percentile {100 * p90:.1f}%, "
          f"max {100 * errors[-1]:.1f}% over {len(rows)} configs")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": table.meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    with torch.inference_mode():
        main()
