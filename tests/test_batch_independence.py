"""A merged model gives an image the same answer whatever else is in its batch.

For every registered method and every value of each knob it reads (one knob varied at a time
from the method's example config), each of 14 real digits is classified alone, among 6 other
digits and among 63, shuffled: the logits agree within 1e-5 (fp32, CPU).
"""
from __future__ import annotations

import pytest
import torch

import stmsearch
from stmsearch.evaluation.datasets import load_dataset
from stmsearch.merging.methods import METHODS

TOLERANCE = 1e-5


def _values(spec: dict) -> list:
    if spec["type"] == "categorical":
        return list(spec["choices"])
    return [spec["low"], spec["high"]]


def _configs() -> list[tuple[str, stmsearch.MergeConfig]]:
    out = []
    for name, method in METHODS.items():
        if method.plan is None:
            continue
        for knob, spec in method.knobs.items():
            for value in _values(spec):
                try:
                    cfg = stmsearch.MergeConfig(method=name, **{**method.example, knob: value})
                    cfg.validate_for(12)
                except ValueError:
                    continue
                out.append((f"{name}-{knob}={value}", cfg))
    return out


CONFIGS = _configs()


@pytest.fixture(scope="module")
def setup(one_thread):
    data = load_dataset("mnist5k", "val", limit=64)
    images = data.normalize(data.images)
    return stmsearch.create_model("vim_proxy"), images


def test_every_method_and_knob_is_covered():
    names = {n.split("-")[0] for n, _ in CONFIGS}
    assert names == {n for n, m in METHODS.items() if m.plan is not None}
    assert len(CONFIGS) >= 40  # every knob value of every method, not a handful


@pytest.mark.parametrize("label, cfg", CONFIGS, ids=[n for n, _ in CONFIGS])
def test_logits_do_not_depend_on_the_batch(setup, label, cfg):
    model, images = setup
    stmsearch.apply(model, cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        alone = torch.cat([model(images[i:i + 1]) for i in range(14)])
        order = torch.randperm(14, generator=gen)
        groups = torch.empty_like(alone)
        for part in order.view(2, 7):  # two batches of 7, each a shuffled mix
            groups[part] = model(images[part])
        perm = torch.randperm(64, generator=gen)
        crowd = model(images[perm])[torch.argsort(perm)][:14]
    stmsearch.apply(model, None)
    for name, other in (("batch 7", groups), ("batch 64", crowd)):
        err = (other - alone).abs().max().item()
        assert err <= TOLERANCE, f"{label}: {name} logits differ from batch 1 by {err:.2e}"


def test_ward_damage_changes_the_plan_on_real_digits(setup):
    """The damage knob is live: on trained-proxy digits Ward picks other merges than cosine."""
    model, images = setup
    traces = []
    for damage in ("cosine", "ward"):
        stmsearch.apply(model, stmsearch.MergeConfig(method="stm", schedule=[0, 0] + [8] * 4, window=0,
                                                     damage=damage))
        with torch.inference_mode():
            model(images[:4])
        traces.append([s for _, _, s, _ in model._stm["trace"]])
        stmsearch.apply(model, None)
    assert any(not torch.equal(a, b) for a, b in zip(*traces))
