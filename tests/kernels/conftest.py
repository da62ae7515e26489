"""Run the Triton kernels on CPU through the Triton interpreter.

``TRITON_INTERPRET`` is read when a kernel is decorated, i.e. when the module is imported, so it is set here
(before the test modules import the kernels) and a module imported earlier without it is reloaded.
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "triton: Triton kernels, run on CPU under TRITON_INTERPRET=1 (slow-ish)")
