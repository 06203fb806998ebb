"""Speed estimators and intervals: paired timing, the latency model, Wilson and bootstrap intervals.

No timed assertions: the tests check the arithmetic, the interleaving, what the estimators
return and that a latency table serves only the setup it was made for.
"""
from __future__ import annotations

import json
import statistics
import time

import pytest
import torch

import stmsearch
from stmsearch.merging.methods import get_method
from stmsearch.evaluation import stats
from stmsearch.evaluation.api import evaluate
from stmsearch.evaluation.latency import LatencyError, LatencyTable, calibrate, smooth, steady_medians
from stmsearch.evaluation.speed import paired_speed
from stmsearch.evaluation.throughput import describe_device, interleaved_times

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
STM = stmsearch.MergeConfig(method="stm", schedule={"start": 1, "count": 12})


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), table I: 81/263 -> 0.2553-0.3662; 15/148 -> 0.0624-0.1605; 0/20 -> 0-0.1611
    assert stats.wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert stats.wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=5e-5)
    lo, hi = stats.wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=5e-5)
    assert stats.wilson_interval(20, 20)[1] == 1.0
    with pytest.raises(ValueError):
        stats.wilson_interval(0, 0)


def test_bootstrap_interval_brackets_the_median_ratio_and_narrows_with_agreement():
    ref, cand = [2.0, 2.1, 1.9, 2.05, 2.0, 1.95, 2.02], [1.0, 1.1, 0.9, 1.02, 0.98, 1.0, 1.01]
    ratio = stats.median_ratio(ref, cand)
    lo, hi = stats.bootstrap_ratio_ci(ref, cand)
    assert lo <= ratio <= hi and ratio == pytest.approx(2.0)
    noisy_lo, noisy_hi = stats.bootstrap_ratio_ci([2, 4, 1, 3, 2.5, 5, 1.5], [1, 1.1, 0.9, 1.02, 0.98, 1, 1.01])
    assert noisy_hi - noisy_lo > hi - lo
    assert stats.bootstrap_ratio_ci(ref, cand) == (lo, hi)  # seeded: the same interval every time
    with pytest.raises(ValueError):
        stats.bootstrap_ratio_ci([1.0], [1.0])


def test_interleaved_times_take_turns_and_time_every_call():
    calls = []
    fns = [lambda: calls.append("a"), lambda: calls.append("b")]
    times = interleaved_times(fns, CPU, rounds=4, warmup=1)
    assert calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [len(t) for t in times] == [4, 4] and all(x >= 0 for t in times for x in t)


def test_shuffled_rounds_call_each_once_in_a_new_order():
    calls = []
    fns = [lambda i=i: calls.append(i) for i in range(6)]
    times = interleaved_times(fns, CPU, rounds=5, warmup=0, shuffle=True)
    rounds = [calls[i:i + 6] for i in range(0, 30, 6)]
    assert all(sorted(r) == list(range(6)) for r in rounds) and len({tuple(r) for r in rounds}) > 2
    assert {r[0] for r in rounds} != {0} and [len(t) for t in times] == [5] * 6
    calls.clear()
    interleaved_times(fns, CPU, rounds=5, warmup=0, shuffle=True)
    assert [calls[i:i + 6] for i in range(0, 30, 6)] == rounds  # seeded: the same orders every time


@pytest.fixture(scope="module")
def proxy():
    return stmsearch.create_model("vim_proxy")


def test_paired_speed_reports_speedup_interval_and_absolute_throughputs(proxy):
    out = paired_speed(proxy, STM, (1, 28, 28), 4, CPU, pairs=3, warmup=1)
    assert out["speedup"] > 0 and out["speedup_ci"][0] <= out["speedup"] <= out["speedup_ci"][1]
    assert out["throughput"] > 0 and out["reference_throughput"] > 0 and out["timing_pairs"] == 3
    assert out["speedup"] == pytest.approx(out["throughput"] / out["reference_throughput"])
    assert getattr(proxy, "_stm")["config"] == STM  # left patched for the config, as evaluate() expects
    ref = paired_speed(proxy, None, (1, 28, 28), 4, CPU, pairs=3, warmup=1)
    assert ref["speedup"] == 1.0 and ref["speedup_ci"] == [1.0, 1.0]
    assert getattr(proxy, "_stm", None) is None
    with pytest.raises(ValueError, match="pairs"):
        paired_speed(proxy, STM, (1, 28, 28), 4, CPU, pairs=1)


@pytest.fixture(scope="module")
def table(proxy):
    configs = [STM, stmsearch.MergeConfig(method="tome"), stmsearch.MergeConfig(method="stm", metric="x")]
    return calibrate(proxy, "vim_proxy", configs, CPU, batch=2, rounds=2, grid=[60, 130, 197], progress=False)


def test_latency_table_predicts_deterministically_from_its_parts(table, tmp_path):
    keys = {get_method(c.method).cost_key(c) for c in (STM, stmsearch.MergeConfig(method="tome"),
                                                        stmsearch.MergeConfig(method="stm", metric="x"))}
    assert table.tokens == [60, 130, 197] and set(table.merge_ms) == keys and len(keys) == 3
    assert all(v > 0 for v in table.layer_ms + table.layer_sad_ms + [table.stem_ms])
    full = table.predict_ms(None, 12, 197)
    assert full == pytest.approx(table.stem_ms + 12 * table.layer_ms[-1])
    merged = table.predict_ms(STM, 12, 197)
    run = stmsearch.merging.schedule.walk(STM, 12)
    assert run.schedule == [0] + [12] * 11  # merges before layers 1..11, from the tokens layer l-1 ran on
    step = table.merge_ms[get_method("stm").cost_key(STM)]
    layer = table.layer_sad_ms if STM.size_aware_decay else table.layer_ms  # STM's default decays by size
    expect = (table.stem_ms + sum(table._at(layer, t) for t in run.tokens)
              + sum(table._at(step, t, table.merge_tokens) for t in run.tokens[:-1]))
    assert merged == pytest.approx(expect)
    again = LatencyTable.load(table.save(tmp_path / "t.json"))
    assert again.predict_ms(STM, 12, 197) == merged and again.to_json() == table.to_json()


def test_calibration_times_every_methods_step_in_the_same_rounds(proxy, monkeypatch):
    """Steps of every key share each round (load drift falls on all alike), get their own rounds in a new
    order each, and each key's times come back to that key. The steps run for real, but each is then given a
    time of its own (key and count), so the mapping is checked exactly: a step slowed by a sleep was once
    checked against the others' real times, which a loaded CI machine pushed past the sleep."""
    from stmsearch.evaluation import latency

    configs = [STM, stmsearch.MergeConfig(method="tome"), stmsearch.MergeConfig(method="prune")]
    keys = sorted({get_method(c.method).cost_key(c) for c in configs})
    made, calls = latency._merge_step, []

    def given_ms(key, tokens):
        return 10.0 * (keys.index(key) + 1) + tokens / 100

    def tagged(model, cfg, tokens, *args):
        run = made(model, cfg, tokens, *args)
        run.tag = (get_method(cfg.method).cost_key(cfg), tokens)
        return run

    def recording(fns, device, rounds, **kw):
        tags = [getattr(f, "tag", None) for f in fns]
        calls.append((tags, rounds, kw.get("shuffle")))
        times = interleaved_times(fns, device, rounds, **kw)
        return [ts if tag is None else [given_ms(*tag) / 1e3] * len(ts) for tag, ts in zip(tags, times)]

    monkeypatch.setattr(latency, "_merge_step", tagged)
    monkeypatch.setattr(latency, "interleaved_times", recording)
    table = calibrate(proxy, "vim_proxy", configs, CPU, batch=2, rounds=2, grid=[60, 130, 197], progress=False,
                      merge_rounds=3)
    steps = [call for call in calls if call[0][0] is not None]
    assert len(steps) == 1 and steps[0][1:] == (3, True)  # the CPU grid's steps in one chunk, shuffled rounds
    assert sorted(steps[0][0]) == sorted((k, t) for k in keys for t in (60, 130, 197))
    for key in keys:
        assert table.merge_ms[key] == pytest.approx([given_ms(key, t) for t in table.merge_tokens])
    assert table.meta["merge_rounds"] == 3 and table.meta["rounds"] == 2


def spike_layers(monkeypatch, tokens: int, seconds: float, size_aware_only: bool = False) -> None:
    """Calibration's layer stacks at ``tokens`` tokens (only the size-aware one, if so) take ``seconds`` longer."""
    from stmsearch.evaluation import latency

    made = latency._layers

    def spiked(model, hidden, dt_scale):
        run = made(model, hidden, dt_scale)
        if hidden.shape[1] != tokens or (size_aware_only and dt_scale is None):
            return run

        def timed():
            time.sleep(seconds)
            return run()
        return timed

    monkeypatch.setattr(latency, "_layers", spiked)


def test_size_aware_layers_are_one_ratio_to_the_plain_series(proxy, monkeypatch):
    """A size-aware stack slow at one count (a load spike in its turn) moves neither that count's price nor
    the others': STM, which reads that series, is priced against the baselines by one ratio over the grid."""
    spike_layers(monkeypatch, 130, 0.2, size_aware_only=True)
    table = calibrate(proxy, "vim_proxy", [STM], CPU, batch=2, rounds=2, grid=[60, 130, 197], progress=False,
                      merge_rounds=1)
    ratio = table.meta["sad_ratio"]
    assert [s / p for p, s in zip(table.layer_ms, table.layer_sad_ms)] == pytest.approx([ratio] * 3)
    assert 0.5 < ratio < 2  # the spiked count alone would price STM's layers there at over 0.2 s / depth more
    assert table.layer_sad_ms[1] < table.layer_ms[1] + 0.1 * 1e3 / proxy.cfg.depth


def test_smooth_pulls_a_noisy_count_onto_its_neighbours_curve():
    tokens = [16, 32, 49, 65, 82, 98, 115, 131, 148, 164, 181, 197]
    true = [0.5 + 0.2 * t + 2e-4 * t * t for t in tokens]
    noisy = [v * (1.25 if t == 131 else 1 + 0.03 * (-1) ** i) for i, (t, v) in enumerate(zip(tokens, true))]
    out = smooth(tokens, noisy)
    err = [abs(o / v - 1) for o, v in zip(out, true)]
    assert max(err) < 0.05 and err[7] < 0.25 / 4  # the 25% spike at 131 tokens mostly gone, the rest kept close
    assert all(b >= a > 0 for a, b in zip(out, out[1:]))
    assert smooth([60, 130, 197], [1.0, 5.0, 2.0]) == [1.0, 5.0, 2.0]  # too few counts for a curve: as timed
    dipping = smooth([10, 20, 30, 40, 50], [9.0, 1.0, 1.0, 2.0, 3.0])  # a fit that would fall: held level
    assert all(b >= a > 0 for a, b in zip(dipping, dipping[1:]))


def test_steady_medians_take_out_a_load_that_moves_from_round_to_round():
    """Two calls 1:2 in every round; a load triples the rounds from the third on for the first call and from
    the fourth for the second (it came mid-round). Plain medians read 1:2 as 3:2; divided by each round's
    load (its total against the typical round's), the ratio stands."""
    c, d = [1.0, 1.0, 3.0, 3.0, 3.0], [2.0, 2.0, 2.0, 6.0, 6.0]
    assert statistics.median(d) / statistics.median(c) == pytest.approx(2 / 3)
    steady = steady_medians([c, d])
    assert steady[1] / steady[0] == pytest.approx(2.0)
    assert steady_medians([[4.0, 5.0, 6.0]]) == [5.0]  # one call alone: its plain median


def test_cpu_table_keeps_its_timings_and_prices_from_the_smoothed_series(proxy, monkeypatch):
    """A load spike at one count of the CPU grid moves that count's price by a fraction of the spike (in every
    round: no other call's round shares it); the plain medians as timed are kept beside the table's series."""
    spike_layers(monkeypatch, 100, 0.3)
    grid = [20, 60, 100, 140, 197]
    table = calibrate(proxy, "vim_proxy", [STM], CPU, batch=2, rounds=2, grid=grid, progress=False, merge_rounds=1)
    timed = table.meta["timed"]
    key = get_method("stm").cost_key(STM)
    assert len(timed["layer_ms"]) == len(timed["layer_sad_ms"]) == 5 and len(timed["merge_ms"][key]) == 5
    assert table.merge_ms[key] != timed["merge_ms"][key]  # priced from a curve, not the medians
    spike = 300 / proxy.cfg.depth
    assert timed["layer_ms"][2] > spike  # the spike was timed ...
    assert table.layer_ms[2] - min(timed["layer_ms"][1], timed["layer_ms"][3]) < 0.6 * spike  # ... and spread out
    assert all(b >= a > 0 for a, b in zip(table.layer_ms, table.layer_ms[1:]))


def test_latency_table_refuses_another_setup_and_missing_steps(table, tmp_path):
    here = describe_device(CPU)
    table.check("vim_proxy", here, 2, False)
    for args, word in ((("vim_tiny", here, 2, False), "model"), (("vim_proxy", "cuda:0 NVIDIA H200", 2, False),
                                                                  "device"),
                       (("vim_proxy", here, 64, False), "batch"), (("vim_proxy", here, 2, True), "bf16")):
        with pytest.raises(LatencyError, match=f"another setup: {word}"):
            table.check(*args)
    with pytest.raises(LatencyError, match="no merge step 'prune'"):
        table.predict_ms(stmsearch.MergeConfig(method="prune", schedule=[4]), 12, 197)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LatencyError, match="bad.json: not valid JSON"):
        LatencyTable.load(bad)
    bad.write_text(json.dumps({"meta": {}}))
    with pytest.raises(LatencyError, match="not a latency table"):
        LatencyTable.load(bad)
    with pytest.raises(LatencyError, match="not found"):
        LatencyTable.load(tmp_path / "none.json")


def test_evaluate_model_estimator_uses_the_table(table, tmp_path):
    path = table.save(tmp_path / "t.json")
    out = evaluate("vim_proxy", config=STM, device="cpu", measure=("speed",), throughput_batch=2,
                   estimator="model", latency_table=str(path))
    assert out["speed_estimator"] == "model" and out["speedup_ci"] is None
    assert out["speedup"] == pytest.approx(table.predict_ms(None, 12, 197) / table.predict_ms(STM, 12, 197))
    with pytest.raises(LatencyError, match="batch"):
        evaluate("vim_proxy", config=STM, device="cpu", measure=("speed",), throughput_batch=8,
                 estimator="model", latency_table=str(path))
    with pytest.raises(ValueError, match="needs a latency table"):
        evaluate("vim_proxy", config=STM, device="cpu", measure=("speed",), estimator="model")
    with pytest.raises(ValueError, match="device: unknown device 'tpu'"):
        evaluate("vim_proxy", config=STM, device="tpu", measure=("speed",))
