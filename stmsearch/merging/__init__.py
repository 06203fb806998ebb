"""Token reduction for ViM: STM and baselines in one schedule format."""
from .config import ConfigError, MergeConfig, ParametricSchedule, config_from_dict, load_config
from .patch import apply, trace

__all__ = ["ConfigError", "MergeConfig", "ParametricSchedule", "apply", "config_from_dict", "load_config", "trace"]
