"""Samplers named in a space: short names, any Optuna class, module.Class; options checked up front."""
from __future__ import annotations

import copy

import optuna
import pytest

from stmsearch.search.runner import build_sampler, check_inputs
from stmsearch.search.samplers import SHORT_NAMES
from stmsearch.search.space import SpaceError, load_space
from test_search_space import BASE, write


def space_with(tmp_path, sampler: dict):
    data = copy.deepcopy(BASE)
    data["sampler"] = sampler
    path = write(tmp_path, data)
    return load_space(path), str(path)


def built(tmp_path, sampler: dict) -> optuna.samplers.BaseSampler:
    space, source = space_with(tmp_path, sampler)
    check_inputs(space, source)
    return build_sampler(space)


@pytest.mark.parametrize("name", sorted(SHORT_NAMES))
def test_every_short_name_builds_its_class(tmp_path, name):
    sampler = built(tmp_path, {"name": name})
    assert type(sampler).__name__ == SHORT_NAMES[name][0].rpartition(".")[2]


def test_class_names_dotted_paths_and_options_pass_through(tmp_path):
    nsga3 = built(tmp_path, {"name": "NSGAIIISampler", "options": {"population_size": 6, "mutation_prob": 0.25}})
    assert isinstance(nsga3, optuna.samplers.NSGAIIISampler) and nsga3._population_size == 6
    tpe = built(tmp_path, {"name": "optuna.samplers.TPESampler", "options": {"group": True, "multivariate": True,
                                                                             "n_startup_trials": 7}})
    assert isinstance(tpe, optuna.samplers.TPESampler) and tpe._n_startup_trials == 7
    # short-name defaults stand unless the space overrides them
    assert built(tmp_path, {"name": "nsga2"})._population_size == SHORT_NAMES["nsga2"][1]["population_size"]
    assert built(tmp_path, {"name": "nsga2", "population_size": 4})._population_size == 4


def test_same_seed_same_samples(tmp_path):
    def first_params(seed):
        study = optuna.create_study(sampler=built(tmp_path, {"name": "random", "seed": seed}))
        return [study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}).params["x"] for _ in range(3)]
    assert first_params(3) == first_params(3) != first_params(4)


@pytest.mark.parametrize("sampler, field, words", [
    ({"name": "anneal"}, "sampler.name", "unknown sampler 'anneal'"),
    ({"name": "os.path"}, "sampler.name", "unknown sampler 'os.path'"),
    ({"name": "no_such_module.Sampler"}, "sampler.name", "cannot import 'no_such_module'"),
    ({"name": "nsga2", "options": {"populaton_size": 3}}, "sampler.options.populaton_size",
     "takes no option 'populaton_size'"),
    ({"name": "tpe", "population_size": 8}, "sampler.population_size", "TPESampler takes no option"),
    ({"name": "nsga2", "options": {"mutation_prob": 3.0}}, "sampler.options", "NSGAIISampler refused them"),
])
def test_bad_sampler_fails_in_one_line_naming_file_and_field(tmp_path, sampler, field, words):
    space, source = space_with(tmp_path, sampler)
    with pytest.raises(SpaceError) as exc:
        check_inputs(space, source)
    msg = str(exc.value)
    assert msg.startswith(f"{source}: {field}: ") and words in msg and "\n" not in msg, msg


def test_option_given_twice_and_bad_name_fail_at_load(tmp_path):
    data = copy.deepcopy(BASE)
    data["sampler"] = {"name": "nsga2", "population_size": 4, "options": {"population_size": 6}}
    with pytest.raises(SpaceError, match="sampler.options: population_size is given twice"):
        load_space(write(tmp_path, data))
    data["sampler"] = {"name": "nsga 2"}
    with pytest.raises(SpaceError, match="sampler.name"):
        load_space(write(tmp_path, data))


def test_options_leave_earlier_study_identities_alone(tmp_path):
    plain, _ = space_with(tmp_path, {"name": "nsga2"})
    empty, _ = space_with(tmp_path, {"name": "nsga2", "options": {}})
    other, _ = space_with(tmp_path, {"name": "nsga2", "options": {"mutation_prob": 0.5}})
    assert plain.identity() == empty.identity() != other.identity()


@pytest.mark.parametrize("name", ["nsga2", "nsga3", "tpe", "random", "pls"])
def test_built_samplers_pickle_for_ray(tmp_path, name):
    """Ray Tune pickles its search algorithm, sampler included (optuna 5.1's GA samplers hold a lock)."""
    import pickle

    sampler = built(tmp_path, {"name": name, "seed": 3})
    again = pickle.loads(pickle.dumps(sampler))
    assert type(again) is type(sampler) and again.__dict__.keys() == sampler.__dict__.keys()
