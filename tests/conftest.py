"""Suite-wide set-up, loaded before any test module imports adasparse.

The Triton kernels run on CPU under the Triton interpreter, which must be switched on before ``triton`` is
first imported: ``import adasparse`` imports torch's compiler stack, and that imports ``triton`` (its
standard-library ``@triton.jit`` functions are built then). So the switch lives here, not only in
``tests/kernels/conftest.py`` (which would come too late when another test module is collected first).
``ADASPARSE_TEST_DEVICE=cuda`` runs the kernel tests compiled, on a GPU.
"""

import os

if os.environ.get("ADASPARSE_TEST_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")


import pytest  # noqa: E402  (after the interpreter switch above)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny shapes: faster, and immune to a busy shared machine
    (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
