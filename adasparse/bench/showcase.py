"""A short showcase of the α-entmax family (what ``make demo`` runs until the toolkit lands)."""

from __future__ import annotations

import torch

from .. import LearnableAlpha, entmax, entmax15, entmax_loss, sparsemax


def main() -> int:
    torch.manual_seed(0)
    z = torch.tensor([[3.0, 2.5, 1.0, 0.2, -1.0, -2.0]])
    print("scores:", z.tolist()[0])
    for name, p in [
        ("softmax   (α=1)  ", torch.softmax(z, -1)),
        ("entmax    (α=1.3)", entmax(z, 1.3)),
        ("entmax15  (α=1.5)", entmax15(z)),
        ("sparsemax (α=2)  ", sparsemax(z)),
    ]:
        print(f"{name}: " + " ".join(f"{v:.3f}" for v in p[0].tolist()) + f"   non-zeros: {int((p > 0).sum())}/6")

    # learning α per "head" on a toy task: fit sparse targets with the Fenchel–Young loss
    alpha = LearnableAlpha(4, init=1.2)
    scores = torch.randn(4, 64, 10, requires_grad=True)
    target = torch.randint(0, 10, (4, 64))
    opt = torch.optim.Adam([scores, *alpha.parameters()], lr=0.1)
    for _ in range(100):
        loss = entmax_loss(scores, target, alpha=alpha().view(4, 1, 1), reduction="mean")
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(
        f"learned α per head after 100 Adam steps (Fenchel–Young loss on one-hot targets): "
        f"{[round(a, 3) for a in alpha().tolist()]}  loss {loss.item():.4f}"
    )
    return 0
