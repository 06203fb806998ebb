"""The scan and conv kernels on the CPU, through Triton's interpreter, in every test run.

Their ``interpreter`` tests (tests/test_scan_triton.py, tests/test_conv.py) need
``TRITON_INTERPRET=1`` before triton is imported, so they run here in subprocesses that set it;
the merge kernels do the same in tests/test_merge_fast.py.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed (the dev extra installs it)")
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"), reason="already inside an interpreter run")
def test_scan_and_conv_kernels_in_the_interpreter() -> None:
    from triton_interpreter import run_tests

    assert run_tests(["-k", "interpreter", str(HERE / "test_scan_triton.py"), str(HERE / "test_conv.py")]) == 28
