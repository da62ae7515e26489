"""Acceptance: the ``entmax`` package's own test files pass, unmodified, against ``adasparse.compat.entmax``.

The files are run where the package's wheel installed them (nothing is copied), in a subprocess whose ``entmax``,
``entmax.activations``, ``entmax.root_finding`` and ``entmax.losses`` are the compat modules
(``tests/compat/entmax_alias.py``). The test fails if any of them fails, errors or skips, if fewer tests than the
files hold were collected, or if any module of the real package was imported.
"""

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = ("test_losses.py", "test_mask.py", "test_root_finding.py", "test_topk.py")


def _package_dir() -> Path:
    spec = importlib.util.find_spec("entmax")
    if spec is None or spec.origin is None:
        pytest.skip("the entmax package is not installed (it is in adasparse's dev extra: pip install -e '.[dev]')")
    return Path(spec.origin).parent


def test_entmax_package_test_files_pass_against_the_compat_module(tmp_path):
    pkg = _package_dir()
    files = [pkg / name for name in FILES]
    missing = [f.name for f in files if not f.is_file()]
    assert not missing, f"the installed entmax package ({pkg}) does not ship {missing}"
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    report, junit = tmp_path / "alias.json", tmp_path / "junit.xml"
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        ENTMAX_ALIAS_REPORT=str(report),
        ENTMAX_REAL_DIR=str(pkg) + os.sep,
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "tests.compat.entmax_alias", "-p", "no:cacheprovider"]
    cmd += ["--import-mode=importlib", "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path)]
    cmd += ["--junitxml", str(junit), *map(str, files)]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    log = out.stdout[-6000:] + out.stderr[-3000:]
    assert out.returncode == 0, f"the entmax package's tests failed against adasparse.compat.entmax:\n{log}"

    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    # the four files of entmax 1.3 hold 127 tests; fewer means something was not collected
    expected = 127 if importlib.metadata.version("entmax") == "1.3" else 1
    assert counts["tests"] >= expected, f"only {counts['tests']} of the package's tests were collected:\n{log}"
    assert counts["failures"] == counts["errors"] == counts["skipped"] == 0, f"{counts}\n{log}"

    aliases = json.loads(report.read_text())
    assert aliases["aliases"] == {
        "entmax": "adasparse.compat.entmax",
        "entmax.activations": "adasparse.compat.entmax.activations",
        "entmax.root_finding": "adasparse.compat.entmax.root_finding",
        "entmax.losses": "adasparse.compat.entmax.losses",
    }
    loaded = {Path(f).name for f in aliases["real_files_loaded"]}
    assert loaded <= set(FILES), f"modules of the real entmax package were imported: {sorted(loaded - set(FILES))}"
