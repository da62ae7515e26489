"""Independent exact references (sort-based, float64) used by the ops tests."""

import torch

from adasparse.ops.entmax import entmax_bisect_reference


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
    """α-entmax over the last dim by bisection in float64, iterated to convergence (the library's reference)."""
    return entmax_bisect_reference(z, alpha, dim=-1, n_iter=n_iter)
