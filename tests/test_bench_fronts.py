"""bench/bench_fronts.py: the matched-speed-up comparison on synthetic fronts, the sign tests'
pairing, and a smoke run end to end (stand-in evaluator for search and verify, the real proxy
for the per-image correctness)."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from stmsearch.results.records import load_study_data
from stmsearch.results.table import front_records
from stmsearch.search.space import load_space



@pytest.fixture(scope="module")
def bench():
    from bench import bench_fronts

    return bench_fronts


def pts(*pairs, start=0):
    return [{"number": start + i, "accuracy": a, "speedup": s} for i, (a, s) in enumerate(pairs)]


def test_front_drops_dominated_points_and_sorts_by_speedup(bench):
    points = pts((0.90, 1.2), (0.85, 1.1), (0.80, 2.0), (0.95, 1.0), (0.80, 1.5))
    assert [p["number"] for p in bench.front(points)] == [3, 0, 2]  # 1 and 4 are dominated by 0 and 2


def test_best_at_takes_the_most_accurate_point_fast_enough(bench):
    front = pts((0.95, 1.0), (0.90, 1.3), (0.70, 2.0))
    assert bench.best_at(front, 1.0)["number"] == 0
    assert bench.best_at(front, 1.01)["number"] == 1
    assert bench.best_at(front, 1.3)["number"] == 1  # at the point's own speed-up: reaches it
    assert bench.best_at(front, 1.31)["number"] == 2
    assert bench.best_at(front, 2.01) is None


def test_grid_and_matched_table(bench):
    fronts = {"stm": pts((0.9, 1.25), (0.8, 1.52)), "prune": pts((0.92, 1.15), (0.7, 1.31))}
    grid = bench.speedup_grid(fronts, 0.1)
    assert grid == [1.1, 1.2, 1.3, 1.4, 1.5]
    table = {r["speedup"]: (r["stm"], r["prune"]) for r in bench.matched_table(fronts, grid)}
    assert table[1.1] == (0.9, 0.92)
    assert table[1.2] == (0.9, 0.7)
    assert table[1.3] == (0.8, 0.7)
    assert table[1.4] == (0.8, None)


def test_match_is_the_nearest_stm_speedup_at_or_above(bench):
    stm = pts((0.95, 1.1), (0.9, 1.4), (0.8, 1.9))
    assert bench.match(stm, {"speedup": 1.35})["number"] == 1  # not the closer-but-slower 1.1x
    assert bench.match(stm, {"speedup": 1.4})["number"] == 1
    assert bench.match(stm, {"speedup": 1.0})["number"] == 0
    assert bench.match(stm, {"speedup": 2.0}) is None


@pytest.mark.parametrize("stm, base, want", [
    ([(0.95, 1.2), (0.9, 1.6)], [(0.94, 1.1), (0.85, 1.5)], "dominates"),
    ([(0.94, 1.2), (0.85, 1.6)], [(0.94, 1.1), (0.85, 1.5)], "ties"),
    ([(0.90, 1.2), (0.80, 1.6)], [(0.94, 1.1), (0.85, 1.5)], "loses"),
    ([(0.95, 1.2), (0.80, 1.6)], [(0.94, 1.1), (0.85, 1.5)], "mixed"),
    # every matched point wins, but STM never reaches the baseline's fastest point
    ([(0.95, 1.2), (0.9, 1.6)], [(0.94, 1.1), (0.85, 1.5), (0.5, 3.0)], "mixed"),
])
def test_verdict_on_synthetic_fronts(bench, stm, base, want):
    out = bench.compare_fronts({"stm": pts(*stm), "prune": pts(*base, start=10)}, ("prune",))
    assert out["verdicts"]["prune"] == want


def test_dominates_means_every_baseline_point_is_weakly_dominated(bench):
    stm, base = pts((0.95, 1.2), (0.9, 1.6)), pts((0.94, 1.1), (0.85, 1.5), start=10)
    out = bench.compare_fronts({"stm": stm, "prune": base}, ("prune",))
    assert out["verdicts"]["prune"] == "dominates"
    for row in out["pairs"]["prune"]:
        assert row["stm_speedup"] >= row["baseline_speedup"] and row["stm_accuracy"] >= row["baseline_accuracy"]


def test_sign_tests_pair_the_matched_points_images(bench):
    a = torch.tensor([1, 1, 1, 0, 1, 1, 0, 0], dtype=torch.bool)  # STM point 0
    b = torch.tensor([0, 0, 1, 1, 1, 0, 0, 0], dtype=torch.bool)  # prune point 10
    pairs = {"prune": [{"baseline": 10, "stm": 0}, {"baseline": 11, "stm": None}]}
    bench.sign_tests(pairs, {("stm", 0): a, ("prune", 10): b}, slice(4, None))
    assert pairs["prune"][0]["sign_all"]["wins"] == 3 and pairs["prune"][0]["sign_all"]["losses"] == 1
    assert pairs["prune"][0]["sign_unseen"] == {"wins": 1, "losses": 0, "p": 1.0}  # images 4-7 only
    assert "sign_all" not in pairs["prune"][1]


def test_tally_counts_outcomes_significance_and_unreached_points(bench):
    stm = pts((0.95, 1.2), (0.9, 1.6))
    base = pts((0.94, 1.1), (0.95, 1.3), (0.9, 1.55), (0.5, 3.0), start=10)
    out = bench.compare_fronts({"stm": stm, "prune": base}, ("prune",))
    rows = out["pairs"]["prune"]
    assert [r["outcome"] for r in rows] == ["win", "loss", "tie", "loss"]
    rows[0]["sign_all"] = {"wins": 9, "losses": 0, "p": 0.004}
    rows[1]["sign_all"] = {"wins": 1, "losses": 3, "p": 0.63}
    rows[2]["sign_all"] = {"wins": 0, "losses": 0, "p": 1.0}
    t = bench.tally(rows)
    assert t == {"points": 4, "ahead": 1, "ahead_sig": 1, "tied": 1, "tied_sig": 0, "behind": 1, "behind_sig": 0,
                 "unreached": [(3.0, 0.5)]}  # the unreached point is not also a loss
    rows[1]["sign_all"]["p"] = 0.01
    assert bench.tally(rows)["behind_sig"] == 1 and bench.tally(rows, alpha=0.005)["behind_sig"] == 0
    assert "behind at 1 (1 with p<0.05), unreached 1: 3.00x (0.500)" in bench.tally_text(bench.tally(rows))


def test_summary_tabulates_runs_from_their_json(bench, tmp_path, capsys):
    stm = pts((0.95, 1.2), (0.9, 1.6))
    runs = []
    for seed, extra in ((0, []), (1, [(0.5, 3.0)])):
        fronts = {"stm": stm, "prune": pts((0.94, 1.1), *extra, start=10), "tome": pts((0.96, 1.1), start=20)}
        out = {"proxy": "vim_proxy", "trials": 80, "sampler_seed": seed, "count_high": 32,
               "probe": {"file": "/x/vim_proxy.h16.probe.pt", "sha256": "0"},
               **bench.compare_fronts(fronts, ("prune", "tome"))}
        (tmp_path / f"{seed}.json").write_text(json.dumps(out))
        runs.append(str(tmp_path / f"{seed}.json"))
    got = bench.main(["--summary", *runs])
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 4 and table[0].startswith("| run | vs prune: STM ahead")
    assert table[2] == ("| vim_proxy, sampler seed 0, counts to 32, 80 trials, probe vim_proxy.h16.probe.pt "
                        "| 1 of 1 (0) | 0 (0) | 0 | 0 of 1 (0) | 1 (0) | 0 |")
    assert "| 1 of 2 (0) | 0 (0) | 1: 3.00x (0.500) |" in table[3]
    assert got["summary"][1]["prune"]["unreached"] == [(3.0, 0.5)]


def test_run_label_names_fixed_and_searched_stm_knobs(bench):
    out = {"proxy": "vim_proxy", "trials": 80, "sampler_seed": 1, "count_high": 32}
    plain = bench.run_label(out)
    assert plain == "vim_proxy, sampler seed 1, counts to 32, 80 trials"
    knobs = {"runs": {"type": "categorical", "choices": [4]}, "runs_from": {"type": "categorical", "choices": [0.1, 0.2]},
             "gamma": {"type": "float", "low": 0.8, "high": 1.0}}
    assert bench.run_label({**out, "stm_knobs": knobs}) == plain + ", STM runs 4, STM runs_from 0.1/0.2, STM gamma searched"


def test_every_method_gets_demo_yaml_search_settings(bench):
    base = bench.base_space("vim_proxy_clutter", 500, 40)
    demo = load_space(bench.DEMO)
    spaces = [bench.method_space(base, (m,), "table.json") for m in bench.METHODS]
    for space in spaces:
        assert space.schedule == demo.schedule and space.sampler == demo.sampler
        assert space.seed_ladder == demo.seed_ladder and space.objectives == demo.objectives
        assert space.subset == 500 and space.dataset == "mnist5k-clutter" and space.throughput.table == "table.json"
        assert space.methods[0].knobs == spaces[0].methods[0].knobs  # the same window range for each


def test_count_high_widens_every_methods_schedule_alike(bench):
    demo = load_space(bench.DEMO)
    base = bench.base_space("vim_proxy", 500, 40, count_high=28)
    spaces = [bench.method_space(base, (m,), "table.json") for m in bench.METHODS]
    for space in spaces:
        assert space.schedule.count.high == 28 and space.schedule.count.low == demo.schedule.count.low
        assert space.schedule.interval == demo.schedule.interval and space.schedule.start == demo.schedule.start
    assert load_space(bench.DEMO).schedule.count.high == demo.schedule.count.high != 28  # demo.yaml untouched


def test_sampler_seed_is_every_methods_alike(bench):
    demo = load_space(bench.DEMO)
    spaces = [bench.method_space(bench.base_space("vim_proxy", 500, 40, sampler_seed=3), (m,), "table.json")
              for m in bench.METHODS]
    assert [s.sampler.seed for s in spaces] == [3] * len(bench.METHODS) != [demo.sampler.seed] * len(bench.METHODS)
    assert all(s.sampler.name == demo.sampler.name and s.seed_ladder == demo.seed_ladder for s in spaces)
    assert bench.method_space(bench.base_space("vim_proxy", 500, 40), ("stm",)).sampler.seed == demo.sampler.seed


def test_stm_knobs_widen_only_stms_search(bench):
    base = bench.base_space("vim_proxy_clutter", 500, 40)
    extra = bench.stm_knobs("{drop: {type: categorical, choices: [0.0, 0.5]}}")
    stm, prune = (bench.method_space(base, (m,), None, extra).methods[0] for m in ("stm", "prune"))
    assert set(stm.knobs) == {"window", "drop"} and set(prune.knobs) == {"window"}
    for bad in ("[1, 2", "3", "{bogus: {type: categorical, choices: [1]}}"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.stm_knobs(bad)


def test_a_probe_file_reaches_every_search_and_the_per_image_pass(bench, tmp_path, monkeypatch):
    from stmsearch.models import create_model
    from stmsearch.models.probe import of

    probe = tmp_path / "narrow.probe.pt"
    of(create_model("vim_proxy", pretrained=True)).save(probe)
    base = bench.base_space("vim_proxy", 500, 40, probe=str(probe))
    assert all(bench.method_space(base, (m,), "table.json").probe == str(probe.resolve()) for m in bench.METHODS)
    assert bench.method_space(bench.base_space("vim_proxy", 500, 40), ("stm",)).probe is None
    attached = []
    monkeypatch.setattr(bench, "attach", lambda model, p: attached.append(p))
    point = {"number": 3, "config": {"method": "stm", "schedule": [0, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]}}
    ok = bench.correctness("vim_proxy", {"stm": [point]}, range(0, 4), str(probe))
    assert attached == [str(probe)] and ok["stm", 3].shape == (4,)


def test_the_shared_latency_table_times_stms_extra_merge_steps(bench):
    from stmsearch.merging.config import MergeConfig
    from stmsearch.merging.methods import get_method
    from stmsearch.search.calibration import step_configs

    base = bench.base_space("vim_proxy_clutter", 500, 40)
    extra = bench.stm_knobs("{importance_source: auto, runs: 2}")
    keys = {get_method(c.method).cost_key(c) for c in step_configs(bench.method_space(base, bench.METHODS,
                                                                                      stm_knobs=extra))}
    want = get_method("stm").cost_key(MergeConfig(method="stm", importance_source="auto", runs=2))
    assert {k for k in keys if k.startswith("stm")} == {want}
    assert any(k.startswith("prune") for k in keys) and any(k.startswith("tome") for k in keys)


def test_smoke_end_to_end(bench, tmp_path, one_thread):
    # 10 trials: the reference, the 7 seeds of the ladder's two legs, then two searched
    out = bench.main(["--proxy", "vim_proxy", "--trials", "10", "--subset", "10", "--images", "20",
                      "--runs", str(tmp_path), "--evaluator", "fake_evaluators:fake_evaluate", "--threads", "1",
                      "--out", str(tmp_path / "out.json"),
                      "--stm-knobs", "{drop: {type: categorical, choices: [0.5]}}"])
    assert json.loads((tmp_path / "out.json").read_text())["verdicts"] == out["verdicts"]
    assert out["studies"]["stm"].endswith("-stm-drop") and out["stm_knobs"] == {"drop": {"type": "categorical",
                                                                                          "choices": [0.5]}}
    searched = [r for r in load_study_data(out["storage"], out["studies"]["stm"]).records
                if not r.is_reference and not (r.seed_config or "").startswith("ladder")]
    assert searched and all(r.config.get("drop") == 0.5 for r in searched)
    for method, study in out["studies"].items():
        data = load_study_data(out["storage"], study)
        assert len(data.records) == 10 and data.reference().verified
        seeds = [r.seed_config for r in data.records if r.seed_config and r.seed_config.startswith("ladder")]
        assert seeds and all(r.method == method for r in data.records if not r.is_reference)
        assert out["fronts"][method]
        for p in out["fronts"][method]:
            assert len(p["correct"]) == 20 and p["per_image_accuracy"] == p["correct"].count("1") / 20
    for base, rows in out["pairs"].items():
        for row in rows:
            if row["stm"] is not None:
                assert row["stm_speedup"] >= row["baseline_speedup"]
                assert row["sign_all"]["wins"] + row["sign_all"]["losses"] <= 20
                assert row["sign_unseen"]["wins"] + row["sign_unseen"]["losses"] <= 10
    # more trials continue the same studies, and their new front points are verified too
    more = bench.main(["--proxy", "vim_proxy", "--trials", "13", "--subset", "10", "--images", "20",
                       "--runs", str(tmp_path), "--evaluator", "fake_evaluators:fake_evaluate", "--threads", "1",
                       "--stm-knobs", "{drop: {type: categorical, choices: [0.5]}}"])
    for method, study in more["studies"].items():
        data = load_study_data(more["storage"], study)
        assert len(data.records) == 13 and all(r.verified for r in front_records(data))
