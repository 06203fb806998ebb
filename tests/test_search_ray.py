"""The default executor: a short search on a local Ray cluster (Ray starts in ~10-30 s here)."""
from __future__ import annotations

import os
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from stmsearch.search import load_space, run_search
from stmsearch.search.ray_executor import trial_resources
from test_search_run import SPACE, TESTS, TRIAL_KEYS


def test_trial_resources_one_gpu_each_or_all_cpus():
    assert trial_resources({"CPU": 32, "GPU": 2}, "auto", None) == ({"gpu": 1, "cpu": 16}, 2)
    assert trial_resources({"CPU": 2}, "auto", None) == ({"cpu": 2}, 1)
    assert trial_resources({"CPU": 8}, "cpu", 2) == ({"cpu": 4}, 2)
    assert trial_resources({"CPU": 16, "GPU": 1}, "cpu", None) == ({"cpu": 16}, 1)


def test_ray_search_records_every_trial_and_survives_failures(tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    # Ray workers inherit the driver's environment: they import the stand-in evaluator from tests/
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("STMSEARCH_FAKE_CALLS", str(calls))
    seeds = SPACE["seeds"] + [{"name": "fails", "config": {"method": "stm", "schedule": [2]}}]
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "seeds": seeds, "evaluator": "fake_evaluators:alternating_evaluate"}))
    result = run_search(load_space(path), path, trials=5, runs=tmp_path / "runs", progress=False)
    study = optuna.load_study(study_name=result.study_name, storage=result.storage_url)
    assert result.ran == 5 and len(study.trials) == 5
    by_seed = {t.user_attrs.get("seed_config"): t for t in study.trials}
    assert by_seed["reference"].state == TrialState.COMPLETE and by_seed["hand"].state == TrialState.COMPLETE
    assert by_seed["fails"].state == TrialState.FAIL
    for t in study.trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs["error"] == "RuntimeError: simulated failure"
        else:
            assert TRIAL_KEYS <= set(t.user_attrs) and len(t.values) == 3
    pids = set(Path(calls).read_text().split())
    assert str(os.getpid()) not in pids  # evaluated on Ray workers, not in the driver
