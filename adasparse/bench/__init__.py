"""Benchmarks shipped with the package (``adasparse bench ...``): each prints ratios against a reference measured in the same run."""
