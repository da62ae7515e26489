"""Stricter Triton interpreter for the kernel tests: what a GPU may do, the interpreter does on purpose.

Two checks, installed by patching ``triton.runtime.interpreter.InterpreterBuilder`` for the duration of a test
(``monkeypatch``; site-packages is never edited):

* **poison fill** — Triton leaves the masked-out lanes of ``tl.load(ptr, mask)`` *undefined* when no ``other=``
  is given; the stock interpreter fills them with zeros, which hides the bug.  Here they read NaN (floats,
  bfloat16 included) or an all-ones bit pattern (integers: ``-1``, ``True``), so a masked-out lane that leaks
  into a sum, a dot or a comparison shows up in the result.
* **no read-after-write through global memory inside a program** — a program that stores to an address and
  later loads it back is communicating between its threads through global memory, which needs a barrier on a
  GPU (and the interpreter, running each program sequentially, never shows the race).  Every load is checked
  against the addresses the same program has stored so far; a hit raises ``AssertionError``.

And one repair, without which bfloat16 cannot be tested at all: the stock interpreter's ``tl.dot`` multiplies the
raw uint16 bit patterns of bfloat16 operands as integers (``fix_bf16_dot`` converts them to float32 first, as
the tensor cores do: exact products, float32 accumulation).

``install(monkeypatch)`` turns both checks on; ``tests/kernels/conftest.py`` does it for every kernel test under the
interpreter unless ``ADASPARSE_TRITON_STRICT=0``.
"""

from __future__ import annotations

import numpy as np

_BF16_NAN = np.uint16(0x7FC0)  # bfloat16 is stored as uint16 by the interpreter


def _poison(dtype_np: np.dtype, shape) -> np.ndarray:
    if dtype_np == np.dtype(np.uint16):  # bfloat16 (the interpreter has no separate uint16 pointer use here)
        return np.full(shape, _BF16_NAN, dtype=dtype_np)
    if np.issubdtype(dtype_np, np.floating):
        return np.full(shape, np.nan, dtype=dtype_np)
    if dtype_np == np.dtype(bool):
        return np.ones(shape, dtype=bool)
    return np.full(shape, -1, dtype=np.int64).astype(dtype_np)  # all bits set


class _Tracker:
    """Addresses stored by the current program (reset when the grid index changes)."""

    def __init__(self) -> None:
        self.stored: list[np.ndarray] = []
        self.hits: list[str] = []

    def reset(self) -> None:
        self.stored = []

    def check(self, addrs: np.ndarray) -> None:
        if not self.stored or addrs.size == 0:
            return
        seen = np.concatenate(self.stored)
        hit = np.isin(addrs, seen)
        if hit.any():
            msg = f"a program loaded {int(hit.sum())} address(es) it had stored itself (global-memory RAW)"
            self.hits.append(msg)
            raise AssertionError(msg)


def install(monkeypatch, *, poison: bool = True, raw: bool = True) -> _Tracker:
    """Patch the interpreter's loads and stores (see the module docstring); return the RAW tracker."""
    from triton.runtime import interpreter as it

    builder = it.InterpreterBuilder
    orig_load = builder.create_masked_load
    orig_store = builder.create_masked_store
    orig_idx = builder.set_grid_idx
    tracker = _Tracker()

    def create_masked_load(self, ptrs, mask, other, cache_policy, is_volatile):
        if raw:
            tracker.check(ptrs.data[mask.data.astype(bool)])
        if poison and other is None:
            dtype_tt = ptrs.get_element_ty()
            other = it.TensorHandle(_poison(it._get_np_dtype(dtype_tt), ptrs.data.shape), dtype_tt)
        return orig_load(self, ptrs, mask, other, cache_policy, is_volatile)

    def create_masked_store(self, ptrs, value, mask, cache_policy):
        if raw:
            tracker.stored.append(np.asarray(ptrs.data[mask.data.astype(bool)]).ravel())
        return orig_store(self, ptrs, value, mask, cache_policy)

    def set_grid_idx(self, x, y, z):
        tracker.reset()
        return orig_idx(self, x, y, z)

    monkeypatch.setattr(builder, "create_masked_load", create_masked_load)
    monkeypatch.setattr(builder, "create_masked_store", create_masked_store)
    monkeypatch.setattr(builder, "set_grid_idx", set_grid_idx)
    return tracker


def fix_bf16_dot(monkeypatch) -> None:
    """Make the interpreter's ``tl.dot`` read bfloat16 operands as numbers (it multiplies their bits otherwise)."""
    import triton.language as tl
    from triton.runtime import interpreter as it

    builder = it.InterpreterBuilder
    orig_dot = builder.create_dot

    def as_f32(x):
        if x.dtype.scalar == tl.bfloat16:
            return it.TensorHandle(
                it._convert_float(x.data, tl.bfloat16, tl.float32, None).view(np.float32), tl.float32
            )
        return x

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        return orig_dot(self, as_f32(a), as_f32(b), d, input_precision, max_num_imprecise_acc)

    monkeypatch.setattr(builder, "create_dot", create_dot)
