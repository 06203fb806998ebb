"""Reading the project's YAML files (configs, search spaces, dashboard views) safely."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def read_yaml(path: str | Path, what: str, error: type[Exception]) -> Any:
    """``yaml.safe_load`` of ``path``; a missing file or bad YAML raises ``error`` naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} file not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
