"""Fixtures of the analysis tests (the synthetic models live in ``synthetic.py``)."""

from __future__ import annotations

import pytest

from .synthetic import three_model_results


@pytest.fixture(scope="session")
def three_models(tmp_path_factory):
    """AnalysisResults of a softmax, a 1.5-entmax and a learned-α synthetic model."""
    return three_model_results(tmp_path_factory.mktemp("alpha_log"))
