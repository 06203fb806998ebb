"""The latency model: a config's forward time predicted from a calibration table, deterministically.

``calibrate`` times, on one device at one batch size and dtype, (1) one ViM layer's forward at
a grid of token counts (the whole stack run at that length, divided by its depth), with and
without size-aware decay (the latter kept as one ratio to the former over the grid), (2) the stem
(patch embedding, final norm and head) and (3) each merge step the search can choose (one entry
per method and the knobs that change its cost, ``Method.cost_knobs``) at the same token counts.
On a GPU each part is timed queued behind idle GPU work, so it counts its GPU time and not its
launch latency (inside a batched forward the launches of one step overlap the work of the one
before). Every measurement of a grid is interleaved with the others
(:func:`~stmsearch.evaluation.throughput.interleaved_times`), so a load that comes and goes during
calibration scales all of them alike. On the CPU each series is then smoothed over the token
counts (:func:`smooth`; the medians as timed stay in ``meta["timed"]``). ``predict_ms`` sums,
over a config's layers, the interpolated layer time at the tokens it runs on plus its merge steps.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..merging import MergeConfig, apply, get_method
from ..merging.patch import reduce_tokens
from ..merging.schedule import walk
from .throughput import CPU_TIMING_THREADS, describe_device, interleaved_times

TABLE_VERSION = 1
CPU_GRID = 12  # token counts timed on the CPU (interpolated between); on a GPU every count
ROUNDS = 5  # interleaved rounds per measurement (the median is kept)
MERGE_ROUNDS = 15  # the same for a merge step, a few milliseconds where a layer stack takes hundreds
STEP_CHUNK_CPU = 96  # merge steps timed in turns on the CPU (their inputs live together: 0.3 GB for the proxy)


class LatencyError(ValueError):
    """A latency table that cannot serve this evaluation (other model, device, batch or dtype; a missing step)."""


@dataclass
class LatencyTable:
    """Milliseconds per forward of one batch, by part. ``tokens`` ascends; lists follow it."""

    meta: dict[str, Any]
    tokens: list[int]
    layer_ms: list[float]
    layer_sad_ms: list[float]  # with size-aware decay (a step per represented patch): layer_ms x meta["sad_ratio"]
    stem_ms: float
    merge_tokens: list[int] = field(default_factory=list)  # counts the merge steps were timed at (ascending)
    merge_ms: dict[str, list[float]] = field(default_factory=dict)  # Method.cost_key -> ms at each merge count

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, source: str = "latency table") -> "LatencyTable":
        try:
            table = cls(**data)
        except TypeError as exc:
            raise LatencyError(f"{source}: not a latency table ({exc})") from None
        if table.meta.get("version") != TABLE_VERSION:
            raise LatencyError(f"{source}: table version {table.meta.get('version')}, this stmsearch reads "
                               f"{TABLE_VERSION}; calibrate again")
        return table

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        path = Path(path)
        try:
            return cls.from_json(json.loads(path.read_text()), str(path))
        except FileNotFoundError:
            raise LatencyError(f"{path}: latency table not found (make one with `stmsearch calibrate`)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LatencyError(f"{path}: not valid JSON ({exc})") from None

    def check(self, model: str, device: str, batch: int, bf16: bool, source: str = "latency table") -> None:
        """Raise :class:`LatencyError` unless the table was made for this model, device, batch and dtype."""
        want = {"model": model, "device": device, "batch": batch, "bf16": bf16}
        wrong = [f"{k} {self.meta.get(k)!r} (this evaluation: {v!r})" for k, v in want.items() if self.meta.get(k) != v]
        if wrong:
            raise LatencyError(f"{source} was made for another setup: {'; '.join(wrong)}; calibrate for this one")

    def _at(self, values: list[float], tokens: float, grid: list[int] | None = None) -> float:
        return float(np.interp(tokens, grid or self.tokens, values))

    def predict_ms(self, cfg: MergeConfig | None, depth: int, num_tokens: int) -> float:
        """Milliseconds of one batch's forward under ``cfg`` (None: the unreduced model)."""
        if cfg is None or get_method(cfg.method).plan is None:
            return self.stem_ms + depth * self._at(self.layer_ms, num_tokens)
        run = walk(cfg, depth, num_tokens)
        layer = self.layer_sad_ms if cfg.size_aware_decay else self.layer_ms
        total = self.stem_ms + sum(self._at(layer, t) for t in run.tokens)
        merges = [(num_tokens if i == 0 else run.tokens[i - 1]) for i, r in enumerate(run.schedule) if r]
        if merges:
            key = get_method(cfg.method).cost_key(cfg)
            if key not in self.merge_ms:
                raise LatencyError(f"latency table has no merge step {key!r} (it has: {', '.join(self.merge_ms) or 'none'}); "
                                   "calibrate with this method and knobs")
            total += sum(self._at(self.merge_ms[key], t, self.merge_tokens) for t in merges)
        return total


def token_grid(num_tokens: int, device: torch.device, points: int | None = None, low: int = 16) -> list[int]:
    """Every count from ``low`` to ``num_tokens`` on a GPU; ``points`` (:data:`CPU_GRID`) spread over
    that range on the CPU."""
    if device.type == "cuda":
        return list(range(low, num_tokens + 1))
    return sorted({int(round(t)) for t in np.linspace(low, num_tokens, points or CPU_GRID)})


def merge_grid(grid: list[int], device: torch.device, stride: int = 8) -> list[int]:
    """Counts the merge steps are timed at: every ``stride``-th of a GPU grid (they vary smoothly,
    and a search may ask for hundreds of knob combinations), the whole CPU grid."""
    if device.type != "cuda":
        return list(grid)
    return sorted(set(grid[::stride]) | {grid[-1]})


def smooth(tokens: list[int], ms: list[float]) -> list[float]:
    """A CPU series as the least-squares quadratic in token count (relative errors), kept positive and
    non-decreasing. On the CPU a layer's or a step's time grows smoothly with its tokens, while its median at
    one count can sit up to 24% off such a curve on a loaded 2-core machine (the CPU tables of 2026-12-05/06):
    a search reads such a count as schedules that pass through it being slow or fast. Series of 3 or fewer
    counts are kept as timed."""
    if len(tokens) < 4:
        return list(ms)
    t, y = np.asarray(tokens, dtype=float), np.asarray(ms, dtype=float)
    fit = np.polyval(np.polyfit(t, y, 2, w=1 / y), t)
    return np.maximum.accumulate(np.maximum(fit, y.min() / 2)).tolist()


def steady_medians(times: list[list[float]]) -> list[float]:
    """Each call's median over rounds (``times[call][round]``), each round first divided by its load: the
    round's total over all the calls against the median round's total. On a shared machine the load moves
    from round to round (a CPU table's layer at 197 tokens took 44-62 ms in three calibrations in a row on
    2026-12-06), and a plain median per call can then come from a light round for one count and a heavy one for the
    next, which bends the series; the calls of one round share its load, so their ratios stand."""
    if len(times) < 2:
        return [statistics.median(t) for t in times]
    totals = [sum(col) for col in zip(*times)]
    typical = statistics.median(totals)
    return [statistics.median(t * typical / total for t, total in zip(ts, totals)) for ts in times]


def price_series(tokens: list[int], merge_tokens: list[int], layer_ms: list[float], sad_ms: list[float],
                 merge_ms: dict[str, list[float]], smoothed: bool) -> tuple[list[float], list[float], dict, float]:
    """The series a table prices from, from medians per layer and per step: the layers, the size-aware
    layers, the steps, and the size-aware ratio. Size-aware decay adds a few elementwise passes per layer
    (CPU: -2% to +5%; bench/results/calib_2026-12-06), less than the noise of one count's timing (its
    series timed count by count lay -8% to +20% from the plain one). STM reads it by default, the
    baselines the plain series, so that noise moved STM's price against theirs schedule by schedule: the
    plain series times one ratio, the median over the grid, instead. ``smoothed`` (the CPU): each series
    through :func:`smooth` first."""
    ratio = statistics.median(s / p for p, s in zip(layer_ms, sad_ms))
    if smoothed:
        layer_ms, merge_ms = smooth(tokens, layer_ms), {k: smooth(merge_tokens, v) for k, v in merge_ms.items()}
    return layer_ms, [ms * ratio for ms in layer_ms], merge_ms, ratio


def _timed_ms(builders: list, device: torch.device, rounds: int, chunk: int, done=None,
              shuffle: bool = False, timed: list | None = None) -> list[float]:
    """Load-steadied median ms (:func:`steady_medians`) of each built forward, interleaved ``chunk`` at a time
    (each chunk's inputs live together; ``done(n)`` after each chunk of ``n``; ``shuffle``: see
    :func:`interleaved_times`); ``timed`` gets the plain medians."""
    out = []
    for i in range(0, len(builders), chunk):
        fns = [build() for build in builders[i:i + chunk]]
        times = interleaved_times(fns, device, rounds, queue_ahead=True, shuffle=shuffle)
        ms = [[1e3 * t for t in ts] for ts in times]
        out += steady_medians(ms)
        if timed is not None:
            timed += [statistics.median(t) for t in ms]
        if done is not None:
            done(len(fns))
    return out


def _layers(model: torch.nn.Module, hidden: torch.Tensor, dt_scale: torch.Tensor | None):
    """The residual stream through every layer at a fixed length (no merging): one layer's cost x depth."""
    def run():
        h, res = hidden, None
        for block in model.layers:
            res = block.add(h, res)
            h = block.mix(res, dt_scale)
        return h
    return run


def _merge_step(model: torch.nn.Module, cfg: MergeConfig, tokens: int, batch: int, device: torch.device,
                dtype: torch.dtype):
    """One merge step of ``cfg`` from ``tokens`` tokens, as the patch runs it at layer 1."""
    apply(model, cfg.model_copy(update={"schedule": []}))
    info, layer, patches = model._stm, 1, model.cfg.num_patches
    gen = torch.Generator(device="cpu").manual_seed(tokens)
    residual = torch.randn(batch, tokens, model.cfg.embed_dim, generator=gen).to(device)
    hidden = torch.randn(batch, tokens, model.cfg.embed_dim, generator=gen).to(device, dtype)
    grid = int(round(patches ** 0.5))
    rep = torch.linspace(0, patches - 1, tokens - 1, device=device).long()  # the patches left tokens stand at
    cls = (tokens - 1) // 2
    state = {"cls": torch.full((batch,), cls, dtype=torch.long, device=device),
             "sizes": torch.ones(batch, tokens, device=device), "grid": grid,
             "rep": torch.cat([rep[:cls], rep.new_full((1,), -1), rep[cls:]]).expand(batch, tokens), "mixer": None}
    info.update(state)
    if info["record"]:  # the previous mixer's features, as the patched forward keeps them
        prev = model.layers[0]
        prev.mixer(prev.norm(residual.to(prev.norm.weight.dtype)))
    recorded = info["mixer"]
    r = min(max(2, tokens // 12), get_method(cfg.method).capacity(cfg, tokens, cls, layer, patches))

    def run():
        info.update(state, mixer=recorded)
        return reduce_tokens(info, residual, hidden, r, layer, model.layers[layer].mixer) if r > 0 else residual
    return run


@torch.inference_mode()
def calibrate(model: torch.nn.Module, model_name: str, configs: Iterable[MergeConfig], device: torch.device,
              batch: int, bf16: bool = False, rounds: int | None = None, grid: list[int] | None = None,
              progress: bool = True, merge_rounds: int | None = None) -> LatencyTable:
    """Time ``model`` (unpatched, on ``device``) and the merge steps of ``configs`` into a table
    (``rounds``: :data:`ROUNDS`; ``merge_rounds``: :data:`MERGE_ROUNDS`; ``grid``: :func:`token_grid`)."""
    rounds = rounds or ROUNDS
    cfg, dim = model.cfg, model.cfg.embed_dim
    num_tokens = cfg.num_patches + 1
    grid = grid or token_grid(num_tokens, device)
    dtype = torch.bfloat16 if bf16 else torch.float32
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    steps = {get_method(c.method).cost_key(c): c for c in configs if get_method(c.method).plan is not None}
    gen = torch.Generator(device="cpu").manual_seed(0)
    img = torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size, generator=gen).to(device)
    merge_tokens = merge_grid(grid, device)
    bar = tqdm(total=1 + 2 * len(grid) + len(steps) * len(merge_tokens), desc=f"calibrating {model_name}",
               disable=not progress)
    chunk = 24 if device.type == "cuda" else len(grid) * 2  # the CPU grid is small: all of it at once
    with autocast:
        apply(model, None)

        def stem():
            x = model.embed(img)
            return model.head(model.norm_f(x.to(model.norm_f.weight.dtype))[:, model.cls_pos])

        def stack(t: int, size_aware: bool):
            hidden = torch.randn(batch, t, dim, generator=gen).to(device)
            return _layers(model, hidden, torch.ones(batch, t, device=device) if size_aware else None)

        stem_ms = _timed_ms([lambda: stem], device, rounds, 1)[0]
        bar.update(1)
        both_timed, steps_timed = [], []
        both = _timed_ms([lambda t=t, s=s: stack(t, s) for t in grid for s in (False, True)], device, rounds, chunk,
                         timed=both_timed)
        bar.update(2 * len(grid))
        # every method's step in one stretch, in a new order each round: steps timed in separate stretches differ
        # by the load of their stretch (STM's steps with runs 2, 3 and 4, one code on the CPU, came out up to 9%
        # apart; bench/bench_step_keys.py), and a search reads that as speed. A step is short: more rounds
        pairs = [(key, t) for t in merge_tokens for key in steps]
        cap = chunk if device.type == "cuda" else STEP_CHUNK_CPU
        step_chunk = len(steps) * (cap // len(steps)) if 0 < len(steps) <= cap else cap  # whole counts, where they fit
        times = _timed_ms([lambda k=k, t=t: _merge_step(model, steps[k], t, batch, device, dtype) for k, t in pairs],
                          device, merge_rounds or MERGE_ROUNDS, step_chunk, bar.update, shuffle=True,
                          timed=steps_timed)
        apply(model, None)
    bar.close()

    def series(stacks: list[float], step_times: list[float]) -> tuple[list[float], list[float], dict]:
        """Per-layer plain and size-aware ms, and each key's step ms (pairs run count by count)."""
        return ([ms / cfg.depth for ms in stacks[0::2]], [ms / cfg.depth for ms in stacks[1::2]],
                {key: step_times[i::len(steps)] for i, key in enumerate(steps)})

    timed = dict(zip(("layer_ms", "layer_sad_ms", "merge_ms"), series(both_timed, steps_timed)))  # the plain medians
    # a GPU's every count is timed, and its steps in count are real (waves of blocks): smoothed on the CPU only
    layer_ms, sad_ms, merge_ms, sad_ratio = price_series(grid, merge_tokens, *series(both, times),
                                                         smoothed=device.type != "cuda")
    meta = {"version": TABLE_VERSION, "model": model_name, "device": describe_device(device), "batch": batch,
            "bf16": bf16, "rounds": rounds, "merge_rounds": merge_rounds or MERGE_ROUNDS, "sad_ratio": sad_ratio,
            "torch": torch.__version__, "timing_threads": None if device.type == "cuda" else CPU_TIMING_THREADS,
            "timed": timed}
    return LatencyTable(meta, list(grid), layer_ms, sad_ms, stem_ms, merge_tokens, merge_ms)
