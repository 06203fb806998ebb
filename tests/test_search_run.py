"""Running searches (local executor): the trial record, resume, failures, SIGKILL, PostgreSQL.

Evaluations are the stand-ins of fake_evaluators (microseconds each); what is under test
is the study kept in SQL storage.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState

from stmsearch.merging.config import config_from_dict
from stmsearch.search import SearchError, load_space, run_search
from stmsearch.cli.search import search_cmd
from stmsearch.search.record import ask, counted, finished, reap_stale
from stmsearch.database import open_storage
from stmsearch.search.storage import study_name

TESTS = Path(__file__).resolve().parent
TRIAL_KEYS = {"metrics", "config", "tokens_per_layer", "token_reduction", "is_reference", "feasible", "hardware",
              "software", "duration_s"}
SPACE = {
    "model": "vim_proxy", "dataset": "mnist5k", "subset": 32, "device": "cpu",
    "objectives": ["accuracy", "throughput", "flops"],
    "constraints": {"min_accuracy": 0.9, "min_speedup": 1.05},
    "methods": [{"name": "stm", "knobs": {"window": {"type": "int", "low": 0, "high": 8, "step": 2}}},
                {"name": "tome"}],
    "schedule": {"form": "parametric", "start": {"type": "int", "low": 0, "high": 4},
                 "count": {"type": "int", "low": 2, "high": 12, "step": 2}},
    "sampler": {"name": "nsga2", "seed": 1, "population_size": 4},
    "budget": {"trials": 4},
    "seeds": [{"name": "hand", "config": {"method": "stm", "schedule": {"start": 2, "interval": 2, "count": 8}}}],
    "evaluator": "fake_evaluators:fake_evaluate",
}


def write_space(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, **changes}))
    return path


def search(path: Path, tmp_path: Path, **kwargs):
    kwargs = {"executor": "local", "runs": tmp_path / "runs", "progress": False, **kwargs}
    return run_search(load_space(path), path, **kwargs)


def test_trial_record_readable_with_plain_optuna(tmp_path):
    path = write_space(tmp_path)
    result = search(path, tmp_path)
    study = optuna.load_study(study_name=result.study_name, storage=result.storage_url)
    assert result.study_name == study_name(path, load_space(path)) and result.ran == 4
    attrs = study.user_attrs
    assert attrs["objectives"] == ["accuracy", "throughput", "flops"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE", "MINIMIZE"]
    assert (attrs["model"], attrs["dataset"], attrs["subset"]) == ("vim_proxy", "mnist5k", 32)
    assert attrs["constraints"] == {"min_accuracy": 0.9, "max_flops": None, "min_speedup": 1.05}
    assert attrs["space"]["schedule"]["count"]["high"] == 12 and "checkpoint_sha256" in attrs
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 4
    ref = trials[0]
    assert ref.user_attrs["is_reference"] and ref.user_attrs["seed_config"] == "reference"
    assert ref.user_attrs["config"]["method"] == "none" and ref.user_attrs["speedup"] == 1.0
    assert [t.user_attrs.get("seed_config") for t in trials[1:2]] == ["hand"]
    ref_thr = ref.user_attrs["metrics"]["throughput"]
    for t in trials:
        assert TRIAL_KEYS <= set(t.user_attrs), set(t.user_attrs)
        m = t.user_attrs["metrics"]
        assert t.values == [m["accuracy"], m["throughput"], m["flops"]]
        assert t.user_attrs["tokens_per_layer"] == m["tokens_per_layer"]
        assert t.user_attrs["hardware"]["device"] == "cpu" and "torch" in t.user_attrs["software"]
        cfg = config_from_dict(t.user_attrs["config"])
        assert t.user_attrs["token_reduction"] == pytest.approx(cfg.token_reduction(12))
        speedup = m["throughput"] / ref_thr
        assert t.user_attrs["speedup"] == pytest.approx(speedup)
        assert t.user_attrs["feasible"] == (m["accuracy"] >= 0.9 and speedup >= 1.05 - 1e-12)
    assert not ref.user_attrs["feasible"]  # speed-up 1.0 is below min_speedup
    assert any(t.user_attrs["feasible"] for t in trials)


def test_rerun_resumes_up_to_the_budget(tmp_path):
    path = write_space(tmp_path)
    first = search(path, tmp_path, trials=2)
    study = optuna.load_study(study_name=first.study_name, storage=first.storage_url)
    kept = {t.number: t.values for t in study.trials}
    second = search(path, tmp_path)  # the space's budget: 4
    third = search(path, tmp_path)
    study = optuna.load_study(study_name=first.study_name, storage=first.storage_url)
    assert (first.ran, second.ran, third.ran) == (2, 2, 0)
    assert len(study.trials) == 4 and {n: study.trials[n].values for n in kept} == kept
    seeds = [t.user_attrs.get("seed_config") for t in study.trials]
    assert seeds.count("reference") == 1 and seeds.count("hand") == 1


@pytest.mark.parametrize("evaluator, error", [("raising_evaluate", "OutOfMemoryError: CUDA out of memory"),
                                              ("nan_evaluate", "FloatingPointError: accuracy is nan")])
def test_failed_trials_are_recorded_and_the_search_goes_on(tmp_path, evaluator, error):
    path = write_space(tmp_path, evaluator=f"fake_evaluators:{evaluator}")
    result = search(path, tmp_path)
    study = optuna.load_study(study_name=result.study_name, storage=result.storage_url)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] + [TrialState.FAIL] * 3
    for t in study.trials[1:]:
        assert t.user_attrs["error"].startswith(error) and "Traceback" in t.user_attrs["traceback"]
        assert t.user_attrs["config"]["method"] in ("stm", "tome") and t.user_attrs["duration_s"] >= 0


def test_a_config_measured_before_is_recorded_not_measured_again(tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("STMSEARCH_FAKE_CALLS", str(calls))
    tiny = {"form": "parametric", "start": 2, "count": {"type": "categorical", "choices": [4, 8]}}
    path = write_space(tmp_path, methods=[{"name": "stm"}], schedule=tiny, seeds=[], budget={"trials": 7})
    result = search(path, tmp_path)
    study = optuna.load_study(study_name=result.study_name, storage=result.storage_url)
    twins = [t for t in study.trials if "reused_from" in t.user_attrs]
    assert len(twins) >= 4  # 7 trials of 3 distinct configs
    for t in twins:
        first = study.trials[t.user_attrs["reused_from"]]
        assert t.user_attrs["config"] == first.user_attrs["config"] and t.values == first.values
        assert "reused_from" not in first.user_attrs
    assert len(calls.read_text().split()) == 7 - len(twins)


def test_a_failing_reference_stops_the_search_with_its_error(tmp_path):
    path = write_space(tmp_path, evaluator="fake_evaluators:no_such_function")
    with pytest.raises(SearchError, match="reference model failed.*no_such_function"):
        search(path, tmp_path)
    url = f"sqlite:///{tmp_path / 'runs' / 'space.db'}"
    (trial,) = optuna.load_study(study_name=study_name(path, load_space(path)), storage=url).trials
    assert trial.state == TrialState.FAIL and "no_such_function" in trial.user_attrs["error"]


def test_time_limit_stops_the_run_and_a_rerun_continues(tmp_path, monkeypatch):
    monkeypatch.setenv("STMSEARCH_FAKE_SLEEP", "0.3")
    path = write_space(tmp_path, budget={"trials": 40, "timeout_s": 2.0})
    first = search(path, tmp_path)
    second = search(path, tmp_path)
    assert 1 <= first.ran < 40 and second.ran >= 1
    study = optuna.load_study(study_name=first.study_name, storage=first.storage_url)
    assert len(finished(study)) == first.ran + second.ran < 40


def test_a_study_name_cannot_be_reused_for_another_space(tmp_path):
    search(write_space(tmp_path), tmp_path, study="shared", trials=2)
    changed = write_space(tmp_path, subset=33)
    with pytest.raises(SearchError, match="different search space"):
        search(changed, tmp_path, study="shared")
    three = write_space(tmp_path, objectives=["accuracy", "flops"])
    with pytest.raises(SearchError, match="optimises"):
        search(three, tmp_path, study="shared")


def test_stale_running_trials_are_failed_on_the_next_run(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_s=1, grace_s=1)
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "maximize"])
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    assert reap_stale(study) == 0  # still beating
    time.sleep(3.1)
    assert reap_stale(study) == 1
    frozen = study.trials[0]
    assert frozen.state == TrialState.FAIL and frozen.user_attrs["interrupted"]
    assert "interrupted" in frozen.user_attrs["error"] and finished(study) == []


@pytest.mark.parametrize("enqueued", [False, True])
def test_a_search_killed_right_after_asking_leaves_a_reapable_trial(tmp_path, enqueued):
    """A process that takes a trial and dies before doing anything else (the window SIGKILL hit in
    test_sigkill_mid_search_loses_no_completed_trial once): the trial names its dead owner, so the next
    search reaps it at once instead of counting it against the budget."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="s", directions=["maximize"])
    if enqueued:
        study.enqueue_trial({}, user_attrs={"seed_config": "a"})
    child = ("import optuna, os; from stmsearch.database import open_storage; from stmsearch.search.record import ask; "
             f"ask(optuna.load_study(study_name='s', storage=open_storage({url!r}))); os._exit(0)")
    subprocess.run([sys.executable, "-c", child], check=True, timeout=120)
    orphan = study.trials[0]
    assert orphan.state == TrialState.RUNNING and orphan.user_attrs["pid"] != os.getpid()
    assert len(counted(study)) == 1
    assert reap_stale(study) == 1 and counted(study) == []
    mine = ask(study)  # this process's own trial is not reaped while it lives
    assert mine.user_attrs["pid"] == os.getpid() and reap_stale(study) == 0 and len(counted(study)) == 1


def _completed(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=30) as con:
            return con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_sigkill_mid_search_loses_no_completed_trial(tmp_path):
    path = write_space(tmp_path, budget={"trials": 40})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "STMSEARCH_FAKE_SLEEP": "0.4"}
    cmd = [sys.executable, "-m", "stmsearch.cli", "search", str(path), "--executor", "local", "--out",
           str(tmp_path / "runs"), "--no-progress"]
    db = tmp_path / "runs" / "space.db"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while _completed(db) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    name = study_name(path, load_space(path))
    before = {t.number: t.values for t in optuna.load_study(study_name=name, storage=f"sqlite:///{db}").trials
              if t.state == TrialState.COMPLETE}
    assert len(before) >= 3
    # the same command again (smaller budget to keep the test short) continues the study
    result = search(path, tmp_path, trials=len(before) + 2)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    assert {t.number: t.values for t in study.trials if t.number in before} == before
    assert len(finished(study)) == len(before) + 2 and result.ran == 2


def test_cli_runs_and_prints_the_pareto_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_space(tmp_path, constraints={})
    out = CliRunner().invoke(search_cmd, [str(path), "--executor", "local", "--trials", "3", "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "Pareto front of space-" in out.output and "3 trials in space-" in out.output
    assert (tmp_path / "runs" / "space.db").is_file()
    bad = write_space(tmp_path, sampler={"name": "anneal"})
    out = CliRunner().invoke(search_cmd, [str(bad), "--executor", "local"])
    assert out.exit_code == 1 and f"{bad}: sampler.name: unknown sampler 'anneal'" in out.output


def test_postgresql_storage(tmp_path, postgres_url):
    assert postgres_url.startswith("postgresql://")  # the form the README and --storage help show
    path = write_space(tmp_path)
    name = f"pg-{uuid.uuid4().hex[:8]}"
    try:
        first = search(path, tmp_path, storage_url=postgres_url, study=name, trials=2)
        search(path, tmp_path, storage_url=postgres_url, study=name, trials=3)
        study = optuna.load_study(study_name=name, storage=postgres_url)
        assert first.ran == 2 and len(study.trials) == 3 and study.user_attrs["model"] == "vim_proxy"
        assert all(TRIAL_KEYS <= set(t.user_attrs) for t in study.trials)
    finally:
        optuna.delete_study(study_name=name, storage=postgres_url)


def test_the_pareto_table_shows_only_the_knobs_a_method_reads_that_differ_from_its_defaults():
    from stmsearch.merging.config import MergeConfig
    from stmsearch.merging.methods import STM_DEFAULTS
    from stmsearch.results.table import knob_text

    tome = MergeConfig(method="tome", window=4).to_dict()  # its STM-only fields differ from STM's defaults
    assert knob_text(tome) == "window=4"
    other = 4 if STM_DEFAULTS["runs"] != 4 else 3
    assert knob_text(MergeConfig(method="stm", window=6, runs=other).to_dict()) == f"window=6 runs={other}"
    assert knob_text(MergeConfig(method="stm").to_dict()) == "" and knob_text({"method": "none"}) == ""
