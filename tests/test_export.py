"""``stmsearch export``: picks, filters, files, manifest, and exact reproduction of a trial."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import optuna
import pytest
from click.testing import CliRunner

from stmsearch import MergeConfig, ParametricSchedule, apply, create_model, load_config
from stmsearch.results.records import load_trials
from stmsearch.cli.export import export_cmd
from stmsearch.export import ExportError, export_configs, select

OBJ = ["accuracy", "throughput", "flops"]


def merge_trials(records):
    return [r for r in records if r["state"] == "COMPLETE" and r["feasible"] and not r["is_reference"]]


def test_max_picks_are_the_extremes_of_the_feasible_merge_trials(stm_study, storage_url):
    records = load_trials(storage_url, "stm-proxy")
    pool = merge_trials(records)
    best = select(records, OBJ, "max-accuracy", "stm-proxy")
    fast = select(records, OBJ, "max-throughput", "stm-proxy")
    assert len(best) == len(fast) == 1
    assert best[0]["accuracy"] == max(r["accuracy"] for r in pool)
    assert fast[0]["throughput"] == max(r["throughput"] for r in pool)
    # the reference is more accurate than any merge config but is never exported
    assert not best[0]["is_reference"] and best[0]["accuracy"] < 0.97
    # infeasible trials are faster still, but never picked
    assert fast[0]["throughput"] < max(r["throughput"] for r in records if r["throughput"] and not r["feasible"])


def test_filters_bound_the_picks(stm_study, storage_url):
    records = load_trials(storage_url, "stm-proxy")
    ref_acc = next(r["accuracy"] for r in records if r["is_reference"])
    fast = select(records, OBJ, "max-throughput", "stm-proxy", max_drop=0.01)[0]
    assert fast["accuracy"] >= ref_acc - 0.01
    assert fast["throughput"] == max(r["throughput"] for r in merge_trials(records) if r["accuracy"] >= ref_acc - 0.01)
    floor = sorted(r["throughput"] for r in merge_trials(records))[-3]
    best = select(records, OBJ, "max-accuracy", "stm-proxy", min_throughput=floor)[0]
    assert best["throughput"] >= floor
    assert best["accuracy"] == max(r["accuracy"] for r in merge_trials(records) if r["throughput"] >= floor)


def test_pareto_pick_is_the_study_front_without_the_reference(stm_study, storage_url):
    records = load_trials(storage_url, "stm-proxy")
    chosen = select(records, OBJ, "pareto", "stm-proxy")
    pool = merge_trials(records)
    assert {r["number"] for r in chosen} == {r["number"] for r in pool if r["pareto"]}
    signs = np.array([1, 1, -1])
    for r in chosen:  # no feasible trial (reference included) dominates a chosen one
        p = np.array([r[m] for m in OBJ]) * signs
        for q in records:
            if q["state"] == "COMPLETE" and q["feasible"]:
                v = np.array([q[m] for m in OBJ]) * signs
                assert not ((v >= p).all() and (v > p).any())


def test_knee_is_on_the_accuracy_throughput_front(stm_study, storage_url):
    records = load_trials(storage_url, "stm-proxy")
    knee = select(records, OBJ, "knee", "stm-proxy")
    assert len(knee) == 1 and not knee[0]["is_reference"]
    feasible = [r for r in records if r["state"] == "COMPLETE" and r["feasible"]]
    front = [r for r in feasible if not any(q["accuracy"] >= r["accuracy"] and q["throughput"] >= r["throughput"]
                                            and q is not r and (q["accuracy"], q["throughput"]) !=
                                            (r["accuracy"], r["throughput"]) for q in feasible)]
    a = np.array([r["accuracy"] for r in front])
    t = np.array([r["throughput"] for r in front])
    sa, st = (a - a.min()) / np.ptp(a), (t - t.min()) / np.ptp(t)
    score = [s1 + s2 if not r["is_reference"] else -1 for r, s1, s2 in zip(front, sa, st)]
    assert knee[0]["number"] == front[int(np.argmax(score))]["number"]


def test_no_match_and_missing_reference_are_clear_errors(stm_study, storage_url):
    records = load_trials(storage_url, "stm-proxy")
    with pytest.raises(ExportError, match="no trial matches --pick max-accuracy with --min-accuracy 0.999"):
        select(records, OBJ, "max-accuracy", "stm-proxy", min_accuracy=0.999)
    without_ref = [r for r in records if not r["is_reference"]]
    with pytest.raises(ExportError, match="--max-drop needs the reference trial"):
        select(without_ref, OBJ, "knee", "stm-proxy", max_drop=0.01)


def test_export_writes_loadable_configs_and_a_manifest(stm_study, storage_url, tmp_path):
    manifest = export_configs(storage_url, "stm-proxy", "pareto", tmp_path, unverified=True, max_drop=0.02)
    assert manifest["figures"].startswith("unverified")
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert manifest["configs"] and manifest["filters"]["max-drop"] == 0.02
    for entry in manifest["configs"]:
        trial = stm_study.trials[entry["trial"]]
        assert (tmp_path / entry["file"]).name == f"stm-proxy-trial{entry['trial']}.yaml"
        assert load_config(tmp_path / entry["file"]).to_dict() == trial.user_attrs["config"]
        assert entry["metrics"]["accuracy"] == trial.values[0] and entry["metrics"]["n"] == 100
        assert entry["model"] == "vim_proxy" and entry["dataset"] == "mnist5k" and entry["subset"] == 100
        assert entry["checkpoint_sha256"] == "0" * 64 and entry["hardware"]["host"] == "testhost"
        assert entry["study"] == "stm-proxy" and entry["software"]["optuna"] == optuna.__version__


def test_cli_export_and_its_errors(stm_study, storage_url, tmp_path):
    runner = CliRunner()
    res = runner.invoke(export_cmd, ["--storage", storage_url, "--study", "stm-proxy", "--pick", "knee",
                                     "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and "is not verified" in res.output and "--unverified" in res.output
    assert not (tmp_path / "out").exists()
    res = runner.invoke(export_cmd, ["--storage", storage_url, "--study", "stm-proxy", "--pick", "knee",
                                     "--unverified", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(files) == 2 and "manifest.json" in files and "top-1" in res.output
    res = runner.invoke(export_cmd, ["--storage", storage_url, "--study", "stm-proxy", "--pick", "max-accuracy",
                                     "--min-throughput", "1e9", "--unverified", "--out", str(tmp_path / "none")])
    assert res.exit_code != 0 and "no trial matches" in res.output
    res = runner.invoke(export_cmd, ["--storage", storage_url, "--study", "gone", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "'gone' not found" in res.output


# --- exact reproduction ---------------------------------------------------------------

LIMIT = 100


def test_exported_config_reproduces_the_trial_accuracy_exactly(tmp_path):
    """A real study of the trained vim_proxy on mnist5k: evaluate() per config, stored per the
    contract, exported, then ``apply(model, load_config(path))`` on the same images scores the same."""
    from stmsearch.evaluation.accuracy import evaluate_accuracy
    from stmsearch.evaluation.api import evaluate
    from stmsearch.evaluation.datasets import load_dataset
    from stmsearch.models.zoo import PROXY_CHECKPOINT

    checkpoint = PROXY_CHECKPOINT
    assert checkpoint.is_file(), f"{checkpoint}: the trained proxy weights (stmsearch train-proxy) are missing"
    url = f"sqlite:///{tmp_path / 'real.db'}"
    study = optuna.create_study(study_name="real", storage=url, directions=["maximize", "minimize"])
    for k, v in {"objectives": ["accuracy", "flops"], "model": "vim_proxy", "checkpoint": str(checkpoint),
                 "checkpoint_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(), "dataset": "mnist5k",
                 "subset": LIMIT, "constraints": {"min_accuracy": None, "max_flops": None,
                                                  "min_speedup": None}}.items():
        study.set_user_attr(k, v)
    configs = [MergeConfig(method="none"),
               MergeConfig(method="stm", schedule=ParametricSchedule(start=2, count=6)),
               MergeConfig(method="tome", window=0, schedule=ParametricSchedule(start=0, count=12))]
    for cfg in configs:
        m = evaluate("vim_proxy", str(checkpoint), cfg, "mnist5k", limit=LIMIT, device="cpu",
                     measure=("accuracy", "flops"))
        study.add_trial(optuna.trial.create_trial(
            values=[m["accuracy"], m["flops"]], user_attrs={
                "metrics": m, "config": cfg.to_dict(), "tokens_per_layer": m["tokens_per_layer"],
                "token_reduction": cfg.token_reduction(12), "is_reference": cfg.method == "none", "feasible": True,
                "hardware": {"device": m["device"]}, "software": {}, "duration_s": 0.0}))
    accuracies = [t.values[0] for t in study.trials]
    # the aggressive schedule costs accuracy; were all scores equal, this test could not tell configs apart
    assert len(set(accuracies)) > 1, f"all configs scored {accuracies}"

    out = tmp_path / "export"
    manifest = export_configs(url, "real", "pareto", out, unverified=True)
    assert manifest["configs"], "the merge configs should trade accuracy for FLOPs"
    data = load_dataset("mnist5k", "val", "cpu", LIMIT)
    model = create_model("vim_proxy", checkpoint)  # a fresh model, not the evaluator's cached one
    for entry in manifest["configs"]:
        assert entry["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
        apply(model, load_config(out / entry["file"]))
        again = evaluate_accuracy(model, data, batch_size=256, device="cpu", progress=False)
        assert (again["accuracy"], again["n"]) == (entry["metrics"]["accuracy"], LIMIT)
        assert again["accuracy_ci"] == entry["metrics"]["accuracy_ci"]
        assert entry["metrics"]["n"] == LIMIT and entry["subset"] == LIMIT and entry["dataset"] == "mnist5k"
