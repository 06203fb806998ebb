"""Studies written by hand with plain optuna, following the trial-record contract, so the
dashboard and export tests do not depend on the search code. Fixtures over these studies
live in ``conftest.py``.

Metric values are a smooth made-up trade-off of the real token reduction of each config:
they exercise fronts, filters and plots, not the model.
"""
from __future__ import annotations

import random

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from stmsearch import MergeConfig, ParametricSchedule

optuna.logging.set_verbosity(optuna.logging.WARNING)

DEPTH, TOKENS = 12, 197
OBJECTIVES = ["accuracy", "throughput", "flops"]
DIRECTIONS = ["maximize", "maximize", "minimize"]
DISTRIBUTIONS = {"start": IntDistribution(0, 6), "count": IntDistribution(0, 12),
                 "window": IntDistribution(0, 16), "shape": CategoricalDistribution(["constant", "decreasing"])}
HARDWARE = {"device": "cpu", "cpu": "test cpu", "host": "testhost"}
SOFTWARE = {"stmsearch": "0.1.0", "optuna": optuna.__version__}


def tokens_per_layer(config: MergeConfig) -> list[int]:
    """Tokens each layer processes (``schedule[l]`` is removed just before layer ``l``)."""
    out, tokens = [], TOKENS
    for removed in config.layer_schedule(DEPTH):
        tokens -= removed
        out.append(tokens)
    return out


def record(config: MergeConfig, rng: random.Random, min_accuracy: float) -> dict:
    """Metrics and user attributes of one trial as the search writes them."""
    red = config.token_reduction(DEPTH, TOKENS)
    metrics = {"accuracy": round(0.97 - 0.45 * red ** 2 - rng.uniform(0, 0.04) * red, 4), "n": 100,
               "flops": int(12_000_000 * (1 - red)), "params": 330_000,
               "tokens_per_layer": tokens_per_layer(config), "throughput": 900.0 / (1 - 0.9 * red),
               "speedup": 1.0 / (1 - 0.9 * red), "speedup_ci": [0.97 / (1 - 0.9 * red), 1.03 / (1 - 0.9 * red)],
               "latency_ms": 4.0 * (1 - 0.8 * red), "peak_mem_mb": 50.0, "device": "cpu"}
    attrs = {"metrics": metrics, "config": config.to_dict(), "tokens_per_layer": metrics["tokens_per_layer"],
             "token_reduction": red, "is_reference": config.method == "none",
             "feasible": metrics["accuracy"] >= min_accuracy, "hardware": HARDWARE, "software": SOFTWARE,
             "duration_s": 1.5}
    return attrs


def make_study(storage: str, name: str, method: str = "stm", n: int = 14, seed: int = 0,
               min_accuracy: float = 0.9, failed: int = 1) -> optuna.Study:
    """A finished study: the reference trial, ``n`` merge configs and ``failed`` failed trials."""
    rng = random.Random(seed)
    study = optuna.create_study(study_name=name, storage=storage, directions=DIRECTIONS)
    study.set_user_attr("objectives", OBJECTIVES)
    study.set_user_attr("space", {"method": method, "start": [0, 6], "count": [0, 12]})
    for k, v in {"model": "vim_proxy", "checkpoint": None, "checkpoint_sha256": "0" * 64, "dataset": "mnist5k",
                 "subset": 100, "constraints": {"min_accuracy": min_accuracy, "max_flops": None,
                                                "min_speedup": None}}.items():
        study.set_user_attr(k, v)
    reference = MergeConfig(method="none")
    attrs = record(reference, rng, min_accuracy)
    attrs["metrics"]["accuracy"] = 0.97
    study.add_trial(create_trial(values=[0.97, attrs["metrics"]["throughput"], attrs["metrics"]["flops"]],
                                 params={}, distributions={}, user_attrs=dict(attrs, seed_config="reference")))
    # the last one removes 12 tokens before every layer: below min_accuracy, so infeasible
    aggressive = {"start": 0, "count": 12, "window": 0, "shape": "constant"}
    for i in range(n):
        params = aggressive if i == n - 1 and n > 1 else {
            "start": rng.randint(0, 6), "count": rng.randint(1, 12), "window": rng.choice([0, 4, 8, 16]),
            "shape": rng.choice(["constant", "decreasing"])}
        config = MergeConfig(method=method, window=params["window"],
                             schedule=ParametricSchedule(start=params["start"], count=params["count"],
                                                         shape=params["shape"]))
        config.validate_for(DEPTH, TOKENS)
        attrs = record(config, rng, min_accuracy)
        m = attrs["metrics"]
        study.add_trial(create_trial(values=[m["accuracy"], m["throughput"], m["flops"]], params=params,
                                     distributions=DISTRIBUTIONS, user_attrs=attrs))
    for _ in range(failed):
        study.add_trial(create_trial(state=TrialState.FAIL, params={"start": 0, "count": 12, "window": 0,
                                                                    "shape": "constant"},
                                     distributions=DISTRIBUTIONS,
                                     user_attrs={"error": "ConfigError: schedule[3]: asks to remove too many",
                                                 "config": {"method": method}}))
    return study
