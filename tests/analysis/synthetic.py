"""Synthetic "models" for the analysis tests: α-entmax attention over random scores, with padding."""

from __future__ import annotations

import json

import torch

from adasparse import entmax
from adasparse.analysis.stats import AttentionBatch, analyze_attention

WORDS = ["a", "b", "c", "d", "e", "f", "g"]


def synthetic_batches(alpha: dict[str, torch.Tensor], n_batches: int = 2, B: int = 3, seed: int = 0):
    """Batches of entmax attention with per-head α (layers, heads) for enc_self/context/dec_self."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        S, T = 7, 6
        src_len = torch.randint(3, S + 1, (B,), generator=g)
        tgt_len = torch.randint(2, T + 1, (B,), generator=g)
        src_mask = torch.arange(S)[None] < src_len[:, None]  # (B, S)
        tgt_mask = torch.arange(T)[None] < tgt_len[:, None]  # (B, T)
        attn = {}
        for t, a in alpha.items():
            L, H = a.shape
            Q, K = (S, S) if t == "enc_self" else (T, S) if t == "context" else (T, T)
            kmask = (src_mask if t != "dec_self" else tgt_mask)[:, None, None, :]  # (B, 1, 1, K)
            if t == "dec_self":
                kmask = kmask & torch.ones(Q, K, dtype=torch.bool).tril()
            layers = []
            for li in range(L):
                z = torch.randn(B, H, Q, K, generator=g) * 2
                z = z.masked_fill(~kmask, float("-inf"))
                layers.append(entmax(z, a[li].view(1, H, 1, 1), -1))
            attn[t] = layers
        src_tokens = [[WORDS[i % len(WORDS)] for i in range(int(n) - 1)] + ["?"] for n in src_len]
        tgt_tokens = [[WORDS[(i + 3) % len(WORDS)] for i in range(int(n))] for n in tgt_len]
        src_words = [[i // 2 for i in range(int(n))] for n in src_len]
        tgt_words = [[i // 2 for i in range(int(n))] for n in tgt_len]
        out.append(AttentionBatch(attn, src_mask, tgt_mask, src_tokens, tgt_tokens, src_words, tgt_words))
    return out


def make_alpha(kind: str, L: int = 2, H: int = 4, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    types = ("enc_self", "context", "dec_self")
    if kind == "softmax":
        return {t: torch.ones(L, H) for t in types}
    if kind == "entmax15":
        return {t: torch.full((L, H), 1.5) for t in types}
    return {t: 1 + torch.rand(L, H, generator=g) for t in types}


def write_alpha_log(path, alpha_final: dict[str, torch.Tensor], steps=(0, 50, 100)):
    with open(path, "w") as f:
        for s in steps:
            frac = s / max(steps)
            f.write(json.dumps({"step": s, "loss": 3.0 - frac}) + "\n")
            a = {t: (1.5 + frac * (v - 1.5)).tolist() for t, v in alpha_final.items()}
            f.write(json.dumps({"step": s, "alpha": a}) + "\n")


def three_model_results(tmp):
    """AnalysisResults of a softmax, a 1.5-entmax and a learned-α synthetic model (α log written into ``tmp``)."""
    results = []
    for k, (kind, name) in enumerate([("softmax", "softmax"), ("entmax15", "1.5-entmax"), ("learned", "learned α")]):
        alpha = make_alpha(kind)
        log = None
        if kind == "learned":
            log = tmp / "train.jsonl"
            write_alpha_log(log, alpha)
        results.append(
            analyze_attention(
                synthetic_batches(alpha, seed=k),
                name=name,
                alpha=None if kind == "softmax" else alpha,
                alpha_log=log,
                keep_sentences=[0],
            )
        )
    return results
