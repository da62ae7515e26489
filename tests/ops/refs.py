"""Independent exact references (sort-based, float64) used by the ops tests."""

import torch


def sparsemax_sort(z: torch.Tensor) -> torch.Tensor:
    """Exact sparsemax over the last dim by sorting (Martins & Astudillo 2016, Alg. 1)."""
    z = z.double()
    zs, _ = z.sort(-1, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    cs = zs.cumsum(-1)
    ok = 1 + k * zs > cs
    kz = ok.sum(-1, keepdim=True)
    tau = (cs.gather(-1, kz - 1) - 1) / kz
    return (z - tau).clamp_min(0)


def entmax15_sort(z: torch.Tensor) -> torch.Tensor:
    """Exact 1.5-entmax over the last dim by sorting (Peters et al. 2019, Alg. 2)."""
    x = z.double() / 2
    xs, _ = x.sort(-1, descending=True)
    k = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype)
    mean = xs.cumsum(-1) / k
    msq = (xs**2).cumsum(-1) / k
    delta = (1 - k * (msq - mean**2)) / k
    tau = mean - delta.clamp_min(0).sqrt()
    kz = (tau <= xs).sum(-1, keepdim=True)
    return (x - tau.gather(-1, kz - 1)).clamp_min(0) ** 2


def entmax_bisect64(z: torch.Tensor, alpha, n_iter: int = 200) -> torch.Tensor:
    """α-entmax over the last dim by bisection in float64, iterated to convergence."""
    z = z.double()
    a = torch.as_tensor(alpha, dtype=torch.float64)
    if a.dim():
        a = a.reshape(a.shape[:-1] + (1,)) if a.shape[-1:] == (1,) else a
    m = z.amax(-1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    x = (z - m) * (a - 1)
    lo = torch.full_like(m, -1.0)
    hi = torch.zeros_like(m)
    for _ in range(n_iter):
        mid = (lo + hi) / 2
        f = (x - mid).clamp_min(0) ** (1 / (a - 1))
        big = f.sum(-1, keepdim=True) > 1
        lo = torch.where(big, mid, lo)
        hi = torch.where(big, hi, mid)
    p = (x - (lo + hi) / 2).clamp_min(0) ** (1 / (a - 1))
    return p / p.sum(-1, keepdim=True)
