"""Search-space files: the shipped ones parse; bad ones fail naming file, field and allowed values."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from stmsearch.search.params import (clip_to_capacity, config_from_params, distributions, grid, project,
                                     reference_params, seed_config)
from stmsearch.search.runner import check_inputs
from stmsearch.search.space import SpaceError, load_space, model_geometry

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"

BASE = {
    "model": "vim_proxy", "dataset": "mnist5k", "subset": 64, "objectives": ["accuracy", "throughput"],
    "methods": [{"name": "stm", "knobs": {"window": {"type": "int", "low": 0, "high": 12, "step": 4},
                                          "runs": {"type": "categorical", "choices": [2, 4]}}},
                {"name": "tome", "knobs": {"window": 0}}],
    "schedule": {"form": "parametric", "start": {"type": "int", "low": 0, "high": 3},
                 "count": {"type": "int", "low": 2, "high": 40, "step": 2}},
    "budget": {"trials": 5},
    "seeds": [{"name": "hand", "config": {"method": "stm", "schedule": {"start": 1, "interval": 1, "count": 8},
                                          "window": 4}}],
}


def write(tmp_path: Path, data: dict, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def error_for(tmp_path: Path, edit) -> str:
    data = copy.deepcopy(BASE)
    edit(data)
    path = write(tmp_path, data)
    with pytest.raises(SpaceError) as exc:
        load_space(path)
    assert str(exc.value).startswith(str(path)), exc.value
    return str(exc.value)


@pytest.mark.parametrize("name", ["demo", "vim_tiny_imagenet", "vim_small_imagenet"])
def test_shipped_spaces_parse(name):
    space = load_space(SPACES / f"{name}.yaml")
    assert len(space.objectives) >= 2 and distributions(space)
    assert space.budget.trials >= 20


def test_demo_space_is_the_cpu_proxy():
    from stmsearch.cli.search import resolve_space
    assert resolve_space("demo") == SPACES / "demo.yaml"  # `stmsearch search demo`
    space = load_space(SPACES / "demo.yaml")
    assert (space.model, space.dataset, space.device) == ("vim_proxy", "mnist5k", "cpu")
    assert space.sampler.name == "tpe" and space.sampler.n_startup_trials < space.budget.trials  # bench_search's pick
    assert len(space.seeds) < space.budget.trials // 2


@pytest.mark.parametrize("edit, field, allowed", [
    (lambda d: d["methods"][0]["knobs"].update(window={"type": "int", "low": -2, "high": 4}),
     "methods[0].knobs.window.low", "greater than or equal to 0"),
    (lambda d: d["methods"][0]["knobs"].update(metric={"type": "categorical", "choices": ["hidden", "q"]}),
     "methods[0].knobs.metric.choices[1]", "'hidden', 'x', 'B' or 'dt'"),
    (lambda d: d["methods"][0]["knobs"].update(speed=3), "methods[0].knobs.speed", "allowed: window,"),
    (lambda d: d["methods"][1].update(name="fast"), "methods[1].name", "allowed: stm, tome, prune, random"),
    (lambda d: d.update(sampler={"name": "nsga2", "options": "x"}), "sampler.options", "valid dictionary"),
    (lambda d: d.update(objectives=["accuracy", "speed"]), "objectives", "allowed: accuracy, speedup, throughput, flops"),
    (lambda d: d.update(budgett=3), "(top level)", "allowed: description, model,"),
    (lambda d: d["schedule"].update(shape="wavy"), "schedule.shape", "'constant', 'increasing' or 'decreasing'"),
    (lambda d: d["schedule"].update(start={"type": "int", "low": 0, "high": 30}), "schedule.start", "0..11"),
    (lambda d: d.update(schedule={"form": "free", "layers": [2, 12], "max_per_layer": 4}), "schedule.layers",
     "0..11"),
    (lambda d: d.update(schedule={"form": "sparse"}), "schedule", "'parametric' or 'free'"),
    (lambda d: d["methods"][0]["knobs"].update(window={"low": 0, "high": 3}), "methods[0].knobs.window",
     "categorical, int or float"),
    (lambda d: d.update(model="vim_huge"), "model", "vim_proxy"),
])
def test_bad_space_names_field_and_allowed_values(tmp_path, edit, field, allowed):
    msg = error_for(tmp_path, edit)
    assert f": {field}" in msg and allowed in msg, msg


def test_bad_seed_config_fails_up_front(tmp_path):
    msg = error_for(tmp_path, lambda d: d["seeds"][0]["config"].update(schedule=[170]))
    assert "seeds[0].config" in msg and "schedule[0]" in msg and "mergeable" in msg
    msg = error_for(tmp_path, lambda d: d["seeds"][0].update(name="reference"))
    assert "seeds[0].name" in msg and "reserved" in msg


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SpaceError, match="not found"):
        load_space(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(SpaceError, match="bad.yaml: not valid YAML"):
        load_space(bad)


def test_grid_needs_steps_and_run_inputs_are_checked(tmp_path):
    data = copy.deepcopy(BASE)
    data["sampler"] = {"name": "grid"}
    data["methods"][0]["knobs"]["gamma"] = {"type": "float", "low": 0.5, "high": 1.0}
    path = write(tmp_path, data)
    with pytest.raises(SpaceError, match="stm.gamma.*without a step"):
        check_inputs(load_space(path), str(path))
    data = copy.deepcopy(BASE)
    data["checkpoint"] = "${STMSEARCH_TEST_UNSET_VAR}/vim.pth"
    path = write(tmp_path, data)
    with pytest.raises(SpaceError, match="checkpoint: .*not set"):
        check_inputs(load_space(path), str(path))


def test_identity_ignores_budget_but_not_ranges(tmp_path):
    a = load_space(write(tmp_path, BASE, "a.yaml"))
    b = load_space(write(tmp_path, {**BASE, "budget": {"trials": 50}}, "b.yaml"))
    c = load_space(write(tmp_path, {**BASE, "subset": 65}, "c.yaml"))
    assert a.identity() == b.identity() != c.identity()


def test_params_round_trip_and_capacity_clipping(tmp_path):
    space = load_space(write(tmp_path, BASE))
    depth, tokens = model_geometry("vim_proxy")
    params = {"method": "stm", "start": 0, "count": 40, "stm.window": 4, "stm.runs": 2}
    cfg = config_from_params(space, params)
    assert cfg.method == "stm" and cfg.window == 4 and cfg.schedule.count == 40
    clipped, capped = clip_to_capacity(cfg, depth, tokens)
    assert capped and isinstance(clipped.schedule, list)
    assert clipped.validate_for(depth, tokens) == clipped.schedule  # now evaluable
    assert all(c <= 40 for c in clipped.schedule)
    small = config_from_params(space, {**params, "count": 2})
    assert clip_to_capacity(small, depth, tokens) == (small, [])
    tome = config_from_params(space, {**params, "method": "tome"})
    assert tome.method == "tome" and tome.window == 0  # the fixed tome knob, stm knobs inert


def test_seed_projection_and_reference_params(tmp_path):
    space = load_space(write(tmp_path, BASE))
    # runs 3 lies outside the space's choices (2, 4): the projection leaves it out and the sampler's own
    # value stands in
    proj = project(space, seed_config(space, "hand").model_copy(update={"runs": 3}))
    assert proj == {"method": "stm", "start": 1, "count": 8, "stm.window": 4}
    inside = seed_config(space, "hand").model_copy(update={"runs": 4})
    assert project(space, inside) == {**proj, "stm.runs": 4}
    assert config_from_params(space, project(space, inside)) == inside
    ref = reference_params(space)
    assert set(ref) == set(distributions(space)) and ref["count"] == 2
    assert seed_config(space, "reference").method == "none"
    gridded = load_space(write(tmp_path, {**BASE, "sampler": {"name": "grid"}}, "g.yaml"))
    assert grid(gridded)["count"][:3] == [2, 4, 6] and grid(gridded)["stm.runs"] == [2, 4]


def test_skip_bad_images_reaches_the_evaluator_and_the_identity(tmp_path, monkeypatch):
    from stmsearch.merging.config import MergeConfig
    from stmsearch.search import objective

    plain = load_space(write(tmp_path, BASE, "plain.yaml"))
    off = load_space(write(tmp_path, {**BASE, "skip_bad_images": False}, "off.yaml"))
    on = load_space(write(tmp_path, {**BASE, "skip_bad_images": True}, "on.yaml"))
    assert plain.identity() == off.identity() != on.identity()  # spaces written before the option keep theirs
    calls = []

    def recording(*args, **kwargs):  # takes no skip_bad_images unless asked, as custom evaluators may not
        calls.append(kwargs)
        return {}

    monkeypatch.setattr(objective, "load_evaluator", lambda spec: recording)
    objective.call_evaluate(plain, MergeConfig(method="none"))
    objective.call_evaluate(on, MergeConfig(method="none"))
    assert "skip_bad_images" not in calls[0] and calls[1]["skip_bad_images"] is True
