"""Dashboard data, figures, page and server (no browser; see test_dashboard_browser.py)."""
from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from study_factory import DISTRIBUTIONS, make_study
from stmsearch.dashboard.build import build_html, page_data, write_dashboard
from stmsearch.cli.dashboard import dashboard_cmd
from stmsearch.pareto import knee_index, pareto_mask
from stmsearch.results.frontier import hypervolume_history
from stmsearch.dashboard.server import DashboardApp, make_server
from stmsearch.results.records import StudyError, load_trials, split_names
from stmsearch.dashboard.views import DEFAULT_VIEWS, ViewsError, load_views
from stmsearch.search.pareto import study_hypervolume

ROOT = Path(__file__).resolve().parents[1]
OBJ = ["accuracy", "throughput", "flops"]


def embedded(html: str) -> dict:
    """The JSON the page embeds."""
    m = re.search(r'<script type="application/json" id="stm-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def pareto_points(data: dict, view_id: str) -> list[str]:
    """Trial keys plotted as points (line traces carry no customdata)."""
    panel = next(p for p in data["panels"] if p["id"] == view_id)
    return [k for tr in panel["figure"]["data"] for k in tr.get("customdata", [])]


# --- fronts and hypervolume -----------------------------------------------------------

def dominates(a, b, signs) -> bool:
    a, b = np.asarray(a) * signs, np.asarray(b) * signs
    return bool((a >= b).all() and (a > b).any())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=12),
       st.lists(st.sampled_from(["maximize", "minimize"]), min_size=3, max_size=3))
def test_pareto_mask_matches_definition(rows, directions):
    pts = np.array(rows, dtype=float)
    signs = np.array([1 if d == "maximize" else -1 for d in directions])
    mask = pareto_mask(pts, directions)
    for i, p in enumerate(pts):
        assert mask[i] == (not any(dominates(q, p, signs) for q in pts))


def test_pareto_mask_never_keeps_nan_rows():
    pts = np.array([[1.0, 1.0], [np.nan, 5.0], [0.5, 2.0]])
    assert pareto_mask(pts, ["maximize", "maximize"]).tolist() == [True, False, True]


def test_hypervolume_history_never_decreases_and_ends_where_the_search_reports(stm_study, storage_url):
    records = load_trials(storage_url, "stm-proxy")
    hist = hypervolume_history(records, OBJ)
    values = [h for _, h in hist]
    assert [n for n, _ in hist] == sorted(r["number"] for r in records)
    assert all(b >= a for a, b in zip(values, values[1:]))
    reference = next(t for t in stm_study.trials if t.user_attrs.get("is_reference")).user_attrs["metrics"]
    assert values[0] > 0 and values[-1] > values[0]
    assert values[-1] == pytest.approx(study_hypervolume(stm_study, OBJ, reference), rel=1e-12)


def test_hypervolume_history_counts_only_feasible_trials(stm_study, storage_url):
    records = load_trials(storage_url, "stm-proxy")
    hist = dict(hypervolume_history(records, OBJ))
    for r in records:
        if not r["feasible"] or r["state"] != "COMPLETE":
            before = max((n for n in hist if n < r["number"]), default=None)
            assert before is None or hist[r["number"]] == hist[before]


def test_knee_is_the_point_farthest_beyond_the_extremes_line():
    # accuracy (max) vs throughput (max): (0.9, 800) bulges out of the line from (1.0, 100) to (0.2, 1000)
    pts = np.array([[1.0, 100.0], [0.9, 800.0], [0.6, 900.0], [0.2, 1000.0]])
    dirs = ["maximize", "maximize"]
    lo, hi = pts.min(0), pts.max(0)
    s = (pts - lo) / (hi - lo)
    # distance to the line through (1, 0) and (0, 1) in scaled space, computed geometrically
    dist = np.abs(s[:, 0] + s[:, 1] - 1) / np.sqrt(2) * np.sign(s[:, 0] + s[:, 1] - 1)
    assert knee_index(pts, dirs) == int(np.argmax(dist)) == 1
    assert knee_index(pts, dirs, eligible=np.array([True, False, True, True])) == 2


# --- reading studies ------------------------------------------------------------------

def test_load_trials_reads_the_contract(stm_study, storage_url):
    records = load_trials(storage_url, ["stm-proxy"])
    assert len(records) == 16  # reference + 14 merge configs + 1 failed
    ref = [r for r in records if r["is_reference"]]
    assert len(ref) == 1 and ref[0]["method"] == "none" and ref[0]["accuracy"] == 0.97
    failed = [r for r in records if r["state"] == "FAIL"]
    assert len(failed) == 1 and "ConfigError" in failed[0]["error"] and failed[0]["accuracy"] is None
    for r in records:
        if r["state"] == "COMPLETE":
            t = stm_study.trials[r["number"]]
            assert (r["accuracy"], r["throughput"], r["flops"]) == tuple(t.values)
            assert r["tokens_per_layer"] == t.user_attrs["tokens_per_layer"]
    infeasible = [r for r in records if r["state"] == "COMPLETE" and not r["feasible"]]
    assert infeasible and not any(r["pareto"] for r in infeasible)


def test_missing_study_names_the_known_ones(stm_study, storage_url):
    with pytest.raises(StudyError, match=r"'nope' not found.*stm-proxy"):
        load_trials(storage_url, "nope")


def test_study_without_objectives_is_refused(storage_url):
    optuna.create_study(study_name="bare", storage=storage_url, directions=["maximize", "maximize"])
    with pytest.raises(StudyError, match="user_attrs.objectives"):
        load_trials(storage_url, "bare")


def test_split_names_accepts_repeats_and_commas():
    assert split_names(["a", "b,c", "a"]) == ["a", "b", "c"]


# --- view definitions -----------------------------------------------------------------

def test_packaged_views_are_the_repository_copy():
    assert DEFAULT_VIEWS.read_text() == (ROOT / "dashboards" / "default.yaml").read_text()
    kinds = [v.kind for v in load_views().views]
    assert {"pareto", "detail", "hypervolume", "importances", "table"} <= set(kinds)


@pytest.mark.parametrize("text, where", [
    ("views:\n  - {kind: pareto, id: p, title: P, x: {metric: speed, label: S}, y: {metric: accuracy, label: A}}",
     "views[0].pareto.x.metric"),
    ("views:\n  - {kind: table, id: t, title: T, columns: [{key: accuracy}]}", "views[0].table.columns[0].label"),
    ("views:\n  - {kind: hypervolume, id: h, title: H}\n  - {kind: hypervolume, id: h, title: H}", "used twice"),
    ("views: [", "not valid YAML"),
])
def test_bad_view_file_names_file_and_field(tmp_path, text, where):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ViewsError) as err:
        load_views(path)
    assert str(path) in str(err.value) and where in str(err.value)


# --- the page -------------------------------------------------------------------------

def test_page_is_self_contained_and_plots_every_complete_trial(stm_study, storage_url, tmp_path):
    out = write_dashboard(storage_url, "stm-proxy", tmp_path / "d.html")
    html = out.read_text()
    assert not re.search(r"<script[^>]+src=", html)  # plotly.js is inlined (offline: see the browser test)
    assert html.count("<script>") == 2  # plotly.js, then the dashboard script
    data = embedded(html)
    complete = [t for t in stm_study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for view in ("pareto-speedup", "pareto-flops"):
        keys = pareto_points(data, view)
        assert sorted(keys) == sorted(f"stm-proxy#{t.number}" for t in complete)
    assert len(data["trials"]) == len(stm_study.trials)


def test_pareto_roles_match_the_front(stm_study, storage_url):
    data = page_data(storage_url, ["stm-proxy"], load_views())
    panel = next(p for p in data["panels"] if p["id"] == "pareto-speedup")
    roles = {tr["meta"]["role"]: tr["customdata"] for tr in panel["figure"]["data"] if "meta" in tr}
    records = {r["key"]: r for r in data["trials"]}
    assert [records[k]["is_reference"] for k in roles["reference (unreduced)"]] == [True]
    assert all(not records[k]["feasible"] for k in roles["infeasible"])
    # nothing is verified yet: the front is drawn hollow, and no verified diamonds
    assert roles["infeasible"] and roles["dominated"] and roles["Pareto · unverified"]
    assert "Pareto" not in roles and "verified" not in roles
    for key in roles["dominated"]:  # each grey point is beaten on both axes by a feasible trial
        r = records[key]
        assert any(q["feasible"] and q["accuracy"] >= r["accuracy"] and q["speedup"] >= r["speedup"]
                   and (q["accuracy"], q["speedup"]) != (r["accuracy"], r["speedup"])
                   for q in records.values() if q["state"] == "COMPLETE")
    axis = panel["figure"]["layout"]["xaxis"]["title"]["text"]
    assert axis == "Speed-up over the unreduced model (×)"
    assert panel["figure"]["layout"]["yaxis"]["title"]["text"] == "Top-1 accuracy (%)"


def test_two_studies_share_one_front(two_studies, storage_url):
    data = embedded(build_html(storage_url, ["stm-proxy,tome-proxy"]))
    keys = pareto_points(data, "pareto-speedup")
    assert {k.split("#")[0] for k in keys} == {"stm-proxy", "tome-proxy"}
    assert [s["name"] for s in data["studies"]] == ["stm-proxy", "tome-proxy"]
    hv = next(p for p in data["panels"] if p["kind"] == "hypervolume")["figure"]["data"]
    assert [t["name"] for t in hv] == ["stm-proxy", "tome-proxy"]


def test_importances_need_two_varying_trials(storage_url):
    study = make_study(storage_url, "tiny", n=1, failed=0)
    assert len(study.trials) == 2
    data = page_data(storage_url, ["tiny"], load_views())
    panel = next(p for p in data["panels"] if p["kind"] == "importances")
    assert panel["figure"] is None and "at least 2 completed trials" in panel["note"]


def test_importances_rank_the_searched_params(stm_study, storage_url):
    data = page_data(storage_url, ["stm-proxy"], load_views())
    fig = next(p for p in data["panels"] if p["kind"] == "importances")["figure"]
    assert {t["name"] for t in fig["data"]} == {"accuracy", "throughput", "flops"}
    assert all(set(t["y"]) == set(DISTRIBUTIONS) for t in fig["data"])


# --- CLI and server -------------------------------------------------------------------

def test_cli_writes_the_page_and_reports_unknown_studies(stm_study, storage_url, tmp_path):
    runner = CliRunner()
    out = tmp_path / "page.html"
    res = runner.invoke(dashboard_cmd, ["--storage", storage_url, "--study", "stm-proxy", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and "stm-proxy#1" in out.read_text()
    res = runner.invoke(dashboard_cmd, ["--storage", storage_url, "--study", "missing", "--out", str(out)])
    assert res.exit_code != 0 and "'missing' not found" in res.output


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_server_picks_up_new_trials(stm_study, storage_url):
    app = DashboardApp(storage_url, ["stm-proxy"])
    server = make_server(app, "127.0.0.1", 0)
    host, port = server.server_address[:2]
    assert host == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        status, body = get(base + "/")
        assert status == 200
        before = embedded(body.decode())
        assert before["poll"] is True
        v1 = json.loads(get(base + "/api/version")[1])["version"]
        assert v1 == before["version"]
        new = len(stm_study.trials)
        # another writer (its own storage object, as a search worker would be) adds a trial
        other = optuna.load_study(study_name="stm-proxy", storage=storage_url)
        template = other.trials[1]
        other.add_trial(optuna.trial.create_trial(values=template.values, params=template.params,
                                                  distributions=template.distributions,
                                                  user_attrs=template.user_attrs))
        v2 = json.loads(get(base + "/api/version")[1])["version"]
        assert v2 != v1
        after = embedded(get(base + "/")[1].decode())
        assert after["version"] == v2
        assert f"stm-proxy#{new}" in {t["key"] for t in after["trials"]}
        assert f"stm-proxy#{new}" not in {t["key"] for t in before["trials"]}
        assert get(base + "/nothing")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_server_answers_head_names_no_python_and_logs_a_hang_up_in_one_line(stm_study, storage_url, capfd):
    import http.client
    import socket

    app = DashboardApp(storage_url, ["stm-proxy"])
    server = make_server(app, "127.0.0.1", 0)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("HEAD", "/")
        head = conn.getresponse()
        assert head.status == 200 and head.read() == b"" and int(head.getheader("Content-Length")) > 100_000
        assert head.getheader("Server") == "stmsearch-dashboard"  # no Python version in the header
        conn.close()
        for _ in range(3):  # a client that asks for the page and hangs up before reading it
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset on close
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.close()
        assert get(f"http://127.0.0.1:{port}/api/version")[0] == 200  # still serving
    finally:
        server.shutdown()
        server.server_close()
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert all(line.startswith("dashboard: 127.0.0.1 closed the connection") for line in err.splitlines() if line)
