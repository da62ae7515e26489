"""Run the Triton kernels on CPU through the Triton interpreter, made strict.

``TRITON_INTERPRET`` is read when a kernel is decorated, i.e. when the module is imported, so it is set here
(before the test modules import the kernels) and a module imported earlier without it is reloaded.

Under the interpreter every kernel test runs with :mod:`tests.kernels.interpreter_checks` installed:
masked-out lanes of a load without ``other=`` read NaN (or all-ones integers), and a program that loads an
address it stored itself fails (``ADASPARSE_TRITON_STRICT=0`` turns both off, ``=poison`` or ``=raw`` keeps one).

The full grid of head dims × dtypes × masks is marked ``triton_full``: by default (CI) a covering subset runs
(every head dim, dtype and mask kind at least once) and the rest is deselected; ``ADASPARSE_TRITON_FULL=1``
runs all of it.
"""

import importlib
import os
import sys

import pytest

if os.environ.get("ADASPARSE_TEST_DEVICE", "cpu") == "cpu":  # ADASPARSE_TEST_DEVICE=cuda: compiled, on a GPU
    os.environ["TRITON_INTERPRET"] = "1"

_MOD = "adasparse.kernels.triton_entmax_attention"
if os.environ.get("TRITON_INTERPRET") == "1" and _MOD in sys.modules and not sys.modules[_MOD]._interpreted():
    importlib.reload(sys.modules[_MOD])

FULL = os.environ.get("ADASPARSE_TRITON_FULL", "0") == "1"
_STRICT = os.environ.get("ADASPARSE_TRITON_STRICT", "1")
STRICT = os.environ.get("TRITON_INTERPRET") == "1" and _STRICT != "0"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "triton: Triton kernels, run on CPU under TRITON_INTERPRET=1 (slow-ish)")
    config.addinivalue_line("markers", "stock_interpreter: run without the strict-interpreter patches")
    config.addinivalue_line("markers", "fp64: float64 kernel cases (the GPU run deselects them: -m 'not fp64')")
    config.addinivalue_line(
        "markers", "triton_full: the rest of the kernel grid (ADASPARSE_TRITON_FULL=1 runs it; CI runs a subset)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if FULL:
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("triton_full") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True)
def strict_interpreter(request, monkeypatch):
    """Poisoned masked loads + the global-memory read-after-write check, for every kernel test."""
    if os.environ.get("TRITON_INTERPRET") != "1" or request.node.get_closest_marker("stock_interpreter"):
        yield None
        return
    pytest.importorskip("triton")
    from tests.kernels.interpreter_checks import fix_bf16_dot, install

    fix_bf16_dot(monkeypatch)  # a repair, not a check: always on under the interpreter
    if not STRICT:
        yield None
        return

    yield install(monkeypatch, poison=_STRICT in ("1", "poison"), raw=_STRICT in ("1", "raw"))
