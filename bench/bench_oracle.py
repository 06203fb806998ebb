"""How good could STM's choice of merges be? An oracle that measures every candidate.

At each merging layer the oracle tries every candidate on its own, one adjacent merge (with STM's
merge weights) or one dropped token, runs the rest of the model with it and no further reduction,
and measures the KL divergence of the class prediction from the current state's prediction. It then
takes the ``r`` candidates of least KL: in STM's blocks (``oracle blocks``), on any adjacent pair
(``oracle free``) or as pruning (``oracle prune``). Labels are never read. It costs about as many
forwards as candidates per layer, so it is a diagnostic, not a method: it bounds what a better
damage estimate could buy each family under the shared schedules of bench_fidelity.py.

    python bench/bench_oracle.py --device cuda --images 0:500 --out oracle.json     # ~2 min per proxy on an H200
    python bench/bench_oracle.py --proxy vim_proxy --images 0:4 --levels 0.4        # CPU smoke, ~1 min

``taylor blocks`` prices the same merges without running them: the Jacobian of the class logits with
respect to the residual stream (one batched backward through the remaining layers, no further
reduction) gives each merge's first-order logit change, and its Fisher quadratic 1/2 dz^T (diag p -
p p^T) dz approximates the measured KL. Still a diagnostic (a backward per merging layer): it shows
how much of the oracle's gain a per-image gradient carries.

Rows: STM at its defaults, prune, and the oracles, each on the same images and shared schedule;
``+W/-L p``: exact two-sided sign test of the row against STM, prune and ``oracle prune``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from stmsearch.evaluation.fidelity import (PROXY_DATASETS, accuracy_text, bits, config_at, correct, level_table,
                                           load_proxy, paired, parse_levels, parse_range)
from stmsearch.merging import features as ft
from stmsearch.merging import functions as fn
from stmsearch.merging.gradients import fisher_kl, logit_jacobian, not_recording, tail_logits
from stmsearch.merging.capacity import eligible
from stmsearch.merging.methods import METHODS, STM_DEFAULTS, Method, _stm_capacity, register_method
from stmsearch.merging.patch import apply

ROWS = {"stm": {"method": "stm"}, "prune": {"method": "prune", "window": 0},
        "oracle blocks": {"method": "oracle", "edges": "blocks"},
        "oracle free": {"method": "oracle", "edges": "free"},
        "oracle prune": {"method": "oracle", "edges": "free", "drop": 1.0},
        "taylor blocks": {"method": "oracle", "edges": "blocks"}}
ESTIMATE = {"taylor blocks": "taylor"}  # rows whose oracle prices merges by the Jacobian, not by running them
AGAINST = ("stm", "prune", "oracle prune")
LEVELS = (0.2, 0.3, 0.4)


def merge_candidates(residual: torch.Tensor, sizes: torch.Tensor, cls: torch.Tensor, weight: torch.Tensor):
    """Every single adjacent merge: edge e joins tokens e and e+1 at e (weighted mean by ``weight``).
    Returns residuals (B, E, T-1, C), sizes (B, E, T-1) and class-token indices (B, E), E = T-1
    (edges touching the class token are built too; callers never choose them)."""
    b, t, _ = residual.shape
    e = torch.arange(t - 1, device=residual.device)
    src = e[None] + (e[None] > e[:, None])  # candidate e, slot j: source token j, or j+1 past the merge
    res, size = residual[:, src].clone(), sizes[:, src].clone()
    wa, wb = weight[:, :-1, None].float(), weight[:, 1:, None].float()
    res[:, e, e] = (wa * residual[:, :-1].float() + wb * residual[:, 1:].float()) / (wa + wb)
    size[:, e, e] = sizes[:, :-1] + sizes[:, 1:]
    return res, size, cls[:, None] - (cls[:, None] > e[None] + 1).long()


def drop_candidates(residual: torch.Tensor, sizes: torch.Tensor, cls: torch.Tensor):
    """Every single dropped token k (its patches booked to its outward neighbour, as pruning does):
    residuals (B, T, T-1, C), sizes (B, T, T-1), class-token indices (B, T) (k = class token: unused)."""
    b, t, _ = residual.shape
    k = torch.arange(t, device=residual.device)
    j = torch.arange(t - 1, device=residual.device)
    src = j[None] + (j[None] >= k[:, None])
    size = sizes[:, src].clone()
    # outward: the slot before k for tokens before the class token (k-1), else the slot now at k
    before = k[None] < cls[:, None]
    out = torch.where(before, k[None] - 1, k[None]).clamp(0, t - 2)
    bi = torch.arange(b, device=residual.device)[:, None].expand(b, t)
    size[bi, k[None].expand(b, t), out] += sizes
    return residual[:, src], size, (cls[:, None] - (cls[:, None] > k[None]).long()).clamp_max(t - 2)


def measured_kl(model, step: ft.MergeStep, candidates, chunk: int) -> torch.Tensor:
    """(B, N) KL(current prediction || prediction with candidate n alone), the rest of the model run
    per candidate in chunks of ``chunk`` sequences."""
    info = step.state
    with not_recording(info):
        sa = step.config.size_aware_decay
        base = F.log_softmax(tail_logits(model, step.residual.float(), info["sizes"], step.cls, step.layer, sa), -1)
        res, size, cls = candidates
        b, n = cls.shape
        res, size, cls = res.flatten(0, 1), size.flatten(0, 1), cls.flatten()
        out = torch.cat([tail_logits(model, res[i:i + chunk], size[i:i + chunk], cls[i:i + chunk], step.layer, sa)
                         for i in range(0, b * n, chunk)])
    q = F.log_softmax(out, -1).view(b, n, -1)
    return (base.exp()[:, None] * (base[:, None] - q)).sum(-1)


def merge_logit_change(model, step: ft.MergeStep, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, K) of the rest of the model and, per adjacent merge (weighted mean by ``weight``), their
    first-order change (B, T-1, K): the merge moves token a by wb/(wa+wb) (b - a) and b by wa/(wa+wb)
    (a - b), priced by the Jacobian of the logits (one batched backward through the remaining layers)."""
    z, g = logit_jacobian(model, step)
    x = step.residual.float()
    d = x[:, 1:] - x[:, :-1]
    wa, wb = weight[:, :-1].float(), weight[:, 1:].float()
    return z, (torch.einsum("kbec,bec->bek", g[:, :, :-1], d) * (wb / (wa + wb))[..., None]
               - torch.einsum("kbec,bec->bek", g[:, :, 1:], d) * (wa / (wa + wb))[..., None])


def oracle_plan(step: ft.MergeStep) -> fn.Plan:
    """The ``r`` candidates of least measured KL: drops (``drop`` 1.0), else merges in STM's blocks or
    on any adjacent pair (``edges``), merged with STM's weights; the KL measured, or where the state's
    ``oracle_estimate`` is ``taylor`` estimated (:func:`merge_logit_change`, :func:`fisher_kl`). Outside
    the layers ``oracle_layers`` names (a range; default all), STM's own plan under the same config."""
    cfg, info = step.config, step.state
    layers = info.get("oracle_layers")
    if layers is not None and step.layer not in layers:
        return METHODS["stm"].plan(step)
    model, chunk = info["oracle_model"], info.get("oracle_chunk", 8192)
    residual, t = step.residual.float(), step.residual.shape[1]
    if cfg.drop >= 1.0:
        kl = measured_kl(model, step, drop_candidates(residual, info["sizes"], step.cls), chunk)
        return fn.prune_plan(kl, step.cls, step.r, step.window)
    weight = ft.weights(step)
    if info.get("oracle_estimate") == "taylor":
        kl = fisher_kl(*merge_logit_change(model, step, weight))
    else:
        kl = measured_kl(model, step, merge_candidates(residual, info["sizes"], step.cls, weight), chunk)
    allowed = fn.allowed_edges(step.cls, t, step.window, cfg.runs, step.layer, cfg.edges)
    return fn.chain_plan(fn.choose_edges(kl, allowed, step.r), weight, step.r)


def _capacity(cfg, tokens: int, cls: int, layer: int, patches: int) -> int:
    return eligible(tokens, cfg.protect) if cfg.drop >= 1.0 else _stm_capacity(cfg, tokens, cls, layer, patches)


def register() -> None:
    """Add the ``oracle`` method (STM's defaults and knobs) to the method table once."""
    if "oracle" not in METHODS:
        register_method(Method("oracle", oracle_plan, _capacity, defaults=STM_DEFAULTS, knobs=METHODS["stm"].knobs,
                               records=METHODS["stm"].records, searchable=False, example={"schedule": [0] + [6] * 4},
                               description="diagnostic: measures every candidate (bench/bench_oracle.py)"))


def evaluate(proxy, overrides: dict, target: float, batch: int, chunk: int, layers: range | None = None,
             estimate: str = "measured") -> dict:
    """One row at one level: per-image correctness on the proxy's images under the shared schedule
    (``layers``: where the oracle chooses; STM's plan elsewhere)."""
    cfg, shared = config_at(overrides, target, proxy.depth, proxy.tokens)
    t0 = time.perf_counter()
    apply(proxy.model, cfg)
    proxy.model._stm.update(oracle_model=proxy.model, oracle_chunk=chunk, oracle_estimate=estimate)
    if layers is not None:
        proxy.model._stm["oracle_layers"] = layers
    try:
        ok = correct(proxy.model, proxy.images, proxy.labels, batch)
    finally:
        apply(proxy.model, None)
    return {"accuracy": ok.float().mean().item(), "shared": shared, "correct": ok,
            "seconds": time.perf_counter() - t0}


def table(cells: dict, levels) -> str:
    rows = {}
    for row in next(iter(cells.values())):
        parts = []
        for lv in levels:
            c = cells[lv][row]
            text = accuracy_text(c)
            for other in AGAINST:
                if other != row and other in cells[lv]:
                    p = paired(c["correct"], cells[lv][other]["correct"])
                    text += f"; vs {other} +{p['wins']}/-{p['losses']} p={p['p']:.2g}"
            parts.append(text)
        rows[row] = parts
    return level_table(rows, levels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--proxy", choices=(*PROXY_DATASETS, "both"), default="both")
    ap.add_argument("--images", default="0:500", help="held-out images (START:STOP)")
    ap.add_argument("--levels", default=",".join(str(v) for v in LEVELS), help="token reductions, comma-separated")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"rows to run (of: {', '.join(ROWS)})")
    ap.add_argument("--oracle-layers", action="append", metavar="START:STOP",
                    help="also run each oracle row choosing only at layers START..STOP-1 (STM's plan elsewhere); "
                         "repeatable")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=100, help="images per forward")
    ap.add_argument("--chunk", type=int, default=8192, help="candidate sequences per tail forward (memory)")
    ap.add_argument("--out", help="write accuracies and per-image correctness to this JSON")
    args = ap.parse_args()
    try:
        images = parse_range(args.images)
        levels = parse_levels(args.levels)
    except ValueError as exc:
        ap.error(str(exc))
    rows = args.rows.split(",")
    if any(r not in ROWS for r in rows):
        ap.error(f"--rows: {next(r for r in rows if r not in ROWS)!r} is not a row (allowed: {', '.join(ROWS)})")
    spans = {}
    for text in args.oracle_layers or ():
        try:
            lo, hi = (int(v) for v in text.split(":"))
        except ValueError:
            ap.error(f"--oracle-layers must be START:STOP (e.g. 2:7), got {text!r}")
        spans[text] = range(lo, hi)
    runs = [(row, row, None) for row in rows]
    runs += [(f"{row} @{text}", row, span) for text, span in spans.items() for row in rows
             if row.startswith(("oracle", "taylor"))]
    register()
    names = list(PROXY_DATASETS) if args.proxy == "both" else [args.proxy]
    out = {"command": "python " + " ".join(sys.argv), "device": args.device, "torch": torch.__version__,
           "images": args.images, "levels": levels, "proxies": {}}
    for name in names:
        proxy = load_proxy(name, images, args.device)
        cells: dict = {}
        for lv in levels:
            cells[lv] = {}
            for row, base, span in runs:
                cells[lv][row] = evaluate(proxy, ROWS[base], lv, args.batch, args.chunk, span,
                                          ESTIMATE.get(base, "measured"))
                c = cells[lv][row]
                print(f"{name} -{round(lv * 100)}% {row}: {c['accuracy']:.3f} ({c['seconds']:.0f} s)", flush=True)
        print(f"\n{name}, held-out images {args.images}\n\n{table(cells, levels)}\n", flush=True)
        out["proxies"][name] = {f"{lv:.2f}": {row: {**c, "correct": bits(c["correct"])} for row, c in cl.items()}
                                for lv, cl in cells.items()}
        if args.out:
            with open(args.out, "w") as f:
                json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
