"""bench/bench_fast_end.py: the space's configurations as the search clips them, pricing, the walk to the
baseline's fastest point above the floor, and a run end to end on the real proxy with synthetic latency tables
(one where STM's merge step costs more than the whole unreduced forward, one where no step costs anything)."""
from __future__ import annotations

import json

import pytest

from stmsearch.evaluation.latency import TABLE_VERSION, LatencyTable
from stmsearch.merging.config import MergeConfig
from stmsearch.merging.methods import get_method
from stmsearch.merging.schedule import walk
from stmsearch.search.params import config_from_params, grid


@pytest.fixture(scope="module")
def bench():
    from bench import bench_fast_end

    return bench_fast_end


@pytest.fixture(scope="module")
def spaces(bench):
    base = bench.base_space("vim_proxy", 20, 1, count_high=4)
    return bench.method_spaces(base, ("stm", "prune"))


def table_for(configs, step_ms) -> LatencyTable:
    """A layer costs 0.1 ms a token, the stem 1 ms; each merge step key costs ``step_ms(key)``."""
    keys = {get_method(c.method).cost_key(c) for c in configs}
    return LatencyTable(meta={"version": TABLE_VERSION}, tokens=[16, 197], layer_ms=[1.6, 19.7],
                        layer_sad_ms=[1.6, 19.7], stem_ms=1.0, merge_tokens=[16, 197],
                        merge_ms={k: [step_ms(k)] * 2 for k in keys})


def test_space_configs_are_every_grid_point_clipped_as_the_search_clips_it(bench, spaces):
    for method, space in spaces.items():
        configs = bench.space_configs(space)
        values = grid(space)
        assert values["count"] == [2, 4] and len(values[f"{method}.window"]) == 7
        keys = [json.dumps(c.model_dump(mode="json"), sort_keys=True) for c in configs]
        assert len(set(keys)) == len(keys) <= len(values["start"]) * len(values["interval"]) * 2 * 3 * 7
        for c in configs:
            c.validate_for(12, 197)  # clipped: every one runs as it stands
        # a grid point that needs no clipping is there as the search would run it
        point = config_from_params(space, {"start": 0, "interval": 1, "count": 4, "shape": "decreasing",
                                           f"{method}.window": 0})
        assert not walk(point, 12, 197, clip=True).capped
        assert json.dumps(point.model_dump(mode="json"), sort_keys=True) in keys


def test_priced_is_fastest_first_and_the_tables_speedup(bench, spaces):
    configs = bench.space_configs(spaces["prune"])
    table = table_for(configs, lambda k: 0.5)
    out = bench.priced(configs, table, 12, 197)
    assert [s for s, _ in out] == sorted((s for s, _ in out), reverse=True)
    ref = table.predict_ms(None, 12, 197)
    assert all(abs(s - ref / table.predict_ms(c, 12, 197)) < 1e-12 for s, c in out)
    assert len(out) == len(configs)


def test_fastest_above_walks_down_to_the_first_at_the_floor(bench):
    points = [(3.0, MergeConfig(method="prune", schedule=[8] * 4)), (2.0, MergeConfig(method="prune", schedule=[6] * 4)),
              (1.5, MergeConfig(method="prune", schedule=[4] * 4)), (1.2, MergeConfig(method="prune", schedule=[2] * 4))]
    acc = {3.0: 0.2, 2.0: 0.45, 1.5: 0.7, 1.2: 0.9}
    best, walked = bench.fastest_above(points, lambda c: acc[next(s for s, p in points if p is c)], 0.5)
    assert best["speedup"] == 1.5 and best["accuracy"] == 0.7 and best["config"]["schedule"] == [4] * 4
    assert [w["speedup"] for w in walked] == [3.0, 2.0, 1.5]
    assert bench.fastest_above(points, lambda c: 0.1, 0.5)[0] is None


def test_verdict_needs_a_candidate_as_fast_and_as_accurate(bench):
    target = {"speedup": 2.0, "accuracy": 0.6}
    cands = [{"speedup": 2.1, "accuracy": 0.59}, {"speedup": 1.99, "accuracy": 0.9}]
    assert bench.verdict(target, cands) is None
    cands += [{"speedup": 2.0, "accuracy": 0.6}, {"speedup": 2.5, "accuracy": 0.6}, {"speedup": 2.2, "accuracy": 0.7}]
    assert bench.verdict(target, cands) == {"speedup": 2.2, "accuracy": 0.7}
    assert bench.verdict(target, cands[:4]) == {"speedup": 2.0, "accuracy": 0.6}  # the slowest of equals


def test_end_to_end_on_the_proxy(bench, spaces, tmp_path, one_thread):
    prune = bench.space_configs(spaces["prune"])
    configs = bench.space_configs(spaces["stm"]) + prune
    common = ["--proxy", "vim_proxy", "--subset", "20", "--count-high", "4", "--threads", "1"]
    # STM's step costs more than the unreduced forward: every STM configuration is slower than the reference
    pricey = table_for(configs, lambda k: 1e4 if k.startswith("stm") else 0.0).save(tmp_path / "pricey.json")
    out = bench.main(common + ["--table", str(pricey), "--out", str(tmp_path / "pricey_out.json")])
    assert out["reached_by"] is None and out["stm"] == []
    assert out["target"]["accuracy"] >= out["floor"] == 0.5
    assert json.loads((tmp_path / "pricey_out.json").read_text())["target"] == out["target"]
    # no step costs anything: STM's configuration with the baseline's schedule and window is priced alike, so it
    # is a candidate; the verdict is the best candidate at least as fast and as accurate
    free = table_for(configs, lambda k: 0.0).save(tmp_path / "free.json")
    out = bench.main(common + ["--table", str(free), "--margin", "1.0"])
    t = out["target"]
    same = [c for c in out["stm"] if c["config"]["schedule"] == t["config"]["schedule"]
            and c["config"]["window"] == t["config"]["window"]]
    assert same and abs(same[0]["speedup"] - t["speedup"]) < 1e-12
    assert all(c["speedup"] >= t["speedup"] for c in out["stm"])
    ok = [c for c in out["stm"] if c["accuracy"] >= t["accuracy"]]
    assert (out["reached_by"] is not None) == bool(ok)
    if ok:
        assert out["reached_by"]["accuracy"] == max(c["accuracy"] for c in ok)
    assert out["evaluated"] == out["baseline_walked"] + len(out["stm"])
    # --front: the baseline's fastest verified point of a bench_fronts run, priced by the same table (the space's
    # fastest prune configuration, so that few STM configurations are priced at or above it)
    table = LatencyTable.load(free)
    top = next(c for _, c in bench.priced(prune, table, 12, 197) if c.window == 0)
    slow, fast = ({"number": n, "speedup": v, "config": cfg.model_dump(mode="json")} for n, v, cfg in
                  ((3, 1.1, MergeConfig(method="prune", schedule=[2] * 12, window=0)), (5, 1.2, top)))
    (tmp_path / "run.json").write_text(json.dumps({"fronts": {"prune": [slow, fast]}}))
    out = bench.main(common + ["--table", str(free), "--margin", "1.0", "--front", str(tmp_path / "run.json")])
    t = out["target"]
    assert t["config"] == fast["config"] and out["baseline_walked"] == 0
    assert abs(t["speedup"] - table.predict_ms(None, 12, 197) / table.predict_ms(top, 12, 197)) < 1e-12
    assert out["evaluated"] == 1 + len(out["stm"]) and out["stm"]
