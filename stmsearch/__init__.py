"""stmsearch: token-merging schedule search for Vision Mamba."""
from .merging import ConfigError, MergeConfig, ParametricSchedule, apply, load_config, trace
from .models import CheckpointError, create_model, list_models, register_model

__version__ = "0.1.0"
__all__ = ["CheckpointError", "ConfigError", "MergeConfig", "ParametricSchedule", "apply", "create_model",
           "list_models", "load_config", "register_model", "trace"]
