"""Fused CPU kernels for α-entmax (forward and backward), built on first use.

The kernels live in ``csrc/entmax_cpu.cpp``: a plain C ABI with no PyTorch headers, compiled by the
system C++ compiler (``$CXX`` or ``c++``/``g++``) in about a second into a cache directory and loaded
with :mod:`ctypes`.  OpenMP runs over rows in the process's OpenMP runtime (the one PyTorch loaded), with
``torch.get_num_threads()`` threads.  When no compiler is found or the build fails, :func:`available`
returns False, one warning is issued, and callers use the PyTorch reference path instead.

The callers in :mod:`adasparse.ops` hand the forward rows with α > 2 in float64 (float32 cannot resolve
the weights near the threshold there) and compute their backward with the PyTorch formulas, whose ∂ℓ/∂z
avoids the cancellation of the kernel's direct form at α > 2; the kernel code is the same for every α.

Environment:
    ``ADASPARSE_CPU_KERNEL=0`` disables the kernels (the PyTorch path is used everywhere).
    ``ADASPARSE_CACHE_DIR`` overrides the build cache (default ``$XDG_CACHE_HOME/adasparse`` or
    ``~/.cache/adasparse``).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["available", "usable", "forward", "backward", "disabled", "build_error"]

_SRC = Path(__file__).with_name("csrc") / "entmax_cpu.cpp"
_ABI = 1

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_error: str | None = None
_disabled = threading.local()


def _cache_dir() -> Path:
    env = os.environ.get("ADASPARSE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "adasparse"


def _compiler() -> str | None:
    for c in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if c and shutil.which(c):
            return shutil.which(c)
    return None


def _cpu_tag() -> str:
    """Distinguishes machines for -march=native builds sharing one cache (CPU model and flags)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        keep = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(keep)
    except OSError:
        return platform.processor() or platform.machine()


# flag sets tried in order: fastest first, most portable last
_BASE = ["-O3", "-std=c++17", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
_VARIANTS = [["-march=native", "-lm"], ["-lm"]]


def _build() -> ctypes.CDLL:
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set $CXX or install g++)")
    src = _SRC.read_bytes()
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"cannot run the C++ compiler {cxx}: {e}") from e
    cache = _cache_dir()
    errors = []
    for extra in _VARIANTS:
        flags = _BASE + extra
        key = hashlib.sha256(
            b"\0".join([src, " ".join(flags).encode(), version.encode(), _cpu_tag().encode(), sys.version.encode()])
        ).hexdigest()[:16]
        out = cache / f"entmax_cpu_{key}.so"
        if not out.exists():
            cache.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
            os.close(fd)
            cmd = [cxx, *[f for f in flags if not f.startswith("-l")], str(_SRC), "-o", tmp]
            cmd += [f for f in flags if f.startswith("-l")]
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.SubprocessError) as e:
                res = None
                errors.append(f"{' '.join(cmd)}: {e}")
            if res is None or res.returncode != 0:
                if res is not None:
                    errors.append(f"{' '.join(cmd)}:\n{res.stderr[-2000:]}")
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                continue
            os.replace(tmp, out)  # atomic: concurrent builders race harmlessly
        try:
            lib = ctypes.CDLL(str(out))
            if lib.adasparse_abi_version() != _ABI:
                raise RuntimeError("ABI version mismatch")
        except (OSError, AttributeError, RuntimeError) as e:
            errors.append(f"loading {out}: {e}")
            continue
        _declare(lib)
        return lib
    raise RuntimeError("building the adasparse CPU kernel failed:\n" + "\n".join(errors))


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, f64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    for name in ("adasparse_entmax_forward_f32", "adasparse_entmax_forward_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [p, p, i64, i64, p, f64, i32]
        fn.restype = i32
    for name in ("adasparse_entmax_backward_f32", "adasparse_entmax_backward_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [p, p, p, p, i64, i64, p, f64, f64, i32]
        fn.restype = i32


def _load() -> ctypes.CDLL | None:
    global _lib, _tried, _error
    if _tried:
        return _lib
    with _lock:
        if _tried:
            return _lib
        if os.environ.get("ADASPARSE_CPU_KERNEL", "1").strip().lower() in ("0", "false", "no", "off"):
            _error = "disabled by ADASPARSE_CPU_KERNEL"
        else:
            try:
                _lib = _build()
            except Exception as e:  # noqa: BLE001 - any failure means: use the PyTorch path
                _error = str(e)
                warnings.warn(
                    f"adasparse: the fused CPU kernel is unavailable, using the (slower) PyTorch path. {e}",
                    RuntimeWarning,
                    stacklevel=3,
                )
        _tried = True
    return _lib


def build_error() -> str | None:
    """Why the kernel is not available (None when it is, or before the first use)."""
    return _error


def available() -> bool:
    """Whether the fused CPU kernel can be used now (builds it on the first call)."""
    if getattr(_disabled, "on", False):
        return False
    return _load() is not None


def usable(t: Tensor) -> bool:
    """Whether the kernel can take rows of ``t`` (CPU, floating, rows shorter than 2³¹), building it if needed."""
    return t.device.type == "cpu" and t.is_floating_point() and t.dim() > 0 and t.shape[-1] < 2**31 and available()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Use the PyTorch reference path in this thread while the context is open (tests, comparisons)."""
    before = getattr(_disabled, "on", False)
    _disabled.on = True
    try:
        yield
    finally:
        _disabled.on = before


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def forward(z: Tensor, alpha: Tensor | None, alpha_value: float) -> Tensor:
    """α-entmax over the last dim of a contiguous 2-D float32/float64 CPU tensor ``z`` (rows, n).

    ``alpha``: None (use ``alpha_value``) or a contiguous (rows,) tensor of ``z``'s dtype.
    """
    lib = _load()
    assert lib is not None and z.dim() == 2 and z.is_contiguous()
    out = torch.empty_like(z)
    rows, n = z.shape
    fn = lib.adasparse_entmax_forward_f64 if z.dtype == torch.float64 else lib.adasparse_entmax_forward_f32
    rc = fn(z.data_ptr(), out.data_ptr(), rows, n, _ptr(alpha), float(alpha_value), torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"adasparse CPU kernel (forward) failed with code {rc} for rows of length {n}")
    return out


def backward(
    p: Tensor,
    g: Tensor,
    alpha: Tensor | None,
    alpha_value: float,
    need_z: bool,
    need_alpha: bool,
    alpha_one_eps: float,
) -> tuple[Tensor | None, Tensor | None]:
    """∂ℓ/∂z (rows, n) and per-row ∂ℓ/∂α (rows,) float64, for contiguous 2-D ``p``, ``g`` of one dtype."""
    lib = _load()
    assert lib is not None and p.dim() == 2 and p.is_contiguous() and g.is_contiguous()
    rows, n = p.shape
    gz = torch.empty_like(p) if need_z else None
    ga = torch.empty(rows, dtype=torch.float64) if need_alpha else None
    fn = lib.adasparse_entmax_backward_f64 if p.dtype == torch.float64 else lib.adasparse_entmax_backward_f32
    rc = fn(
        p.data_ptr(),
        g.data_ptr(),
        _ptr(gz),
        _ptr(ga),
        rows,
        n,
        _ptr(alpha),
        float(alpha_value),
        float(alpha_one_eps),
        torch.get_num_threads(),
    )
    if rc != 0:
        raise RuntimeError(f"adasparse CPU kernel (backward) failed with code {rc} for rows of length {n}")
    return gz, ga
