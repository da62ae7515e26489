"""Checkpoints: safetensors + JSON, written atomically, with best/last-K retention and ``latest`` discovery.

A checkpoint is a directory::

    step_00001200/
      model.safetensors          the weights (tied tensors stored once, aliases in the metadata)
      config.json                the model (and run) configuration
      tokenizer/                 TokenizerPair.save(...) output (optional)
      trainer_state.json         step, epoch, data position, metrics, and the *structure* of the optimizer,
                                 scheduler and RNG states, with tensors replaced by references
      trainer_state.safetensors  those tensors (Adam moments, RNG byte tensors, ...)

No pickle anywhere: nested Python state (``optimizer.state_dict()``, ``scheduler.state_dict()``, RNG states) is
flattened by :func:`flatten_state` into JSON plus a flat ``{name: tensor}`` mapping, and rebuilt exactly by
:func:`unflatten_state` (integer dict keys, tuples and numpy arrays included).

Atomicity: every file is written to a temporary name, flushed, ``fsync``-ed and moved into place with
``os.replace``; a checkpoint directory is assembled under a temporary name and renamed into place only when
complete, and the ``latest.json``/``best.json`` pointers are updated after that. A crash at any moment leaves the
previous checkpoint and pointers intact (at worst a ``.tmp`` folder, removed by the next
:class:`CheckpointManager`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
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

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
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
    "REQUIRED_FILES",
]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "trainer_state.json"
STATE_TENSORS_FILE = "trainer_state.safetensors"
TOKENIZER_DIR = "tokenizer"
REQUIRED_FILES = (MODEL_FILE, CONFIG_FILE, STATE_FILE, STATE_TENSORS_FILE)
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------------------------
# atomic files


def _fsync_dir(path: Path) -> None:
    """Persist a directory entry change (rename) on POSIX; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, flush, fsync, ``os.replace``."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """:func:`atomic_write_text` of ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


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
    """Read a file written by :func:`save_weights`; aliased names map to the same tensor object."""
    path = Path(path)
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        out = {k: f.get_tensor(k) for k in f.keys()}
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    for name, target in aliases.items():
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
# one checkpoint


@dataclass
class Checkpoint:
    """A loaded checkpoint. ``trainer_state`` holds whatever the trainer saved (tensors restored), typically the
    keys ``step``, ``epoch``, ``data``, ``optimizer``, ``scheduler``, ``rng`` and ``metrics``."""

    path: Path
    model_state: dict[str, Tensor]
    config: dict[str, Any]
    trainer_state: dict[str, Any]

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


def save_checkpoint(
    path: str | Path,
    *,
    model_state: Mapping[str, Tensor],
    config: Any,
    trainer_state: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
) -> Path:
    """Write a complete checkpoint directory at ``path``, atomically (see the module docstring).

    Args:
        model_state: ``model.state_dict()``.
        config: a JSON-serialisable dict or a dataclass (stored with ``asdict``).
        trainer_state: nested state (tensors, numpy arrays, tuples allowed), e.g. ``{"step": 1200, "epoch": 3,
            "data": batcher.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": capture_rng_state()}``.
        tokenizer: an object with ``save(directory)`` (a ``TokenizerPair``) or a folder to copy, or ``None``.

    If ``path`` already exists it is replaced as a whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    tmp.mkdir()
    try:
        _write_checkpoint_files(tmp, model_state, config, trainer_state or {}, tokenizer)
        _fsync_dir(tmp)
        old = None
        if path.exists():
            old = _tmp_name(path)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint directory (or the latest one under a run folder, see :func:`resolve_checkpoint`).

    Raises ``FileNotFoundError`` listing every missing file.
    """
    path = Path(path)
    if not (path.is_dir() and any((path / name).exists() for name in REQUIRED_FILES)):
        path = resolve_checkpoint(path)
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    model_state = load_weights(path / MODEL_FILE, device)
    config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    meta = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path / STATE_FILE}: format_version {meta.get('format_version')}, expected {FORMAT_VERSION}")
    tensors = st_load((path / STATE_TENSORS_FILE).read_bytes())
    trainer_state = unflatten_state(meta["state"], tensors)
    return Checkpoint(path, model_state, config, trainer_state)


def _is_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / MODEL_FILE).is_file()


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory as is; a run folder or its ``checkpoints/`` folder → its latest checkpoint.

    Raises ``FileNotFoundError`` when nothing is found.
    """
    path = Path(path)
    if _is_checkpoint(path):
        return path
    run_dir = path.parent if path.name == "checkpoints" else path
    latest = CheckpointManager(run_dir, create=False).latest() if path.is_dir() else None
    if latest is not None:
        return latest
    raise FileNotFoundError(f"no checkpoint at {path} (expected a folder with {MODEL_FILE} or a run folder)")


# ---------------------------------------------------------------------------------------------------------------
# a run's checkpoints


class CheckpointManager:
    """Checkpoints of one run under ``run_dir/checkpoints/step_XXXXXXXX``, keeping the best and the last ``keep_last``.

    ``latest.json`` and ``best.json`` in that folder point at checkpoints by name; they are rewritten atomically
    after the checkpoint itself is in place. ``metric_mode`` says whether a lower (``"min"``, e.g. validation
    loss) or higher (``"max"``, e.g. BLEU) metric is better.
    """

    def __init__(self, run_dir: str | Path, keep_last: int = 3, metric_mode: str = "min", create: bool = True):
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        if metric_mode not in ("min", "max"):
            raise ValueError(f"metric_mode must be 'min' or 'max', got {metric_mode!r}")
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last
        self.metric_mode = metric_mode
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob(".*.tmp-*"):  # left by a crash mid-write
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)

    @staticmethod
    def name_for(step: int) -> str:
        return f"step_{step:08d}"

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.glob("step_*") if _is_checkpoint(p) and p.name[5:].isdigit()]
        return sorted(found, key=lambda p: int(p.name[5:]))

    def _pointer(self, name: str) -> dict[str, Any] | None:
        f = self.root / f"{name}.json"
        if not f.is_file():
            return None
        info = json.loads(f.read_text(encoding="utf-8"))
        return info if _is_checkpoint(self.root / info["name"]) else None

    def latest(self) -> Path | None:
        """The checkpoint ``latest.json`` names, else the highest step found, else ``None``."""
        info = self._pointer("latest")
        if info is not None:
            return self.root / info["name"]
        found = self.checkpoints()
        return found[-1] if found else None

    def best(self) -> Path | None:
        info = self._pointer("best")
        return None if info is None else self.root / info["name"]

    def best_metric(self) -> float | None:
        info = self._pointer("best")
        return None if info is None else info["metric"]

    def is_better(self, metric: float) -> bool:
        best = self.best_metric()
        return best is None or (metric < best if self.metric_mode == "min" else metric > best)

    def save(self, step: int, metric: float | None = None, **kwargs: Any) -> Path:
        """:func:`save_checkpoint` as ``step_{step}``, then update the pointers and prune old checkpoints."""
        name = self.name_for(step)
        path = save_checkpoint(self.root / name, **kwargs)
        atomic_write_json(self.root / "latest.json", {"name": name, "step": step})
        if metric is not None and self.is_better(metric):
            atomic_write_json(self.root / "best.json", {"name": name, "step": step, "metric": metric})
        self.prune()
        return path

    def prune(self) -> list[Path]:
        """Delete checkpoints that are neither among the last ``keep_last`` nor the best; returns them."""
        found = self.checkpoints()
        keep = {p.name for p in found[-self.keep_last :]}
        for pointer in ("best", "latest"):
            info = self._pointer(pointer)
            if info is not None:
                keep.add(info["name"])
        removed = [p for p in found if p.name not in keep]
        for p in removed:
            shutil.rmtree(p, ignore_errors=True)
        return removed
