"""Checkpoints: safetensors + JSON, written atomically, verified on load, with best/last-K retention.

A checkpoint is a directory::

    step_00001200/
      model.safetensors          the weights (tied tensors stored once, aliases in the metadata)
      config.json                the model (and run) configuration
      tokenizer/                 TokenizerPair.save(...) output (optional)
      trainer_state.json         step, epoch, data position, metrics, and the *structure* of the optimizer,
                                 scheduler and RNG states, with tensors replaced by references
      trainer_state.safetensors  those tensors (Adam moments, RNG byte tensors, ...)
      manifest.json              size and SHA-256 of every file above, the step and the validation metric;
                                 written last, and checksummed itself

No pickle anywhere: nested Python state (``optimizer.state_dict()``, ``scheduler.state_dict()``, RNG states) is
flattened by :func:`flatten_state` into JSON plus a flat ``{name: tensor}`` mapping, and rebuilt exactly by
:func:`unflatten_state` (integer dict keys, tuples and numpy arrays included).

Verification: :func:`load_checkpoint` (and so every loader: ``translate``, ``evaluate``, ``analyze``,
``--resume``, :func:`~adasparse.train.loading.load_model`) checks every file against the manifest first and
raises :class:`CorruptCheckpointError` naming the damaged file. A checkpoint written before manifests existed
loads with a warning that it cannot be verified.

Atomicity: every file is written to a temporary name, flushed, ``fsync``-ed and moved into place with
``os.replace``; a checkpoint directory is assembled under a temporary name and renamed into place only when
complete (manifest included). The ``latest.json``/``best.json`` pointers are only hints for people and tools:
:class:`CheckpointManager` derives the latest (highest step) and the best (best metric recorded in the
manifests) from the checkpoints themselves and rewrites the pointers when they disagree, so a kill between two
pointer writes cannot leave a stale best. Pruning renames a checkpoint to a hidden trash name before deleting
it, so a kill during pruning leaves no half-deleted ``step_*`` folder; hidden leftovers (``.*.tmp-*``,
``.trash-*``) are removed by the next writable :class:`CheckpointManager`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from .._io import atomic_write_bytes, atomic_write_json, fsync_dir, tmp_name

__all__ = [
    "flatten_state",
    "unflatten_state",
    "save_weights",
    "load_weights",
    "capture_rng_state",
    "restore_rng_state",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "CheckpointManager",
    "resolve_checkpoint",
    "verify_checkpoint",
    "CorruptCheckpointError",
    "REQUIRED_FILES",
    "MANIFEST_FILE",
]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "trainer_state.json"
STATE_TENSORS_FILE = "trainer_state.safetensors"
TOKENIZER_DIR = "tokenizer"
MANIFEST_FILE = "manifest.json"
REQUIRED_FILES = (MODEL_FILE, CONFIG_FILE, STATE_FILE, STATE_TENSORS_FILE)
FORMAT_VERSION = 1
MANIFEST_VERSION = 1
_STEP_NAME = re.compile(r"step_(\d+)")
_TRASH_PREFIX = ".trash-"

log = logging.getLogger(__name__)


class CorruptCheckpointError(ValueError):
    """A checkpoint file is missing, cut short or changed since it was written; ``file`` is its path."""

    def __init__(self, message: str, file: Path | None = None):
        super().__init__(message)
        self.file = file


# ---------------------------------------------------------------------------------------------------------------
# nested state <-> JSON + tensors

_T, _TUP, _MAP, _ND, _BYTES = "__tensor__", "__tuple__", "__map__", "__ndarray__", "__bytes__"
_MARKERS = {_T, _TUP, _MAP, _ND, _BYTES}


def flatten_state(obj: Any) -> tuple[Any, dict[str, Tensor]]:
    """Split nested state into a JSON-serialisable structure and a flat ``{key: tensor}`` dict.

    Tensors become ``{"__tensor__": key}``; tuples, dicts with non-string keys, numpy arrays and bytes are tagged
    so :func:`unflatten_state` rebuilds them with their types. Other objects raise ``TypeError`` naming their path.
    """
    tensors: dict[str, Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, Tensor):
            key = f"{len(tensors)}:{path}"
            tensors[key] = x.detach().to("cpu").contiguous().clone()
            return {_T: key}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, np.ndarray):
            return {_ND: x.tolist(), "dtype": str(x.dtype)}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, bytes):
            return {_BYTES: base64.b64encode(x).decode("ascii")}
        if isinstance(x, tuple):
            return {_TUP: [walk(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(x)]
        if isinstance(x, Mapping):
            if all(isinstance(k, str) for k in x) and not (_MARKERS & set(x)):
                return {k: walk(v, f"{path}.{k}") for k, v in x.items()}
            return {_MAP: [[walk(k, f"{path}.<key>"), walk(v, f"{path}.{k}")] for k, v in x.items()]}
        raise TypeError(f"cannot store {type(x).__name__} at {path or '<root>'} in a checkpoint (no pickle)")

    return walk(obj, ""), tensors


def unflatten_state(structure: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""

    def walk(x: Any) -> Any:
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, dict):
            if _T in x:
                return tensors[x[_T]]
            if _TUP in x:
                return tuple(walk(v) for v in x[_TUP])
            if _MAP in x:
                return {_hashable(walk(k)): walk(v) for k, v in x[_MAP]}
            if _ND in x:
                return np.array(x[_ND], dtype=x["dtype"])
            if _BYTES in x:
                return base64.b64decode(x[_BYTES])
            return {k: walk(v) for k, v in x.items()}
        return x

    return walk(structure)


def _hashable(k: Any) -> Any:
    return tuple(_hashable(v) for v in k) if isinstance(k, (list, tuple)) else k


# ---------------------------------------------------------------------------------------------------------------
# weights


def save_weights(state_dict: Mapping[str, Tensor], path: str | Path) -> None:
    """Write a model ``state_dict`` as safetensors, atomically. Tensors that are the same view of the same storage
    (tied embeddings) are stored once, the other names recorded as aliases in the file's metadata."""
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in state_dict.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"state_dict entry {name!r} is a {type(t).__name__}, not a tensor")
        t = t.detach()
        ident = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() > 0 and ident in seen:
            aliases[name] = seen[ident]
            continue
        seen[ident] = name
        tensors[name] = t.to("cpu").contiguous().clone()
    metadata = {"format": "pt", "aliases": json.dumps(aliases)}
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read a file written by :func:`save_weights`; aliased names map to the same tensor object.

    A file that is not valid safetensors (cut short, overwritten) raises :class:`CorruptCheckpointError` naming it.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            out = {k: f.get_tensor(k) for k in f.keys()}
            aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    except FileNotFoundError:
        raise
    except Exception as e:  # SafetensorError, JSONDecodeError: a damaged file
        raise CorruptCheckpointError(f"{path} is not a readable safetensors file ({e})", path) from None
    for name, target in aliases.items():
        if target not in out:
            raise CorruptCheckpointError(f"{path}: alias {name!r} names a missing tensor {target!r}", path)
        out[name] = out[target]
    return out


# ---------------------------------------------------------------------------------------------------------------
# RNG


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's, numpy's (legacy global) and torch's CPU and CUDA generators."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured (CUDA states only where CUDA is available)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------------------
# manifests


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def _write_manifest(directory: Path, info: Mapping[str, Any] | None) -> None:
    files = {}
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory).as_posix()
        if p.is_file() and rel != MANIFEST_FILE:
            files[rel] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    manifest = {"format_version": MANIFEST_VERSION, **dict(info or {}), "files": files}
    manifest["sha256"] = _manifest_digest(manifest)
    atomic_write_json(directory / MANIFEST_FILE, manifest)


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The manifest of the checkpoint folder ``path``; ``None`` when it has none (written by an older adasparse).

    Raises :class:`CorruptCheckpointError` when ``manifest.json`` is not valid JSON or fails its own checksum.
    """
    f = Path(path) / MANIFEST_FILE
    if not f.is_file():
        return None
    try:
        manifest = json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptCheckpointError(f"{f} is damaged (not valid JSON: {e})", f) from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("sha256") != _manifest_digest(manifest):
        raise CorruptCheckpointError(f"{f} is damaged (it does not match its own checksum)", f)
    return manifest


def verify_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """Check every file of the checkpoint folder ``path`` against its manifest; returns the manifest.

    A checkpoint without a manifest (an older format) is only checked for its required files and gives ``None``.
    Raises :class:`CorruptCheckpointError` naming the first missing, cut-short or changed file.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
        if missing:
            raise CorruptCheckpointError(
                f"checkpoint {path} is incomplete: missing {', '.join(missing)} (and it has no {MANIFEST_FILE})",
                path / missing[0],
            )
        return None
    for rel, entry in manifest["files"].items():
        f = path / rel
        if rel.startswith("/") or ".." in Path(rel).parts or not isinstance(entry, dict):
            raise CorruptCheckpointError(f"{path / MANIFEST_FILE} is damaged (bad entry {rel!r})", path / MANIFEST_FILE)
        if not f.is_file():
            raise CorruptCheckpointError(f"checkpoint {path} is incomplete: {f} is missing (listed in its manifest)", f)
        size = f.stat().st_size
        if size != entry.get("size"):
            raise CorruptCheckpointError(
                f"{f} is damaged: {size} bytes where its manifest recorded {entry.get('size')} (cut short or overwritten)",
                f,
            )
        if _sha256(f) != entry.get("sha256"):
            raise CorruptCheckpointError(
                f"{f} is damaged: its SHA-256 differs from the one recorded in the manifest (changed or corrupted "
                f"after it was written; if you edited it on purpose, delete {path / MANIFEST_FILE} to load the "
                "checkpoint unverified)",
                f,
            )
    return manifest


# ---------------------------------------------------------------------------------------------------------------
# one checkpoint


@dataclass
class Checkpoint:
    """A loaded checkpoint. ``trainer_state`` holds whatever the trainer saved (tensors restored), typically the
    keys ``step``, ``epoch``, ``data``, ``optimizer``, ``scheduler``, ``rng`` and ``metrics``. ``manifest`` is
    ``None`` for a checkpoint written before manifests (loaded unverified)."""

    path: Path
    model_state: dict[str, Tensor]
    config: dict[str, Any]
    trainer_state: dict[str, Any]
    manifest: dict[str, Any] | None = None

    @property
    def tokenizer_dir(self) -> Path | None:
        d = self.path / TOKENIZER_DIR
        return d if d.is_dir() else None

    @property
    def step(self) -> int:
        return int(self.trainer_state.get("step", 0))


def _as_json_config(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return config


def _write_checkpoint_files(
    directory: Path,
    model_state: Mapping[str, Tensor],
    config: Any,
    trainer_state: Mapping[str, Any],
    tokenizer: Any,
    info: Mapping[str, Any] | None,
) -> None:
    save_weights(model_state, directory / MODEL_FILE)
    atomic_write_json(directory / CONFIG_FILE, _as_json_config(config))
    if tokenizer is not None:
        if isinstance(tokenizer, (str, Path)):
            shutil.copytree(tokenizer, directory / TOKENIZER_DIR)
        else:
            tokenizer.save(directory / TOKENIZER_DIR)
    structure, tensors = flatten_state(dict(trainer_state))
    atomic_write_bytes(directory / STATE_TENSORS_FILE, st_save(tensors, metadata={"format": "pt"}))
    atomic_write_json(directory / STATE_FILE, {"format_version": FORMAT_VERSION, "state": structure})
    _write_manifest(directory, info)  # last: a folder with a manifest is complete


def save_checkpoint(
    path: str | Path,
    *,
    model_state: Mapping[str, Tensor],
    config: Any,
    trainer_state: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint directory at ``path``, atomically (see the module docstring).

    Args:
        model_state: ``model.state_dict()``.
        config: a JSON-serialisable dict or a dataclass (stored with ``asdict``).
        trainer_state: nested state (tensors, numpy arrays, tuples allowed), e.g. ``{"step": 1200, "epoch": 3,
            "data": batcher.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": capture_rng_state()}``.
        tokenizer: an object with ``save(directory)`` (a ``TokenizerPair``) or a folder to copy, or ``None``.
        info: JSON fields stored in the manifest (:class:`CheckpointManager` puts ``step`` and ``metric`` there).

    If ``path`` already exists it is replaced as a whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    tmp.mkdir()
    try:
        _write_checkpoint_files(tmp, model_state, config, trainer_state or {}, tokenizer, info)
        fsync_dir(tmp)
        old = None
        if path.exists():
            old = tmp_name(path)
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptCheckpointError(f"{path} is damaged (not valid JSON: {e})", path) from None


def _looks_like_checkpoint(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in (MANIFEST_FILE, *REQUIRED_FILES))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> Checkpoint:
    """Read a checkpoint directory (or the latest one under a run folder, see :func:`resolve_checkpoint`).

    With ``verify`` (the default) every file is checked against the manifest first (:func:`verify_checkpoint`);
    a checkpoint without a manifest loads with a warning. Raises :class:`CorruptCheckpointError` (a
    ``ValueError``) naming a missing, cut-short, changed or unreadable file.
    """
    path = Path(path)
    if not _looks_like_checkpoint(path):
        path = resolve_checkpoint(path)
    if verify:
        manifest = verify_checkpoint(path)
        if manifest is None:
            log.warning(
                "%s has no %s (written by an older adasparse): its files cannot be verified", path, MANIFEST_FILE
            )
    else:
        missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
        if missing:
            raise CorruptCheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}", path)
        manifest = None
    model_state = load_weights(path / MODEL_FILE, device)
    config = _read_json(path / CONFIG_FILE)
    meta = _read_json(path / STATE_FILE)
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION or "state" not in meta:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise CorruptCheckpointError(
            f"{path / STATE_FILE}: format_version {version}, expected {FORMAT_VERSION} with a 'state' entry",
            path / STATE_FILE,
        )
    try:
        tensors = st_load((path / STATE_TENSORS_FILE).read_bytes())
    except Exception as e:  # SafetensorError: cut short or overwritten
        f = path / STATE_TENSORS_FILE
        raise CorruptCheckpointError(f"{f} is not a readable safetensors file ({e})", f) from None
    try:
        trainer_state = unflatten_state(meta["state"], tensors)
    except (KeyError, TypeError, ValueError) as e:
        f = path / STATE_FILE
        raise CorruptCheckpointError(f"{f} does not match {STATE_TENSORS_FILE} ({type(e).__name__}: {e})", f) from None
    if not isinstance(trainer_state, dict):
        raise CorruptCheckpointError(f"{path / STATE_FILE}: 'state' is not a mapping", path / STATE_FILE)
    return Checkpoint(path, model_state, config, trainer_state, manifest)


def _complete(path: Path) -> bool:
    """A checkpoint folder that was fully written: it has a manifest, or (older format) all the required files."""
    return path.is_dir() and ((path / MANIFEST_FILE).is_file() or all((path / n).is_file() for n in REQUIRED_FILES))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory as is; a run folder or its ``checkpoints/`` folder → its latest checkpoint.

    Raises ``FileNotFoundError`` when nothing is found.
    """
    path = Path(path)
    if _looks_like_checkpoint(path):
        return path
    run_dir = path.parent if path.name == "checkpoints" else path
    latest = CheckpointManager(run_dir, create=False).latest() if path.is_dir() else None
    if latest is not None:
        return latest
    raise FileNotFoundError(
        f"no checkpoint at {path} (expected a checkpoint folder with {MANIFEST_FILE} and {MODEL_FILE}, "
        "or a run folder with checkpoints/step_*)"
    )


# ---------------------------------------------------------------------------------------------------------------
# a run's checkpoints


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class CheckpointManager:
    """Checkpoints of one run under ``run_dir/checkpoints/step_XXXXXXXX``, keeping the best and the last ``keep_last``.

    The checkpoints themselves are the truth: the latest is the complete checkpoint with the highest step, the
    best the one whose manifest records the best finite metric (the earliest on ties; ``metric_mode`` ``"min"``,
    e.g. validation loss, or ``"max"``, e.g. BLEU). Each manifest records its run's ``metric_mode`` too, so a
    manager opened without one (``metric_mode=None``, e.g. to load a run's best checkpoint) takes the run's own;
    for checkpoints from before that, the direction of the validation metric in their saved training options
    (``config.json``'s ``"train"``); ``"min"`` for a run that records neither. A ``metric_mode`` that contradicts
    the one the run's checkpoints record is refused. ``latest.json`` and ``best.json`` are rewritten from them
    after every save and whenever a writable manager (``create=True``) finds them stale; a pointer naming
    anything but a ``step_N`` folder of this run (``../../other/step_…``, ``[]``) is ignored with a warning.
    Checkpoints written before manifests have no recorded metric: for them ``best.json`` is still read.
    """

    def __init__(self, run_dir: str | Path, keep_last: int = 3, metric_mode: str | None = None, create: bool = True):
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        if metric_mode not in ("min", "max", None):
            raise ValueError(f"metric_mode must be 'min', 'max' or None (the run's own), got {metric_mode!r}")
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last
        self._warned: set[str] = set()
        recorded = self.recorded_metric_mode()
        if metric_mode is not None and recorded is not None and metric_mode != recorded[0]:
            raise ValueError(
                f"metric_mode={metric_mode!r}, but {recorded[1]} records {recorded[0]!r} (lower is "
                f"{'better' if recorded[0] == 'min' else 'worse'} for this run's validation metric): the best "
                "checkpoint would be the worst; open the run with metric_mode=None to use its own"
            )
        self.metric_mode = metric_mode or (recorded[0] if recorded else "min")
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
            self._remove_leftovers()
            self.repair_pointers()

    @staticmethod
    def name_for(step: int) -> str:
        return f"step_{step:08d}"

    @staticmethod
    def step_of(path: Path) -> int | None:
        """The step of a ``step_N`` folder name, else ``None``."""
        m = _STEP_NAME.fullmatch(Path(path).name)
        return int(m.group(1)) if m else None

    def _warn(self, msg: str) -> None:
        if msg not in self._warned:
            self._warned.add(msg)
            log.warning(msg)

    def _remove_leftovers(self) -> None:
        """Temporary folders of a crash mid-write, trash of a kill mid-prune, half-deleted older-format folders."""
        for p in self.root.iterdir():
            if p.name.startswith(".") and (".tmp-" in p.name or p.name.startswith(_TRASH_PREFIX)):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            elif self.step_of(p) is not None and p.is_dir() and not _complete(p):
                missing = [n for n in REQUIRED_FILES if not (p / n).is_file()]
                self._warn(f"removing the incomplete checkpoint folder {p} (missing {', '.join(missing)})")
                self._trash(p)

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (a folder without its manifest or required files is not one)."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if self.step_of(p) is not None and _complete(p)]
        return sorted(found, key=lambda p: self.step_of(p))

    def latest(self) -> Path | None:
        """The complete checkpoint with the highest step, else ``None``."""
        found = self.checkpoints()
        return found[-1] if found else None

    def _pointer(self, name: str) -> dict[str, Any] | None:
        """``name.json`` if it names a ``step_N`` checkpoint of this run, else ``None`` (with a warning)."""
        f = self.root / f"{name}.json"
        if not f.is_file():
            return None
        try:
            info = json.loads(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            self._warn(f"ignoring {f}: not valid JSON ({e})")
            return None
        target = info.get("name") if isinstance(info, dict) else None
        if not isinstance(target, str) or self.step_of(Path(target)) is None or Path(target).name != target:
            self._warn(f"ignoring {f}: it must name a step_N checkpoint folder of this run, not {target or info!r}")
            return None
        return info if _complete(self.root / target) else None

    def recorded_metric_mode(self) -> tuple[str, Path] | None:
        """The ``metric_mode`` this run's checkpoints record, newest first, and the file that says so: a manifest's
        ``metric_mode``, else (checkpoints from before it was recorded) the direction of the validation metric in
        the saved training options; ``None`` when no checkpoint says."""
        from .config import metric_mode_of, valid_metric_of

        found = list(reversed(self.checkpoints()))
        for p in found:
            try:
                mode = (read_manifest(p) or {}).get("metric_mode")
            except CorruptCheckpointError:
                continue
            if mode in ("min", "max"):
                return mode, p / MANIFEST_FILE
        for p in found:
            try:
                train = json.loads((p / CONFIG_FILE).read_text(encoding="utf-8")).get("train")
            except (OSError, UnicodeDecodeError, ValueError, AttributeError):
                continue
            if isinstance(train, dict):
                return metric_mode_of(valid_metric_of(train)), p / CONFIG_FILE
        return None

    def _metric_of(self, path: Path) -> float | None:
        try:
            manifest = read_manifest(path)
        except CorruptCheckpointError:
            return None
        value = (manifest or {}).get("metric")
        return float(value) if _finite(value) else None

    def _best(self) -> tuple[Path, float] | None:
        found = self.checkpoints()
        candidates = [(p, v) for p in found if (v := self._metric_of(p)) is not None]
        info = self._pointer("best")  # older checkpoints: only best.json knows their metric
        if info is not None and _finite(info.get("metric")):
            p = self.root / info["name"]
            if p in found and not (p / MANIFEST_FILE).is_file():
                candidates.append((p, float(info["metric"])))
        if not candidates:
            return None
        sign = 1.0 if self.metric_mode == "min" else -1.0
        return min(candidates, key=lambda c: (sign * c[1], self.step_of(c[0])))

    def best(self) -> Path | None:
        best = self._best()
        return None if best is None else best[0]

    def best_metric(self) -> float | None:
        best = self._best()
        return None if best is None else best[1]

    def is_better(self, metric: float | None) -> bool:
        """Whether ``metric`` would make a new best: finite, and better than every recorded one."""
        return self.better(metric, self.best_metric())

    def better(self, metric: float | None, than: float | None) -> bool:
        """Whether ``metric`` is finite and better than ``than`` by ``metric_mode`` (anything finite beats None)."""
        if not _finite(metric):
            return False
        return than is None or (metric < than if self.metric_mode == "min" else metric > than)

    def repair_pointers(self) -> None:
        """Rewrite ``latest.json``/``best.json`` where they disagree with the checkpoints."""
        latest, best = self.latest(), self._best()
        wanted = {
            "latest": None if latest is None else {"name": latest.name, "step": self.step_of(latest)},
            "best": None if best is None else {"name": best[0].name, "step": self.step_of(best[0]), "metric": best[1]},
        }
        for name, info in wanted.items():
            f = self.root / f"{name}.json"
            try:
                current = json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None
            except (UnicodeDecodeError, json.JSONDecodeError):
                current = "unreadable"
            if current == info:
                continue
            if info is None:
                f.unlink(missing_ok=True)
            else:
                atomic_write_json(f, info)

    def save(self, step: int, metric: float | None = None, **kwargs: Any) -> Path:
        """:func:`save_checkpoint` as ``step_{step}`` (the step, a finite ``metric`` and the ``metric_mode`` go into
        its manifest), then rewrite the pointers and prune old checkpoints."""
        name = self.name_for(step)
        info = {"step": step, "metric": float(metric) if _finite(metric) else None, "metric_mode": self.metric_mode}
        path = save_checkpoint(self.root / name, info=info, **kwargs)
        self.repair_pointers()
        self.prune()
        return path

    def _trash(self, path: Path) -> None:
        """Rename to a hidden trash name (atomic: nothing lists it any more), then delete."""
        trash = self.root / f"{_TRASH_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}"
        os.replace(path, trash)
        fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    def prune(self) -> list[Path]:
        """Delete checkpoints that are neither among the last ``keep_last`` nor the best; returns them."""
        found = self.checkpoints()
        keep = {p.name for p in found[-self.keep_last :]}
        best = self.best()
        if best is not None:
            keep.add(best.name)
        removed = [p for p in found if p.name not in keep]
        for p in removed:
            self._trash(p)
        return removed

    def latest_intact(self) -> tuple[Path | None, list[tuple[Path, str]]]:
        """The newest checkpoint that passes :func:`verify_checkpoint`, and the newer ones that failed (with why)."""
        damaged = []
        for p in reversed(self.checkpoints()):
            try:
                verify_checkpoint(p)
            except CorruptCheckpointError as e:
                damaged.append((p, str(e)))
                continue
            return p, damaged
        return None, damaged

    def move_aside(self, path: Path) -> Path:
        """Rename a damaged checkpoint to ``step_N.damaged`` (kept for inspection, never listed); returns it."""
        target = path.with_name(path.name + ".damaged")
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(path, target)
        fsync_dir(self.root)
        return target
