"""Config files (TOML, YAML, JSON) with ``key.path=value`` overrides, and their validation."""

from fusionjax.config.loading import apply_overrides, load_config, parse_override
from fusionjax.config.schema import TrainConfig, check_top_level, train_config

__all__ = [
    "TrainConfig",
    "apply_overrides",
    "check_top_level",
    "load_config",
    "parse_override",
    "train_config",
]
