"""The package's shape: an import graph without cycles or upward imports, and the two tables
(merge methods, objectives) extended by one entry each, end to end."""
from __future__ import annotations

import ast
from pathlib import Path

import optuna
import pytest
import torch

import stmsearch
from stmsearch import objectives
from stmsearch.merging import functions as fn
from stmsearch.merging.methods import METHODS, Method, register_method, unregister_method
from stmsearch.search import load_space, run_search
from test_search_run import SPACE, write_space

PACKAGE = Path(stmsearch.__file__).resolve().parent
# Lower layers never import higher ones; packages of one rank do not import each other.
RANKS = {"yamlfile": 0, "objectives": 0, "pareto": 0, "database": 0, "ops": 1, "models": 2, "merging": 3, "evaluation": 4,
         "training": 5, "results": 5, "search": 6, "dashboard": 7, "export": 7, "cli": 8, "": 9}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every stmsearch module ``name`` imports, at any depth (TYPE_CHECKING blocks included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_import_graph_has_no_cycles():
    graph, state, stack = _graph(), {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_module_imports_a_higher_layer():
    graph = _graph()
    assert set(map(_layer, graph)) <= set(RANKS), f"give each top-level module a rank: {set(map(_layer, graph)) - set(RANKS)}"
    wrong = [f"{a} -> {b}" for a, targets in graph.items() for b in targets
             if _layer(a) != _layer(b) and RANKS[_layer(b)] >= RANKS[_layer(a)]]
    assert not wrong, "upward or sideways imports: " + ", ".join(sorted(wrong))


def test_the_graph_check_sees_relative_and_function_level_imports():
    graph = _graph()
    assert "stmsearch.merging.methods" in graph["stmsearch.merging.config"]  # from .methods import ...
    assert "stmsearch.evaluation.api" in graph["stmsearch.cli.evaluate"]  # imported inside a function
    assert "stmsearch.dashboard.build" in graph["stmsearch.cli.search"]


def _edges_plan(step) -> fn.Plan:
    """Drop the tokens farthest from the class token (a made-up method for this test)."""
    distance = (torch.arange(step.residual.shape[1]) - step.cls[:, None]).abs().float()
    return fn.prune_plan(-distance, step.cls, step.r, step.window)


@pytest.fixture
def edges_method():
    method = register_method(Method(
        "edges", _edges_plan, lambda cfg, tokens, cls, layer, patches: max(0, tokens - 1 - 2 * cfg.protect),
        knobs={"window": {"type": "int", "low": 0, "high": 8, "step": 4}}, example={"schedule": [4] * 4}))
    yield method
    unregister_method("edges")


def test_a_method_registered_in_one_entry_runs_in_a_real_search(edges_method, tmp_path):
    cfg = stmsearch.MergeConfig(method="edges", window=2, schedule=[0, 8, 8])
    model = stmsearch.apply(stmsearch.create_model("vim_proxy"), cfg)
    model(torch.zeros(2, 1, 28, 28))
    assert [layer["tokens"] for layer in stmsearch.trace(model)][:4] == [197, 189, 181, 181]
    space = {**SPACE, "evaluator": None, "subset": 16, "objectives": ["accuracy", "flops"], "constraints": {},
             "methods": [{"name": "edges", "knobs": "all"}], "seeds": [], "budget": {"trials": 3},
             "throughput": {"batch": 2, "runs": 1}}
    path = write_space(tmp_path, **space)
    result = run_search(load_space(path), path, executor="local", runs=tmp_path / "runs", progress=False)
    study = optuna.load_study(study_name=result.study_name, storage=result.storage_url)
    merged = [t for t in study.trials if not t.user_attrs["is_reference"]]
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials), \
        [t.user_attrs.get("error") for t in study.trials]
    assert {t.user_attrs["config"]["method"] for t in merged} == {"edges"}
    assert all(t.user_attrs["tokens_per_layer"][-1] < 197 for t in merged)
    assert all(t.params["edges.window"] in (0, 4, 8) for t in merged)


def test_every_registered_method_example_is_valid_and_runs():
    model = stmsearch.create_model("vim_proxy")
    for name, method in METHODS.items():
        if method.plan is None:
            continue
        cfg = stmsearch.MergeConfig(method=name, **method.example)
        stmsearch.apply(model, cfg)
        assert torch.isfinite(model(torch.randn(3, 1, 28, 28))).all(), name
        assert [layer["tokens"] for layer in stmsearch.trace(model)] == \
            stmsearch.merging.schedule.walk(cfg, 12).tokens, name
    stmsearch.apply(model, None)


def test_a_registered_objective_reaches_search_progress_table_dashboard_and_export(tmp_path, monkeypatch):
    """``token_layers`` (sum of tokens over layers, minimised): one entry plus its measurement."""
    from stmsearch.dashboard.build import build_html
    from stmsearch.export import export_configs
    from stmsearch.results.records import load_study_data
    from stmsearch.results.table import pareto_table
    from stmsearch.search.progress import line, snapshot

    objectives.register_metric(objectives.Metric(
        "token_layers", "token-layers", "tok-layers", lambda v: f"{v:,.0f} token-layers", lambda v: f"{v:.0f}",
        "minimize", objective=True, measure="flops", relative=True, bound=1.1))
    try:
        monkeypatch.syspath_prepend(str(Path(__file__).parent))
        space = {**SPACE, "objectives": ["accuracy", "token_layers"], "constraints": {},
                 "evaluator": "fake_evaluators:token_layers_evaluate"}
        path = write_space(tmp_path, **space)
        loaded = load_space(path)
        result = run_search(loaded, path, executor="local", runs=tmp_path / "runs", progress=False)
        data = load_study_data(result.storage_url, result.study_name)
        assert data.info.objectives == ["accuracy", "token_layers"]
        ref = data.reference()
        assert ref.value("token_layers") == 12 * 197
        snap = snapshot(data.study, loaded)
        assert snap.best["token_layers"][0] < 12 * 197 and snap.hypervolume > 0
        assert "token-layers" in line(snap, 4, 1.0)
        assert "tok-layers" in [c.header for c in pareto_table(data).columns]
        assert "token_layers" in build_html(result.storage_url, result.study_name)
        manifest = export_configs(result.storage_url, result.study_name, "knee", tmp_path / "out", unverified=True)
        assert manifest["objectives"] == ["accuracy", "token_layers"] and len(manifest["configs"]) == 1
    finally:
        objectives.unregister_metric("token_layers")
