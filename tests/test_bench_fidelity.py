"""bench/bench_fidelity.py's core on a few real digits (CPU): per-image correctness agrees with
the accuracy pass, every method gets the shared schedule where it fits, and the sign tests pair
the right images."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import stmsearch
from stmsearch.evaluation.accuracy import evaluate_accuracy
from stmsearch.evaluation.datasets import load_dataset
from stmsearch.evaluation.fidelity import (config_at, evaluate_cell, load_proxy, paired, parse_levels, parse_range,
                                           shared_schedule)

pytestmark = pytest.mark.usefixtures("one_thread")
BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_fidelity.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_fidelity", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def proxy(one_thread):
    return load_proxy("vim_proxy", range(4, 16))


def test_cell_correctness_matches_the_accuracy_pass(proxy):
    cfg, shared = config_at({"method": "stm"}, 0.3, proxy.depth)
    cell = evaluate_cell(proxy, {"method": "stm"}, 0.3, batch=5)
    data = load_dataset("mnist5k", limit=16).head(16)
    stmsearch.apply(proxy.model, cfg)
    try:
        whole = evaluate_accuracy(proxy.model, data, batch_size=16, progress=False)["accuracy"]
        first = evaluate_accuracy(proxy.model, data.head(4), batch_size=4, progress=False)["accuracy"]
    finally:
        stmsearch.apply(proxy.model, None)
    assert shared and cell["shared"]
    assert cell["correct"].shape == (12,) and cell["correct"].dtype == torch.bool
    assert cell["accuracy"] == pytest.approx((whole * 16 - first * 4) / 12)  # images 4..15 only


def test_methods_share_the_schedule_where_capacity_allows(proxy):
    ref = shared_schedule(0.4, proxy.depth)
    prune, prune_shared = config_at({"method": "prune"}, 0.4, proxy.depth)
    stm, stm_shared = config_at({"method": "stm", "window": 8, "runs": 2}, 0.4, proxy.depth)
    assert prune_shared and prune.schedule == ref
    # pairs beside an 8-token window cannot remove 17 tokens a layer late in the 12-layer proxy
    assert not stm_shared and stm.schedule != ref
    assert abs(stm.token_reduction(proxy.depth) - 0.4) < 0.05


def test_sign_test_wiring(proxy):
    a = evaluate_cell(proxy, {"method": "tome"}, 0.4)["correct"]
    assert paired(a, a) == {"wins": 0, "losses": 0, "p": 1.0}  # a method against itself
    b = a.clone()
    b[:3] = ~b[:3]
    test = paired(a, b)
    assert test["wins"] == int((a[:3] & ~b[:3]).sum()) and test["wins"] + test["losses"] == 3
    with pytest.raises(ValueError, match="different image sets"):
        paired(a, b[:5])


def test_report_tests_the_headline_against_every_other_row(bench, proxy):
    rep = bench.report([proxy], (0.3,), 12, chosen={"method": "stm", "window": 0})
    rows, tests = rep["rows"], rep["tests"]["vim_proxy"][0.3]
    assert rep["headline"] == "STM (chosen)" and "stm (current default)" in rows
    assert {"tome", "prune", "random s0", "random s1", "random s2"} <= set(tests)
    assert set(tests) == set(rows) - {rep["headline"]}
    head = rows[rep["headline"]]["cells"]["vim_proxy"][0.3]["correct"]
    for name, t in tests.items():
        other = rows[name]["cells"]["vim_proxy"][0.3]["correct"]
        assert t["wins"] + t["losses"] == int((head != other).sum())
        assert 0.0 < t["p"] <= 1.0
    text = bench.tables(rep, [proxy], (0.3,), markdown=True)
    assert "| tome |" in text and "p=" in text


def test_select_follows_its_rule(bench, proxy):
    sel = bench.select([proxy], (0.2,), 12, limit=2)
    pool = [v for v in sel["variants"] if v["qualified"]]
    assert sel["chosen"] == max(pool, key=lambda v: v["mean"])["overrides"]
    assert sel["variants"][0]["label"] == "stm (current default)"  # defaults first: ties keep them
    assert sel["evals"] == len(sel["variants"])  # one proxy, one level


def test_equal_counts_tie_to_the_earlier_variant_whatever_the_float_rounding(bench):
    # 3702 of 4000 right in both, summed per cell in another order (issue 15's third selection)
    first = {"label": "a", "qualified": True, "mean": 0.9254999980330467}
    later = {"label": "b", "qualified": True, "mean": 0.9255000054836273}
    assert bench.best([first, later]) is first
    assert bench.best([first, {**later, "mean": 0.926}])["label"] == "b"


def test_bad_image_range_is_one_clear_error():
    assert parse_range("0:500") == range(0, 500)
    for bad in ("500", "5:2", "0:1001", "a:b"):
        with pytest.raises(ValueError, match="--images"):
            parse_range(bad)


def test_bad_levels_are_one_clear_error():
    assert parse_levels("0.1,0.4") == (0.1, 0.4)
    for bad in ("0.1,x", "", "0.4,1.2", "0"):
        with pytest.raises(ValueError, match="--levels"):
            parse_levels(bad)


def test_stage2_crosses_every_categorical_knob_or_the_ones_named(bench):
    """2d neighbours run every schedule validation accepts, so no knob is left out of the selection."""
    left = bench.stage2_knobs(bench.STAGE1)
    assert {"neighbourhood", "importance", "weights", "symmetric", "size_aware_decay", "importance_power",
            "weight_power"} <= set(left)
    assert bench.stage2_knobs(bench.STAGE1, ("importance", "weights")) == ["weights", "importance"]
    assert all(over["importance"] in ("none", "min", "max", "mean") for over in bench.grid(["importance"], {}))
    powers = bench.grid(["importance_power"], {})
    assert [o["importance_power"] for o in powers][0] == stmsearch.MergeConfig().importance_power and len(powers) == 4
