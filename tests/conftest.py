"""Fixtures shared by several test modules.

optuna is imported inside the study fixtures only, so the GPU tests also run on a machine
that has torch but not the search stack.
"""
from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    import optuna

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    import triton_interpreter

    triton_interpreter.patch()


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected theirs
def pytest_collection_modifyitems(config, items) -> None:
    from triton_interpreter import keep_shard

    keep_shard(config, items)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's small forwards on one thread: per-op overhead dominates them, and a
    second thread only contends on a 2-core test host."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def storage_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture
def stm_study(storage_url) -> optuna.Study:
    from study_factory import make_study

    return make_study(storage_url, "stm-proxy", "stm", seed=0)


@pytest.fixture
def two_studies(storage_url) -> list[optuna.Study]:
    from study_factory import make_study

    return [make_study(storage_url, "stm-proxy", "stm", seed=0), make_study(storage_url, "tome-proxy", "tome", seed=1)]


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL database in the README's URL form: ``$STMSEARCH_TEST_POSTGRES_URL`` (set by .ci/run),
    else the local server that ci/start-postgres.sh starts, where PostgreSQL is installed."""
    url = os.environ.get("STMSEARCH_TEST_POSTGRES_URL")
    if url:
        return url
    if not glob.glob("/usr/lib/postgresql/*/bin/postgres") or os.geteuid() != 0:
        pytest.skip("no PostgreSQL server here and STMSEARCH_TEST_POSTGRES_URL is unset (.ci/run installs and "
                    "starts one)")
    subprocess.run(["bash", str(Path(__file__).resolve().parents[1] / "ci" / "start-postgres.sh")], check=True,
                   capture_output=True)
    return "postgresql://stmsearch:stmsearch@127.0.0.1:5432/stmsearch"
