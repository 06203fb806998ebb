"""Smoke test: optuna-dashboard opens the storage our studies live in (it is in the dev extra)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from study_factory import make_study


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_optuna_dashboard_lists_the_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = make_study(url, "stm-proxy", n=3)
    port = free_port()
    code = f"import optuna_dashboard; optuna_dashboard.run_server({url!r}, host='127.0.0.1', port={port})"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, body = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as r:
                    assert r.status == 200
                    body = json.loads(r.read())
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        assert body is not None, f"optuna-dashboard did not answer: {proc.stdout.read1().decode() if proc.poll() else ''}"
        studies = {s["study_name"]: s for s in body["study_summaries"]}
        assert studies["stm-proxy"]["directions"] == ["maximize", "maximize", "minimize"]
        assert studies["stm-proxy"]["user_attrs"]  # our contract's attributes are readable there too
        detail_url = f"http://127.0.0.1:{port}/api/studies/{studies['stm-proxy']['study_id']}"
        with urllib.request.urlopen(detail_url, timeout=30) as r:
            assert len(json.loads(r.read())["trials"]) == len(study.trials)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard", timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
