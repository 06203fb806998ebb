"""Triton's CPU interpreter: test runs under it, and a fix for NumPy >= 2.4 (:func:`patch`, applied by
conftest when TRITON_INTERPRET=1).

Triton 3.6's interpreter turns a scalar into an index with ``int(array)``, and its scalars
are one-element arrays; NumPy 2.4 refuses that conversion, so any ``range()`` over a runtime
int fails in the interpreter. ``.item()`` converts the same value and works on every NumPy.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SHARD = "STMSEARCH_TEST_SHARD"  # "i/n": run_tests' i-th of n processes (keep_shard)
ROOT = Path(__file__).resolve().parents[1]


def run_tests(args: list[str], shards: int | None = None) -> int:
    """Run ``pytest args`` (from the project root) under the interpreter in ``shards`` processes at once,
    one per core up to 4 by default, and return how many tests passed; every process must pass. The
    interpreter runs a kernel's programs one after another in Python, on one core: the merge kernels'
    run took 231 s of a 2-core CI run's 18 min in one process. Each process gets one torch thread, so
    two of them do not stall each other's parallel regions."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # macOS
    shards = shards or max(1, min(4, cores))
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT,
                              env={**env, SHARD: f"{i}/{shards}"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(shards)]
    try:
        outs = [proc.communicate(timeout=900) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()  # a shard past its timeout, or the others when one did
    passed = 0
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, out[-3000:] + err[-2000:]
        found = re.search(r"(\d+) passed", out)
        passed += int(found.group(1)) if found else 0
    return passed


def keep_shard(config, items: list) -> None:
    """Under ``$STMSEARCH_TEST_SHARD`` = "i/n" (set by :func:`run_tests`), keep only the i-th of every n selected
    tests (conftest's collection hook, after -k and -m)."""
    shard = os.environ.get(SHARD)
    if not shard:
        return
    i, n = map(int, shard.split("/"))
    config.hook.pytest_deselected(items=[item for k, item in enumerate(items) if k % n != i])
    items[:] = items[i::n]


def patch() -> None:
    try:
        from triton.runtime import interpreter
    except Exception:  # no triton: the interpreter tests skip with their reason
        return
    original = interpreter._patch_lang_tensor

    def patched(tensor, scope) -> None:
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    interpreter._patch_lang_tensor = patched
