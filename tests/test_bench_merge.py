"""bench/bench_merge.py: which rows share a timed bound, and a CPU run of its table (timings meaningless)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def bench():
    from bench import bench_merge

    return bench_merge


NAMES = ["stm", "stm metric=x", "stm size_aware_decay=False", "prune", "stm 2d"]


def test_variants_share_a_bound_only_where_it_is_the_same_forward(bench):
    configs = bench.schedules(NAMES, [0.2, 0.4], 12)
    groups = bench.timing_groups(configs, NAMES, [0.2, 0.4])
    seen = [(name, level) for rows in groups.values() for name, level, _ in rows]
    assert sorted(seen) == sorted(configs)  # every row timed once
    where = {(name, level): key for key, rows in groups.items() for name, level, _ in rows}
    for level in (0.2, 0.4):
        assert where["stm", level] == where["stm metric=x", level]  # same schedule, same cut forward
        assert where["stm", level] != where["stm size_aware_decay=False", level]  # no scaled steps in its bound
        for key, rows in groups.items():
            assert len({tuple(cfg.schedule) for _, _, cfg in rows}) == 1 and all(lv == key[0] for _, lv, _ in rows)


def test_table_runs_on_the_cpu(bench, monkeypatch):
    monkeypatch.setattr(bench, "DEV", "cpu")
    monkeypatch.setattr(bench, "LOOP_IMAGES", 2)
    configs = bench.schedules(NAMES, [0.3], 12)
    rows = bench.table("vim_proxy", 2, "fp32", NAMES, [0.3], 1, configs)
    assert sorted(r["variant"] for r in rows) == sorted(NAMES)
    by = {r["variant"]: r for r in rows}
    assert by["stm"]["bound"] == by["stm metric=x"]["bound"]  # one timed bound for the group
    assert len({r["unreduced_img_s"] for r in rows}) == len(bench.timing_groups(configs, NAMES, [0.3]))
    for r in rows:
        assert r["ratio"] == pytest.approx(r["measured"] / r["bound"])
        assert 0.25 < r["reduction"] < 0.35


def test_resume_times_only_the_rows_not_done(bench, monkeypatch):
    monkeypatch.setattr(bench, "DEV", "cpu")
    monkeypatch.setattr(bench, "LOOP_IMAGES", 2)
    configs = bench.schedules(NAMES, [0.3], 12)
    rows = bench.table("vim_proxy", 2, "fp32", NAMES, [0.3], 1, configs,
                       done=frozenset({("stm", 0.3), ("stm 2d", 0.3)}))
    assert sorted(r["variant"] for r in rows) == sorted(set(NAMES) - {"stm", "stm 2d"})


def _row(variant, level, ratio, label, **kw):
    return {"model": "vim_tiny", "batch": 64, "dtype": "bf16", "variant": variant, "level": level, "ratio": ratio,
            "label": label, **kw}


def test_merge_table_prints_the_latest_rows(tmp_path):
    import json

    from bench import merge_table as mt

    old = [_row("stm", 0.4, 0.80, "a"), _row("tome", 0.4, 0.95, "a"), _row("prune", 0.4, 0.99, "a"),
           _row("tome metric=dt", 0.4, 0.70, "a", superseded="code changed")]
    new = [_row("stm", 0.4, 0.93, "b"), _row("tome", 0.4, 0.85, "b"), _row("stm", 0.2, 0.97, "b"),
           _row("prune", 0.2, 0.88, "b")]
    f1, f2 = tmp_path / "old.json", tmp_path / "new.json"
    f1.write_text(json.dumps(old))
    f2.write_text(json.dumps(new))
    rows = mt.latest([f1, f2])
    assert rows["vim_tiny", 64, "bf16", "stm", 0.4]["ratio"] == 0.93  # the later file wins
    assert ("vim_tiny", 64, "bf16", "tome metric=dt", 0.4) not in rows  # superseded rows are left out
    text = mt.level_table(rows, 0.4)
    assert "| stm | 0.930 |" in text and "| tome | **0.850** |" in text  # below 0.9 in bold
    assert "| prune | 0.990‡ |" in text and "‡: a" in text  # the minority label marked, with its legend
    assert "2 of 3 at or above 0.9" in text
    assert "prune **0.880** (2 rows)" in mt.lowest_table(rows, 0.4)


def test_rows_file_errors_name_the_file(tmp_path, bench):
    bad = tmp_path / "rows.json"
    bad.write_text('[{"model": "vim_tiny"}]')
    with pytest.raises(SystemExit, match="rows.json.*'batch'"):
        bench.read_rows(bad)
    bad.write_text("{not json")
    with pytest.raises(SystemExit, match="rows.json: not bench_merge rows"):
        bench.read_rows(bad)
    bad.write_text('{"model": "vim_tiny"}')
    with pytest.raises(SystemExit, match="rows.json.*not a JSON list of objects"):
        bench.read_rows(bad)


def test_resume_with_every_row_done_builds_no_model(bench, monkeypatch):
    monkeypatch.setattr(bench, "make_model", lambda name: pytest.fail("a model made for no rows"))
    configs = bench.schedules(NAMES, [0.3], 12)
    assert bench.table("vim_proxy", 2, "fp32", NAMES, [0.3], 1, configs,
                       done=frozenset((n, 0.3) for n in NAMES)) == []


def test_kernel_registers_compiles_for_sm90_on_the_cpu(capsys):
    """bench/kernel_registers.py needs no GPU: it compiles a merge kernel for sm_90 and reads its resources."""
    pytest.importorskip("triton", reason="kernel_registers compiles Triton kernels")
    from bench import kernel_registers as kr

    kernel, pointers, constexprs, warps = kr.rows()["select_chain"]
    got = kr.compile_row(kernel, pointers, constexprs, warps)
    assert 0 < got["regs"] <= 255 and got["stack"] >= 0 and got["ldl"] >= 0 and got["stl"] >= 0
    kr.main("select_chain")
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[0] == "select_chain" and int(out[1].split()[1]) == got["regs"]


def test_the_bound_plans_no_merge(bench):
    """The no-merge-cost bound cuts tokens and plans nothing, not even a plan started ahead."""
    import dataclasses

    import stmsearch

    model = stmsearch.create_model("vim_proxy", pretrained=False, depth=4).eval()
    stmsearch.apply(model, stmsearch.MergeConfig(method="tome", metric="dt", schedule=[6, 9, 0, 12]))
    planned = []
    method = model._stm["method"]
    model._stm["method"] = dataclasses.replace(method, plan=lambda step: planned.append(step.layer) or method.plan(step))
    x = torch.randn(2, 1, 28, 28)
    with torch.inference_mode():
        with bench.Bound():
            model(x)
        assert planned == [] and model._stm["pending"] is None
        assert [t["tokens"] for t in stmsearch.trace(model)] == [191, 182, 182, 170]
        model(x)
    assert planned == [0, 1, 3]


def test_summary_leaves_superseded_rows_out(bench):
    rows = [_row("tome metric=dt", 0.4, 0.70, "a", superseded="code changed"), _row("tome metric=dt", 0.4, 0.91, "b"),
            _row("stm", 0.4, 0.95, "b"), _row("tome", 0.3, 0.89, "b")]
    assert bench.summary(rows) == "worst ratio 0.890: tome at 30%, vim_tiny batch 64 bf16; 2/3 at >= 0.9"
