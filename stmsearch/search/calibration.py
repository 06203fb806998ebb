"""The latency table a study with ``throughput: {estimator: model}`` predicts speed from.

Made once per study, when it starts (or read from the space's ``throughput.table``), for every
merge step the space can choose; kept in the study (``user_attrs["latency_table"]``) and as
``<runs>/<study>-latency.json``, so a resumed study predicts with the same table.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import optuna

from ..evaluation.api import resolve_device
from ..evaluation.latency import LatencyError, LatencyTable, calibrate
from ..evaluation.throughput import describe_device
from ..merging import MergeConfig, get_method
from ..models import create_model
from .space import SearchSpace, knob_values

TABLE_ATTR = "latency_table"


def step_configs(space: SearchSpace) -> list[MergeConfig]:
    """One config per merge step the space can choose (each method x its cost-changing knob values)."""
    out = []
    for m in space.methods:
        method = get_method(m.name)
        default = MergeConfig(method=m.name)  # the method's own defaults, where the space leaves a knob out
        knobs = (*method.cost_knobs, *method.cost_extra)
        choices = [knob_values(m.knobs[k]) if k in m.knobs else [getattr(default, k)] for k in knobs]
        for combo in itertools.product(*choices):
            try:
                out.append(MergeConfig(method=m.name, **dict(zip(knobs, combo))))
            except ValueError:
                continue  # an impossible combination (e.g. runs 8 with 2d cells) is never sampled
    return out


def throughput_batch(space: SearchSpace, device) -> int:
    from ..evaluation.api import CPU_THROUGHPUT_BATCH

    return space.throughput.batch or (space.batch_size if device.type == "cuda"
                                      else min(space.batch_size, CPU_THROUGHPUT_BATCH))


def calibrate_space(space: SearchSpace, progress: bool = True) -> LatencyTable:
    """Time the space's model on its device, batch and dtype, with every merge step it can choose."""
    device = resolve_device(space.device)
    model = create_model(space.model, space.checkpoint, probe=space.probe).to(device)
    return calibrate(model, space.model, step_configs(space), device, throughput_batch(space, device),
                     space.throughput.bf16, progress=progress)


def ensure_table(study: optuna.Study, space: SearchSpace, runs: Path, progress: bool = True) -> SearchSpace:
    """The space with ``throughput.table`` pointing at the study's latency table, made if need be."""
    device = resolve_device(space.device)
    stored = study.user_attrs.get(TABLE_ATTR)
    if space.throughput.table:
        table = LatencyTable.load(space.throughput.table)
        if stored and stored != table.to_json():
            raise LatencyError(f"{space.throughput.table}: study {study.study_name!r} was predicted with another "
                               "latency table; its trials would not compare (use another --study name)")
    elif stored:
        table = LatencyTable.from_json(stored, f"study {study.study_name!r}: latency table")
    else:
        table = calibrate_space(space, progress)
    table.check(space.model, describe_device(device), throughput_batch(space, device), space.throughput.bf16,
                source=space.throughput.table or f"study {study.study_name!r}'s latency table")
    missing = {get_method(c.method).cost_key(c) for c in step_configs(space)} - set(table.merge_ms)
    if missing:
        raise LatencyError(f"latency table lacks merge steps this space can choose: {', '.join(sorted(missing))}; "
                           "calibrate with this space (stmsearch calibrate --space ...)")
    if not stored:
        study.set_user_attr(TABLE_ATTR, table.to_json())
    path = table.save(Path(runs) / f"{study.study_name}-latency.json")
    return space.model_copy(update={"throughput": space.throughput.model_copy(update={"table": str(path.resolve())})})
