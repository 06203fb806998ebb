"""The sampler a space names: a short name, any Optuna sampler class, or ``module.Class``.

Short names carry the project's defaults (NSGA-II's population, TPE's multivariate model);
``sampler.options`` pass any other constructor keyword through, checked against the class'
signature, so a typo fails before the first trial with one line naming the file and field.
"""
from __future__ import annotations

import copyreg
import importlib
import inspect
import threading
import warnings
from typing import Any, Callable

import optuna

from .params import grid
from .space import SearchSpace

# short name -> (Optuna class name, defaults the space's options override)
SHORT_NAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "nsga2": ("NSGAIISampler", {"population_size": 50}),
    "nsga3": ("NSGAIIISampler", {"population_size": 50}),
    "tpe": ("TPESampler", {"n_startup_trials": 10, "multivariate": True}),
    "random": ("RandomSampler", {}),
    "grid": ("GridSampler", {}),
    "gp": ("GPSampler", {}),
    "qmc": ("QMCSampler", {}),
    "bruteforce": ("BruteForceSampler", {}),
    # TPE with Pareto local search mixed in (stmsearch/search/pls.py; opt-in: bench/SEARCH.md)
    "pls": ("stmsearch.search.pls.ParetoLocalSampler", {"n_startup_trials": 10, "multivariate": True}),
}


def sampler_class(name: str) -> type[optuna.samplers.BaseSampler]:
    """The class ``name`` stands for; ValueError (``sampler.name: ...``) when there is none."""
    target = SHORT_NAMES[name][0] if name in SHORT_NAMES else name
    cls = getattr(optuna.samplers, target, None)
    if cls is None and "." in target:
        module, _, attr = target.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), attr, None)
        except ImportError as exc:
            raise ValueError(f"sampler.name: cannot import {module!r} for {name!r} ({exc})") from None
    if not (inspect.isclass(cls) and issubclass(cls, optuna.samplers.BaseSampler)):
        raise ValueError(f"sampler.name: unknown sampler {name!r} (short names: {', '.join(SHORT_NAMES)}; "
                         f"or an Optuna sampler class such as NSGAIIISampler, or module.Class)")
    return cls


def _keywords(cls: type) -> tuple[set[str], bool]:
    params = inspect.signature(cls.__init__).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def sampler_options(space: SearchSpace, constraints_func: Callable | None = None) -> tuple[type, dict[str, Any]]:
    """The class and the keywords it is built with: short-name defaults, the space's options, seed, constraints."""
    spec = space.sampler
    cls = sampler_class(spec.name)
    accepted, anything = _keywords(cls)
    given = dict(spec.options)
    for key in ("population_size", "n_startup_trials"):  # older spaces' fields for the same keywords
        if getattr(spec, key) is not None:
            given[key] = getattr(spec, key)
    for key in given:
        if key not in accepted and not anything:
            field = key if key in ("population_size", "n_startup_trials") else f"options.{key}"
            raise ValueError(f"sampler.{field}: {cls.__name__} takes no option {key!r} "
                             f"(it takes: {', '.join(sorted(accepted - {'constraints_func', 'search_space'}))})")
    defaults = SHORT_NAMES[spec.name][1] if spec.name in SHORT_NAMES else {}
    kwargs = {**defaults, **given}
    if "seed" in accepted and "seed" not in kwargs:
        kwargs["seed"] = spec.seed
    if constraints_func is not None and "constraints_func" in accepted:
        kwargs["constraints_func"] = constraints_func
    if cls is optuna.samplers.GridSampler:
        kwargs["search_space"] = grid(space)
    return cls, kwargs


def make_sampler(space: SearchSpace, constraints_func: Callable | None = None) -> optuna.samplers.BaseSampler:
    """Build the space's sampler; a constructor's complaint becomes one ``sampler.options`` line."""
    cls, kwargs = sampler_options(space, constraints_func)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        sampler = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sampler.options: {cls.__name__} refused them: {' '.join(str(exc).split())}") from None
    if isinstance(getattr(sampler, "_thread_lock", None), type(threading.Lock())):
        copyreg.pickle(type(sampler), _without_lock)
    return sampler


# Optuna 5.1's genetic samplers (NSGA-II, NSGA-III) hold a threading.Lock and define no __getstate__, so
# they cannot be pickled, and Ray Tune pickles its search algorithm with the sampler inside. The lock
# only serialises one process's threads: a copy gets a fresh one.
def _with_lock(cls: type, state: dict) -> Any:
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    obj._thread_lock = threading.Lock()
    return obj


def _without_lock(sampler: Any) -> tuple:
    return _with_lock, (type(sampler), {k: v for k, v in sampler.__dict__.items() if k != "_thread_lock"})
