"""Opening the SQL databases that hold studies: one-line errors, and no database made by a typo.

``open_storage(url)`` is what a search uses (it may create the database); ``open_existing(url)``
is what the dashboard, export and verify use: a SQLite path that does not exist is an error
rather than a new empty database. Every failure (a URL that does not parse, an unknown
dialect or a missing driver, a folder that cannot be written, a file that is not a database,
a folder given as the file, a server that does not answer) is a :class:`StorageError` whose
message is one line naming the URL, with any password hidden.
"""
from __future__ import annotations

import json
import random
import re
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

HEARTBEAT_S = 10  # a RUNNING trial whose heartbeat is older than GRACE_S belongs to a dead search
GRACE_S = 30
# Errors of two processes creating the schema of one new database at once (SQLite, PostgreSQL, MySQL)
_SCHEMA_RACE = re.compile(r"UNIQUE constraint failed|already exists|duplicate key|Duplicate entry|database is locked",
                          re.IGNORECASE)
SCHEMA_RETRIES = 8
DRIVERS = {"postgresql": "pip install 'stmsearch[postgres]' (psycopg 3)", "mysql": "pip install pymysql"}


class StorageError(RuntimeError):
    """A study database that cannot be opened or used; the message names its URL."""


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL (None for other databases and in-memory SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_sqlite(path: Path, must_exist: bool) -> None:
    if path.is_dir():
        raise StorageError(f"sqlite:///{path}: is a folder, not a database file")
    if must_exist and not path.exists():
        raise StorageError(f"sqlite:///{path}: no such database file (check the path; "
                           "it is only created by `stmsearch search`)")
    if path.exists():
        with open(path, "rb") as f:
            head = f.read(16)
        if head and head != b"SQLite format 3\x00":
            raise StorageError(f"sqlite:///{path}: not a SQLite database (the file holds something else)")
    elif not path.parent.is_dir():
        raise StorageError(f"sqlite:///{path}: folder {path.parent} does not exist")


def open_storage(url: str, heartbeat_s: int | None = HEARTBEAT_S, grace_s: int = GRACE_S,
                 must_exist: bool = False) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for ``url`` (with heartbeats, so a killed search's trials can be reaped)."""
    if not isinstance(url, str) or "://" not in url:
        raise StorageError(f"{url!r}: not a database URL (e.g. sqlite:///runs/demo.db or "
                           "postgresql://user:password@host/db)")
    shown, dialect = redact(url), url.split("://", 1)[0].split("+", 1)[0]
    path = sqlite_path(url)
    if path is not None:
        _check_sqlite(path, must_exist)
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 30}} if dialect == "sqlite" else {"pool_pre_ping": True}
    if dialect == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": 10}
    beats = {"heartbeat_interval": heartbeat_s, "grace_period": grace_s} if heartbeat_s else {}
    for attempt in range(SCHEMA_RETRIES + 1):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in optuna, and what resume relies on
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **beats)
        except ModuleNotFoundError as exc:
            hint = DRIVERS.get(dialect, f"install the database driver for {dialect}")
            raise StorageError(f"{shown}: the driver {exc.name!r} is not installed: {hint}") from None
        except Exception as exc:  # noqa: BLE001 - sqlalchemy and optuna raise many kinds; each becomes one line
            if attempt < SCHEMA_RETRIES and _SCHEMA_RACE.search(_reason(exc)):
                # two searches started together both create optuna's tables; the loser finds them made
                time.sleep(0.05 + random.random() * 0.2 * (attempt + 1))
                continue
            raise StorageError(f"{shown}: cannot open the study database: {_reason(exc)}") from None
    raise AssertionError("unreachable")


def open_existing(url: str) -> optuna.storages.RDBStorage:
    """An existing database, for reading studies (never creates one)."""
    return open_storage(url, heartbeat_s=None, must_exist=True)


def rdb_of(storage: optuna.storages.BaseStorage) -> Any:
    """The RDBStorage under optuna's cache wrapper (the storage itself where it has none)."""
    return getattr(storage, "_backend", storage)


def reset_connections(storage: optuna.storages.BaseStorage) -> None:
    """Close the storage's idle connections and this thread's session. Ctrl-C inside a commit can
    return a connection to the pool with its transaction open, so it keeps SQLite's write lock: every
    later write from another connection, the one failing the interrupted trial included, would wait
    out the lock timeout and fail. Closing a connection rolls its transaction back."""
    rdb = rdb_of(storage)
    if not hasattr(rdb, "scoped_session"):
        return
    try:
        rdb.scoped_session.remove()
    except Exception:  # noqa: BLE001 - a session too broken to close: forget it, its connection goes with it
        rdb.scoped_session.registry.clear()
    rdb.engine.dispose()


def set_finished_trial_attr(storage: optuna.storages.BaseStorage, trial_id: int, key: str, value: Any) -> None:
    """Set a user attribute of a finished trial (optuna's API refuses; ``stmsearch verify`` adds
    its re-measurement to the trials it verified). Plain SQL on optuna's own table, any database."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    rdb = rdb_of(storage)
    if not hasattr(rdb, "scoped_session"):
        raise TypeError(f"set_finished_trial_attr needs an RDB storage, got {type(rdb).__name__}")
    text = json.dumps(value)
    with _create_scoped_session(rdb.scoped_session, True) as session:
        row = session.query(models.TrialUserAttributeModel).filter_by(trial_id=trial_id, key=key).one_or_none()
        if row is None:
            session.add(models.TrialUserAttributeModel(trial_id=trial_id, key=key, value_json=text))
        else:
            row.value_json = text
