"""The PyTorch model of the kernel's solver replays the kernel exactly, and its stopping rule is accurate.

The model is what counts passes at 4k tokens (``benchmarks/kernel_passes.py``); these tests are why its counts
can be trusted: under the Triton interpreter the kernel's own counters (solver passes, key-block visits, the
block mask) and thresholds match the model's, and the distribution the model's threshold defines matches
:func:`adasparse.ops.entmax.entmax`.
"""

import os

import pytest
import torch

from adasparse.kernels.solver_model import eps_f_for, simulate_solver
from adasparse.ops.entmax import entmax

DEVICE = torch.device(os.environ.get("ADASPARSE_TEST_DEVICE", "cpu"))


def _scores(B, H, Lq, Lk, D, dtype, seed, causal=False, pad_from=None):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, H, Lq, D, generator=g, dtype=torch.float64) * 1.5).to(dtype)
    k = (torch.randn(B, H, Lk, D, generator=g, dtype=torch.float64) * 1.5).to(dtype)
    v = torch.randn(B, H, Lk, D, generator=g, dtype=torch.float64).to(dtype)
    kpm = torch.ones(B, Lk, dtype=torch.bool)
    if pad_from is not None:
        kpm[-1, pad_from:] = False
    ok = kpm[:, None, None, :].expand(B, H, Lq, Lk)
    if causal:
        ok = ok & torch.ones(Lq, Lk, dtype=torch.bool).tril()
    return q, k, v, kpm, ok


@pytest.mark.triton
@pytest.mark.parametrize(
    "dtype, causal", [(torch.float32, True), pytest.param(torch.float64, False, marks=pytest.mark.fp64)]
)
def test_model_reproduces_the_kernels_counters(dtype, causal):
    if DEVICE.type == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    pytest.importorskip("triton")
    from adasparse.kernels.triton_entmax_attention import triton_entmax_attention_forward

    B, H, Lq, Lk, D = 1, 4, 45, 53, 16  # keys 30.. padded
    q, k, v, kpm, ok = _scores(B, H, Lq, Lk, D, dtype, seed=1, causal=causal, pad_from=30)
    alpha = torch.tensor([1.0, 1.25, 1.5, 2.0], dtype=dtype)  # softmax, general, both closed forms
    fwd = triton_entmax_attention_forward(
        *(x.to(DEVICE) for x in (q, k, v)), alpha.to(DEVICE), key_padding_mask=kpm.to(DEVICE), is_causal=causal,
        block_m=16, block_n=16,
    )  # fmt: skip
    z = (q @ k.transpose(-1, -2)) * D**-0.5
    c = simulate_solver(
        z.reshape(B * H, Lq, Lk), ok.reshape(B * H, Lq, Lk), alpha.repeat(B), block_m=16, block_n=16, is_causal=causal
    )
    assert torch.equal(fwd.newton_iters.reshape(B * H, -1).cpu().long(), c.passes)
    assert torch.equal(fwd.block_visits.reshape(B * H, -1).cpu().long(), c.block_visits)
    assert torch.equal(fwd.block_mask.reshape(c.nonempty.shape).cpu(), c.nonempty)
    assert torch.equal(fwd.topk_rounds.reshape(B * H, -1).cpu().long(), c.topk_rounds)
    tol = 1e-12 if dtype == torch.float64 else 5e-6
    torch.testing.assert_close(fwd.threshold.reshape(B * H, -1).cpu(), c.threshold, rtol=0, atol=tol)
    torch.testing.assert_close(fwd.normaliser.reshape(B * H, -1).cpu(), c.normaliser, rtol=0, atol=tol)
    softmax = torch.tensor([True, False, False, False]).repeat(B)  # α = 1 heads make no solver pass
    assert (c.passes[softmax] == 0).all() and (c.passes[~softmax] > 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_threshold_of_the_stopping_rule_is_accurate(dtype):
    """p = [1 + (α−1)(z − m − t)]₊^{1/(α−1)} / Σ at the model's t against entmax: error below the dtype's rounding."""
    H, L = 4, 300
    g = torch.Generator().manual_seed(2)
    z = torch.randn(H, L, L, generator=g) * 3.0  # float32 scores (the kernel's accumulation dtype)
    ok = torch.ones(H, L, L, dtype=torch.bool)
    alpha = torch.tensor([1.01, 1.3, 1.5, 2.0])
    c = simulate_solver(z, ok, alpha, eps_f=eps_f_for(dtype))
    a = alpha.view(H, 1, 1)
    m = z.amax(-1, keepdim=True)
    w = (1 + (a - 1) * (z - m - c.threshold[..., None])).clamp_min(0)
    p = w ** (1 / (a - 1)) / c.normaliser[..., None]
    want = entmax(z.double(), alpha.double().view(H, 1, 1), dim=-1)
    err = ((p.double() - want).norm() / want.norm()).item()
    assert err <= (2e-6 if dtype == torch.float32 else 2e-3), err  # bf16 itself rounds at 2⁻⁹ ≈ 2e-3


def test_halley_with_the_residual_stop_takes_fewer_passes_than_the_old_newton():
    H, L = 2, 512
    g = torch.Generator().manual_seed(3)
    z = torch.randn(H, L, L, generator=g) * 2.0
    ok = torch.ones(H, L, L, dtype=torch.bool)
    alpha = torch.tensor([1.25, 1.75])
    new = simulate_solver(z, ok, alpha, solver="halley", eps_f=eps_f_for(torch.bfloat16))
    old = simulate_solver(z, ok, alpha, solver="newton")
    assert new.passes.float().mean() + 3 <= old.passes.float().mean(), (new.passes, old.passes)
    assert new.sweeps < old.sweeps


def test_bad_arguments_raise():
    z = torch.zeros(1, 4, 4)
    with pytest.raises(ValueError, match="solver"):
        simulate_solver(z, z.bool(), torch.tensor([1.5]), solver="bisection")
    with pytest.raises(ValueError, match="one shape"):
        simulate_solver(z, torch.ones(1, 4, 3, dtype=torch.bool), torch.tensor([1.5]))


def _local_scores(H, L, D, seed):
    """Scores of q and k sharing a positional code (the benchmark's "local" inputs): mass near the diagonal."""
    from adasparse.bench.attention import make_inputs

    q, k, _ = make_inputs("local", 1, H, L, D, length_scale=8.0, seed=seed)
    return (q @ k.transpose(-1, -2))[0] * D**-0.5  # (H, L, L) float32


@pytest.mark.parametrize("kind", ["gaussian", "local"])
@pytest.mark.parametrize("topk", [1, 4, 8, 32])
def test_topk_start_never_exceeds_the_threshold(kind, topk):
    """The solver's start from the first pass's top-k is a valid lower bound: Σp ≥ 1 there (float64 sums of the
    float32 scores), and it is below the exact threshold of adasparse.entmax; causal and padded rows included."""
    from adasparse.kernels.solver_model import _tile_topk, topk_lower_bound

    H, L = 6, 200
    g = torch.Generator().manual_seed(5)
    z = torch.randn(H, L, L, generator=g) * 3.0 if kind == "gaussian" else _local_scores(H, L, 16, seed=5)
    ok = torch.ones(H, L, L, dtype=torch.bool).tril()  # causal: rows with 1 .. L keys
    ok[:, :, 150:170] = False  # a padded stretch
    alpha = torch.tensor([1.01, 1.1, 1.25, 1.5, 1.75, 2.0])
    zm = torch.where(ok, z, float("-inf"))
    m = zm.amax(-1)
    top, _ = _tile_topk(zm.view(H, L, 1, L // 8, 8), topk, torch.zeros(H, dtype=torch.bool))
    tol = 4 * torch.finfo(torch.float32).eps
    lo = topk_lower_bound(top.view(H, L, topk), m, alpha.view(H, 1), tol)
    a = alpha.double().view(H, 1, 1)
    y = zm.double() - m.double()[..., None] - lo.double()[..., None]
    psum = (1 + (a - 1) * y).clamp_min(0).pow(1 / (a - 1)).sum(-1)  # Σ p at t = lo, before normalising
    assert (psum >= 1).all(), psum.min()
    p = entmax(zm.double(), a, dim=-1)
    t_exact = (1 - p.amax(-1) ** (a[..., 0] - 1)) / (a[..., 0] - 1)  # the max key: p = (1 − (α−1)t)^{1/(α−1)}
    assert (lo.double() <= t_exact + 1e-12).all()
    if topk == 1:  # the max alone says nothing: F(t) = g(−t) − 1 has its root at the bracket's left end
        assert (lo == 0).all()
    else:  # an actual start, the closer the more scores it keeps (measured 0.84 / 0.94 / 0.995 gaussian, 0.62 /
        # 0.77 / 0.93 local)
        closeness = (lo.double().sum() / t_exact.sum()).item()
        assert closeness > {4: 0.55, 8: 0.7, 32: 0.9}[topk], closeness


def test_tile_topk_is_the_rows_k_largest():
    """Without ties the first pass's multiset is exactly the row's k largest scores, whatever the blocks."""
    from adasparse.kernels.solver_model import _tile_topk

    z = torch.randn(2, 3, 40, generator=torch.Generator().manual_seed(6))
    z[0, 0, 20:] = float("-inf")  # a row with 20 keys
    z[1, 2, 3:] = float("-inf")  # and one with fewer keys than k
    top, rounds = _tile_topk(z.view(2, 1, 3, 5, 8), 8, torch.tensor([False, True]))
    want = z.topk(8, -1).values
    assert torch.equal(top.view(2, 3, 8).sort(-1, descending=True).values, want)
    assert rounds[1].sum() == 0 and rounds[0].sum() > 0  # a softmax head (True) makes no rounds


def test_topk_start_saves_passes_and_block_visits():
    """On local scores the start from the top-k lets blocks die in the first solver pass: fewer passes and fewer
    visits than starting from t = 0, with the same distribution (both stop at the same residual)."""
    H, L = 4, 512
    z = _local_scores(H, L, 32, seed=7)
    ok = torch.ones(H, L, L, dtype=torch.bool)
    alpha = torch.tensor([1.25, 1.5, 1.75, 2.0])
    new = simulate_solver(z, ok, alpha, eps_f=1e-6)
    old = simulate_solver(z, ok, alpha, eps_f=1e-6, topk=0)
    assert new.passes.float().mean() + 1 <= old.passes.float().mean(), (new.passes, old.passes)
    assert new.sweeps < old.sweeps - 0.3, (new.sweeps, old.sweeps)
    a = alpha.view(H, 1, 1)
    m = z.amax(-1, keepdim=True)
    p = [(1 + (a - 1) * (z - m - c.threshold[..., None])).clamp_min(0) ** (1 / (a - 1)) for c in (new, old)]
    torch.testing.assert_close(p[0] / new.normaliser[..., None], p[1] / old.normaliser[..., None], rtol=0, atol=1e-5)
