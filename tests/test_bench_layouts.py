"""bench/bench_layouts.py and the by-digit sign test it reports (CPU, a few real canvases)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from stmsearch.evaluation.fidelity import evaluate_cell, load_proxy, paired_by_digit
from stmsearch.evaluation.stats import sign_test

pytestmark = pytest.mark.usefixtures("one_thread")
BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_layouts.py"


def test_paired_by_digit_counts_digits_not_canvases():
    # 3 digits x 3 layouts, layout-major. digit 0: A alone right twice, B alone once -> A's digit;
    # digit 1: one each -> a tie; digit 2: B alone right once -> B's digit
    a = torch.tensor([1, 1, 0, 1, 0, 0, 0, 1, 1], dtype=torch.bool)
    b = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0, 1], dtype=torch.bool)
    # canvases only A gets right: 0, 1, 7; only B: 4, 5, 6 -> digits 0: +1 (layout 0) +0 -1 (layout 2: b only)
    got = paired_by_digit(a, b, 3)
    net = [0, 0, 0]
    for k in range(9):
        net[k % 3] += int(a[k] and not b[k]) - int(b[k] and not a[k])
    assert (got["wins"], got["losses"]) == (sum(n > 0 for n in net), sum(n < 0 for n in net))
    assert got["p"] == sign_test(got["wins"], got["losses"])
    # many canvases of one digit weigh as one digit
    a, b = torch.ones(50, dtype=torch.bool), torch.zeros(50, dtype=torch.bool)
    assert paired_by_digit(a, b, 1) == {"wins": 1, "losses": 0, "p": 1.0}
    assert paired_by_digit(a, b, 50)["wins"] == 50
    with pytest.raises(ValueError, match="layouts of 3 digits"):
        paired_by_digit(torch.ones(8, dtype=torch.bool), torch.ones(8, dtype=torch.bool), 3)


def test_bench_layouts_reports_every_layout_of_the_digits(tmp_path, monkeypatch):
    out = tmp_path / "l.json"
    monkeypatch.setattr(sys, "argv", ["bench_layouts.py", "--images", "500:506", "--layouts", "1", "--levels", "0.4",
                                      "--out", str(out)])
    spec = importlib.util.spec_from_file_location("bench_layouts", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main()
    res = json.loads(out.read_text())
    stm, prune = res["cells"]["STM (defaults)"]["0.40"], res["cells"]["prune"]["0.40"]
    assert len(stm["correct"]) == 12 and len(stm["by_layout"]) == 2
    # layout-major: the first 6 canvases are the dataset's own, the next 6 layout 1, each a real evaluation
    for k in range(2):
        cell = evaluate_cell(load_proxy("vim_proxy_clutter", range(500, 506), layout=k), {"method": "prune"}, 0.4)
        assert "".join("1" if v else "0" for v in cell["correct"].tolist()) == prune["correct"][6 * k:6 * k + 6]
    a = torch.tensor([c == "1" for c in stm["correct"]])
    b = torch.tensor([c == "1" for c in prune["correct"]])
    assert res["tests"]["prune"]["0.40"]["by_digit"] == paired_by_digit(a, b, 6)
    assert set(res["tests"]) == set(res["cells"]) - {"STM (defaults)"}
