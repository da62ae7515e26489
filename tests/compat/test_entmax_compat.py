"""``adasparse.compat.entmax`` against the real ``entmax`` package (values, gradients, API) and independent references.

The package (dev extra) is the reference wherever it is accurate; where it is not (α > 2 with large α, masked
rows, α = 1) a high-precision mpmath bisection, finite differences (gradcheck) or closed forms are.
"""

import inspect
import math
from functools import partial

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

import adasparse.compat.entmax as C
from adasparse.compat.entmax import activations as C_act
from adasparse.compat.entmax import losses as C_loss
from adasparse.compat.entmax import root_finding as C_rf

F64 = torch.float64


def _pkg():
    return pytest.importorskip("entmax", reason="the entmax package (dev extra) is the reference")


def _randn(*shape, seed=0, dtype=F64, scale=1.0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(tuple(shape), generator=g, dtype=dtype)).requires_grad_(grad)


def _close(a, b, tol=1e-9):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def _grads(fn, *inputs, seed=1):
    """Value and gradients of ⟨fn(*inputs), w⟩ for a fixed random w, w.r.t. every input that requires grad."""
    out = fn(*inputs)
    w = _randn(*out.shape, seed=seed, dtype=out.dtype)
    diff = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    return out.detach(), torch.autograd.grad((out * w).sum(), diff)


# --- the API --------------------------------------------------------------------------------------------------


def _public(module):
    return {
        name: obj
        for name, obj in vars(module).items()
        if not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__
    }


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_every_public_name_of_the_package_with_its_signature():
    pkg = _pkg()
    import entmax.activations
    import entmax.losses
    import entmax.root_finding

    pairs = [(entmax.activations, C_act), (entmax.root_finding, C_rf), (entmax.losses, C_loss)]
    for theirs, ours in pairs:
        names = _public(theirs)
        assert names, theirs
        for name, obj in names.items():
            mine = getattr(ours, name, None)
            assert mine is not None, f"{theirs.__name__}.{name} is missing"
            if isinstance(obj, type) and issubclass(obj, nn.Module):
                assert issubclass(mine, nn.Module)
                assert _params(mine.__init__) == _params(obj.__init__), name
            elif isinstance(obj, type) and issubclass(obj, torch.autograd.Function):
                assert issubclass(mine, torch.autograd.Function)
                assert _params(mine.forward) == _params(obj.forward), name
            else:
                assert _params(mine) == _params(obj), name
    for name in ("_sparsemax_threshold_and_support", "_entmax_threshold_and_support"):  # the package's tests use them
        assert _params(getattr(C_act, name)) == _params(getattr(entmax.activations, name))
    # the top-level names and what they are
    top = {n for n in vars(pkg) if not n.startswith("_") and n not in ("activations", "root_finding", "losses")}
    assert top <= set(vars(C)), top - set(vars(C))
    for name in top:
        assert getattr(C, name) is getattr(getattr(C, getattr(pkg, name).__module__.split(".")[-1]), name)
    assert C.__version__ == pkg.__version__ == "1.3"


# --- activations ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("name", ["sparsemax", "entmax15"])
def test_sparsemax_entmax15_values_and_gradients(name, dim):
    pkg = _pkg()
    x = _randn(3, 5, 7, seed=2, grad=True)
    for k in (None, 2, 100):
        ours, theirs = (
            _grads(partial(getattr(C, name), dim=dim, k=k), x),
            _grads(partial(getattr(pkg, name), dim=dim, k=k), x),
        )
        _close(ours[0], theirs[0])
        _close(ours[1][0], theirs[1][0])
    module = getattr(C, name.capitalize() if name == "sparsemax" else "Entmax15")(dim=dim, k=3)
    _close(module(x), getattr(pkg, name)(x, dim=dim))


def test_function_classes_and_their_defaults():
    pkg = _pkg()
    x = _randn(4, 6, seed=3, grad=True)
    _close(C_act.Entmax15Function.apply(x), pkg.activations.Entmax15Function.apply(x))  # dim=0, as the package
    _close(C_act.SparsemaxFunction.apply(x), pkg.activations.SparsemaxFunction.apply(x))  # dim=-1
    for fn in (C_act.SparsemaxFunction.apply, C_act.Entmax15Function.apply, C_rf.SparsemaxBisectFunction.apply):
        assert gradcheck(fn, (x,))
    assert gradcheck(lambda t: C_rf.EntmaxBisectFunction.apply(t, 1.3), (x,))


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_threshold_helpers_match_the_package(dim):
    pkg = _pkg()
    for coef in (1e-5, 0.5, 1e4):
        x = _randn(3, 4, 5, seed=4, dtype=torch.float32, scale=coef)
        for ours_fn, their_fn in [
            (C_act._sparsemax_threshold_and_support, pkg.activations._sparsemax_threshold_and_support),
            (C_act._entmax_threshold_and_support, pkg.activations._entmax_threshold_and_support),
        ]:
            tau, size = ours_fn(x, dim=dim, k=2)
            tau_p, size_p = their_fn(x, dim=dim)
            assert torch.equal(size, size_p)
            torch.testing.assert_close(tau, tau_p, rtol=1e-6, atol=1e-6 * coef)


# --- bisection mappings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.25, 1.5, 2.0, 0.5, 0.9, 2.5, 3.0])
def test_entmax_bisect_values_and_gradients_with_alpha_grad(alpha):
    pkg = _pkg()
    x = _randn(6, 9, seed=5, grad=True)
    a = torch.tensor(alpha, dtype=F64, requires_grad=True)
    ours, theirs = _grads(C.entmax_bisect, x, a), _grads(pkg.entmax_bisect, x, a)
    _close(ours[0], theirs[0])
    for g, h in zip(ours[1], theirs[1]):
        _close(g, h, 1e-7)
    _close(C.entmax_bisect(x, alpha), pkg.entmax_bisect(x, alpha))  # a Python float


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_per_row_alpha_tensor_with_grad_along_any_dim(dim):
    pkg = _pkg()
    shape = [3, 4, 5]
    x = _randn(*shape, seed=6, grad=True)
    ashape = list(shape)
    ashape[dim] = 1
    g = torch.Generator().manual_seed(7)
    for lo, hi in ((1.05, 2.0), (0.2, 3.0)):  # the fast kernels; then rows outside [1, 2] too (own solver)
        a = (lo + (hi - lo) * torch.rand(ashape, generator=g, dtype=F64)).requires_grad_()
        ours, theirs = (
            _grads(partial(C.entmax_bisect, dim=dim), x, a),
            _grads(partial(pkg.entmax_bisect, dim=dim), x, a),
        )
        _close(ours[0], theirs[0])
        for gu, gt in zip(ours[1], theirs[1]):
            _close(gu, gt, 1e-7)
    # α broadcast from fewer dims (one α per head of (B, H, Q, K) scores)
    x4 = _randn(2, 3, 4, 5, seed=8, grad=True)
    a = torch.tensor([1.2, 1.6, 2.4], dtype=F64).view(3, 1, 1).requires_grad_()
    ours, theirs = _grads(C.entmax_bisect, x4, a), _grads(pkg.entmax_bisect, x4, a)
    _close(ours[0], theirs[0])
    _close(ours[1][1], theirs[1][1], 1e-7)
    assert ours[1][1].shape == (3, 1, 1)


@pytest.mark.parametrize("alpha", [0.3, 0.95, 1.0, 1.04, 2.5, 4.0])
def test_gradcheck_own_solver_in_x_and_alpha(alpha):
    x = _randn(3, 5, seed=9, grad=True)
    a = torch.full((3, 1), alpha, dtype=F64, requires_grad=True)
    assert gradcheck(C.entmax_bisect, (x, a))
    assert gradcheck(lambda t, b: C_rf.EntmaxBisectFunction.apply(t, b, -1, None), (x, a))


def _mp_entmax(row, alpha, digits=None):
    """α-entmax of one row by bisection in `digits`-digit arithmetic (an independent reference).

    The default, 30 + 2α digits, resolves r = p^{α−1} down to p ≈ 1e-2 at α = 50 (smaller p at smaller α): enough
    for the rows used here, whose results agree with a 200-digit bisection.
    """
    mp = pytest.importorskip("mpmath")
    digits = digits or int(30 + 2 * alpha)
    with mp.workdps(digits):
        a = mp.mpf(alpha)
        z = [mp.mpf(float(v)) for v in row]
        x = [(a - 1) * (v - max(z)) for v in z]
        lo, hi = mp.mpf(-1), -(mp.mpf(len(z)) ** (1 - a))
        for _ in range(4 * digits):
            mid = (lo + hi) / 2
            if sum((xi - mid) ** (1 / (a - 1)) for xi in x if xi > mid) >= 1:  # (masked: xi = -inf)
                lo = mid
            else:
                hi = mid
        p = [(xi - lo) ** (1 / (a - 1)) if xi > lo else mp.mpf(0) for xi in x]
        return [float(v / sum(p)) for v in p]


@pytest.mark.parametrize("alpha", [5.0, 10.0, 50.0])
def test_large_alpha_is_exact_to_float64(alpha):
    """For α > 2 tiny r = x − τ carry sizeable p (α = 50: r ≈ 1e-98 for p = 0.01); the package's bisection on τ is
    off by up to 0.3 here, the anchored solver matches a high-precision bisection to float64 precision."""
    x = torch.cat([_randn(2, 7, seed=10), 1 + 1e-3 * _randn(1, 7, seed=11)])  # the last: a wide support
    x[0, :2] = torch.tensor([3.0, 2.99])  # two close top scores: the second one's r is far below τ's resolution
    x[1, :5] = torch.tensor([2.0, 2.0, 1.99, 1.99, 2.0 - 1e-9])  # ties and near-ties at the support's edge
    x[1, 6] = -math.inf
    ref = torch.tensor([_mp_entmax(row, alpha) for row in x], dtype=F64)
    _close(C.entmax_bisect(x, alpha), ref, 1e-13)
    assert C.entmax_bisect(x, alpha)[0, 1] > 1e-3
    # float32 in, float32 accuracy out (for the float32 scores)
    x32 = x[:1].float()
    ref32 = torch.tensor([_mp_entmax(row, alpha) for row in x32.double()], dtype=F64)
    torch.testing.assert_close(C.entmax_bisect(x32, alpha).double(), ref32, rtol=0, atol=1e-6)


def test_alpha_one_is_softmax_and_masked_rows():
    pkg = _pkg()
    x = _randn(4, 6, seed=11)
    _close(C.entmax_bisect(x, 1.0), torch.softmax(x, -1))
    _close(C.entmax_bisect(x, torch.tensor([[1.0], [0.5], [1.5], [3.0]], dtype=F64))[0], torch.softmax(x[0], -1))
    xm = x.clone()
    xm[:, 4:] = -math.inf
    xm[3] = -math.inf  # a fully masked row: zeros (the package: NaN)
    for alpha in (0.5, 1.0, 1.5, 2.0, 2.5, torch.tensor([[0.7], [1.3], [2.6], [1.5]], dtype=F64)):
        p = C.entmax_bisect(xm, alpha)
        assert torch.equal(p[3], torch.zeros(6, dtype=F64)) and (p[:3, 4:] == 0).all()
        a3 = alpha if not isinstance(alpha, torch.Tensor) else alpha[:3]
        _close(p[:3, :4], C.entmax_bisect(x[:3, :4], a3))
        if isinstance(alpha, torch.Tensor) or alpha != 1.0:  # the package: NaN at α = 1
            _close(p[:3, :4], pkg.entmax_bisect(x[:3, :4], a3))
    for fn in (C.sparsemax, C.entmax15, C.sparsemax_bisect, partial(C.normmax_bisect, alpha=1.7)):
        z = xm.clone().requires_grad_()
        p = fn(z)
        assert torch.equal(p[3], torch.zeros(6, dtype=F64))
        (p * torch.arange(6.0, dtype=F64)).sum().backward()
        assert torch.isfinite(z.grad).all() and (z.grad[3] == 0).all() and (z.grad[:, 4:] == 0).all()


def test_few_bisection_steps_give_the_packages_coarse_answer():
    """Below 24 steps the package's answer is not converged: the same number of steps on its bracket is taken."""
    pkg = _pkg()
    x = _randn(5, 8, seed=12)
    for n_iter in (3, 10):
        for alpha in (1.5, 2.5):
            for ensure in (True, False):
                ours = C.entmax_bisect(x, alpha, n_iter=n_iter, ensure_sum_one=ensure)
                _close(ours, pkg.entmax_bisect(x, alpha, n_iter=n_iter, ensure_sum_one=ensure), 1e-12)
            assert (ours - C.entmax_bisect(x, alpha)).abs().max() > 1e-6  # and it is coarse
        _close(C.normmax_bisect(x, 2.0, n_iter=n_iter), pkg.normmax_bisect(x, 2.0, n_iter=n_iter), 1e-12)
        _close(C.budget_bisect(x, 3.0, n_iter=n_iter), pkg.budget_bisect(x, 3.0, n_iter=n_iter), 1e-12)
    # sparsemax_bisect: the package ignores n_iter (always 50 steps), so the converged answer it is
    _close(C.sparsemax_bisect(x, n_iter=3), pkg.sparsemax_bisect(x, n_iter=3))


@pytest.mark.parametrize("alpha", [1.2, 2.0, 3.0, 7.0])
def test_normmax_values_and_gradients(alpha):
    pkg = _pkg()
    x = _randn(5, 8, seed=13, grad=True)
    ours, theirs = _grads(C.normmax_bisect, x, alpha), _grads(pkg.normmax_bisect, x, alpha)
    _close(ours[0], theirs[0])
    _close(ours[1][0], theirs[1][0], 1e-7)
    # the package returns no α gradient; ours is checked against finite differences
    a = torch.full((5, 1), alpha, dtype=F64, requires_grad=True)
    assert gradcheck(C.normmax_bisect, (x, a))
    # optimality: no feasible direction improves ⟨x, p⟩ − ‖p‖_α (compare with random points of the simplex)
    p = ours[0]
    obj = (x.detach() * p).sum(-1) - p.norm(p=alpha, dim=-1)
    q = torch.distributions.Dirichlet(torch.ones(8, dtype=F64)).sample((200, 5))
    assert (obj >= (x.detach() * q).sum(-1) - q.norm(p=alpha, dim=-1)).all()


def test_normmax_alpha_at_most_one_is_the_vertex():
    x = _randn(4, 6, seed=14, grad=True)
    for alpha in (0.3, 1.0):
        p = C.normmax_bisect(x, alpha)
        _close(p, nn.functional.one_hot(x.argmax(-1), 6).to(F64))
    tied = torch.tensor([[1.0, 3.0, 3.0, 0.0]], dtype=F64)
    _close(C.normmax_bisect(tied, 1.0), torch.tensor([[0.0, 0.5, 0.5, 0.0]], dtype=F64))
    assert gradcheck(C.normmax_bisect, (x, torch.full((4, 1), 0.5, dtype=F64)))


@pytest.mark.parametrize("budget", [0.0, 1.0, 1.7, 3.4, 4.0, 6.0])
def test_budget_values_and_gradients(budget):
    pkg = _pkg()
    x = _randn(5, 6, seed=15, grad=True)
    ours, theirs = _grads(C.budget_bisect, x, budget), _grads(pkg.budget_bisect, x, budget)
    _close(ours[0], theirs[0])
    _close(ours[0].sum(-1), torch.full((5,), budget, dtype=F64), 1e-12)
    assert ((ours[0] >= 0) & (ours[0] <= 1)).all()
    _close(ours[1][0], theirs[1][0], 1e-7)
    if budget != int(budget):  # an integer budget can leave no entry strictly inside (0, 1): p has a kink in B there
        b = torch.full((5, 1), budget, dtype=F64, requires_grad=True)
        assert gradcheck(C.budget_bisect, (x, b))
    _close(C.budget_bisect(x, 1.0), C.sparsemax(x))


def test_zero_dim_input_behaves_as_softmax():
    x = torch.tensor(0.3, dtype=F64)
    for fn in (C.sparsemax, C.entmax15, C.sparsemax_bisect, C.entmax_bisect, partial(C.entmax_bisect, alpha=3.0)):
        assert fn(x).shape == () and fn(x).item() == pytest.approx(1.0)


def test_modules():
    pkg = _pkg()
    x = _randn(3, 7, seed=16)
    _close(C.EntmaxBisect(1.3)(x), pkg.EntmaxBisect(1.3)(x))
    _close(C.NormmaxBisect(3)(x), pkg.NormmaxBisect(3)(x))
    _close(C.BudgetBisect(2)(x), pkg.BudgetBisect(2)(x))
    _close(C.SparsemaxBisect()(x), pkg.SparsemaxBisect()(x))  # n_iter=None by default, as the package's
    # a plain tensor α stays a plain attribute (state dicts load as with the package); a Parameter is trained
    assert "alpha" not in C.EntmaxBisect(torch.tensor(1.5)).state_dict()
    alpha = nn.Parameter(torch.tensor([[1.2], [1.5], [2.5]], dtype=F64))
    m = C.EntmaxBisect(alpha)
    assert list(m.parameters()) == [alpha] and "alpha" in m.state_dict()
    m(x).pow(2).sum().backward()
    assert alpha.grad is not None and torch.isfinite(alpha.grad).all() and alpha.grad.abs().sum() > 0
    with pytest.raises(AttributeError, match="before Module.__init__"):
        pkg.EntmaxBisect(nn.Parameter(torch.tensor(1.5)))  # what the package does with one


def test_bad_arguments():
    x = _randn(3, 4, seed=17)
    with pytest.raises(ValueError, match="alpha must be"):
        C.entmax_bisect(x, 0.0)
    with pytest.raises(ValueError, match="alpha must be"):
        C.entmax_bisect(x, torch.tensor([[1.5], [math.nan], [1.2]]))
    with pytest.raises(ValueError, match="must expand to"):
        C.entmax_bisect(x, torch.ones(4) * 1.5)
    with pytest.raises(TypeError, match="alpha must be"):
        C.entmax_bisect(x, "1.5")
    with pytest.raises(ValueError, match="n_iter"):
        C.entmax_bisect(x, 1.5, n_iter=0)
    with pytest.raises(ValueError, match="k must be"):
        C.sparsemax(x, k=0)
    with pytest.raises(ValueError, match="k must be"):
        C.Entmax15(k=-1)
    with pytest.raises(ValueError, match="budget"):
        C.budget_bisect(x, 5)
    with pytest.raises(ValueError, match="budget"):
        C.budget_bisect(x, -1)
    with pytest.raises(IndexError):
        C.entmax15(x, dim=2)
    with pytest.raises(TypeError, match="floating"):
        C.sparsemax(torch.ones(3, dtype=torch.long))


# --- losses ---------------------------------------------------------------------------------------------------


def _loss_data(n=7, c=9, seed=20):
    x = _randn(n, c, seed=seed, grad=True)
    y = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))
    return x, y


_FUNCTIONALS = [
    ("sparsemax_loss", ()),
    ("sparsemax_loss", (3,)),
    ("entmax15_loss", ()),
    ("sparsemax_bisect_loss", ()),
    ("entmax_bisect_loss", ()),
    ("entmax_bisect_loss", (1.2,)),
    ("entmax_bisect_loss", (0.6,)),
    ("entmax_bisect_loss", (2.6,)),
    ("normmax_bisect_loss", ()),
    ("normmax_bisect_loss", (3.0,)),
]


@pytest.mark.parametrize("name, args", _FUNCTIONALS)
def test_functional_losses_are_per_sample_and_match_the_package(name, args):
    pkg = _pkg()
    x, y = _loss_data()
    ours, theirs = (
        _grads(lambda t: getattr(C, name)(t, y, *args), x),
        _grads(lambda t: getattr(pkg, name)(t, y, *args), x),
    )
    assert ours[0].shape == (7,)
    _close(ours[0], theirs[0])
    _close(ours[1][0], theirs[1][0], 1e-7)
    assert (ours[0] >= -1e-12).all()


@pytest.mark.parametrize(
    "cls", ["SparsemaxLoss", "Entmax15Loss", "SparsemaxBisectLoss", "EntmaxBisectLoss", "NormmaxBisectLoss"]
)
@pytest.mark.parametrize("reduction", ["elementwise_mean", "sum", "none"])
def test_loss_modules_reductions_and_ignore_index(cls, reduction):
    pkg = _pkg()
    x, y = _loss_data(seed=21)
    for ignore in (-100, int(y[0])):
        ours = getattr(C, cls)(ignore_index=ignore, reduction=reduction)
        theirs = getattr(pkg, cls)(ignore_index=ignore, reduction=reduction)
        a, b = _grads(ours, x, y), _grads(theirs, x, y)
        _close(a[0], b[0])
        _close(a[1][0], b[1][0], 1e-7)
    per_sample = getattr(C, cls)(reduction="none")(x, y)
    default = getattr(C, cls)()
    assert default.reduction == "elementwise_mean" and default.ignore_index == -100
    _close(default(x, y), per_sample.mean())
    assert getattr(C, cls)(reduction="mean")(x, y) == default(x, y)


def test_negative_ignore_index_targets_are_ignored():
    """The package's modules crash on a target equal to a negative ignore_index; here it is ignored."""
    x, y = _loss_data(seed=22)
    y = y.clone()
    y[[1, 4]] = -100
    keep = y != -100
    for cls in (C.SparsemaxLoss, C.Entmax15Loss, C.EntmaxBisectLoss, C.NormmaxBisectLoss):
        none = cls(reduction="none")(x, y)
        assert (none[~keep] == 0).all()
        _close(none[keep], cls(reduction="none")(x[keep], y[keep]))
        _close(cls()(x, y), none.sum() / keep.sum())
        _close(cls(reduction="sum")(x, y), none.sum())
    assert torch.isnan(C.SparsemaxLoss()(x, torch.full_like(y, -100)))  # nothing left to average, as the package


def test_loss_alpha_gradients():
    """A tensor α gets ∂L/∂α (the package returns none): checked by finite differences, fast and own paths."""
    x, y = _loss_data(n=4, c=6, seed=23)
    for alpha in (1.4, 0.7, 2.6):
        a = torch.full((4, 1), alpha, dtype=F64, requires_grad=True)
        assert gradcheck(lambda t, b: C.entmax_bisect_loss(t, y, b), (x, a))
        assert gradcheck(lambda t, b: C_loss.EntmaxBisectLossFunction.apply(t, y, b, None), (x, a))
    a = torch.tensor(2.5, dtype=F64, requires_grad=True)
    assert gradcheck(lambda t, b: C.normmax_bisect_loss(t, y, b), (x, a))
    alpha = nn.Parameter(torch.tensor(1.3, dtype=F64))
    loss = C.EntmaxBisectLoss(alpha)
    assert list(loss.parameters()) == [alpha]
    loss(x, y).backward()
    assert alpha.grad is not None and alpha.grad != 0


def test_loss_function_classes_match_the_functionals():
    x, y = _loss_data(seed=24)
    pairs = [
        (C_loss.SparsemaxLossFunction.apply(x, y), C.sparsemax_loss(x, y)),
        (C_loss.SparsemaxBisectLossFunction.apply(x, y), C.sparsemax_bisect_loss(x, y)),
        (C_loss.Entmax15LossFunction.apply(x, y, 4), C.entmax15_loss(x, y)),
        (C_loss.EntmaxBisectLossFunction.apply(x, y, 1.7), C.entmax_bisect_loss(x, y, 1.7)),
        (C_loss.NormmaxBisectLossFunction.apply(x, y), C.normmax_bisect_loss(x, y)),
    ]
    for a, b in pairs:
        _close(a, b)
    assert gradcheck(lambda t: C_loss.Entmax15LossFunction.apply(t, y), (x,))


def test_losses_with_masked_classes():
    x, y = _loss_data(n=4, c=6, seed=25)
    xm = x.detach().clone()
    xm[:, 5] = -math.inf
    y = torch.tensor([0, 1, 2, 5])
    for fn in (C.sparsemax_loss, C.entmax15_loss, partial(C.entmax_bisect_loss, alpha=2.5), C.normmax_bisect_loss):
        loss = fn(xm, y)
        assert torch.isfinite(loss[:3]).all() and loss[3] == math.inf
        _close(loss[:3], fn(x.detach()[:3, :5], y[:3]))


def test_loss_bad_arguments():
    x, y = _loss_data()
    with pytest.raises(ValueError, match="outside"):
        C.sparsemax_loss(x, torch.full_like(y, 9))
    with pytest.raises(ValueError, match="outside"):
        C.entmax15_loss(x, torch.full_like(y, -100))  # functionals have no ignore_index (the package's neither)
    with pytest.raises(ValueError, match="2-D"):
        C.entmax15_loss(x.detach()[None], y[None])
    with pytest.raises(TypeError, match="integer"):
        C.sparsemax_loss(x, y.double())
    with pytest.raises(ValueError, match="reduction"):
        C.SparsemaxLoss(reduction="avg")
    with pytest.raises(ValueError, match="alpha"):
        C.EntmaxBisectLoss(alpha=-1.0)


@pytest.mark.parametrize("name", ["entmax_bisect", "normmax_bisect", "budget_bisect"])
def test_a_tensor_parameter_promotes_the_result_dtype_as_in_the_package(name):
    """float32 scores with a float64 α (or budget) give float64 probabilities in the package; so here, with the
    same values and gradients; a float16 parameter leaves float32 scores float32."""
    ent = _pkg()
    z = _randn(3, 6, seed=4, dtype=torch.float32, grad=True)
    for pdt in (torch.float64, torch.float16):
        param = torch.full((3, 1), 2.0 if name == "budget_bisect" else 1.3, dtype=pdt)
        ours, theirs = getattr(C, name)(z, param), getattr(ent, name)(z, param)
        assert ours.dtype == theirs.dtype == torch.promote_types(torch.float32, pdt)
        _close(ours, theirs, tol=1e-6 if pdt == torch.float64 else 1e-4)  # the package bisects in float32 there
    g = _randn(3, 6, seed=5)
    param = torch.full((3, 1), 2.0 if name == "budget_bisect" else 1.3, dtype=F64)
    (gz,) = torch.autograd.grad(getattr(C, name)(z, param), z, g)
    (gz_ref,) = torch.autograd.grad(getattr(ent, name)(z, param), z, g)
    assert gz.dtype == gz_ref.dtype == torch.float32
    _close(gz, gz_ref, tol=1e-5)
