"""One trial, where it runs (local process or Ray worker): config -> evaluate() -> outcome.

Never raises: an exception, an out-of-memory error or a NaN objective becomes a failed
outcome carrying the error, so the search goes on.
"""
from __future__ import annotations

import importlib
import json
import math
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..merging.config import MergeConfig
from ..merging.schedule import walk
from ..objectives import MEASURES
from .environment import hardware, software
from .params import clip_to_capacity, config_from_params, seed_config
from .space import REFERENCE, SearchSpace, model_geometry

DEFAULT_EVALUATOR = "stmsearch.evaluation.api:evaluate"
MEASURE = MEASURES  # every trial records all of them, whichever are objectives
SEED_KEY = "seed_config"  # Ray config key naming an enqueued seed
OUTCOME_KEY = "stmsearch_outcome"  # Ray result key carrying the JSON outcome
REUSE_KEY = "stmsearch_reuse"  # Ray config key: JSON {number, metrics} of a finished trial of the same config


@dataclass
class TrialOutcome:
    """What a worker hands back: objective values (None if failed), trial attributes, error."""

    values: dict[str, float] | None
    attrs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "TrialOutcome":
        return cls(**json.loads(text))


def load_evaluator(spec: str | None) -> Callable[..., dict]:
    """``module:function`` with evaluate()'s signature (default: stmsearch's evaluate)."""
    module, attr = (spec or DEFAULT_EVALUATOR).split(":")
    return getattr(importlib.import_module(module), attr)


def input_options(space: SearchSpace) -> dict:
    """The evaluate() keywords for the space's inputs that a trial and its verification share, only where they
    differ from evaluate()'s defaults, so evaluators without these keywords still work."""
    extra = {}
    if space.skip_bad_images:
        extra["skip_bad_images"] = True
    if space.probe:
        extra["probe"] = space.probe
    return extra


def call_evaluate(space: SearchSpace, cfg: MergeConfig) -> dict:
    """The single call into the evaluator; the unreduced model is evaluated unpatched."""
    evaluate = load_evaluator(space.evaluator)
    extra = input_options(space)
    if space.throughput.runs is not None:
        extra["runs"] = space.throughput.runs
    if space.estimator() != "measured":
        extra.update(estimator=space.estimator(), latency_table=space.throughput.table)
    return evaluate(space.model, space.checkpoint, None if cfg.method == "none" else cfg, space.dataset,
                    limit=space.subset, device=space.device, batch_size=space.batch_size, measure=MEASURE,
                    throughput_batch=space.throughput.batch, bf16=space.throughput.bf16,
                    cuda_graphs=space.throughput.cuda_graphs, progress=False, **extra)


def _plain(obj: Any) -> Any:
    """JSON-safe copy (numpy/tensor scalars to Python numbers) for trial attributes."""
    def default(o: Any) -> Any:
        if hasattr(o, "tolist"):
            return o.tolist()
        if hasattr(o, "item"):
            return o.item()
        return str(o)
    return json.loads(json.dumps(obj, default=default))


def objective_values(metrics: dict, objectives: list[str]) -> dict[str, float]:
    """The objectives from evaluate()'s dict; a missing or non-finite value is an error."""
    out = {}
    for name in objectives:
        value = metrics.get(name)
        if value is None:
            raise KeyError(f"evaluate() returned no {name!r}")
        if not math.isfinite(float(value)):
            raise FloatingPointError(f"{name} is {value}")
        out[name] = float(value)
    return out


def trial_config(space: SearchSpace, params: dict, seed: str | None) -> tuple[MergeConfig, list[int]]:
    """The config a trial evaluates (capped to capacity) and the layers that were capped."""
    depth, tokens = model_geometry(space.model)
    cfg = seed_config(space, seed) if seed else config_from_params(space, params)
    return clip_to_capacity(cfg, depth, tokens)


def _free_gpu_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_trial(space: SearchSpace, params: dict, seed: str | None = None, reuse: dict | None = None) -> TrialOutcome:
    """Evaluate one parameter set (or named seed) and describe it for the trial record.

    ``reuse`` ({number, metrics}) is an earlier trial of this study that measured the very same
    config: its metrics are recorded instead of measuring again (samplers do repeat points).
    """
    start = time.perf_counter()
    attrs: dict[str, Any] = {"is_reference": seed == REFERENCE}
    device, values, error = space.device, None, None
    try:
        depth, tokens = model_geometry(space.model)
        cfg, capped = trial_config(space, params, seed)
        attrs.update(config=cfg.to_dict(), token_reduction=cfg.token_reduction(depth, tokens))
        if capped:
            attrs["capped_layers"] = capped
        if reuse is not None:
            metrics, attrs["reused_from"] = reuse["metrics"], reuse["number"]
        else:
            metrics = _plain(call_evaluate(space, cfg))
        device = metrics.get("device", device)
        attrs.update(metrics=metrics, tokens_per_layer=metrics.get("tokens_per_layer")
                     or walk(cfg, depth, tokens).tokens)
        values = objective_values(metrics, space.objectives)
    except Exception as exc:  # noqa: BLE001 - any trial failure (incl. CUDA OOM) is recorded, not raised
        error = f"{type(exc).__name__}: {exc}"
        attrs["traceback"] = "".join(traceback.format_exception(exc, limit=-6))[-4000:]
        _free_gpu_memory()
    attrs.update(duration_s=round(time.perf_counter() - start, 3), hardware=hardware(device), software=software())
    return TrialOutcome(values=None if error else values, attrs=attrs, error=error)


def ray_trial(config: dict, space_data: dict) -> dict:
    """Ray Tune function trainable: one trial, reported as objective keys plus the JSON outcome."""
    space = SearchSpace.model_validate(space_data)
    params = {k: v for k, v in config.items() if k not in (SEED_KEY, REUSE_KEY)}
    reuse = json.loads(config[REUSE_KEY]) if config.get(REUSE_KEY) else None
    outcome = run_trial(space, params, config.get(SEED_KEY), reuse)
    # every objective key present (None when failed): Tune checks the searcher's metrics are reported
    return {**{o: (outcome.values or {}).get(o) for o in space.objectives}, OUTCOME_KEY: outcome.to_json()}
