"""Reading the project's text files (configs, search spaces, dashboard views) safely."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def read_text(path: str | Path, what: str, error: type[Exception]) -> str:
    """The UTF-8 text of ``path``; a missing, unreadable or binary file raises ``error`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a UTF-8 text {what} file (byte {exc.start} cannot be decoded)") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} file: {exc.strerror}") from None
    if "\x00" in text:
        raise error(f"{path}: not a text {what} file (it holds NUL bytes)")
    return text


def read_yaml(path: str | Path, what: str, error: type[Exception]) -> Any:
    """``yaml.safe_load`` of ``path``; a missing, binary or invalid file raises ``error`` naming the file."""
    import yaml

    text = read_text(path, what, error)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise error(f"{path}: not valid YAML: {reason}") from None
