"""Benchmarks and showcases shipped with the package (``adasparse bench ...``)."""
