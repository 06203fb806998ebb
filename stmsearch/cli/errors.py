"""Input and environment errors as one-line command errors (exit status 1), for every subcommand."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import click

from ..database import StorageError
from ..evaluation.imagefiles import DatasetError
from ..evaluation.latency import LatencyError
from ..merging.schedule import ConfigError
from ..models.checkpoint import CheckpointError
from ..results.records import StudyError

# errors whose message already says what is wrong and where (file, field, URL)
USER_ERRORS = (StorageError, StudyError, ConfigError, CheckpointError, DatasetError, LatencyError)


def message(exc: BaseException) -> str:
    """What to print: the project's own messages as they are (they name file and field; a space
    with several problems has a line for each), an OS error as ``FILE: reason``."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename is not None else exc.strerror
    return str(exc).strip() or type(exc).__name__


@contextlib.contextmanager
def user_errors(*more: type[BaseException]) -> Iterator[None]:
    """Turn the project's input errors (and ``more``, and OS errors such as an unwritable --out)
    into a click error: its message, exit status 1, no traceback."""
    try:
        yield
    except (*USER_ERRORS, *more, OSError) as exc:
        raise click.ClickException(message(exc)) from None


def writable_dir(path: str | Path) -> Path:
    """``path`` as a folder this process can write to (made if missing), checked before long work
    starts: an unwritable ``--out`` fails at once, not after a search or a calibration."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".stmsearch-write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()
    return folder
