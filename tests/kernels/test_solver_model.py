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
