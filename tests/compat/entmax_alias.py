"""pytest plugin: make ``import entmax`` (and its submodules) import :mod:`adasparse.compat.entmax`.

Used by ``test_entmax_package_suite.py`` to run the ``entmax`` package's own test files, unmodified, against the
compat module: ``python -m pytest -p tests.compat.entmax_alias <the package's test files>``. Their modules are
imported by file path (``--import-mode=importlib``), so the real package is never imported; at the end of the
session the plugin writes to ``$ENTMAX_ALIAS_REPORT`` (JSON) which module each ``entmax`` name resolved to and
which files of the real package were loaded, for the calling test to check.

The package's tests draw unseeded random inputs (some at import); the plugin seeds torch from
``$ENTMAX_SEED`` (default 0) before collection and again before each test (the seed plus a stable number per
test), so a run is reproducible and a failure can be replayed with its seed.
"""

import json
import os
import sys
import zlib

import torch

import adasparse.compat.entmax as _compat
from adasparse.compat.entmax import activations, losses, root_finding

_ALIASES = {
    "entmax": _compat,
    "entmax.activations": activations,
    "entmax.root_finding": root_finding,
    "entmax.losses": losses,
}
sys.modules.update(_ALIASES)

_SEED = int(os.environ.get("ENTMAX_SEED", "0"))
torch.manual_seed(_SEED)  # the inputs the package's test modules draw when imported


def pytest_runtest_setup(item):
    torch.manual_seed(_SEED * 1_000_003 + zlib.crc32(item.nodeid.encode()))


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("ENTMAX_ALIAS_REPORT")
    if not path:
        return
    real_dir = os.environ.get("ENTMAX_REAL_DIR", "")
    loaded = sorted(
        getattr(m, "__file__", None) or ""
        for m in list(sys.modules.values())
        if real_dir and (getattr(m, "__file__", None) or "").startswith(real_dir)
    )
    report = {
        "aliases": {name: getattr(sys.modules.get(name), "__name__", None) for name in _ALIASES},
        "real_files_loaded": loaded,
    }
    with open(path, "w") as f:
        json.dump(report, f)
