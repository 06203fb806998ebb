"""A built table, read back: the discrete space it covers and each trial's objectives by lookup.

A sampled trial's parameters go through the real search's mapping
(:func:`stmsearch.search.params.config_from_params`) and the table's row key (the config as it
runs, clipped to capacity), so the samplers search exactly the space a study would.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stmsearch.merging import MergeConfig
from stmsearch.search.space import SearchSpace, model_geometry, parse_space

from .grid import row_key

OBJECTIVES = ("accuracy", "speedup")  # what the table holds: digits correct, and predicted time per batch


class TableError(ValueError):
    """A table that cannot serve the benchmark (missing rows, wrong file)."""


@dataclass
class Table:
    """Rows by key: accuracy (fraction of ``n`` digits) and speed-up over the unreduced model."""

    space: SearchSpace
    n: int
    rows: dict[str, dict[str, float]]
    reference: dict[str, float]
    meta: dict[str, Any]
    source: str = "table"

    def __post_init__(self) -> None:
        self._geometry = model_geometry(self.space.model)

    def key(self, params: dict[str, Any]) -> str:
        from stmsearch.search.params import config_from_params

        return row_key(config_from_params(self.space, params), *self._geometry)

    def config_metrics(self, cfg: Any) -> dict[str, float]:
        """The objectives of a MergeConfig (a seed's); TableError if it is not a point of the table's grid."""
        row = self.rows.get(row_key(cfg, *self._geometry))
        if row is None:
            raise TableError(f"{self.source}: config {cfg.to_dict()} is not in the table (seeds must be grid points)")
        return row

    def metrics(self, params: dict[str, Any]) -> dict[str, float]:
        """The objectives of the config ``params`` describe; TableError if the table lacks it."""
        row = self.rows.get(self.key(params))
        if row is None:
            raise TableError(f"{self.source}: no row for parameters {params} (an incomplete table? see 'complete')")
        return row


def _pin_unsearched(space: dict, rows: list[dict]) -> dict:
    """The space with each method's unsearched knobs fixed at the values its rows were built with.

    A space leaves most knobs to the method's defaults; pinning them keeps a shipped table's rows
    reachable after a method's defaults change (STM's did, after bench_fidelity chose new ones).
    """
    from stmsearch.merging.methods import get_method

    built = {}
    for row in rows:
        if row["config"] is not None:
            built.setdefault(row["config"]["method"], row["config"])
    out = json.loads(json.dumps(space))
    for m in out["methods"]:
        cfg = built.get(m["name"])
        if cfg is None:
            continue
        cfg = _as_built(cfg)
        for knob in get_method(m["name"]).knobs:
            if knob not in m["knobs"]:
                m["knobs"][knob] = cfg[knob]
    return out


def _as_built(config: dict) -> dict:
    """A row's config with the MergeConfig fields added since the table was built, at their field defaults.

    A field a row lacks did not exist when it was measured, so the model ran as that field's default
    (the project keeps a new field's default at the old behaviour, as ``importance: none`` did).
    """
    added = {k: f.default for k, f in MergeConfig.model_fields.items() if k not in config}
    return {**added, **config}


def _key(row: dict, geometry: tuple[int, int]) -> str:
    """A row's key under today's MergeConfig (stored keys miss the fields added since the build)."""
    if row["config"] is None:
        return row_key(None, *geometry)
    return row_key(MergeConfig.model_validate(_as_built(row["config"])), *geometry)


def from_json(data: dict, source: str = "table") -> Table:
    """A table from its JSON (as :mod:`.build_table` writes it)."""
    space = parse_space(_pin_unsearched(data["space"], data["rows"]), f"{source}: space")
    unknown = [o for o in space.objectives if o not in OBJECTIVES]
    if unknown:
        raise TableError(f"{source}: objective {unknown[0]!r} is not in the table (it holds {', '.join(OBJECTIVES)})")
    n = int(data["n"])
    ref_ms = data["rows"][0]["ms"]  # the builder writes the unreduced model first
    if data["rows"][0]["config"] is not None:
        raise TableError(f"{source}: the first row is not the unreduced model")
    geometry = model_geometry(space.model)
    keys = [_key(r, geometry) for r in data["rows"]]
    rows = {k: {"accuracy": max(r["correct"], 0) / n, "speedup": ref_ms / r["ms"]} for k, r in zip(keys, data["rows"])}
    meta = {k: v for k, v in data.items() if k not in ("rows", "space")}
    return Table(space, n, rows, rows[keys[0]], meta, source)


def load_table(path: str | Path) -> Table:
    """Read a gzip JSON table; a missing or incomplete one fails in one line."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: table not found (build it: python -m bench.tabular.build_table)")
    with gzip.open(path, "rt") as f:
        data = json.load(f)
    table = from_json(data, str(path))
    if not data.get("complete", False):
        raise TableError(f"{path}: incomplete table ({len(table.rows)} rows); finish the build (it resumes)")
    return table
