"""One thread for the decoding tests: tiny models, where more threads only add contention on shared cores."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _decode_one_thread(one_thread):
    yield
