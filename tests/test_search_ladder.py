"""seed_ladder: seeds made from the space, spanning the speed axis, evaluated like the space's own seeds."""
from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest
import yaml

from stmsearch.merging.config import MergeConfig
from stmsearch.merging.schedule import token_reduction, walk
from stmsearch.search.ladder import ladder_seeds, rungs, warm_start
from stmsearch.search.params import config_from_params, project, reference_params, seed_config
from stmsearch.search.record import enqueue_seeds
from stmsearch.search.space import SpaceError, knob_values, load_space, model_geometry

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
BASE = {
    "model": "vim_proxy", "dataset": "mnist5k", "subset": 64, "objectives": ["accuracy", "speedup"],
    "methods": [{"name": "stm", "knobs": {"window": {"type": "int", "low": 0, "high": 8, "step": 4},
                                          "runs": {"type": "categorical", "choices": [2, 3, 4]},
                                          "fading": {"type": "categorical", "choices": ["estimated", "fixed"]},
                                          "metric": "hidden"}},
                {"name": "tome", "knobs": {"window": 0}}],
    "schedule": {"form": "parametric", "start": {"type": "int", "low": 1, "high": 3},
                 "interval": {"type": "int", "low": 1, "high": 3},
                 "count": {"type": "int", "low": 2, "high": 24, "step": 2},
                 "shape": {"type": "categorical", "choices": ["decreasing", "constant"]}},
    "budget": {"trials": 12},
    "seeds": [{"name": "hand", "config": {"method": "stm", "schedule": {"start": 1, "interval": 2, "count": 8}}}],
    "seed_ladder": 4,
}


def space_of(tmp_path: Path, data: dict, name: str = "space.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return load_space(path)


def test_rungs_are_evenly_spread_and_keep_both_ends():
    values = list(range(2, 25, 2))
    got = rungs(values, 4)
    assert got[0] == values[0] and got[-1] == values[-1] and got == sorted(set(got))
    gaps = [values.index(b) - values.index(a) for a, b in zip(got, got[1:])]
    assert max(gaps) - min(gaps) <= 1
    assert rungs([3, 7], 2) == [3, 7] and rungs([2, 4, 6], 3) == [2, 4, 6]


def test_ladder_is_the_reference_schedule_stepped_across_the_speed_axis(tmp_path):
    space = space_of(tmp_path, BASE)
    ladder = dense(space)
    assert [s.name for s in ladder] == ["ladder-1", "ladder-2", "ladder-3", "ladder-4"]
    ref = reference_params(space)
    defaults = MergeConfig(method="stm")
    depth, tokens = model_geometry(space.model)
    reductions = []
    for seed in ladder:
        cfg = seed_config(space, seed.name)
        assert cfg.method == space.methods[0].name
        sched = cfg.schedule
        assert (sched.start, sched.interval) == (ref["start"], ref["interval"])
        assert sched.shape == densest_shape(space, cfg)
        # a knob takes the method's default where the space's range holds it, else its least value (the window
        # rises with the rung instead: its own test below)
        for knob in ("runs", "fading"):
            values = knob_values(space.methods[0].knobs[knob])
            want = getattr(defaults, knob) if getattr(defaults, knob) in values else values[0]
            assert getattr(cfg, knob) == want
        assert cfg.metric == "hidden"  # a fixed knob keeps the space's value
        # every rung is a point of the space: its projection gives the same config back
        assert config_from_params(space, {**ref, **project(space, cfg)}) == cfg
        reductions.append(token_reduction(walk(cfg, depth, tokens, clip=True).tokens, tokens))
    counts = [seed_config(space, s.name).schedule.count for s in ladder]
    assert counts[0] == min(knob_values(space.schedule.count)) and counts[-1] == max(knob_values(space.schedule.count))
    assert all(b > a for a, b in zip(reductions, reductions[1:]))  # light to heavy


def dense(space) -> list:
    """The ladder's dense leg (the sparse leg's rungs are named ladder-sparse-N)."""
    return [s for s in ladder_seeds(space) if not s.name.startswith("ladder-sparse-")]


def windows_of(space) -> list:
    return [seed_config(space, s.name).window for s in dense(space)]


def test_the_sparse_leg_steps_the_same_counts_at_the_widest_interval(tmp_path):
    space = space_of(tmp_path, BASE)
    ladder = ladder_seeds(space)
    sparse = [s for s in ladder if s.name.startswith("ladder-sparse-")]
    assert [s.name for s in ladder] == ["ladder-1", "ladder-2", "ladder-3", "ladder-4",
                                        "ladder-sparse-2", "ladder-sparse-3", "ladder-sparse-4"]
    ref = reference_params(space)
    dense_cfgs = [seed_config(space, s.name) for s in dense(space)]
    depth, tokens = model_geometry(space.model)
    reductions = []
    for seed, twin in zip(sparse, dense_cfgs[1:]):  # the lightest count at the widest interval is left out
        cfg = seed_config(space, seed.name)
        assert cfg.schedule.count == twin.schedule.count and cfg.schedule.start == ref["start"]
        assert cfg.schedule.interval == max(knob_values(space.schedule.interval)) > twin.schedule.interval
        assert cfg.schedule.shape == densest_shape(space, cfg)
        assert cfg.window == MergeConfig(method="stm").protect  # no protection rise on this leg
        assert (cfg.runs, cfg.fading, cfg.metric) == (twin.runs, twin.fading, twin.metric)
        assert config_from_params(space, {**ref, **project(space, cfg)}) == cfg
        reductions.append(token_reduction(walk(cfg, depth, tokens, clip=True).tokens, tokens))
        # sparser: fewer token-layers removed than the dense rung of the same count
        assert reductions[-1] < token_reduction(walk(twin, depth, tokens, clip=True).tokens, tokens)
    assert all(b > a for a, b in zip(reductions, reductions[1:]))


@pytest.mark.parametrize("interval", [2, {"type": "int", "low": 2, "high": 2}, None])
def test_no_sparse_leg_where_the_space_does_not_range_the_interval(tmp_path, interval):
    data = copy.deepcopy(BASE)
    if interval is None:
        del data["schedule"]["interval"]
    else:
        data["schedule"]["interval"] = interval
    space = space_of(tmp_path, data)
    assert [s.name for s in ladder_seeds(space)] == ["ladder-1", "ladder-2", "ladder-3", "ladder-4"]


@pytest.mark.parametrize("window, rungs_, want", [
    ({"type": "int", "low": 0, "high": 8, "step": 4}, 4, [0, 4, 4, 8]),  # fewer values than rungs: some repeat
    ({"type": "int", "low": 0, "high": 12, "step": 2}, 4, [0, 4, 8, 12]),  # the demo's range
    ({"type": "int", "low": 0, "high": 12, "step": 2}, 2, [0, 12]),
    ({"type": "categorical", "choices": [8, 0, 4]}, 3, [0, 4, 8]),  # by value, not by the order listed
])
def test_the_window_rises_with_the_rung_from_the_default_to_the_widest(tmp_path, window, rungs_, want):
    data = copy.deepcopy(BASE)
    data["methods"][0]["knobs"]["window"], data["seed_ladder"] = window, rungs_
    space = space_of(tmp_path, data)
    got = windows_of(space)
    assert got[0] == MergeConfig(method="stm").protect and got == sorted(got) == want
    assert got[-1] == max(knob_values(space.methods[0].knobs["window"]))
    ref = reference_params(space)
    for seed in ladder_seeds(space):  # each rung with its window is still a point of the space
        cfg = seed_config(space, seed.name)
        assert config_from_params(space, {**ref, **project(space, cfg)}) == cfg


def test_the_window_starts_at_the_least_value_when_the_range_leaves_the_default_out(tmp_path):
    data = copy.deepcopy(BASE)
    default = MergeConfig(method="stm").protect
    data["methods"][0]["knobs"]["window"] = {"type": "int", "low": default + 2, "high": default + 10, "step": 2}
    assert windows_of(space_of(tmp_path, data)) == [default + 2, default + 4, default + 8, default + 10]


def test_a_fixed_or_unsearched_window_is_kept_at_every_rung(tmp_path):
    data = copy.deepcopy(BASE)
    data["methods"][0]["knobs"]["window"] = 4
    assert windows_of(space_of(tmp_path, data, "a.yaml")) == [4] * 4
    del data["methods"][0]["knobs"]["window"]
    assert windows_of(space_of(tmp_path, data, "b.yaml")) == [None] * 4  # the method's own default, unset


def densest_shape(space, cfg) -> str:
    """The space's shape that removes the most token-layers at ``cfg``'s count (the first of equals)."""
    depth, tokens = model_geometry(space.model)
    best, shape = -1.0, None
    for candidate in knob_values(space.schedule.shape):
        other = cfg.model_copy(update={"schedule": cfg.schedule.model_copy(update={"shape": candidate})})
        reduction = token_reduction(walk(other, depth, tokens, clip=True).tokens, tokens)
        if reduction > best:
            best, shape = reduction, candidate
    return shape


def test_each_rung_takes_the_shape_that_reduces_most_not_the_first(tmp_path):
    data = copy.deepcopy(BASE)
    data["schedule"]["shape"]["choices"] = ["constant", "increasing", "decreasing"]
    ladder = [seed_config(space_of(tmp_path, data), s.name) for s in ladder_seeds(space_of(tmp_path, data))]
    # front-loaded counts remove the most token-layers, so the heavy rungs reach the fast end (on both legs)
    assert [c.schedule.shape for c in ladder] == ["decreasing"] * 7
    data["schedule"]["shape"] = "increasing"  # a fixed shape is kept
    assert {seed_config(space_of(tmp_path, data, "b.yaml"), s.name).schedule.shape
            for s in ladder_seeds(space_of(tmp_path, data, "b.yaml"))} == {"increasing"}


def test_a_default_outside_the_range_gives_the_least_value(tmp_path):
    data = copy.deepcopy(BASE)
    default_runs = MergeConfig(method="stm").runs
    data["methods"][0]["knobs"]["runs"] = {"type": "categorical", "choices": [r for r in (3, 5, 6) if r != default_runs]}
    space = space_of(tmp_path, data)
    least = data["methods"][0]["knobs"]["runs"]["choices"][0]
    assert {seed_config(space, s.name).runs for s in ladder_seeds(space)} == {least}


def test_free_schedule_ladder_sets_every_listed_layer(tmp_path):
    data = {**BASE, "schedule": {"form": "free", "layers": [0, 2, 5], "min_per_layer": 0, "max_per_layer": 12,
                                 "step": 4}, "seed_ladder": 3}
    space = space_of(tmp_path, data)
    depth, _ = model_geometry(space.model)
    schedules = [seed_config(space, s.name).schedule for s in ladder_seeds(space)]
    assert all(len(s) == depth for s in schedules)
    assert [s[0] for s in schedules] == [4, 8, 12]  # 0 would be the unreduced reference again
    assert all(s[0] == s[2] == s[5] and sum(s) == 3 * s[0] for s in schedules)


def test_no_ladder_by_default_and_old_identities_hold(tmp_path):
    plain = {k: v for k, v in BASE.items() if k != "seed_ladder"}
    a = space_of(tmp_path, plain, "a.yaml")
    b = space_of(tmp_path, {**plain, "seed_ladder": 0}, "b.yaml")
    c = space_of(tmp_path, BASE, "c.yaml")
    assert ladder_seeds(a) == [] and [s.name for s in warm_start(a)] == ["hand"]
    assert a.identity() == b.identity() != c.identity()


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(seed_ladder=13), "seed_ladder: 13 rungs; a ladder takes 2 up to the schedule's 12 non-zero"),
    (lambda d: d.update(seed_ladder=1), "seed_ladder: 1 rungs; a ladder takes 2 up to"),
    (lambda d: d.update(seed_ladder=-1), "seed_ladder: Input should be greater than or equal to 0"),
    (lambda d: d["seeds"].append({"name": "ladder-2", "config": {"method": "stm", "schedule": [2]}}),
     "seeds: the name 'ladder-2' is kept for seed_ladder's"),
])
def test_bad_ladder_fails_in_one_line_naming_the_file(tmp_path, edit, message):
    data = copy.deepcopy(BASE)
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpaceError) as exc:
        load_space(path)
    assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value) and "\n" not in str(exc.value)


def test_study_enqueues_the_space_seeds_then_the_ladder_once(tmp_path):
    space = space_of(tmp_path, BASE)
    study = optuna.create_study(directions=space.directions)
    names = ["hand", "ladder-1", "ladder-2", "ladder-3", "ladder-4", "ladder-sparse-2", "ladder-sparse-3",
             "ladder-sparse-4"]
    assert enqueue_seeds(study, space) == names
    waiting = study.get_trials(deepcopy=False)
    assert [t.user_attrs["seed_config"] for t in waiting] == names
    assert waiting[-1].system_attrs["fixed_params"] == project(space, seed_config(space, "ladder-sparse-4"))
    assert enqueue_seeds(study, space) == []  # already waiting: not twice


def test_shipped_demo_space_uses_the_ladder():
    space = load_space(SPACES / "demo.yaml")
    # both legs: the interval is ranged
    assert space.seed_ladder >= 2 and len(warm_start(space)) == len(space.seeds) + 2 * space.seed_ladder - 1
    assert len(warm_start(space)) < space.budget.trials // 2


def test_a_search_runs_the_ladder_after_the_reference_and_caps_a_heavy_rung(tmp_path, monkeypatch):
    from stmsearch.search import run_search

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))  # fake_evaluators
    data = {**BASE, "seeds": [], "seed_ladder": 3, "device": "cpu", "objectives": ["accuracy", "flops"],
            "schedule": {"form": "parametric", "start": 0, "count": {"type": "int", "low": 4, "high": 60, "step": 4}},
            "budget": {"trials": 5}, "evaluator": "fake_evaluators:fake_evaluate"}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    result = run_search(load_space(path), path, executor="local", runs=tmp_path / "runs", progress=False)
    study = optuna.load_study(study_name=result.study_name, storage=result.storage_url)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.user_attrs.get("seed_config") for t in trials[:4]] == ["reference", "ladder-1", "ladder-2", "ladder-3"]
    heaviest = trials[3]
    depth, tokens = model_geometry("vim_proxy")
    asked = seed_config(load_space(path), "ladder-3")
    # the heaviest rung asks 60 tokens a layer on every layer: more than fits, so it runs capped, as any trial
    assert walk(asked, depth, tokens, clip=True).capped and heaviest.user_attrs["capped_layers"]
    assert heaviest.state == optuna.trial.TrialState.COMPLETE
