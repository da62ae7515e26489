"""Multi-head α-entmax attention: the public drop-in for ``torch.nn.MultiheadAttention`` and the models' module.

Two modules share one mechanism (:class:`_EntmaxHeads`: the normalizer, chosen once in ``__init__``, the learned
or fixed α, dropout, and the call to :func:`adasparse.nn.attention.entmax_attention` on ``(B, H, L, D)`` heads):

* :class:`MultiheadAttention` is ``torch.nn.MultiheadAttention`` with α-entmax in place of softmax: PyTorch's
  constructor, ``forward``, mask conventions (bool ``key_padding_mask`` True = ignore, bool ``attn_mask`` True =
  not allowed, float masks added to the scores), layouts (``batch_first=False`` by default, unbatched inputs),
  return value and parameter names, so that it loads a ``torch.nn.MultiheadAttention`` ``state_dict``.  It
  converts all that at its edge into the project's convention and calls the shared core.
* :class:`Attention` is the models' module, in the project's convention: batch-first, boolean masks with
  True = may attend, a :class:`KVCache` for incremental decoding, :class:`AttentionStats` on request.

``self.alpha_module()`` returns either a Python float (fixed normalizer, which lets the kernel use SDPA for
softmax and the exact sparsemax/1.5-entmax solvers) or the learned α ``(H,)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.normalizers import (
    NORMALIZERS,  # noqa: F401  (re-exported: its former home)
    canonical_normalizer,
    normalizer_alpha,
)
from .activations import LearnableAlpha
from .attention import AttentionStats, entmax_attention

__all__ = ["MultiheadAttention", "Attention", "KVCache", "FixedAlpha", "canonical_normalizer"]


class FixedAlpha(nn.Module):
    """A constant α for every head: calling it returns the Python float (for the kernel);
    :attr:`alpha` returns it as an ``(H,)`` tensor (for reporting, like :class:`LearnableAlpha`)."""

    def __init__(self, value: float, num_heads: int):
        super().__init__()
        self.value = float(value)
        self.register_buffer("_alpha", torch.full((num_heads,), self.value), persistent=False)

    def forward(self) -> float:
        return self.value

    @property
    def alpha(self) -> Tensor:
        return self._alpha

    def extra_repr(self) -> str:
        return f"alpha={self.value}, heads={self._alpha.numel()}"


@dataclass
class KVCache:
    """Projected keys/values of one attention layer, kept across decoding steps.

    Attributes:
        k: keys ``(B, H, S, D)`` or None before the first step.
        v: values ``(B, H, S, Dv)`` or None.
        key_mask: ``(B, S)`` boolean, True = real key (may attend); None means all real.
        static: True for cross-attention: ``k``/``v`` are computed once from the memory and reused;
            False for self-attention: each call appends the new keys/values.

    :meth:`reorder` selects rows (e.g. surviving beam-search hypotheses).
    """

    k: Tensor | None = None
    v: Tensor | None = None
    key_mask: Tensor | None = None
    static: bool = False

    @property
    def length(self) -> int:
        """Number of cached keys ``S`` (0 when empty)."""
        return 0 if self.k is None else self.k.shape[-2]

    def reorder(self, index: Tensor) -> KVCache:
        """Keep rows ``index`` (a 1-D long tensor into the batch dim), in place; returns self."""
        if self.k is not None:
            self.k = self.k.index_select(0, index)
            self.v = self.v.index_select(0, index)
        if self.key_mask is not None:
            self.key_mask = self.key_mask.index_select(0, index)
        return self


# --------------------------------------------------------------------------- the shared core


def _and(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return b if a is None else a if b is None else a & b


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return b if a is None else a if b is None else a + b


class _EntmaxHeads(nn.Module):
    """What both attention modules share: the normalizer (fixed or learned α per head), dropout on the
    attention probabilities, the backend, and :meth:`_attend` on heads ``(B, H, L, D)``."""

    def __init__(self, normalizer, dropout, backend):
        super().__init__()
        if isinstance(dropout, bool) or not isinstance(dropout, Real) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if not isinstance(backend, str):
            raise TypeError(f"backend must be a string (a registered attention backend or 'auto'), got {backend!r}")
        self.dropout = float(dropout)
        self.backend = backend
        self.normalizer = canonical_normalizer(normalizer)

    def _make_alpha(
        self, num_heads: int, alpha_init, alpha_min: float, alpha_max: float, parametrization: str = "sigmoid"
    ) -> None:
        """Create ``alpha_module`` (subclasses call this where its random draw keeps their initialisation order)."""
        # the normalizer, chosen once: calling alpha_module() gives the kernel's alpha (float or (H,) tensor)
        if self.normalizer == "learned":
            self.alpha_module: nn.Module = LearnableAlpha(num_heads, alpha_init, alpha_min, alpha_max, parametrization)
        else:
            self.alpha_module = FixedAlpha(normalizer_alpha(self.normalizer), num_heads)

    @property
    def alpha(self) -> Tensor:
        """Current α of every head ``(H,)`` (constants for a fixed normalizer)."""
        return self.alpha_module.alpha

    def _attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None = None,
        bias: Tensor | None = None,
        is_causal: bool = False,
        dropout_p: float | None = None,
        return_stats: bool = False,
    ) -> Tensor | tuple[Tensor, AttentionStats]:
        """α-entmax attention of heads q ``(B, H, Q, D)``, k ``(B, H, K, D)``, v ``(B, H, K, Dv)``.

        ``mask``: bool, True = may attend, broadcastable to ``(B, H, Q, K)``; ``bias``: float scores added before
        the normalizer (same broadcast); ``dropout_p`` defaults to the module's dropout in training, 0 in eval.
        Returns ``out (B, H, Q, Dv)``, or ``(out, stats)`` with ``return_stats``.
        """
        if dropout_p is None:
            dropout_p = self.dropout if self.training else 0.0
        if bias is not None:  # entmax_attention adds a float mask to the scores; -inf excludes
            bias = bias.to(q.dtype)
            mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        return entmax_attention(
            q,
            k,
            v,
            mask,
            dropout_p,
            is_causal,
            alpha=self.alpha_module(),
            return_stats=return_stats,
            backend=self.backend,
        )


# --------------------------------------------------------------------------- the drop-in for torch


def _mask_parts(mask: Tensor, name: str) -> tuple[Tensor | None, Tensor | None]:
    """A PyTorch mask → ``(allowed, bias)`` in our convention: bool ``True`` = not allowed becomes
    ``allowed = ~mask``; a float mask becomes its ``-inf`` entries (``allowed``) plus its other entries (``bias``,
    None when all zero, so that PyTorch-style float masks of 0/-inf, e.g. a causal one, reach the fast kernels;
    kept when the mask requires grad, so that a learned bias that starts at zero still gets its gradient)."""
    if mask.dtype == torch.bool:
        return ~mask, None
    if not mask.is_floating_point():
        raise TypeError(
            f"{name} must be a bool or floating-point tensor (as in torch.nn.MultiheadAttention), got {mask.dtype}"
        )
    blocked = mask == float("-inf")
    rest = mask.masked_fill(blocked, 0.0)
    any_blocked, any_rest = torch.stack([blocked.any(), (rest != 0).any()]).tolist()  # one device sync
    return (~blocked if any_blocked else None), (rest if any_rest or mask.requires_grad else None)


class MultiheadAttention(_EntmaxHeads):
    r"""``torch.nn.MultiheadAttention`` with α-entmax (fixed or learned α per head) in place of softmax.

    A drop-in: the constructor, :meth:`forward`, masks, layouts, return values and parameters are PyTorch's
    (``in_proj_weight`` packed when ``kdim == vdim == embed_dim``, ``q_proj_weight``/``k_proj_weight``/
    ``v_proj_weight`` otherwise, ``in_proj_bias``, ``bias_k``/``bias_v``, ``out_proj``), so a
    ``torch.nn.MultiheadAttention`` ``state_dict`` loads directly; with ``normalizer="softmax"`` the module
    computes what ``torch.nn.MultiheadAttention`` computes.  The α arguments are keyword-only.

    Args:
        embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn, kdim, vdim, batch_first, device, dtype:
            as in ``torch.nn.MultiheadAttention`` (``batch_first=False``: inputs are ``(L, N, E)``).
        normalizer: ``"learned"`` (default: one α per head, Correia et al. 2019, in ``[alpha_min, alpha_max]``),
            ``"softmax"``, ``"sparsemax"``, ``"entmax15"`` or a number α ≥ 1.
        alpha_init: for ``"learned"``: ``"normal"`` (θ ~ N(0, 1), the paper) or an α in (1, 2) for every head.
        alpha_min, alpha_max: range of the learned α (default [1.01, 2]).
        alpha_parametrization: ``"sigmoid"`` (default, no dead zone) or ``"clamp"`` (the paper's), see
            :class:`adasparse.nn.LearnableAlpha`.
        backend: attention backend of :func:`~adasparse.entmax_attention` (default ``"auto"``).

    Differences from ``torch.nn.MultiheadAttention``, all deliberate:

    * a query that may attend to no key (every key masked) gets zero attention weights and a zero attention
      output, so its output row is ``out_proj.bias`` — what PyTorch's ``need_weights=False`` path returns; with
      ``need_weights=True`` PyTorch returns NaN there, we return the same zeros (and zero gradients);
    * a ``state_dict`` without α entries (one saved by ``torch.nn.MultiheadAttention``) loads with
      ``strict=True`` and keeps the current α (its initialisation); the other tensors must all be there;
    * bad arguments raise ``ValueError``/``TypeError`` (PyTorch: ``AssertionError``/``RuntimeError``);
    * ``torch.nn.TransformerEncoderLayer``/``TransformerEncoder`` never bypass this module with their fused softmax
      kernel (their inference fast path), so the layer always uses α-entmax.
    """

    # torch.nn.TransformerEncoder(Layer) read this private flag of their `self_attn` to decide whether they may
    # skip its forward and run their fused *softmax* kernel on its weights; False keeps them calling our forward.
    # (The packed/separate layout is `in_proj_weight is not None`.)
    _qkv_same_embed_dim = False

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device=None,
        dtype=None,
        *,
        normalizer: str | float = "learned",
        alpha_init: str | float = "normal",
        alpha_min: float = 1.01,
        alpha_max: float = 2.0,
        alpha_parametrization: str = "sigmoid",
        backend: str = "auto",
    ):
        for name, n in (("embed_dim", embed_dim), ("num_heads", num_heads), ("kdim", kdim), ("vdim", vdim)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
                raise ValueError(f"{name} must be a positive int, got {n!r}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        super().__init__(normalizer, dropout, backend)
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.batch_first = bool(batch_first)
        self.add_zero_attn = bool(add_zero_attn)
        if self.kdim == embed_dim and self.vdim == embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **factory))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim, **factory))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim, **factory))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, embed_dim, **factory))
            self.bias_v = nn.Parameter(torch.empty(1, 1, embed_dim, **factory))
        else:
            self.bias_k = self.bias_v = None
        self._reset_parameters()
        # α last: with the same seed, the other parameters start as torch.nn.MultiheadAttention's do
        self._make_alpha(num_heads, alpha_init, alpha_min, alpha_max, alpha_parametrization)
        self.alpha_module.to(**{k: v for k, v in factory.items() if v is not None})
        self.register_load_state_dict_pre_hook(_keep_alpha_if_absent)

    def _reset_parameters(self) -> None:
        """PyTorch's initialisation: Xavier-uniform input projections, zero biases, Xavier-normal ``bias_k``/``bias_v``
        (``out_proj.weight`` keeps ``nn.Linear``'s)."""
        if self.in_proj_weight is not None:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                nn.init.xavier_uniform_(w)
        if self.in_proj_bias is not None:  # out_proj.weight keeps nn.Linear's initialisation, as in torch
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)
        if self.bias_k is not None:
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The input projections (one matrix product for self-attention, as PyTorch)."""
        e = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else b.chunk(3)
        if self.in_proj_weight is None:
            return (
                F.linear(query, self.q_proj_weight, bq),
                F.linear(key, self.k_proj_weight, bk),
                F.linear(value, self.v_proj_weight, bv),
            )
        w = self.in_proj_weight
        if query is key and key is value:
            return F.linear(query, w, b).chunk(3, dim=-1)
        q = F.linear(query, w[:e], bq)
        if key is value:
            k, v = F.linear(key, w[e:], None if b is None else b[e:]).chunk(2, dim=-1)
            return q, k, v
        return q, F.linear(key, w[e : 2 * e], bk), F.linear(value, w[2 * e :], bv)

    def _check_inputs(self, query, key, value, key_padding_mask, attn_mask) -> bool:
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.is_nested:
                raise ValueError(
                    f"{name} is a nested tensor, which MultiheadAttention does not take (torch's does only in its "
                    "fused softmax path). torch.nn.TransformerEncoder makes nested tensors when the layer it was built "
                    "from holds torch's MultiheadAttention: build it from a layer that holds this module, or pass "
                    "enable_nested_tensor=False"
                )
        if query.dim() not in (2, 3):
            raise ValueError(
                f"query must be (L, E) unbatched or {'(N, L, E)' if self.batch_first else '(L, N, E)'} batched, "
                f"got shape {tuple(query.shape)}"
            )
        batched = query.dim() == 3
        if key.dim() != query.dim() or value.dim() != query.dim():
            raise ValueError(
                f"key and value must have the dims of query ({query.dim()}-D), got key {tuple(key.shape)} "
                f"and value {tuple(value.shape)}"
            )
        for name, t, size in (("query", query, self.embed_dim), ("key", key, self.kdim), ("value", value, self.vdim)):
            if t.shape[-1] != size:
                raise ValueError(f"{name} must have {size} features in its last dim, got shape {tuple(t.shape)}")
        bdim = 0 if self.batch_first else 1
        if key.shape[:-1] != value.shape[:-1] or (batched and key.shape[bdim] != query.shape[bdim]):
            raise ValueError(
                f"key {tuple(key.shape)} and value {tuple(value.shape)} need the same length and batch as query "
                f"{tuple(query.shape)} (batch_first={self.batch_first})"
            )
        n = query.shape[bdim] if batched else None
        q_len = query.shape[1 - bdim] if batched else query.shape[0]
        k_len = key.shape[1 - bdim] if batched else key.shape[0]
        if key_padding_mask is not None:
            want = (n, k_len) if batched else (k_len,)
            if not isinstance(key_padding_mask, Tensor) or tuple(key_padding_mask.shape) != want:
                raise ValueError(
                    f"key_padding_mask must be a tensor of shape {want} (True or -inf = ignore that key), "
                    f"got {_describe(key_padding_mask)}"
                )
        if attn_mask is not None:
            heads = self.num_heads * (n if batched else 1)
            if not isinstance(attn_mask, Tensor) or tuple(attn_mask.shape) not in (
                (q_len, k_len),
                (heads, q_len, k_len),
            ):
                raise ValueError(
                    f"attn_mask must be a tensor of shape (L, S) = {(q_len, k_len)} or (N * num_heads, L, S) = "
                    f"{(heads, q_len, k_len)} (True or -inf = not allowed), got {_describe(attn_mask)}"
                )
        return batched

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        r"""Attend from ``query`` to ``key``/``value``, with ``torch.nn.MultiheadAttention``'s arguments and meaning.

        Args:
            query: ``(L, E)`` unbatched, ``(L, N, E)``, or ``(N, L, E)`` with ``batch_first``.
            key, value: ``(S, kdim)``/``(S, vdim)`` unbatched, else ``(S, N, ·)`` or ``(N, S, ·)``.
            key_padding_mask: ``(N, S)`` (``(S,)`` unbatched); bool **True = ignore that key**, or float, added to
                the scores (``-inf`` ignores the key).
            need_weights: also return the attention weights (materialises them; ``False`` is faster).
            attn_mask: ``(L, S)`` or ``(N·num_heads, L, S)`` (``(num_heads, L, S)`` unbatched); bool **True = not
                allowed**, or float, added to the scores.
            average_attn_weights: return the weights averaged over heads (else per head).
            is_causal: a hint that ``attn_mask`` is the causal mask, as in PyTorch: it needs ``attn_mask``; without
                ``key_padding_mask`` and with ``need_weights=False`` the (top-left) causal mask is applied in its
                place, otherwise ``attn_mask`` is used as given.

        Returns:
            ``(attn_output, attn_weights)``: the output ``(L, E)``/``(L, N, E)``/``(N, L, E)``; the weights —
            ``(N, L, S)`` averaged over heads or ``(N, num_heads, L, S)`` (no ``N`` unbatched), with one more key
            for each of ``add_bias_kv`` and ``add_zero_attn`` — or None when ``need_weights=False``.  Weights are
            those that multiplied the values (after dropout in training, as in PyTorch).
        """
        batched = self._check_inputs(query, key, value, key_padding_mask, attn_mask)
        if is_causal and attn_mask is None:
            raise ValueError(
                "is_causal=True is a hint that attn_mask is the causal mask and needs attn_mask (as in "
                "torch.nn.MultiheadAttention); e.g. torch.nn.Transformer.generate_square_subsequent_mask(L)"
            )
        kernel_causal = is_causal and key_padding_mask is None and not need_weights  # PyTorch's rule for the hint
        if kernel_causal:
            attn_mask = None

        q, k, v = self._project(query, key, value)
        h, d = self.num_heads, self.head_dim
        if not batched:  # (L, E) → (1, L, E)
            q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
        elif not self.batch_first:  # (L, N, E) → (N, L, E)
            q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        n, q_len, _ = q.shape
        q = q.reshape(n, q_len, h, d).transpose(1, 2)  # (N, H, L, D)
        k = k.reshape(n, -1, h, d).transpose(1, 2)  # (N, H, S, D)
        v = v.reshape(n, -1, h, d).transpose(1, 2)  # (N, H, S, D)
        extra = 0
        if self.bias_k is not None:  # one more key/value, the same for every sequence
            k = torch.cat([k, self.bias_k.reshape(1, h, 1, d).expand(n, h, 1, d)], dim=2)
            v = torch.cat([v, self.bias_v.reshape(1, h, 1, d).expand(n, h, 1, d)], dim=2)
            extra += 1
        if self.add_zero_attn:  # and a zero key/value
            k = torch.cat([k, k.new_zeros(n, h, 1, d)], dim=2)
            v = torch.cat([v, v.new_zeros(n, h, 1, d)], dim=2)
            extra += 1

        # PyTorch's masks → allowed (bool, True = may attend) and bias (float), both broadcastable to (N, H, L, S)
        allowed = bias = None
        if attn_mask is not None:
            a, b = _mask_parts(attn_mask, "attn_mask")
            shape = (1 if attn_mask.dim() == 2 else n, 1 if attn_mask.dim() == 2 else h, q_len, -1)
            allowed = None if a is None else F.pad(a, (0, extra), value=True).reshape(shape)
            bias = None if b is None else F.pad(b, (0, extra)).reshape(shape)
        if key_padding_mask is not None:
            a, b = _mask_parts(key_padding_mask, "key_padding_mask")
            shape = (n, 1, 1, -1)
            allowed = _and(allowed, None if a is None else F.pad(a, (0, extra), value=True).reshape(shape))
            bias = _add(bias, None if b is None else F.pad(b, (0, extra)).reshape(shape))

        weights = None
        if need_weights:
            out, stats = self._attend(q, k, v, allowed, bias, kernel_causal, dropout_p=0.0, return_stats=True)
            weights = stats.probs  # (N, H, L, S)
            if self.training and self.dropout > 0:  # PyTorch returns the weights after dropout, those that were used
                weights = F.dropout(weights, p=self.dropout)
                out = torch.matmul(weights.to(v.dtype), v)
        else:
            out = self._attend(q, k, v, allowed, bias, kernel_causal)
        out = self.out_proj(out.transpose(1, 2).reshape(n, q_len, self.embed_dim))  # (N, L, E)
        if not batched:
            out = out[0]  # (L, E)
        elif not self.batch_first:
            out = out.transpose(0, 1)  # (L, N, E)
        if weights is not None:
            if average_attn_weights:
                weights = weights.mean(dim=1)  # (N, L, S)
            if not batched:
                weights = weights[0]
        return out, weights

    def extra_repr(self) -> str:
        s = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, normalizer={self.normalizer!r}"
        if self.kdim != self.embed_dim or self.vdim != self.embed_dim:
            s += f", kdim={self.kdim}, vdim={self.vdim}"
        return s + f", batch_first={self.batch_first}"


def _describe(t) -> str:
    return f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__


def _keep_alpha_if_absent(module: MultiheadAttention, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook: a state dict with none of α's entries (one saved by ``torch.nn.MultiheadAttention``)
    keeps the current α, so that it loads with ``strict=True``; every other missing key is still reported."""
    own = prefix + "alpha_module."
    if not any(k.startswith(own) for k in state_dict):
        for k, t in module.alpha_module.state_dict(prefix=own, keep_vars=True).items():
            state_dict[k] = t.detach()


# --------------------------------------------------------------------------- the models' module


class Attention(_EntmaxHeads):
    """The models' multi-head attention, in the project's convention: batch-first, boolean masks with
    **True = may attend**, a :class:`KVCache`, and :class:`AttentionStats` on request.  Not PyTorch's
    ``MultiheadAttention`` (use :class:`MultiheadAttention` for that); same core.

    Args:
        embed_dim: model dimension ``E`` (query input and output size).
        num_heads: number of heads ``H``; ``embed_dim`` must be divisible by it.
        normalizer: ``"softmax"``, ``"sparsemax"``, ``"entmax15"``, a number α ≥ 1, or ``"learned"``
            (one α per head in ``[alpha_min, alpha_max]``, Correia et al. 2019).
        alpha_init: for ``"learned"``: ``"normal"`` (θ ~ N(0, 1), the paper) or an α in (1, 2) for every head.
        alpha_min, alpha_max: range of the learned α (default [1.01, 2]).
        alpha_parametrization: ``"sigmoid"`` (default, no dead zone) or ``"clamp"`` (the paper's), see
            :class:`adasparse.nn.LearnableAlpha`.
        bias: biases in the projections.
        dropout: dropout on the attention probabilities (training only).
        kdim, vdim: input sizes of key and value (default ``embed_dim``), for cross-attention.
        backend: attention backend name passed to :func:`entmax_attention` (default ``"auto"``).
        qk_transform: optional :class:`adasparse.nn.qk_transform.QKTransform` (RoPE, length scaling) applied
            to the projected queries and keys: ``positions(q, k_new, offset)`` before the cache,
            ``scale(q, mask, is_causal, k_len)`` right before the kernel.

    Parameters ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` (``nn.Linear``) and ``alpha_module`` (the
    checkpoint format of the models).  Call as ``out, stats = attn(query, key=None, value=None, ...)``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        normalizer: str | float = "learned",
        alpha_init: str | float = "normal",
        alpha_min: float = 1.01,
        alpha_max: float = 2.0,
        alpha_parametrization: str = "sigmoid",
        bias: bool = True,
        dropout: float = 0.0,
        kdim: int | None = None,
        vdim: int | None = None,
        backend: str = "auto",
        qk_transform: nn.Module | None = None,
    ):
        if not isinstance(embed_dim, int) or not isinstance(num_heads, int) or embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be positive ints, got {embed_dim!r} and {num_heads!r}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        super().__init__(normalizer, dropout, backend)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self._make_alpha(num_heads, alpha_init, alpha_min, alpha_max, alpha_parametrization)  # after the projections
        self.qk_transform = qk_transform
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform projections and zero biases."""
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, -1).transpose(1, 2)  # (B, H, L, D)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
        return_stats: bool = False,
    ) -> tuple[Tensor, AttentionStats | None]:
        """Attend from ``query`` to ``key``/``value`` (self-attention when ``key`` is None).

        Args:
            query: ``(B, Q, E)``.
            key, value: ``(B, K, kdim)``/``(B, K, vdim)``; ``value`` defaults to ``key``; both default
                to ``query`` (self-attention).
            key_padding_mask: ``(B, K)`` boolean, **True = real key** (may attend).  With a self-attention
                cache, it covers only the new keys and is appended to the cached ones.
            attn_mask: boolean, True = may attend, broadcastable to ``(B, H, Q, K_total)``.
            is_causal: query ``i`` attends to keys ``j ≤ i`` (bottom-right aligned when a cache holds
                earlier positions, so step-by-step decoding equals the full forward).
            cache: a :class:`KVCache`, updated in place: self-attention appends the new keys/values;
                a ``static`` cache (cross-attention) is filled from ``key``/``value``/``key_padding_mask``
                on the first call and reused afterwards (those arguments are then ignored and may be None).
            return_stats: also return :class:`AttentionStats` (probabilities ``(B, H, Q, K)`` etc.).

        Returns:
            ``(out, stats)``: ``out`` ``(B, Q, E)``, ``stats`` None unless asked.
        """
        self_attention = key is None and not (cache is not None and cache.static)
        if key is None:
            key = query if self_attention else None
        if value is None:
            value = key
        b, q_len, _ = query.shape
        q = self._heads(self.q_proj(query))  # (B, H, Q, D)

        past = 0
        if cache is not None and cache.static and cache.k is not None:
            k, v, kpm = cache.k, cache.v, cache.key_mask  # (B, H, K, D): reused memory projections and mask
        else:
            if key is None:
                raise ValueError("cross-attention needs `key` (or a static cache already filled)")
            k = self._heads(self.k_proj(key))  # (B, H, K_new, D)
            v = self._heads(self.v_proj(value))  # (B, H, K_new, Dv)
            if self.qk_transform is not None:  # positions (RoPE) of the new queries and keys; the cache keeps them
                q, k = self.qk_transform.positions(q, k, cache.length if cache is not None and not cache.static else 0)
            kpm = key_padding_mask
            if cache is not None:
                past = cache.length
                if kpm is not None or cache.key_mask is not None:
                    new = kpm if kpm is not None else torch.ones(b, k.shape[-2], dtype=torch.bool, device=k.device)
                    old = cache.key_mask
                    if old is None and past:
                        old = torch.ones(b, past, dtype=torch.bool, device=k.device)
                    kpm = new if old is None else torch.cat([old, new], dim=1)  # (B, S + K_new)
                if past and not cache.static:
                    k = torch.cat([cache.k, k], dim=-2)  # (B, H, S + K_new, D)
                    v = torch.cat([cache.v, v], dim=-2)
                cache.k, cache.v, cache.key_mask = k, v, kpm

        mask = attn_mask
        if kpm is not None:
            if kpm.dtype != torch.bool or kpm.shape != (b, k.shape[-2]):
                raise ValueError(
                    f"key_padding_mask must be boolean (B, K) = ({b}, {k.shape[-2]}) with True = real key, "
                    f"got {kpm.dtype} {tuple(kpm.shape)}"
                )
            mask = _and(mask, kpm[:, None, None, :])  # (B, 1, 1, K)
        causal = is_causal
        if is_causal and past:  # bottom-right alignment: query i sits at position past + i
            q_pos = torch.arange(past, past + q_len, device=q.device)[:, None]
            mask = _and(mask, torch.arange(k.shape[-2], device=q.device)[None, :] <= q_pos)  # (Q, K)
            causal = False
        if self.qk_transform is not None:  # length scaling: q × s(n), n = the keys each query attends to
            q = self.qk_transform.scale(q, mask, causal, k.shape[-2])
        res = self._attend(q, k, v, mask, is_causal=causal, return_stats=return_stats)
        out, stats = res if return_stats else (res, None)
        out = self.out_proj(out.transpose(1, 2).reshape(b, q_len, self.embed_dim))  # (B, Q, E)
        return out, stats

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, normalizer={self.normalizer!r}"
