"""The scan and conv kernels on the CPU, through Triton's interpreter, in every test run.

Their ``interpreter`` tests (tests/test_scan_triton.py, tests/test_conv.py) need
``TRITON_INTERPRET=1`` before triton is imported, so they run here in a subprocess that sets it;
the merge kernels do the same in tests/test_merge_fast.py.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed (the dev extra installs it)")
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"), reason="already inside an interpreter run")
def test_scan_and_conv_kernels_in_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "interpreter",
                           str(HERE / "test_scan_triton.py"), str(HERE / "test_conv.py")],
                          cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "28 passed" in proc.stdout, proc.stdout[-2000:]
