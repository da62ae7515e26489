"""Values, properties and robustness of entmax / sparsemax / entmax15."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from adasparse import entmax, entmax15, sparsemax

from .refs import entmax15_sort, entmax_bisect64, sparsemax_sort

ALPHAS = [1.01, 1.1, 1.3, 1.5, 1.7, 2.0]

rows = arrays(
    dtype="float64",
    shape=st.tuples(st.integers(1, 4), st.integers(1, 24)),
    elements=st.floats(-20, 20, allow_nan=False, width=64),
)
alphas = st.floats(1.0, 2.0)


def _t(a):
    return torch.from_numpy(a)


def _assert_same_support(p, ref, tie):
    """Exact zeros in the same places, except for entries within rounding of the threshold in both (weight
    ≤ ``tie``): there the exact answer may be 0 while the sort-based reference rounds to a tiny weight, e.g.
    z = (2, 0 ×7) at α = 1.5, whose τ = 0 exactly (ours 0, the reference 7.7e-34, found by hypothesis)."""
    clear = (p > tie) | (ref > tie)
    assert torch.equal((p > 0)[clear], (ref > 0)[clear])


# ---------------------------------------------------------------- properties (hypothesis)


@settings(max_examples=60, deadline=None)
@given(rows, alphas)
def test_output_on_simplex(z, alpha):
    p = entmax(_t(z), alpha)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[0], dtype=p.dtype), atol=1e-10, rtol=0)


@settings(max_examples=60, deadline=None)
@given(rows, alphas, st.floats(-50, 50))
def test_invariant_to_adding_a_constant(z, alpha, c):
    z = _t(z)
    torch.testing.assert_close(entmax(z + c, alpha), entmax(z, alpha), atol=1e-9, rtol=0)


@settings(max_examples=60, deadline=None)
@given(rows)
def test_alpha2_is_exact_sparsemax(z):
    z = _t(z)
    ref = sparsemax_sort(z)
    torch.testing.assert_close(entmax(z, 2.0), ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(sparsemax(z), ref, atol=1e-12, rtol=0)
    _assert_same_support(sparsemax(z), ref, tie=1e-12)


def test_entry_tied_with_the_threshold_gets_exact_zero_and_the_reference_does_not():
    z = torch.tensor([[2.0] + [0.0] * 7], dtype=torch.float64)
    assert entmax15(z)[0, 1:].eq(0).all() and entmax15_sort(z)[0, 1:].gt(0).all()  # the reference rounds
    _assert_same_support(entmax15(z), entmax15_sort(z), tie=1e-24)


def test_entry_tied_with_the_threshold_gets_exact_zero():
    """x = (−½, 0 ×16) at α = 1.5: τ = −¼ exactly, so the first entry sits on the threshold and its weight is
    exactly 0 (found by hypothesis: τ computed 1 ulp low gave it 4.9e-32)."""
    z = torch.tensor([[-0.5] + [0.0] * 16], dtype=torch.float64)
    for p in (entmax15(z), entmax(z, 1.5)):
        assert p[0, 0] == 0
        torch.testing.assert_close(p[0, 1:], torch.full((16,), 1 / 16, dtype=torch.float64), atol=1e-15, rtol=0)


@settings(max_examples=60, deadline=None)
@given(rows)
def test_alpha15_is_exact_entmax15(z):
    z = _t(z)
    ref = entmax15_sort(z)
    torch.testing.assert_close(entmax(z, 1.5), ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(entmax15(z), ref, atol=1e-12, rtol=0)
    _assert_same_support(entmax15(z), ref, tie=1e-24)


@settings(max_examples=40, deadline=None)
@given(rows)
def test_alpha_to_one_approaches_softmax(z):
    z = _t(z)
    sm = torch.softmax(z, -1)
    err = [(entmax(z, 1 + eps) - sm).abs().max().item() for eps in (1e-1, 1e-2, 1e-3)]
    assert err[2] <= err[1] + 1e-12 <= err[0] + 2e-12
    assert err[2] < 1e-2
    assert torch.equal(entmax(z, 1.0), sm)  # α = 1 is softmax exactly


@settings(max_examples=60, deadline=None)
@given(rows)
def test_support_shrinks_as_alpha_grows(z):
    z = _t(z)
    sizes = [(entmax(z, a) > 0).sum(-1) for a in (1.0, 1.2, 1.5, 1.8, 2.0)]
    for small, big in zip(sizes[1:], sizes[:-1]):
        assert (small <= big).all()


# ---------------------------------------------------------------- accuracy


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_float32_accuracy_against_float64_reference(alpha, scale):
    torch.manual_seed(0)
    z = torch.randn(512, 97) * scale
    p = entmax(z, alpha)
    assert p.dtype == torch.float32
    ref = entmax_bisect64(z, alpha)
    assert (p.double() - ref).abs().max() <= 1e-6
    assert (p.sum(-1) - 1).abs().max() <= 1e-6
    # exact zeros wherever the true solution is zero (up to entries within rounding of τ)
    assert (p[ref == 0] == 0).all()


def test_per_row_alpha_tensor_matches_scalar_calls():
    torch.manual_seed(1)
    z = torch.randn(2, 4, 5, 16, dtype=torch.float64)
    a = torch.tensor([1.05, 1.3, 1.5, 2.0], dtype=torch.float64)
    p = entmax(z, a.view(1, 4, 1, 1))
    for h in range(4):
        torch.testing.assert_close(p[:, h], entmax(z[:, h], a[h].item()), atol=1e-12, rtol=0)


def test_alpha_tensor_with_alpha_one_rows_is_softmax_there():
    z = torch.randn(3, 7, dtype=torch.float64)
    a = torch.tensor([[1.0], [1.5], [1.0]], dtype=torch.float64)
    p = entmax(z, a)
    torch.testing.assert_close(p[0], torch.softmax(z[0], -1))
    torch.testing.assert_close(p[1], entmax15(z[1]))


@pytest.mark.parametrize("alpha", [2.5, 3.0])
def test_alpha_above_two(alpha):
    torch.manual_seed(2)
    z = torch.randn(64, 33, dtype=torch.float64)
    p = entmax(z, alpha)
    torch.testing.assert_close(p, entmax_bisect64(z, alpha), atol=1e-10, rtol=0)
    assert (p == 0).any()  # sparser than sparsemax
    assert ((p > 0).sum(-1) <= (sparsemax(z) > 0).sum(-1)).all()


@pytest.mark.parametrize("dim", [0, 1, -1, -2])
def test_arbitrary_dim(dim):
    torch.manual_seed(3)
    z = torch.randn(5, 6, 7, dtype=torch.float64)
    p = entmax(z, 1.3, dim=dim)
    ref = entmax(z.movedim(dim, -1), 1.3).movedim(-1, dim)
    torch.testing.assert_close(p, ref, atol=0, rtol=0)
    torch.testing.assert_close(p.sum(dim), torch.ones_like(p.sum(dim)))


def test_pathological_sparsemax_rows_are_exact():
    # geometric scores make Newton add one support element per step; the sort fallback must kick in
    z = torch.tensor([[2.0**-i for i in range(200)]], dtype=torch.float64) * 150
    torch.testing.assert_close(sparsemax(z), sparsemax_sort(z), atol=1e-12, rtol=0)
    z = -torch.arange(300, dtype=torch.float64).unsqueeze(0) * 1e-3
    torch.testing.assert_close(sparsemax(z), sparsemax_sort(z), atol=1e-12, rtol=0)


# ---------------------------------------------------------------- masking and extremes


@pytest.mark.parametrize("fn", [lambda z: entmax(z, 1.3), entmax15, sparsemax, lambda z: entmax(z, 2.5)])
def test_masked_entries_and_fully_masked_rows(fn):
    z = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 1, 0, 1], [0] * 6, [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    zm = z.masked_fill(~mask, -math.inf)
    p = fn(zm)
    assert not p.isnan().any()
    assert (p[~mask] == 0).all()
    assert (p[1] == 0).all()
    torch.testing.assert_close(p[2], torch.tensor([1.0, 0, 0, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(p[0].sum(), torch.tensor(1.0, dtype=torch.float64))
    (p * torch.randn_like(p)).sum().backward()
    assert not z.grad.isnan().any()
    assert (z.grad[~mask] == 0).all()
    assert (z.grad[1] == 0).all()


def test_large_scores_and_length_one_rows():
    z = torch.tensor([[1e4, -1e4, 1e4 - 0.5], [-1e4, -1e4, -1e4]])
    for a in (1.2, 1.5, 2.0):
        p = entmax(z, a)
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(2))
        assert p[0, 1] == 0
    one = torch.randn(4, 1)
    for a in (1.0, 1.3, 1.5, 2.0, 3.0):
        assert torch.equal(entmax(one, a), torch.ones(4, 1))


def test_nan_stays_in_its_row():
    z = torch.randn(3, 5)
    z[1, 2] = float("nan")
    for fn in (lambda t: entmax(t, 1.3), entmax15, sparsemax):
        p = fn(z)
        assert p[1].isnan().all()
        assert not p[[0, 2]].isnan().any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("alpha", [1.3, 1.5, 2.0])
def test_half_precision(dtype, alpha):
    torch.manual_seed(4)
    z = (torch.randn(16, 40) * 8).to(dtype)
    p = entmax(z, alpha)
    assert p.dtype == dtype
    assert torch.isfinite(p).all()
    ref = entmax_bisect64(z.double(), alpha)
    assert (p.double() - ref).abs().max() < (1e-2 if dtype == torch.bfloat16 else 2e-3)
    zz = z.clone().requires_grad_()
    entmax(zz, torch.tensor(alpha, dtype=dtype)).sum().backward()
    assert zz.grad.dtype == dtype and torch.isfinite(zz.grad).all()


# ---------------------------------------------------------------- bad input


def test_bad_alpha_values():
    z = torch.randn(2, 3)
    for bad in (0.5, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha"):
            entmax(z, bad)
    with pytest.raises(ValueError, match="0.9"):
        entmax(z, torch.tensor([[1.5], [0.9]]))
    with pytest.raises(ValueError, match="size 1 along dim"):
        entmax(z, torch.full((2, 3), 1.5))


def test_bad_types_and_dims():
    with pytest.raises(TypeError, match="floating"):
        entmax(torch.arange(6).view(2, 3), 1.5)
    with pytest.raises(TypeError, match="floating"):
        sparsemax(torch.ones(2, 3, dtype=torch.int32))
    with pytest.raises(IndexError):
        entmax15(torch.randn(2, 3), dim=2)
    with pytest.raises(TypeError):
        entmax(torch.randn(2, 3), "1.5")
