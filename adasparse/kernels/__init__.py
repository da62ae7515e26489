"""Fused GPU kernels (Triton).  Importing this package never requires Triton; its modules do.

``triton_available()`` tells whether :mod:`adasparse.kernels.triton_entmax_attention` can be imported.
"""

from __future__ import annotations

import importlib.util

__all__ = ["triton_available"]


def triton_available() -> bool:
    """True when the ``triton`` package is installed (it may still lack a GPU: see the kernel's checks)."""
    return importlib.util.find_spec("triton") is not None
