"""Search: YAML search spaces, Optuna multi-objective studies in SQL storage, Ray Tune workers.

``load_space`` reads and checks a space; ``run_search`` runs or continues its study.
"""
from .executor import SearchError
from .runner import SearchResult, run_search
from .space import SearchSpace, SpaceError, load_space, parse_space

__all__ = ["SearchError", "SearchResult", "SearchSpace", "SpaceError", "load_space", "parse_space", "run_search"]
