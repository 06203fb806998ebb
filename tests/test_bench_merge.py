"""bench/bench_merge.py: which rows share a timed bound, and a CPU run of its table (timings meaningless)."""
from __future__ import annotations

import pytest


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
