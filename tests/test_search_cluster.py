"""``stmsearch search --address``: joining a Ray cluster started with ``ray start --head``.

The cluster here is a head on 127.0.0.1 with token authentication, in its own temp dir and its
own session; it is stopped by killing that session's processes, never with ``ray stop`` (which
stops every Ray on the machine). Its workers import the stand-in evaluator through the
PYTHONPATH that ``ray start`` passes on.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from stmsearch.cli.search import search_cmd
from stmsearch.search.ray_connect import host_port, join_error, sends_token, token_source
from test_search_run import TESTS, TRIAL_KEYS, write_space

ROOT = TESTS.parent
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``: Ray's daemons and workers keep the session of
    the ``ray start`` that launched them, though workers take process groups of their own."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                state, _ppid, _pgrp, session = f.read().rsplit(")", 1)[1].split()[:4]
        except (OSError, ValueError):  # gone meanwhile
            continue
        if int(session) == sid and state != "Z":
            pids.append(int(name))
    return pids


def command_line(pid: int) -> str:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()
    return ""


def stop_session(sid: int, timeout_s: float = 30) -> list[int]:
    """SIGKILL the session's processes until none is left (a dying raylet may still start a worker);
    returns those still alive at the timeout."""
    deadline = time.monotonic() + timeout_s
    while (pids := session_pids(sid)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    return session_pids(sid)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without Ray's address and auth settings; this checkout (and tests/) first on
    the path, for the driver and for the cluster's workers."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    path = [str(ROOT), str(TESTS)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    return {**env, "PYTHONPATH": os.pathsep.join(path), **extra}


@dataclass
class Head:
    address: str
    token: Path
    sid: int  # the session of its processes
    calls: Path  # its workers append their pid here per evaluation


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head requiring a token (kept in tmp_path: ~/.ray is left alone), 2 CPUs, no dashboard."""
    temp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # Ray's unix socket paths must stay short
    token, calls, port = tmp_path / "token", tmp_path / "calls.txt", free_port()
    token.write_text(secrets.token_hex(32))
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), STMSEARCH_FAKE_CALLS=str(calls))
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--node-ip-address=127.0.0.1",
           f"--port={port}", f"--temp-dir={temp}", "--num-cpus=2", "--include-dashboard=false",
           "--disable-usage-stats"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out = proc.communicate(timeout=180)[0]
        assert proc.returncode == 0, out[-3000:]
        yield Head(f"127.0.0.1:{port}", token, proc.pid, calls)
    finally:
        proc.kill()
        stop_session(proc.pid)
        shutil.rmtree(temp, ignore_errors=True)


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stmsearch.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_search_joins_a_token_cluster_and_fails_in_one_line_without_its_token(ray_head, tmp_path):
    path, storage = write_space(tmp_path), f"sqlite:///{tmp_path / 'runs' / 'space.db'}"
    args = ["search", str(path), "--address", ray_head.address, "--out", str(tmp_path / "runs"), "--no-progress"]
    # the token where Ray looks for it, RAY_AUTH_MODE unset (as after `ray start --head` with ~/.ray/auth_token)
    done = run_cli([*args, "--trials", "4"], clean_env(RAY_AUTH_TOKEN_PATH=str(ray_head.token)), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    assert len(study.trials) == 4 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert all(TRIAL_KEYS <= set(t.user_attrs) for t in study.trials)
    # evaluated by the cluster's workers: only they have STMSEARCH_FAKE_CALLS
    assert len(ray_head.calls.read_text().split()) == 4

    # a driver that sends no token: one line saying what to set, soon, no traceback
    refused = run_cli([*args, "--trials", "5"], clean_env(RAY_AUTH_MODE="disabled"), tmp_path)
    assert refused.returncode == 1
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: --address {ray_head.address}: the Ray cluster requires token authentication")
    assert "RAY_AUTH_MODE=token" in last and "RAY_AUTH_TOKEN_PATH" in last
    assert "Traceback" not in refused.stderr

    # stopped through its own processes: the head's GCS and raylet are among them, and none is left
    names = " ".join(command_line(pid) for pid in session_pids(ray_head.sid))
    assert "gcs_server" in names and "raylet" in names
    assert stop_session(ray_head.sid) == []


def test_address_where_no_cluster_runs_fails_at_once(tmp_path):
    port = free_port()  # nothing listens there
    out = CliRunner().invoke(search_cmd, [str(write_space(tmp_path)), "--address", f"127.0.0.1:{port}",
                                          "--out", str(tmp_path / "runs"), "--no-progress"])
    assert out.exit_code == 1
    assert f"--address 127.0.0.1:{port}: no Ray cluster answers there" in out.output
    assert f"ray start --head --port={port}" in out.output


def test_address_forms():
    assert host_port("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert host_port("[::1]:6380") == ("::1", 6380)
    for other in ("auto", "local", "ray://head:10001", "head"):
        assert host_port(other) is None


def test_token_goes_to_this_machine_unasked_and_elsewhere_only_in_token_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert token_source({}) is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t")
    assert token_source({}) == str(tmp_path / ".ray" / "auth_token")
    assert token_source({"RAY_AUTH_TOKEN_PATH": "/x"}) == "RAY_AUTH_TOKEN_PATH=/x"
    assert token_source({"RAY_AUTH_TOKEN": "t", "RAY_AUTH_TOKEN_PATH": "/x"}) == "RAY_AUTH_TOKEN"
    remote = "203.0.113.7"  # TEST-NET-3: never this machine's
    assert sends_token("127.0.0.1", {}) and not sends_token(remote, {})
    assert sends_token(remote, {"RAY_AUTH_MODE": "token"})
    assert not sends_token("127.0.0.1", {"RAY_AUTH_MODE": "disabled"})


def test_refused_token_is_named():
    try:
        raise ConnectionError("Failed to connect to Ray cluster") from RuntimeError(
            "RPC error: InvalidAuthToken: Authentication token is missing or incorrect")
    except ConnectionError as exc:
        err = join_error("h:1", exc, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "/tok"})
        other = join_error("h:1", ValueError("Invalid address format: h"), {})
    assert "refused the token from RAY_AUTH_TOKEN_PATH=/tok" in str(err) and "RAY_AUTH_MODE=token" in str(err)
    assert str(other) == "--address h:1: could not join the Ray cluster: ValueError: Invalid address format: h"
