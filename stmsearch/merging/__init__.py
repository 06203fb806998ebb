"""Token reduction for ViM: STM and baselines in one schedule format, one table of methods."""
from .config import ConfigError, MergeConfig, ParametricSchedule, config_from_dict, load_config
from .methods import METHODS, Method, get_method, register_method
from .patch import apply, trace

__all__ = ["ConfigError", "METHODS", "MergeConfig", "Method", "ParametricSchedule", "apply", "config_from_dict",
           "get_method", "load_config", "register_method", "trace"]
