"""Triton's CPU interpreter under NumPy >= 2.4 (imported by conftest when TRITON_INTERPRET=1).

Triton 3.6's interpreter turns a scalar into an index with ``int(array)``, and its scalars
are one-element arrays; NumPy 2.4 refuses that conversion, so any ``range()`` over a runtime
int fails in the interpreter. ``.item()`` converts the same value and works on every NumPy.
"""
from __future__ import annotations


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
