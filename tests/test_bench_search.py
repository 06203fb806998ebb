"""The tabular sampler benchmark: a tiny table built for real (without Optuna), looked up, benchmarked."""
from __future__ import annotations

import gzip
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench import bench_search
from bench.tabular.grid import PIN_SETS, discrete_space, distinct_configs, row_key
from bench.tabular.table import TableError, load_table
from stmsearch.evaluation.api import evaluate
from stmsearch.merging.config import MergeConfig
from stmsearch.search.params import clip_to_capacity, config_from_params, grid
from stmsearch.search.space import model_geometry

ROOT = Path(__file__).resolve().parents[1]
TINY = ["schedule.start=[0]", "schedule.interval=[2]", "schedule.count=[4, 12]", "schedule.shape=[constant]",
        "stm.window=[0]", "stm.runs=[2]", "stm.fading=[estimated, fixed]", "tome.window=[0]", *PIN_SETS]
SUBSET = 20
# the builder must run where Optuna, plotly and fvcore are not installed (the GPU box)
BLOCKED = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('optuna', 'plotly', 'fvcore'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
sys.argv = ['build_table'] + sys.argv[1:]
runpy.run_module('bench.tabular.build_table', run_name='__main__')
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("table") / "tiny.json.gz"
    args = [f"--set={s}" for s in TINY] + ["--subset", str(SUBSET), "--out", str(out), "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", BLOCKED, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "7 to evaluate" in done.stdout and "wrote" in done.stdout
    return out


def all_params(space) -> list[dict]:
    values = grid(space)
    return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]


def test_builder_covers_every_config_once(tiny):
    space = discrete_space(sets=TINY)
    with gzip.open(tiny, "rt") as f:
        data = json.load(f)
    assert data["complete"] and data["n"] == SUBSET
    keys = [r["key"] for r in data["rows"]]
    assert len(keys) == len(set(keys)) == len(distinct_configs(space)) + 1 == 7
    assert data["rows"][0]["config"] is None and all(0 <= r["correct"] <= SUBSET for r in data["rows"])


def test_lookup_maps_every_sampled_point_to_its_row(tiny):
    table = load_table(tiny)
    depth, tokens = model_geometry(table.space.model)
    params = all_params(table.space)
    assert len(params) > len(table.rows) - 1  # the flat space: inert knobs of the other method repeat rows
    hit = set()
    for p in params:
        cfg, _ = clip_to_capacity(config_from_params(table.space, p), depth, tokens)
        key = row_key(cfg, depth, tokens)
        assert table.metrics(p) is table.rows[key]
        hit.add(key)
    assert len(hit) == len(table.rows) - 1  # every config row is reachable (the reference is its own row)
    # the row holds what the project's evaluate() measures for that config
    p = next(p for p in params if p["method"] == "tome" and p["count"] == 12)
    measured = evaluate("vim_proxy", config=config_from_params(table.space, p), dataset="mnist5k", limit=SUBSET,
                        device="cpu", batch_size=SUBSET, measure=("accuracy",))
    assert table.metrics(p)["accuracy"] == pytest.approx(measured["accuracy"])
    assert table.reference["speedup"] == 1.0 and table.metrics(p)["speedup"] > 1.0


def test_incomplete_table_is_refused(tmp_path, tiny):
    with gzip.open(tiny, "rt") as f:
        data = json.load(f)
    data["complete"], data["rows"] = False, data["rows"][:3]
    bad = tmp_path / "partial.json.gz"
    with gzip.open(bad, "wt") as f:
        json.dump(data, f)
    with pytest.raises(TableError, match="incomplete table"):
        load_table(bad)


def test_hv_curve_is_monotone_and_counts_only_feasible_points():
    ref = (0.0, 0.0)
    pts = [(-0.9, -1.0), None, (-0.5, -2.0), (-0.95, -0.5), (-0.4, -1.5), None, (-0.2, -3.0)]
    curve = bench_search.hv_curve(pts, ref)
    assert len(curve) == len(pts) and all(b >= a for a, b in zip(curve, curve[1:]))
    assert curve[1] == curve[0] == pytest.approx(0.9)  # an infeasible trial adds nothing
    assert curve[4] == curve[3]  # a dominated point adds nothing


def test_trials_to_95_on_a_constructed_curve():
    best = 2.0
    curve = [best * min(1.0, k / 40) for k in range(1, 101)]  # reaches the level at k/40 >= 0.95: k = 38
    want = next(k for k in range(1, 101) if k / 40 >= bench_search.TARGET)
    assert bench_search.trials_to([v / best for v in curve], bench_search.TARGET) == want
    assert bench_search.trials_to([0.5] * 10, bench_search.TARGET) is None
    summary = bench_search.summarise({"a": [curve, curve], "b": [[v / 2 for v in curve]] * 2}, best)
    assert summary["a"]["trials_to_95"] == want and summary["b"]["trials_to_95"] is None
    assert summary["a"]["hv_at"]["25"] == pytest.approx(25 / 40) and summary["a"]["sd"][10] == 0.0


def test_quick_run_ends_with_the_json_line(tiny, tmp_path):
    out = CliRunner().invoke(bench_search.main, ["--table", str(tiny), "--samplers", "random,tpe-s5,nsga2-p10",
                                                 "--seeds", "2", "--trials", "12", "--quick", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    last = json.loads(out.output.strip().splitlines()[-1])
    assert last["default"] == "tpe-s5"  # the demo space's sampler (its warm-start entry is not in this run)
    assert set(last["samplers"]) == {"random", "tpe-s5", "nsga2-p10"}
    for name, s in last["samplers"].items():
        assert set(s) == {"trials_to_95", "hv_at"} and set(s["hv_at"]) == {"25", "50", "100"}
        # 12 trials only; random runs RANDOM_LONGER times as many, so its count to 95 % is known
        assert (s["hv_at"]["100"] is None) == (12 * (bench_search.RANDOM_LONGER if name == "random" else 1) < 100)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["best_known_hv"] <= saved["table_front_hv"] + 1e-12
    # curves are saved at 5 decimals
    assert all(max(max(c) for c in s["hv"]) <= saved["best_known_hv"] + 1e-5 for s in saved["samplers"].values())
    assert (tmp_path / "hypervolume.html").read_text().count("plotly") > 0


def test_warm_start_seed_is_evaluated_second(tiny):
    table = load_table(tiny)
    cfg = {"method": "tome", "schedule": {"start": 0, "interval": 2, "count": 12}, "window": 0}
    entry = {"name": "random", "seeds": [{"name": "fast", "config": cfg}]}
    points = bench_search.run(table, entry, seed=0, trials=3)
    from stmsearch.merging import MergeConfig
    from stmsearch.objectives import normalised
    want = table.config_metrics(MergeConfig.model_validate(cfg))
    feasible = want["accuracy"] >= table.space.constraints.min_accuracy
    assert points[1] == (normalised(want, list(table.space.objectives), table.reference) if feasible else None)
    with pytest.raises(TableError, match="not in the table"):
        bench_search.run(table, {"name": "random", "seeds": [{"name": "off", "config": {**cfg, "window": 4}}]}, 0, 3)


def test_ladder_entry_evaluates_the_spaces_own_rungs_after_the_reference(tiny):
    from stmsearch.objectives import normalised
    from stmsearch.search.ladder import ladder_seeds
    from stmsearch.search.params import seed_config

    table = load_table(tiny)
    space = table.space.model_copy(update={"seed_ladder": 2})
    ladder = ladder_seeds(space)
    points = bench_search.run(table, {"name": "random", "seed_ladder": 2}, seed=0, trials=len(ladder) + 1)
    objectives = list(space.objectives)
    for k, seed in enumerate(ladder, 1):  # rungs of the table's space are rows of the table
        want = table.config_metrics(seed_config(space, seed.name))
        feasible = want["accuracy"] >= space.constraints.min_accuracy
        assert points[k] == (normalised(want, objectives, table.reference) if feasible else None)


def test_default_is_the_entry_with_the_demo_spaces_warm_start(tiny):
    from stmsearch.search.space import load_space

    demo = load_space(ROOT / "search_spaces" / "demo.yaml")
    table = load_table(tiny)
    names = list(bench_search.SAMPLERS)
    picked = bench_search.default_name(table, names)
    entry = bench_search.SAMPLERS[picked]
    assert entry.get("seed_ladder", 0) == demo.seed_ladder and ("seeds" in entry) == bool(demo.seeds)
    assert entry["name"] == demo.sampler.name and entry.get("n_startup_trials") == demo.sampler.n_startup_trials


def test_random_runs_longer_and_seeds_can_start_later(tiny, tmp_path):
    out = CliRunner().invoke(bench_search.main, ["--table", str(tiny), "--samplers", "random,tpe-s5", "--seeds", "1",
                                                 "--first-seed", "3", "--trials", "6", "--random-longer", "3",
                                                 "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["samplers"]["random"]["hv"][0]) == 18 and len(saved["samplers"]["tpe-s5"]["hv"][0]) == 6
    assert "random     seed 3: 18 trials" in out.output
    table = load_table(tiny)
    from stmsearch.objectives import reference_point
    ref = reference_point(list(table.space.objectives), table.reference)
    assert saved["samplers"]["tpe-s5"]["hv"][0] == pytest.approx(bench_search.hv_curve(
        bench_search.run(table, bench_search.SAMPLERS["tpe-s5"], 3, 6), ref), abs=1e-5)


def test_a_table_built_before_a_config_field_existed_still_finds_its_rows(tiny, tmp_path):
    # rows written before MergeConfig had `neighbourhood` (as if a field added later, at its old behaviour's
    # default: the rows ran with it)
    field, default = "neighbourhood", MergeConfig.model_fields["neighbourhood"].default
    with gzip.open(tiny, "rt") as f:
        data = json.load(f)
    for row in data["rows"]:
        if row["config"] is not None:
            assert row["config"].pop(field) == default
            key = json.loads(row["key"])
            del key[field]
            row["key"] = json.dumps(key, sort_keys=True, separators=(",", ":"))
    old = tmp_path / "old.json.gz"
    with gzip.open(old, "wt") as f:
        json.dump(data, f)
    before, now = load_table(old), load_table(tiny)
    assert before.space.methods[0].knobs[field] == now.space.methods[0].knobs[field]
    for p in all_params(now.space):
        assert before.metrics(p) == now.metrics(p)


def test_every_benchmarked_seed_is_a_row_of_the_shipped_table():
    """Seeds spell out the knobs the table was built with: when a method's defaults change (STM's
    did, twice), a seed that left one out would stop being a grid point and --quick would fail."""
    from stmsearch.merging.config import config_from_dict

    table = load_table(bench_search.DEFAULT_TABLE)
    seeds = [s for entry in bench_search.SAMPLERS.values() for s in entry.get("seeds", [])]
    assert seeds, "no benchmarked entry carries seeds"
    for seed in seeds:
        table.config_metrics(config_from_dict(seed["config"]))  # raises TableError if not a row
