"""The package's layers import only downwards.

Every ``adasparse/**/*.py`` is parsed with :mod:`ast`; every import statement (top level, inside functions, under
``if TYPE_CHECKING:``) that names a module of the package is checked against :data:`LAYERS`: a module may import
its own unit (the subpackage or top-level module it belongs to) and units of lower tiers, never a unit of its own
tier or above. Dynamic imports (``importlib.import_module``) are not seen; the only one, in ``cli.py``, loads a
``bench`` module from the top tier.

The order, read from the code: the tiny helpers (``_io``'s atomic writers, ``_argparse``, ``_version``) at the
bottom; the operators (``ops``), the Triton kernels and the layers built on both (``nn``); the models; then the
toolkit: data (tokenizers, corpora, batches), decoding, scores, training, analysis; the optional extras (Hugging
Face hooks, benchmarks, the ``entmax`` package shim); the demo and the command line on top. The package root
``adasparse/__init__.py`` re-exports the core API (ops, nn, models), so it sits right above the models, where
``from adasparse import entmax`` (as in the benchmarks) counts as an import of the core.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "adasparse"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

LAYERS: list[tuple[str, ...]] = [  # tiers, lowest first; units of one tier do not import each other
    ("_io", "_argparse", "_version"),
    ("ops",),
    ("kernels",),
    ("nn",),
    ("models",),
    ("",),  # the package root, adasparse/__init__.py: the core API re-exported
    ("data",),
    ("decode",),
    ("evaluation",),
    ("train",),
    ("analysis",),
    ("integrations", "bench", "compat"),
    ("demo",),
    ("cli",),
    ("__main__",),
]
TIER = {unit: k for k, tier in enumerate(LAYERS) for unit in tier}

# modules that only the given modules may import (``name.*``: any module inside ``name``): nothing loads a model
# through the training loop; the trainer is for running training
RESTRICTED = {
    f"{PACKAGE}.train.trainer": (f"{PACKAGE}.cli", f"{PACKAGE}.demo", f"{PACKAGE}.train"),
}


@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    importer: str  # dotted module name of the importing file
    target: str  # dotted name imported: a module, or module.attribute for ``from module import attribute``
    source: str  # the statement as written, on one line


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def package_imports(root: Path = ROOT, package: str = PACKAGE) -> list[Import]:
    """Every import of a ``package`` module by a file under ``root`` (the package folder)."""
    out = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        importer = module_name(path, root, package)
        here = importer if path.name == "__init__.py" else importer.rpartition(".")[0]  # package of the file
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" for a in node.names]
            else:
                continue
            source = " ".join((ast.get_source_segment(text, node) or "").split())
            for t in targets:
                if t == package or t.startswith(package + "."):
                    out.append(Import(path, node.lineno, importer, t, source))
    return out


def unit(name: str, package: str = PACKAGE) -> str:
    """The unit of a dotted name: the subpackage or top-level module it lies in, ``""`` for the package root (a
    name the root re-exports, such as ``adasparse.entmax``, belongs to the root)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in TIER else ""


def _inside(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _allowed(importer: str, allowed: tuple[str, ...]) -> bool:
    return any(_inside(importer, a[:-2]) if a.endswith(".*") else importer == a for a in allowed)


def violations(imports: list[Import], base: Path) -> list[str]:
    """One line per forbidden import: ``file:line: statement  (why)``."""
    out = []
    for imp in imports:
        where = f"{imp.file.relative_to(base)}:{imp.line}: {imp.source}"
        src, dst = unit(imp.importer), unit(imp.target)
        if src != dst and TIER[dst] >= TIER[src]:
            rel = "the same tier as" if TIER[dst] == TIER[src] else "a higher tier than"
            out.append(f"{where}  ({dst or 'the package root'} is {rel} {src or 'the package root'})")
        for restricted, allowed in RESTRICTED.items():
            if _inside(imp.target, restricted) and not _allowed(imp.importer, allowed):
                out.append(f"{where}  ({restricted} may be imported only by {', '.join(allowed)})")
    return sorted(set(out))


def test_every_module_has_a_layer():
    named = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in ROOT.rglob("*.py")} - {"__init__"}
    missing = sorted(named - set(TIER))
    assert not missing, f"add these to LAYERS in tests/test_layers.py: {missing}"


def test_layers_import_only_downwards():
    imports = package_imports()
    assert len(imports) > 100  # the parser sees the package's imports
    bad = violations(imports, ROOT.parent)
    assert not bad, "imports against the layer order (tests/test_layers.py, LAYERS):\n" + "\n".join(bad)


def test_the_checker_finds_upward_imports(tmp_path):
    """A made-up package with one import of each kind: the checker reports exactly the forbidden ones."""
    pkg = tmp_path / PACKAGE
    files = {
        "__init__.py": "from .ops import entmax\n",
        "ops/__init__.py": "from .entmax import entmax\n",
        "ops/entmax.py": "def entmax():\n    from ..nn import layer  # upwards, inside a function\n",
        "nn/__init__.py": "from adasparse.ops import entmax\nfrom .. import entmax as e2\n",  # the root is above nn
        "train/loop.py": "from .. import entmax\nimport adasparse.data\n",  # both fine
        "data/tokenizer.py": "from ..train.checkpoint import atomic_write_text\nfrom .._io import atomic\n",
        "analysis/cli.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import adasparse.train.trainer\n"
            "from adasparse.train import loading\n"
        ),
        "bench/ops.py": "from ..integrations import hf\n",  # a peer of the same tier
        "demo.py": "from .train.trainer import train\n",  # allowed
        "train/__init__.py": "from .trainer import train\n",  # allowed
        "train/loading.py": "from . import trainer\n",  # not allowed: loading goes through the trainer
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    bad = violations(package_imports(pkg, PACKAGE), tmp_path)
    assert [b.split("  (")[0] for b in bad] == [
        "adasparse/analysis/cli.py:3: import adasparse.train.trainer",
        "adasparse/bench/ops.py:1: from ..integrations import hf",
        "adasparse/data/tokenizer.py:1: from ..train.checkpoint import atomic_write_text",
        "adasparse/nn/__init__.py:2: from .. import entmax as e2",
        "adasparse/ops/entmax.py:2: from ..nn import layer",
        "adasparse/train/loading.py:1: from . import trainer",
    ], bad
    assert "may be imported only by" in bad[0] and "the same tier as bench" in bad[1]
    assert "train is a higher tier than data" in bad[2] and "the package root is a higher tier than nn" in bad[3]
