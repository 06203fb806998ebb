"""The dashboard in a real browser: Debian's chromium driven by Playwright (no browser download).

ci/install-browser.sh installs chromium. Without it these tests fail under CI (CI=true) and
are skipped, with the reason, elsewhere.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import optuna
import pytest

from study_factory import make_study
from stmsearch.dashboard.build import write_dashboard
from stmsearch.dashboard.server import DashboardApp, make_server

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        reason = f"Debian chromium not found at {CHROMIUM} (ci/install-browser.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One storage with two studies, and the pages of one and of both."""
    root = tmp_path_factory.mktemp("site")
    url = f"sqlite:///{root / 'studies.db'}"
    stm = make_study(url, "stm-proxy", "stm", seed=0)
    make_study(url, "tome-proxy", "tome", seed=1)
    return dict(url=url, stm=stm, one=write_dashboard(url, "stm-proxy", root / "one.html"),
                two=write_dashboard(url, ["stm-proxy", "tome-proxy"], root / "two.html"))


def open_page(browser, target: str):
    """A 1280x800 page at ``target`` with the network blocked except this machine; errors collected."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    local = ("file://", "http://127.0.0.1")
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(local) else route.abort())
    page.goto(target)
    page.wait_for_selector("#plot-pareto-speedup .scatterlayer")
    return page


POINT_COUNT = """id => document.getElementById(id).data
    .filter(t => Array.isArray(t.customdata)).reduce((n, t) => n + t.x.length, 0)"""


def test_page_opens_offline_and_plots_every_complete_trial(browser, site):
    page = open_page(browser, site["one"].as_uri())
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in site["stm"].trials)
    for plot in ("plot-pareto-speedup", "plot-pareto-flops"):
        assert page.evaluate(POINT_COUNT, plot) == complete
        assert page.locator(f"#{plot} .scatterlayer .point").count() == complete  # drawn, not just data
    assert page.locator("table.trials tbody tr").count() == len(site["stm"].trials)
    assert page.errors == []
    page.close()


# pixel centre of the Pareto point farthest from any other, so a click cannot land on a neighbour
LONELY_POINT = """() => {
    const d = document.getElementById('plot-pareto-speedup'), L = d._fullLayout, box = d.getBoundingClientRect();
    const pts = [];
    d.data.forEach(t => (t.customdata || []).forEach((k, i) => pts.push({k, role: t.meta.role,
        px: box.left + L._size.l + L.xaxis.l2p(t.x[i]), py: box.top + L._size.t + L.yaxis.l2p(t.y[i])})));
    let best = null, far = -1;
    for (const p of pts.filter(p => p.role.startsWith('Pareto'))) {
        const near = Math.min(...pts.filter(q => q !== p).map(q => Math.hypot(p.px - q.px, p.py - q.py)));
        if (near > far) { far = near; best = p; }
    }
    return best;
}"""


def test_clicking_a_point_shows_its_schedule(browser, site):
    page = open_page(browser, site["one"].as_uri())
    target = page.evaluate(LONELY_POINT)
    number = int(target["k"].split("#")[1])
    trial = site["stm"].trials[number]
    page.mouse.move(target["px"], target["py"])
    page.mouse.click(target["px"], target["py"])
    page.wait_for_selector("#detail-tokens-text")
    tokens = trial.user_attrs["tokens_per_layer"]
    assert f"stm-proxy · trial {number}" in page.inner_text("#stm-detail h3")
    assert page.inner_text("#detail-tokens-text") == " → ".join(map(str, tokens))
    assert page.evaluate("() => document.getElementById('detail-tokens').data[0].y") == tokens
    assert f"{100 * trial.values[0]:.2f} %" in page.inner_text("#stm-detail")
    assert page.url.endswith(f"#trial=stm-proxy%23{number}")
    assert page.errors == []
    page.close()


def test_table_sorts_and_rows_select(browser, site):
    page = open_page(browser, site["one"].as_uri())
    header = page.locator("table.trials th", has_text="Top-1")
    column = "() => [...document.querySelectorAll('table.trials tbody tr')].map(r => r.dataset.key)"
    by_key = {f"stm-proxy#{t.number}": (t.values[0] if t.values else None) for t in site["stm"].trials}
    header.click()
    values = [by_key[k] for k in page.evaluate(column)]
    known = [v for v in values if v is not None]
    assert known == sorted(known) and values[-1] is None  # failed trial (no accuracy) last
    header.click()
    values = [by_key[k] for k in page.evaluate(column)]
    known = [v for v in values if v is not None]
    assert known == sorted(known, reverse=True) and header.get_attribute("aria-sort") == "descending"
    page.locator("table.trials tbody tr").first.click()
    first = page.evaluate(column)[0]
    assert f"trial {first.split('#')[1]}" in page.inner_text("#stm-detail h3")
    page.close()


def test_two_studies_on_one_front(browser, site):
    page = open_page(browser, site["two"].as_uri())
    names = page.evaluate("""() => document.getElementById('plot-pareto-speedup').data
        .filter(t => t.meta).map(t => t.meta.study)""")
    assert set(names) == {"stm-proxy", "tome-proxy"}
    n = sum(len(s.trials) for s in (site["stm"], optuna.load_study(study_name="tome-proxy", storage=site["url"])))
    assert page.locator("table.trials tbody tr").count() == n
    assert page.errors == []
    page.close()


def test_served_page_reloads_when_a_trial_lands(browser, site, tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    study = make_study(url, "live", n=4, failed=0)
    server = make_server(DashboardApp(url, ["live"]), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = open_page(browser, f"http://127.0.0.1:{server.server_address[1]}/")
        count = "() => window.stmDashboard.data.trials.length"
        assert page.evaluate(count) == len(study.trials)
        donor = study.trials[1]
        study.add_trial(optuna.trial.create_trial(values=donor.values, params=donor.params,
                                                  distributions=donor.distributions, user_attrs=donor.user_attrs))
        # the page polls every 3 s; rebuilding takes a few seconds on a busy machine
        page.wait_for_function(f"() => window.stmDashboard && window.stmDashboard.data.trials.length === "
                               f"{len(study.trials)}", timeout=90_000)
        page.wait_for_selector("#plot-pareto-speedup .scatterlayer")
        assert page.evaluate(POINT_COUNT, "plot-pareto-speedup") == len(study.trials)
        page.close()
    finally:
        server.shutdown()
        server.server_close()
