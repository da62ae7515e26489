"""Drop-in replacements for other libraries' APIs, on adasparse's kernels.

* :mod:`adasparse.compat.entmax` — the whole public API of the ``entmax`` package 1.3
  (``import adasparse.compat.entmax as entmax``).
"""
