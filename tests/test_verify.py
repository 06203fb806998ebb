"""Verified fronts and modelled speed in real searches: what the study stores, and who reads it."""
from __future__ import annotations

import json
import uuid

import optuna
import pytest
import torch
from click.testing import CliRunner

from stmsearch.cli.verify import verify_cmd
from stmsearch.database import open_storage
from stmsearch.evaluation.latency import LatencyTable
from stmsearch.export import export_configs
from stmsearch.merging.config import config_from_dict
from stmsearch.results.records import StudyError, load_study_data
from stmsearch.results.table import front_records, pareto_table
from stmsearch.search import load_space, run_search
from stmsearch.search.storage import study_name
from stmsearch.search.verify import VerifyError, verify_studies, verify_study
from test_search_run import write_space

SPEEDUP = {"objectives": ["accuracy", "speedup", "flops"], "throughput": {"estimator": "paired"},
           "constraints": {"min_accuracy": 0.5}}


def _searched(tmp_path, url, name=None, **changes):
    path = write_space(tmp_path, **{**SPEEDUP, **changes})
    result = run_search(load_space(path), path, executor="local", runs=tmp_path / "runs", progress=False,
                        storage_url=url, study=name, trials=6)
    return result


def _verify_and_read(url, name):
    done = verify_study(url, name, progress=False, log=lambda m: None)
    return done, load_study_data(url, name)


def check_verified_front(url, name, tmp_path):
    before = load_study_data(url, name)
    assert not before.verified and before.reference() is not None
    front = {r.number for r in front_records(before) if not r.is_reference}
    done, data = _verify_and_read(url, name)
    assert {v.number for v in done} == front | {before.reference().number}
    for r in data.records:
        if r.number in front or r.is_reference:
            v = r.verified
            assert v["n"] == 5000 and v["timing_pairs"] == 15  # the whole set, more pairs than a trial's 7
            assert v["speedup_ci"][0] <= v["speedup"] <= v["speedup_ci"][1] and "at" in v
            assert r.figure("n") == 5000 and r.value("n") == 32  # the search's own figure is kept beside it
        else:
            assert r.verified is None
    assert data.verified and "verified on the whole set" in pareto_table(data).title
    manifest = export_configs(url, name, "pareto", tmp_path / "out")  # no --unverified needed now
    assert manifest["figures"] == "verified" and manifest["configs"]
    assert all(e["verified"]["n"] == 5000 for e in manifest["configs"])
    # nothing else in the study changed
    assert [t.values for t in data.study.trials] == [t.values for t in before.study.trials]


def test_verify_front_on_sqlite(tmp_path, storage_url):
    result = _searched(tmp_path, storage_url)
    check_verified_front(storage_url, result.study_name, tmp_path)


def test_verify_front_on_postgresql(tmp_path, postgres_url):
    name = f"verify-{uuid.uuid4().hex[:8]}"
    try:
        _searched(tmp_path, postgres_url, name)
        check_verified_front(postgres_url, name, tmp_path)
    finally:
        optuna.delete_study(study_name=name, storage=postgres_url)


def test_several_studies_are_verified_with_their_points_interleaved(tmp_path, storage_url):
    for name in ("first", "second"):
        _searched(tmp_path, storage_url, name=name)
    lines = []
    done = verify_studies(storage_url, ["first", "second"], progress=False, log=lines.append)
    studies = [line.split(": ")[1].split()[0] for line in lines]  # "verify 3/9: first trial 4 (stm)"
    assert "(reference)" in lines[0] and "(reference)" in lines[1]
    n = min(len(done["first"]), len(done["second"]))
    assert n >= 2 and studies[:2 * n] == ["first", "second"] * n  # one of each in turn while both have points
    assert len(lines) == len(done["first"]) + len(done["second"])
    stamps = {}
    for name in ("first", "second"):
        data = load_study_data(storage_url, name)
        front = {r.number for r in front_records(data)}
        assert {v.number for v in done[name]} == front | {data.reference().number}
        assert all(r.verified for r in front_records(data)) and data.reference().verified
        stamps[name] = [r.verified["at"] for r in data.records if r.verified]
    # every study is checked before any is measured: one that cannot be read stops them all
    with pytest.raises(StudyError, match="study 'absent' not found"):
        verify_studies(storage_url, ["first", "absent"], progress=False, log=lambda m: None)
    assert [r.verified["at"] for r in load_study_data(storage_url, "first").records if r.verified] == stamps["first"]
    # the command: --study repeated
    res = CliRunner().invoke(verify_cmd, ["--storage", storage_url, "--study", "first", "--study", "second"])
    assert res.exit_code == 0, res.output
    said = [line.split(": ")[1].split()[0] for line in res.output.splitlines() if line.startswith("verify ")]
    assert said[:2 * n] == ["first", "second"] * n
    for name in ("first", "second"):
        assert f"verified {len(done[name])} trial(s) of {name}" in " ".join(res.output.split())
    res = CliRunner().invoke(verify_cmd, ["--storage", storage_url, "--study", "first", "--study", "absent"])
    assert res.exit_code == 1 and "study 'absent' not found" in res.output and len(res.output.splitlines()) == 1


def test_verify_refuses_a_running_search_and_a_study_without_reference(tmp_path, storage_url):
    result = _searched(tmp_path, storage_url)
    study = optuna.load_study(study_name=result.study_name, storage=open_storage(storage_url))
    running = study.ask()  # a live search holds this trial: its heartbeat is fresh
    study._storage.record_heartbeat(running._trial_id)
    with pytest.raises(VerifyError, match="running trial"):
        verify_study(storage_url, result.study_name, progress=False, log=lambda m: None)
    res = CliRunner().invoke(verify_cmd, ["--storage", storage_url, "--study", result.study_name])
    assert res.exit_code == 1 and "a search is still running" in res.output and len(res.output.splitlines()) == 1
    assert not load_study_data(storage_url, result.study_name).verified  # nothing written

    bare = optuna.create_study(study_name="no-ref", storage=storage_url, directions=["maximize", "maximize"])
    bare.set_user_attr("objectives", ["accuracy", "speedup"])
    res = CliRunner().invoke(verify_cmd, ["--storage", storage_url, "--study", "no-ref"])
    assert res.exit_code == 1 and "no completed reference trial" in res.output


def test_a_model_estimator_study_calibrates_once_and_predicts_from_its_table(tmp_path, storage_url, monkeypatch):
    """The real evaluator on the proxy: the table is made when the study starts and kept for resuming."""
    monkeypatch.setattr("stmsearch.evaluation.latency.CPU_GRID", 3)  # a coarse, quick table will do here
    monkeypatch.setattr("stmsearch.evaluation.latency.ROUNDS", 2)
    space = {**SPEEDUP, "throughput": {"estimator": "model", "batch": 2}, "evaluator": None, "subset": 8,
             "objectives": ["accuracy", "speedup"], "constraints": {}, "seeds": [],
             "methods": [{"name": "stm", "knobs": {"window": {"type": "int", "low": 0, "high": 8, "step": 4}}}]}
    path = write_space(tmp_path, **space)
    run = lambda n: run_search(load_space(path), path, executor="local", runs=tmp_path / "runs",  # noqa: E731
                               progress=False, storage_url=storage_url, trials=n)
    result = run(3)
    study = optuna.load_study(study_name=result.study_name, storage=storage_url)
    table = LatencyTable.from_json(study.user_attrs["latency_table"])
    assert len(table.tokens) == 3 and table.meta["batch"] == 2
    saved = tmp_path / "runs" / f"{result.study_name}-latency.json"
    assert json.loads(saved.read_text()) == table.to_json()
    run(4)  # resumed: the same table, not a new calibration
    study = optuna.load_study(study_name=result.study_name, storage=storage_url)
    assert study.user_attrs["latency_table"] == table.to_json() and len(study.trials) == 4
    for t in study.trials:
        assert "metrics" in t.user_attrs, (t.state, t.params, t.user_attrs)
        m = t.user_attrs["metrics"]
        assert m["speed_estimator"] == "model" and t.values[1] == m["speedup"]
        cfg = None if t.user_attrs["is_reference"] else config_from_dict(t.user_attrs["config"])
        assert m["speedup"] == pytest.approx(table.predict_ms(None, 12, 197) / table.predict_ms(cfg, 12, 197))


def test_calibrate_and_a_mismatched_table_fail_in_one_line_and_change_nothing(tmp_path, storage_url, monkeypatch):
    from stmsearch.cli.calibrate import calibrate_cmd
    from stmsearch.cli.search import search_cmd

    monkeypatch.setattr("stmsearch.evaluation.latency.CPU_GRID", 3)
    monkeypatch.setattr("stmsearch.evaluation.latency.ROUNDS", 2)
    space = {**SPEEDUP, "throughput": {"estimator": "model", "batch": 2}, "evaluator": None, "subset": 8,
             "objectives": ["accuracy", "speedup"], "constraints": {}, "seeds": [],
             "methods": [{"name": "stm", "knobs": {"window": {"type": "int", "low": 0, "high": 8, "step": 4}}}]}
    path = write_space(tmp_path, **space)
    runner = CliRunner()
    res = runner.invoke(calibrate_cmd, [str(path), "--device", "tpu", "--out", str(tmp_path / "t.json")])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1 and "device" in res.output
    res = runner.invoke(calibrate_cmd, [str(path), "--device", "cuda:0", "--out", str(tmp_path / "t.json")])
    if not torch.cuda.is_available():  # a device this machine lacks
        assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1 and "cuda" in res.output
    res = runner.invoke(calibrate_cmd, [str(path), "--out", str(tmp_path / "t.json")])
    assert res.exit_code == 0, res.output
    # a table made for batch 2, used by a space that times batch 4
    other = write_space(tmp_path, **{**space, "throughput": {"estimator": "model", "batch": 4,
                                                            "table": str(tmp_path / "t.json")}})
    res = runner.invoke(search_cmd, [str(other), "--storage", storage_url, "--executor", "local", "--no-progress",
                                     "--no-verify", "--out", str(tmp_path / "runs")])
    assert res.exit_code == 1 and "another setup: batch 2 (this evaluation: 4)" in res.output
    assert len(res.output.strip().splitlines()) == 1
    study = optuna.load_study(study_name=study_name(other, load_space(other)), storage=storage_url)
    assert len(study.trials) == 0  # refused before any trial


def test_a_spaces_probe_reaches_every_trial_and_verification(tmp_path, monkeypatch):
    from stmsearch.models import create_model, probe as pb

    probe = tmp_path / "mine.probe.pt"
    pb.of(create_model("vim_proxy")).save(probe)
    calls = tmp_path / "probes.txt"
    monkeypatch.setenv("STMSEARCH_FAKE_PROBES", str(calls))
    url = f"sqlite:///{tmp_path / 'p.db'}"
    result = _searched(tmp_path, url, probe=str(probe))
    searched = calls.read_text().split()
    assert 0 < len(searched) <= result.ran and set(searched) == {str(probe)}  # a repeated config is not re-run
    done, _ = _verify_and_read(url, result.study_name)
    assert calls.read_text().split()[len(searched):] == [str(probe)] * len(done)
