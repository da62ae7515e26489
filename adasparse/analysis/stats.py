"""Statistics of attention heads: α, density, head diversity (JS), head roles.

Definitions follow the analysis of Correia, Niculae & Martins, "Adaptively Sparse Transformers" (EMNLP 2019).

Inputs
------
Attention comes as a mapping from attention type to a list over layers of probability tensors ``(B, H, Q, K)``:

========== ============================== ======= ======= =====================================
type       meaning                        queries keys    attendable keys of a real query
========== ============================== ======= ======= =====================================
enc_self   encoder self-attention         source  source  the real source tokens
context    encoder–decoder attention      target  source  the real source tokens
dec_self   decoder self-attention         target  target  real target tokens at or before it
self       decoder-only self-attention    target  target  real target tokens at or before it
========== ============================== ======= ======= =====================================

Masks are boolean, True = real token: ``src_mask`` ``(B, S)`` and ``tgt_mask`` ``(B, T)`` (``None`` = no
padding). A decoder-only model passes its sequence mask as ``tgt_mask``. Queries that are padding, or that have
no attendable key, are left out of every average.

Per head (``(layers, heads)`` arrays) and per layer, with ``p`` the weights of one query over its keys:

- **density**: mean over real queries of (#attendable keys with ``p > 0``) / (#attendable keys). This is the
  per-query average the paper describes; ``density_pooled`` divides the total non-zero count by the total number
  of attendable (query, key) pairs instead, i.e. by src² (encoder self), src×tgt (context) or T(T+1)/2 (causal
  decoder self) per sentence. The two agree for ``enc_self`` and ``context`` when all sentences have the same
  length; for causal self-attention the pooled version weighs late queries (more keys) more.
- **JS** (per layer): ``(H(mean_h p_h) − mean_h H(p_h)) / log H`` over the H heads of one query (Shannon
  entropy, natural log), averaged over real queries: 0 when all heads agree, 1 when they put their mass on
  disjoint keys (one-hot heads pointing at different keys).
- **prev / next** (self-attention only): mean weight that query ``i`` puts on key ``i − 1`` / ``i + 1``, over the
  queries where that key is attendable (``next`` is undefined under a causal mask and is ``None`` there).
- **merge** (self-attention only, needs word indices): for each token whose word has other pieces among its
  attendable keys, the total weight it gives to those other pieces of its own word; averaged over such tokens.
- **interrogation** (``enc_self`` and ``context``, needs source tokens): over sentences whose last non-special
  source token is ``"?"``, the mean weight that real queries put on that ``"?"``. Not for the causal types
  (``dec_self``, ``self``): a final ``"?"`` is attendable by no query but itself.

Word indices: per sentence a sequence of integers, one per token position, tokens with the same index belonging
to the same word; negative values (e.g. ``-1`` for padding or special tokens) belong to no word.

Use :class:`AttentionStats` to accumulate batch by batch, or :func:`analyze_attention` for an iterable of batches.
The α training log read by :func:`read_alpha_log` is JSON Lines, one object per line::

    {"step": 100, "alpha": {"enc_self": [[1.41, 1.87, ...], ...], "context": [...], "dec_self": [...]}}

with ``alpha[type][layer][head]`` (a language model's log has ``{"self": [[...], ...]}``); other keys are
ignored, lines without ``"alpha"`` are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._io import read_jsonl

__all__ = [
    "ATTENTION_TYPES",
    "CAUSAL_TYPES",
    "SELF_TYPES",
    "AttentionBatch",
    "AttentionStats",
    "AttentionMap",
    "TypeStats",
    "AnalysisResult",
    "AlphaTrajectory",
    "analyze_attention",
    "attendable_masks",
    "head_density",
    "head_density_pooled",
    "js_divergence",
    "layer_js",
    "prev_next_confidence",
    "merge_score",
    "interrogation_score",
    "top_heads",
    "read_alpha_log",
    "is_question_mark",
    "DEFAULT_SPECIAL_TOKENS",
    "ROLE_NAMES",
]

ATTENTION_TYPES = ("enc_self", "context", "dec_self", "self")
CAUSAL_TYPES = frozenset({"dec_self", "self"})
SELF_TYPES = frozenset({"enc_self", "dec_self", "self"})
ROLE_NAMES = ("prev", "next", "merge", "interrogation")
DEFAULT_SPECIAL_TOKENS = frozenset(
    {"<s>", "</s>", "<pad>", "<unk>", "<bos>", "<eos>", "[CLS]", "[SEP]", "[PAD]", "[UNK]", "<|endoftext|>"}
)


# ----------------------------------------------------------------------------------------------------------- masks
def _check_type(attn_type: str) -> None:
    if attn_type not in ATTENTION_TYPES:
        raise ValueError(f"unknown attention type {attn_type!r}; allowed: {', '.join(ATTENTION_TYPES)}")


def _seq_mask(mask: Tensor | None, batch: int, length: int, name: str, device: torch.device) -> Tensor:
    if mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(
            f"{name} must be a boolean tensor (True = real token), got {type(mask).__name__}"
            f"{'' if not isinstance(mask, Tensor) else ' of dtype ' + str(mask.dtype)}"
        )
    if tuple(mask.shape) != (batch, length):
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, expected ({batch}, {length}) from the attention")
    return mask.to(device)


def attendable_masks(
    attn_type: str,
    shape: Sequence[int],
    src_mask: Tensor | None = None,
    tgt_mask: Tensor | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Which queries count and which keys each may attend to.

    Args:
        attn_type: one of :data:`ATTENTION_TYPES`.
        shape: the attention's shape ``(B, H, Q, K)``.
        src_mask, tgt_mask: ``(B, S)`` / ``(B, T)`` booleans, True = real token; ``None`` = no padding.
        device: where the masks are built (default: the masks' device, else CPU).

    Returns:
        ``(query_mask, key_mask)``: ``(B, Q)`` real queries that have at least one attendable key, and
        ``(B, Q, K)`` attendable keys of each real query.
    """
    _check_type(attn_type)
    B, _, Q, K = shape
    if device is None:
        given = src_mask if src_mask is not None else tgt_mask
        device = given.device if given is not None else torch.device("cpu")
    if attn_type == "enc_self":
        if Q != K:
            raise ValueError(f"enc_self attention must be square, got Q={Q}, K={K}")
        q = _seq_mask(src_mask, B, Q, "src_mask", device)
        k = q
    elif attn_type == "context":
        q = _seq_mask(tgt_mask, B, Q, "tgt_mask", device)
        k = _seq_mask(src_mask, B, K, "src_mask", device)
    else:
        if Q != K:
            raise ValueError(f"{attn_type} attention must be square, got Q={Q}, K={K}")
        q = _seq_mask(tgt_mask, B, Q, "tgt_mask", device)
        k = q
    key_mask = q[:, :, None] & k[:, None, :]  # (B, Q, K)
    if attn_type in CAUSAL_TYPES:
        key_mask = key_mask & torch.ones(Q, K, dtype=torch.bool, device=device).tril()
    query_mask = key_mask.any(-1)  # (B, Q)
    return query_mask, key_mask


def _prob(p: Tensor, name: str = "attention") -> Tensor:
    if not isinstance(p, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(p).__name__}")
    if p.dim() != 4:
        raise ValueError(f"{name} must have shape (B, H, Q, K), got {tuple(p.shape)}")
    return p.detach().float()


# ------------------------------------------------------------------------------------------ per-batch statistics
# Each ``_*_sums`` function returns sums and counts so that batches can be accumulated exactly; the public
# functions of the same name divide them.
def _density_sums(p: Tensor, query_mask: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per sentence and head: Σ_q ratio_q (B, H), Σ_q nnz_q (B, H); per sentence: #queries (B,), #pairs (B,)."""
    km = key_mask[:, None]  # (B, 1, Q, K)
    nnz = ((p > 0) & km).sum(-1).double()  # (B, H, Q)
    att = key_mask.sum(-1).double()  # (B, Q)
    qm = query_mask[:, None].double()  # (B, 1, Q)
    ratio = nnz / att.clamp_min(1)[:, None]  # (B, H, Q)
    return (ratio * qm).sum(-1), (nnz * qm).sum(-1), query_mask.sum(-1).double(), (att * query_mask).sum(-1)


def head_density(p: Tensor, attn_type: str, src_mask: Tensor | None = None, tgt_mask: Tensor | None = None) -> Tensor:
    """Density per head ``(H,)``: mean over real queries of the fraction of attendable keys with weight > 0."""
    p = _prob(p)
    qm, km = attendable_masks(attn_type, p.shape, src_mask, tgt_mask, p.device)
    ratio, _, nq, _ = _density_sums(p, qm, km)
    return ratio.sum(0) / nq.sum().clamp_min(1)


def head_density_pooled(
    p: Tensor, attn_type: str, src_mask: Tensor | None = None, tgt_mask: Tensor | None = None
) -> Tensor:
    """Density per head ``(H,)`` as total non-zeros / total attendable (query, key) pairs (src², src×tgt, T(T+1)/2)."""
    p = _prob(p)
    qm, km = attendable_masks(attn_type, p.shape, src_mask, tgt_mask, p.device)
    _, nnz, _, pairs = _density_sums(p, qm, km)
    return nnz.sum(0) / pairs.sum().clamp_min(1)


def js_divergence(p: Tensor, key_mask: Tensor | None = None, dim_heads: int = 1) -> Tensor:
    """Normalised generalised Jensen–Shannon divergence between heads, per query.

    ``(H(mean_h p_h) − mean_h H(p_h)) / log H`` along ``dim_heads`` (Shannon entropy, 0·log 0 = 0). ``p`` is
    ``(B, H, Q, K)`` by default; ``key_mask`` ``(B, Q, K)`` zeroes weights on non-attendable keys first. Returns
    ``(B, Q)``; NaN when ``H = 1`` (no pair of heads to compare).
    """
    p = p.detach().float()
    if key_mask is not None:
        p = p * key_mask.unsqueeze(dim_heads)
    H = p.shape[dim_heads]
    ent = -torch.special.xlogy(p, p).sum(-1)  # (B, H, Q)
    mean = p.mean(dim_heads)
    ent_mean = -torch.special.xlogy(mean, mean).sum(-1)  # (B, Q)
    if H < 2:
        return torch.full_like(ent_mean, float("nan"))
    return (ent_mean - ent.mean(dim_heads)) / math.log(H)


def _js_sums(p: Tensor, query_mask: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor]:
    js = js_divergence(p, key_mask)  # (B, Q)
    qm = query_mask.double()
    return (js.double() * qm).sum(-1), qm.sum(-1)


def layer_js(p: Tensor, attn_type: str, src_mask: Tensor | None = None, tgt_mask: Tensor | None = None) -> float:
    """JS head diversity of one layer: :func:`js_divergence` averaged over real queries."""
    p = _prob(p)
    qm, km = attendable_masks(attn_type, p.shape, src_mask, tgt_mask, p.device)
    s, n = _js_sums(p, qm, km)
    return float(s.sum() / n.sum()) if n.sum() > 0 else float("nan")


def _diag_sums(p: Tensor, query_mask: Tensor, key_mask: Tensor, offset: int) -> tuple[Tensor, Tensor]:
    """Σ over queries i (real, key i+offset attendable) of p[i, i+offset] per head (H,), and the count."""
    # torch.diagonal(offset=o) on (Q, K) gives entries (i, i+o) for o ≥ 0 and (i−o, i) for o < 0.
    w = torch.diagonal(p, offset=offset, dim1=-2, dim2=-1)  # (B, H, n)
    ok = torch.diagonal(key_mask, offset=offset, dim1=-2, dim2=-1)  # (B, n)
    qs = query_mask[:, -offset:] if offset < 0 else query_mask[:, : query_mask.shape[1] - offset]
    ok = ok & qs
    return (w.double() * ok[:, None]).sum((0, 2)), ok.sum().double()


def prev_next_confidence(
    p: Tensor, attn_type: str, src_mask: Tensor | None = None, tgt_mask: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """Previous- and next-token confidence per head ``(H,)`` of a self-attention; ``next`` is ``None`` if causal."""
    if attn_type not in SELF_TYPES:
        raise ValueError(f"previous/next-token confidence needs a self-attention type, got {attn_type!r}")
    p = _prob(p)
    qm, km = attendable_masks(attn_type, p.shape, src_mask, tgt_mask, p.device)
    s, n = _diag_sums(p, qm, km, -1)
    prev = s / n if n > 0 else torch.full_like(s, float("nan"))
    if attn_type in CAUSAL_TYPES:
        return prev, None
    s, n = _diag_sums(p, qm, km, 1)
    return prev, (s / n if n > 0 else torch.full_like(s, float("nan")))


def _word_ids_tensor(word_ids: Any, batch: int, length: int, device: torch.device) -> Tensor:
    if isinstance(word_ids, Tensor):
        w = word_ids.to(device=device, dtype=torch.long)
        if w.dim() != 2 or w.shape[0] != batch or w.shape[1] > length:
            raise ValueError(f"word ids must have shape ({batch}, ≤{length}), got {tuple(w.shape)}")
    else:
        rows = list(word_ids)
        if len(rows) != batch or any(len(r) > length for r in rows):
            raise ValueError(f"word ids must be {batch} sequences of at most {length} integers")
        w = torch.full((batch, length), -1, dtype=torch.long)
        for b, r in enumerate(rows):
            if len(r):
                w[b, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
        w = w.to(device)
    if w.shape[1] < length:
        w = torch.cat([w, w.new_full((batch, length - w.shape[1]), -1)], 1)  # (B, L)
    return w


def _merge_sums(p: Tensor, query_mask: Tensor, key_mask: Tensor, word_ids: Tensor) -> tuple[Tensor, Tensor]:
    Q = p.shape[-2]
    same = (word_ids[:, :, None] == word_ids[:, None, :]) & (word_ids[:, :, None] >= 0)  # (B, Q, K)
    same = same & ~torch.eye(Q, dtype=torch.bool, device=p.device) & key_mask
    tok = same.any(-1) & query_mask  # (B, Q): tokens whose word has other attendable pieces
    mass = (p * same[:, None]).sum(-1).double()  # (B, H, Q)
    return (mass * tok[:, None]).sum((0, 2)), tok.sum().double()


def merge_score(
    p: Tensor,
    attn_type: str,
    word_ids: Tensor | Sequence[Sequence[int]],
    src_mask: Tensor | None = None,
    tgt_mask: Tensor | None = None,
) -> Tensor:
    """Subword-merging score per head ``(H,)``: mean weight a piece gives to the other pieces of its own word.

    Averaged over the tokens whose word has at least one other attendable piece; NaN if there is none.
    """
    if attn_type not in SELF_TYPES:
        raise ValueError(f"the merging score needs a self-attention type, got {attn_type!r}")
    p = _prob(p)
    qm, km = attendable_masks(attn_type, p.shape, src_mask, tgt_mask, p.device)
    w = _word_ids_tensor(word_ids, p.shape[0], p.shape[-1], p.device)
    s, n = _merge_sums(p, qm, km, w)
    return s / n if n > 0 else torch.full_like(s, float("nan"))


def is_question_mark(token: str) -> bool:
    """True for ``"?"`` possibly carrying a SentencePiece/BPE word marker (``"▁?"``, ``"Ġ?"``)."""
    return token.strip().lstrip("▁Ġ").strip() == "?"


def _question_positions(
    tokens: Sequence[Sequence[str]], mask: Tensor, special: frozenset[str] = DEFAULT_SPECIAL_TOKENS
) -> list[int | None]:
    """Per sentence: position of a final ``"?"`` (last real, non-special token), or None."""
    out: list[int | None] = []
    real = mask.cpu()
    for b, toks in enumerate(tokens):
        pos = None
        for i in range(min(len(toks), real.shape[1]) - 1, -1, -1):
            if not real[b, i] or toks[i] in special:
                continue
            pos = i if is_question_mark(toks[i]) else None
            break
        out.append(pos)
    return out


def _interrogation_sums(
    p: Tensor, query_mask: Tensor, key_mask: Tensor, positions: Sequence[int | None]
) -> tuple[Tensor, Tensor, int]:
    s = torch.zeros(p.shape[1], dtype=torch.float64, device=p.device)
    n = torch.zeros((), dtype=torch.float64, device=p.device)
    sentences = 0
    for b, k in enumerate(positions):
        if k is None:
            continue
        ok = query_mask[b] & key_mask[b, :, k]  # (Q,)
        s += (p[b, :, :, k].double() * ok).sum(-1)
        n += ok.sum()
        sentences += 1
    return s, n, sentences


def interrogation_score(
    p: Tensor,
    attn_type: str,
    src_tokens: Sequence[Sequence[str]],
    src_mask: Tensor | None = None,
    tgt_mask: Tensor | None = None,
    special_tokens: frozenset[str] = DEFAULT_SPECIAL_TOKENS,
) -> Tensor:
    """Interrogation score per head ``(H,)``: mean weight on a final source ``"?"`` (``enc_self``/``context``)."""
    if attn_type not in ("enc_self", "context"):
        raise ValueError(f"the interrogation score needs source keys (enc_self or context), got {attn_type!r}")
    p = _prob(p)
    qm, km = attendable_masks(attn_type, p.shape, src_mask, tgt_mask, p.device)
    smask = _seq_mask(src_mask, p.shape[0], p.shape[-1], "src_mask", p.device)
    s, n, _ = _interrogation_sums(p, qm, km, _question_positions(src_tokens, smask, special_tokens))
    return s / n if n > 0 else torch.full_like(s, float("nan"))


# ------------------------------------------------------------------------------------------------------- results
def _jsonable(x: Any) -> Any:
    """numpy/torch → nested lists; NaN/inf → None (valid JSON)."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


@dataclass
class AlphaTrajectory:
    """α over training: ``steps`` ``(N,)`` and per type an array ``(N, layers, heads)``."""

    steps: np.ndarray
    alpha: dict[str, np.ndarray]

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({"steps": self.steps, "alpha": self.alpha})

    def turnarounds(self, min_move: float = 0.05) -> list[dict[str, Any]]:
        """Heads whose α changed direction: it moved by at least ``min_move`` one way from its start to an
        extremum, then by at least ``min_move`` back. One entry per such head (its largest swing), with the
        attention type, layer, head, the step of the turn and α at the start, the turn and the end."""
        out = []
        for t, a in self.alpha.items():  # (N, layers, heads)
            for layer in range(a.shape[1]):
                for head in range(a.shape[2]):
                    x = a[:, layer, head]
                    best = None
                    for k in (int(np.argmin(x)), int(np.argmax(x))):
                        swing = min(abs(x[k] - x[0]), abs(x[k] - x[-1]))
                        if swing >= min_move and (best is None or swing > best[1]):
                            best = (k, swing)
                    if best is not None:
                        k = best[0]
                        out.append(
                            {"type": t, "layer": layer, "head": head, "step": int(self.steps[k]),
                             "start": float(x[0]), "turn": float(x[k]), "end": float(x[-1])}
                        )  # fmt: skip
        return out

    def moved_from_start(self, tol: float = 0.05) -> dict[str, Any]:
        """Whether α as a whole left its initial draw, over all heads of all types: how many heads end below
        and above their start, the exact two-sided sign test's p-value of that split (the chance of one at least
        as lopsided if each head were as likely to end up as down), the mean and largest move, and
        ``settled_step``: the first logged step from which every head stays within ``tol`` of its final α."""
        a = np.concatenate([x.reshape(x.shape[0], -1) for x in self.alpha.values()], axis=1)  # (N, all heads)
        start, end = a[0], a[-1]
        down, up = int((end < start).sum()), int((end > start).sum())
        n, k = down + up, min(down, up)
        p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
        far = np.abs(a - end).max(axis=1) > tol  # (N,): some head not yet within tol of its end
        last_far = int(np.nonzero(far)[0][-1]) if far.any() else -1
        return {
            "heads": int(a.shape[1]), "down": down, "up": up, "sign_test_p": p,
            "mean_move": float(np.abs(end - start).mean()), "max_move": float(np.abs(end - start).max()),
            "settled_step": int(self.steps[last_far + 1]),
        }  # fmt: skip


def read_alpha_log(path: str | Path) -> AlphaTrajectory:
    """Read the α trajectory from a JSON Lines training log (format in the module docstring).

    Lines are read by :func:`adasparse._io.read_jsonl`: a last line cut short (a run killed mid-write, or one
    still running) is skipped with a warning; an unreadable line before it raises ``ValueError`` naming it.
    """
    steps: list[int] = []
    series: dict[str, list[np.ndarray]] = {}
    for lineno, rec in read_jsonl(path):
        if not isinstance(rec, dict) or "alpha" not in rec:
            continue
        if "step" not in rec or not isinstance(rec["alpha"], dict):
            raise ValueError(f"{path}:{lineno}: an α record needs 'step' and 'alpha' = {{type: [[α]]}}")
        if series and set(rec["alpha"]) != set(series):
            raise ValueError(f"{path}:{lineno}: attention types {sorted(rec['alpha'])} differ from {sorted(series)}")
        for t, a in rec["alpha"].items():
            arr = np.asarray(a, dtype=np.float64)
            if arr.ndim != 2:
                raise ValueError(f"{path}:{lineno}: alpha[{t!r}] must be [[α per head] per layer], got {arr.shape}")
            if series.get(t) and series[t][0].shape != arr.shape:
                raise ValueError(f"{path}:{lineno}: alpha[{t!r}] has shape {arr.shape}, earlier {series[t][0].shape}")
            series.setdefault(t, []).append(arr)
        steps.append(int(rec["step"]))
    if not steps:
        raise ValueError(f"{path}: no line with 'step' and 'alpha' found")
    return AlphaTrajectory(np.asarray(steps), {t: np.stack(v) for t, v in series.items()})


@dataclass
class TypeStats:
    """Statistics of one attention type; per-head arrays are ``(layers, heads)``, per-layer ones ``(layers,)``.

    Role scores that do not apply to the type (or lack the inputs they need) are ``None``; a head with no
    eligible query has NaN.
    """

    alpha: np.ndarray | None
    density: np.ndarray
    density_pooled: np.ndarray
    js: np.ndarray
    prev: np.ndarray | None
    next: np.ndarray | None
    merge: np.ndarray | None
    interrogation: np.ndarray | None
    num_queries: int
    merge_tokens: int
    question_sentences: int
    lengths: np.ndarray  # (n,) distinct key-sequence lengths
    length_counts: np.ndarray  # (n,) sentences per length
    density_by_length: np.ndarray  # (n, layers, heads)

    @property
    def num_layers(self) -> int:
        return int(self.density.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.density.shape[1])

    def layer_summary(self) -> dict[str, np.ndarray | None]:
        """Per layer: mean α over heads (or None), mean density over heads, JS."""
        return {
            "alpha_mean": None if self.alpha is None else self.alpha.mean(1),
            "density_mean": self.density.mean(1),
            "js": self.js,
        }

    def role(self, name: str) -> np.ndarray | None:
        if name not in ROLE_NAMES:
            raise ValueError(f"unknown head role {name!r}; allowed: {', '.join(ROLE_NAMES)}")
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["layer_summary"] = self.layer_summary()
        return _jsonable(d)


@dataclass
class AttentionMap:
    """Attention of one sentence, trimmed to its real tokens: per type a list over layers of ``(H, Q, K)``."""

    index: int
    src_tokens: list[str] | None
    tgt_tokens: list[str] | None
    attention: dict[str, list[np.ndarray]]

    def axis_tokens(self, attn_type: str) -> tuple[list[str] | None, list[str] | None]:
        """(query tokens, key tokens) for a type."""
        if attn_type == "enc_self":
            return self.src_tokens, self.src_tokens
        if attn_type == "context":
            return self.tgt_tokens, self.src_tokens
        return self.tgt_tokens, self.tgt_tokens

    def to_dict(self) -> dict[str, Any]:
        """JSON form; weights are written with 7 significant digits (float32 precision; exact zeros stay 0)."""
        attention = {t: [_round_sig(w) for w in layers] for t, layers in self.attention.items()}
        return _jsonable(
            {"index": self.index, "src_tokens": self.src_tokens, "tgt_tokens": self.tgt_tokens, "attention": attention}
        )


def _round_sig(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """Round to ``digits`` significant digits (keeps exact zeros and tiny non-zero weights apart)."""
    x = np.asarray(x, dtype=np.float64)
    mag = np.floor(np.log10(np.abs(np.where(x != 0, x, 1.0))))
    scale = 10.0 ** (digits - 1 - mag)
    return np.round(x * scale) / scale


@dataclass
class AnalysisResult:
    """Everything the report shows for one model."""

    name: str
    num_sentences: int
    types: dict[str, TypeStats]
    alpha_trajectory: AlphaTrajectory | None = None
    maps: list[AttentionMap] = field(default_factory=list)

    def top_heads(self, attn_type: str, role: str, k: int = 5) -> list[dict[str, Any]]:
        """The ``k`` heads of a type with the highest score for a role, with their α (see :func:`top_heads`)."""
        ts = self.types[attn_type]
        score = ts.role(role)
        return [] if score is None else top_heads(score, ts.alpha, k)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_sentences": self.num_sentences,
            "types": {t: s.to_dict() for t, s in self.types.items()},
            "top_heads": {
                t: {r: _jsonable(self.top_heads(t, r)) for r in ROLE_NAMES if s.role(r) is not None}
                for t, s in self.types.items()
            },
            "alpha_trajectory": None if self.alpha_trajectory is None else self.alpha_trajectory.to_dict(),
            "attention_maps": [m.to_dict() for m in self.maps],
        }


def top_heads(score: Any, alpha: Any = None, k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` highest-scoring heads of a ``(layers, heads)`` score: dicts with layer, head, score, alpha.

    NaN scores are skipped; ties keep (layer, head) order; ``alpha`` is ``None`` when not given.
    """
    s = np.asarray(score, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"score must be (layers, heads), got shape {s.shape}")
    a = None if alpha is None else np.asarray(alpha, dtype=np.float64)
    if a is not None and a.shape != s.shape:
        raise ValueError(f"alpha has shape {a.shape}, score {s.shape}; they must match")
    flat = [(v, i) for i, v in enumerate(s.ravel()) if math.isfinite(v)]
    flat.sort(key=lambda t: (-t[0], t[1]))
    out = []
    for v, i in flat[:k]:
        layer, head = divmod(i, s.shape[1])
        out.append(
            {"layer": layer, "head": head, "score": float(v), "alpha": None if a is None else float(a[layer, head])}
        )
    return out


# --------------------------------------------------------------------------------------------------- accumulator
@dataclass(frozen=True)
class AttentionBatch:
    """One batch of attention probabilities and what is needed to interpret them (see the module docstring).

    ``attention``: type → list over layers of ``(B, H, Q, K)``. Tokens are per sentence lists of strings for the
    real positions (index = position); word ids as described in the module docstring.
    """

    attention: Mapping[str, Sequence[Tensor]]
    src_mask: Tensor | None = None
    tgt_mask: Tensor | None = None
    src_tokens: Sequence[Sequence[str]] | None = None
    tgt_tokens: Sequence[Sequence[str]] | None = None
    src_word_ids: Tensor | Sequence[Sequence[int]] | None = None
    tgt_word_ids: Tensor | Sequence[Sequence[int]] | None = None


class _TypeAcc:
    """Running sums for one attention type."""

    def __init__(self, layers: int, heads: int, causal: bool):
        z = lambda *s: np.zeros(s, dtype=np.float64)  # noqa: E731
        self.layers, self.heads, self.causal = layers, heads, causal
        self.ratio, self.nnz = z(layers, heads), z(layers, heads)
        self.nq, self.pairs = 0.0, 0.0
        self.js, self.js_n = z(layers), z(layers)
        self.prev, self.prev_n = z(layers, heads), 0.0
        self.next, self.next_n = z(layers, heads), 0.0
        self.merge, self.merge_n, self.merge_seen = z(layers, heads), 0.0, False
        self.inter, self.inter_n, self.inter_seen, self.questions = z(layers, heads), 0.0, False, 0
        self.by_len: dict[int, list] = {}  # length → [Σ density (layers, heads), #sentences]


def _real_tokens(tokens: Sequence[Sequence[str]] | None, mask: Tensor | None, b: int) -> list[str] | None:
    """Tokens of sentence ``b`` at its real positions (``tokens[b][i]`` is position ``i``)."""
    if tokens is None:
        return None
    toks = list(tokens[b])
    if mask is None:
        return toks
    return [tok for tok, m in zip(toks, mask[b].tolist()) if m]


class AttentionStats:
    """Accumulates attention statistics batch by batch; :meth:`result` returns an :class:`AnalysisResult`.

    Args:
        name: model name shown in the report.
        keep_sentences: global sentence indices (counted over all batches fed so far) whose attention maps are
            kept for the attention-map figures.
        special_tokens: tokens skipped when looking for a final ``"?"``.
    """

    def __init__(
        self,
        name: str = "model",
        keep_sentences: Iterable[int] = (0, 1),
        special_tokens: frozenset[str] = DEFAULT_SPECIAL_TOKENS,
    ):
        self.name = name
        self.keep_sentences = sorted({int(i) for i in keep_sentences})
        if any(i < 0 for i in self.keep_sentences):
            raise ValueError(f"keep_sentences must be non-negative indices, got {self.keep_sentences}")
        self.special_tokens = frozenset(special_tokens)
        self.num_sentences = 0
        self._acc: dict[str, _TypeAcc] = {}
        self._maps: list[AttentionMap] = []

    @torch.no_grad()
    def update(self, batch: AttentionBatch | None = None, **kwargs: Any) -> None:
        """Add one batch: an :class:`AttentionBatch` or its fields as keyword arguments."""
        if batch is None:
            batch = AttentionBatch(**kwargs)
        elif kwargs:
            raise TypeError("give either an AttentionBatch or keyword arguments, not both")
        if not batch.attention:
            raise ValueError("the batch has no attention")
        B = None
        for t, layers in batch.attention.items():
            _check_type(t)
            layers = list(layers)
            if not layers:
                raise ValueError(f"attention[{t!r}] has no layers")
            shapes = {tuple(_prob(x, f"attention[{t!r}]").shape[:2]) for x in layers}
            if len(shapes) != 1:
                raise ValueError(f"attention[{t!r}]: layers disagree on (B, H): {sorted(shapes)}")
            (b, h) = shapes.pop()
            if B is not None and b != B:
                raise ValueError(f"attention[{t!r}] has batch size {b}, other types {B}")
            B = b
            acc = self._acc.get(t)
            if acc is None:
                acc = self._acc[t] = _TypeAcc(len(layers), h, t in CAUSAL_TYPES)
            elif (acc.layers, acc.heads) != (len(layers), h):
                raise ValueError(
                    f"attention[{t!r}] has {len(layers)} layers × {h} heads, earlier batches {acc.layers} × {acc.heads}"
                )
            self._update_type(t, acc, layers, batch)
        self._keep_maps(batch, B)
        self.num_sentences += B

    def _update_type(self, t: str, acc: _TypeAcc, layers: list[Tensor], batch: AttentionBatch) -> None:
        p0 = layers[0]
        qm, km = attendable_masks(t, p0.shape, batch.src_mask, batch.tgt_mask, p0.device)
        key_len = km.any(1).sum(-1)  # (B,) keys that some real query may attend to = the real key tokens
        word_ids = batch.src_word_ids if t == "enc_self" else batch.tgt_word_ids if t in SELF_TYPES else None
        w = None
        if word_ids is not None:
            w = _word_ids_tensor(word_ids, p0.shape[0], p0.shape[-1], p0.device)
            acc.merge_seen = True
        qpos = None
        if t in ("enc_self", "context") and batch.src_tokens is not None:
            smask = _seq_mask(batch.src_mask, p0.shape[0], p0.shape[-1], "src_mask", p0.device)
            qpos = _question_positions(batch.src_tokens, smask, self.special_tokens)
            acc.inter_seen = True
        per_sentence = np.zeros((p0.shape[0], acc.layers, acc.heads))
        nq_sent = None
        for li, p in enumerate(layers):
            p = _prob(p)
            ratio, nnz, nq, pairs = _density_sums(p, qm, km)
            acc.ratio[li] += ratio.sum(0).cpu().numpy()
            acc.nnz[li] += nnz.sum(0).cpu().numpy()
            per_sentence[:, li] = (ratio / nq.clamp_min(1)[:, None]).cpu().numpy()
            if li == 0:
                acc.nq += float(nq.sum())
                acc.pairs += float(pairs.sum())
                nq_sent = nq.cpu().numpy()
            s, n = _js_sums(p, qm, km)
            acc.js[li] += float(s.sum())
            acc.js_n[li] += float(n.sum())
            if t in SELF_TYPES:
                s, n = _diag_sums(p, qm, km, -1)
                acc.prev[li] += s.cpu().numpy()
                if li == 0:
                    acc.prev_n += float(n)
                if t not in CAUSAL_TYPES:
                    s, n = _diag_sums(p, qm, km, 1)
                    acc.next[li] += s.cpu().numpy()
                    if li == 0:
                        acc.next_n += float(n)
                if w is not None:
                    s, n = _merge_sums(p, qm, km, w)
                    acc.merge[li] += s.cpu().numpy()
                    if li == 0:
                        acc.merge_n += float(n)
            if qpos is not None:
                s, n, q = _interrogation_sums(p, qm, km, qpos)
                acc.inter[li] += s.cpu().numpy()
                if li == 0:
                    acc.inter_n += float(n)
                    acc.questions += q
        for b, length in enumerate(key_len.tolist()):
            if nq_sent[b] == 0:
                continue
            entry = acc.by_len.setdefault(int(length), [np.zeros((acc.layers, acc.heads)), 0])
            entry[0] += per_sentence[b]
            entry[1] += 1

    def _keep_maps(self, batch: AttentionBatch, B: int) -> None:
        for i in self.keep_sentences:
            b = i - self.num_sentences
            if not 0 <= b < B:
                continue
            attention: dict[str, list[np.ndarray]] = {}
            for t, layers in batch.attention.items():
                p0 = layers[0]
                qm, km = attendable_masks(t, p0.shape, batch.src_mask, batch.tgt_mask)
                qi = qm[b].nonzero().flatten().cpu()
                ki = km[b].any(0).nonzero().flatten().cpu()
                attention[t] = [_prob(p)[b].cpu()[:, qi][:, :, ki].numpy() for p in layers]  # (H, Q', K')
            src = _real_tokens(batch.src_tokens, batch.src_mask, b)
            tgt = _real_tokens(batch.tgt_tokens, batch.tgt_mask, b)
            self._maps.append(AttentionMap(i, src, tgt, attention))

    def result(
        self,
        alpha: Mapping[str, Any] | None = None,
        alpha_log: str | Path | AlphaTrajectory | None = None,
    ) -> AnalysisResult:
        """The statistics so far.

        Args:
            alpha: type → ``(layers, heads)`` α per head (tensor, array or nested lists); a float is broadcast
                (fixed-α models); ``None`` or a missing type means α is not shown for it.
            alpha_log: path of the JSON Lines training log, or an already read :class:`AlphaTrajectory`.
        """
        if not self._acc:
            raise ValueError("no batch was added; call update() first")
        alpha = dict(alpha or {})
        unknown = set(alpha) - set(self._acc)
        if unknown:
            raise ValueError(
                f"alpha given for attention types {sorted(unknown)} not in the attention ({sorted(self._acc)})"
            )
        types: dict[str, TypeStats] = {}
        for t in (t for t in ATTENTION_TYPES if t in self._acc):
            acc = self._acc[t]
            a = alpha.get(t)
            if a is not None:
                if isinstance(a, Tensor):
                    a = a.detach().cpu().double().numpy()
                a = np.asarray(a, dtype=np.float64)
                if a.ndim == 0:
                    a = np.full((acc.layers, acc.heads), float(a))
                if a.shape != (acc.layers, acc.heads):
                    raise ValueError(
                        f"alpha[{t!r}] has shape {a.shape}, the attention has "
                        f"({acc.layers}, {acc.heads}) (layers, heads)"
                    )

            def div(s, n):
                return s / n if n > 0 else np.full_like(s, np.nan)

            lengths = np.asarray(sorted(acc.by_len), dtype=np.int64)
            counts = np.asarray([acc.by_len[k][1] for k in lengths], dtype=np.int64)
            dbl = (
                np.stack([acc.by_len[k][0] / acc.by_len[k][1] for k in lengths])
                if len(lengths)
                else np.zeros((0, acc.layers, acc.heads))
            )
            types[t] = TypeStats(
                alpha=a,
                density=div(acc.ratio, acc.nq),
                density_pooled=div(acc.nnz, acc.pairs),
                js=np.where(acc.js_n > 0, acc.js / np.maximum(acc.js_n, 1), np.nan),
                prev=div(acc.prev, acc.prev_n) if t in SELF_TYPES else None,
                next=div(acc.next, acc.next_n) if t in SELF_TYPES and not acc.causal else None,
                merge=div(acc.merge, acc.merge_n) if t in SELF_TYPES and acc.merge_seen else None,
                interrogation=div(acc.inter, acc.inter_n) if acc.inter_seen else None,
                num_queries=int(acc.nq),
                merge_tokens=int(acc.merge_n),
                question_sentences=int(acc.questions),
                lengths=lengths,
                length_counts=counts,
                density_by_length=dbl,
            )
        traj = alpha_log if isinstance(alpha_log, AlphaTrajectory) or alpha_log is None else read_alpha_log(alpha_log)
        return AnalysisResult(self.name, self.num_sentences, types, traj, list(self._maps))


def analyze_attention(
    batches: Iterable[AttentionBatch | Mapping[str, Any]],
    *,
    name: str = "model",
    alpha: Mapping[str, Any] | None = None,
    alpha_log: str | Path | AlphaTrajectory | None = None,
    keep_sentences: Iterable[int] = (0, 1),
    special_tokens: frozenset[str] = DEFAULT_SPECIAL_TOKENS,
) -> AnalysisResult:
    """Statistics over an iterable of batches (each an :class:`AttentionBatch` or a dict of its fields).

    Feed teacher-forced batches from a model; see :class:`AttentionStats` for the arguments and the module
    docstring for the definitions.
    """
    stats = AttentionStats(name, keep_sentences, special_tokens)
    for batch in batches:
        if isinstance(batch, AttentionBatch):
            stats.update(batch)
        elif isinstance(batch, Mapping):
            stats.update(**batch)
        else:
            raise TypeError(f"each batch must be an AttentionBatch or a dict of its fields, got {type(batch).__name__}")
    return stats.result(alpha, alpha_log)
