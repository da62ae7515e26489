"""The strict interpreter of ``interpreter_checks`` catches what it claims to, on toy kernels.

Only meaningful under ``TRITON_INTERPRET=1`` (on a GPU the compiled kernels run and these are skipped).
"""

import os

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed")
if os.environ.get("TRITON_INTERPRET") != "1" or os.environ.get("ADASPARSE_TRITON_STRICT", "1") == "0":
    pytest.skip("the strict-interpreter checks need TRITON_INTERPRET=1", allow_module_level=True)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

pytestmark = pytest.mark.triton


@triton.jit
def _sum_kernel(X, Y, N, BLOCK: tl.constexpr, FILL: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    if FILL:
        x = tl.load(X + offs, mask=offs < N, other=0.0)
    else:
        x = tl.load(X + offs, mask=offs < N)  # masked-out lanes undefined on a GPU
    tl.store(Y, tl.sum(x.to(tl.float32), 0))


@triton.jit
def _count_kernel(M, Y, N, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    m = tl.load(M + offs, mask=offs < N)  # int8 flags, no fill
    tl.store(Y, tl.sum((m != 0).to(tl.int32), 0))


@triton.jit
def _flag_kernel(FLAG, Y, RELOAD: tl.constexpr):
    """One program stores a flag and reads it back (the old kernel's block liveness), or keeps it in a register."""
    live = 1
    tl.store(FLAG, 0)
    if RELOAD:
        live = tl.load(FLAG)
    tl.store(Y, live)


def _sum(x, fill):
    y = torch.zeros(1, dtype=torch.float32)
    _sum_kernel[(1,)](x, y, 5, BLOCK=8, FILL=fill)
    return y.item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_unfilled_masked_load_reads_nan(dtype):
    x = torch.arange(1.0, 9.0).to(dtype)  # lanes 5..7 exist in memory but are masked out
    assert torch.isnan(torch.tensor(_sum(x, fill=False)))
    assert _sum(x, fill=True) == 15.0


@pytest.mark.stock_interpreter
def test_stock_interpreter_hides_the_bug():
    """Without the patch the same unfilled load sums zeros: the bug is invisible."""
    assert _sum(torch.arange(1.0, 9.0), fill=False) == 15.0


def test_unfilled_integer_load_reads_all_ones():
    flags = torch.zeros(8, dtype=torch.int8)
    y = torch.zeros(1, dtype=torch.int32)
    _count_kernel[(1,)](flags, y, 5, BLOCK=8)
    assert y.item() == 3  # the three masked-out lanes read -1 (non-zero), the five real zeros do not count


def test_program_reading_back_its_own_store_fails(strict_interpreter):
    flag, y = torch.ones(1, dtype=torch.int32), torch.zeros(1, dtype=torch.int32)
    with pytest.raises(Exception, match="global-memory RAW"):
        _flag_kernel[(1,)](flag, y, RELOAD=True)
    assert strict_interpreter.hits
    _flag_kernel[(2,)](flag, y, RELOAD=False)  # liveness kept in a register: no hit
    assert y.item() == 1


@triton.jit
def _dot_kernel(X, Y, Z, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    idx = o[:, None] * BLOCK + o[None, :]
    tl.store(Z + idx, tl.dot(tl.load(X + idx), tl.load(Y + idx), out_dtype=tl.float32))


def test_bfloat16_dot_is_repaired():
    """The stock interpreter multiplies bfloat16 bit patterns; the repaired one matches float32 matmul."""
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randn(16, 16, generator=g).to(torch.bfloat16) for _ in range(2))
    z = torch.empty(16, 16)
    _dot_kernel[(1,)](x, y, z, BLOCK=16)
    torch.testing.assert_close(z, x.float() @ y.float(), rtol=1e-6, atol=1e-5)
