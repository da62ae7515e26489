"""Encoder–decoder and decoder-only Transformers with α-entmax attention (Correia, Niculae & Martins 2019).

Classes in dependency order: positions, feed-forward, encoder/decoder layers, stacks, the decoding
cache, the two models; then parameter counting and a one-line summary.

Model API (what training, search and analysis code against)::

    model = Seq2SeqTransformer(config)
    logits = model(src, tgt_in)                          # (B, T, V); masks derived from pad_id
    logits, maps = model(src, tgt_in, return_attention=True)
    maps["enc_self"][layer]                              # (B, H, S, S) probabilities, also "dec_self", "context"
    memory, src_mask = model.encode(src)                 # (B, S, E), (B, S) True = real token
    logits_t, cache = model.decode_step(tokens_t, memory, src_mask, cache)   # (B, V); cache None at step 0
    cache.reorder(index)                                 # beam search: keep rows `index`
    loss, n_tokens = model.loss(logits, tgt_out)         # label-smoothed CE, mean over non-pad tokens
    model.alphas()                                       # {"enc_self": (L, H), "dec_self", "context"}, detached

Masks are boolean with True = real token / may attend.  Sequences are right-padded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.length_scaling import LengthScaling
from ..nn.multihead import Attention, KVCache
from ..nn.positions import RotaryEmbedding
from ..nn.qk_transform import QKTransform
from .config import ATTENTION_TYPES, DecoderOnlyConfig, Seq2SeqConfig

__all__ = [
    "SinusoidalPositions",
    "FeedForward",
    "EncoderLayer",
    "DecoderLayer",
    "Encoder",
    "Decoder",
    "DecoderCache",
    "reorder_cache",
    "Seq2SeqTransformer",
    "DecoderOnlyTransformer",
    "build_model",
    "label_smoothed_loss",
    "count_parameters",
    "summary",
]


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal position encodings (Vaswani et al. 2017): ``forward(length, offset)`` → ``(length, E)``."""

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # (L, 1)
        inv = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * inv)
        pe[:, 1::2] = torch.cos(pos * inv[: d_model // 2])
        self.register_buffer("pe", pe, persistent=False)
        self.max_len = max_len

    def forward(self, length: int, offset: int = 0) -> Tensor:
        if offset + length > self.max_len:
            raise ValueError(f"positions {offset}..{offset + length - 1} exceed max_len={self.max_len}")
        return self.pe[offset : offset + length]


class FeedForward(nn.Module):
    """Position-wise ``Linear → activation → dropout → Linear``."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, activation: str = "relu"):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.activation = nn.ReLU() if activation == "relu" else nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class _Block(nn.Module):
    """Residual wiring shared by both layer types: pre-norm ``x + drop(f(norm(x)))`` or post-norm ``norm(x + drop(f(x)))``."""

    def __init__(self, pre_norm: bool, dropout: float):
        super().__init__()
        self.pre_norm = pre_norm
        self.dropout = nn.Dropout(dropout)

    def _residual(self, x: Tensor, norm: nn.LayerNorm, f) -> tuple[Tensor, object]:
        y, extra = f(norm(x) if self.pre_norm else x)
        x = x + self.dropout(y)
        return (x if self.pre_norm else norm(x)), extra


def _mha(
    d_model: int,
    n_heads: int,
    normalizer,
    alpha_init,
    attn_dropout: float,
    alpha_parametrization: str,
    qk_transform=None,
) -> Attention:
    return Attention(
        d_model,
        n_heads,
        normalizer=normalizer,
        alpha_init=alpha_init,
        alpha_parametrization=alpha_parametrization,
        dropout=attn_dropout,
        qk_transform=qk_transform,
    )


class EncoderLayer(_Block):
    """Self-attention + feed-forward, each in a residual branch."""

    def __init__(
        self,
        d_model,
        n_heads,
        d_ff,
        *,
        normalizer,
        alpha_init,
        dropout,
        attn_dropout,
        pre_norm,
        activation,
        alpha_parametrization="sigmoid",
    ):
        super().__init__(pre_norm, dropout)
        self.self_attn = _mha(d_model, n_heads, normalizer, alpha_init, attn_dropout, alpha_parametrization)
        self.ff = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, pad_mask: Tensor | None, return_stats: bool = False) -> tuple[Tensor, Tensor | None]:
        """x ``(B, S, E)``, pad_mask ``(B, S)`` True = real → (x, probabilities ``(B, H, S, S)`` or None)."""
        x, stats = self._residual(
            x, self.norm1, lambda h: self.self_attn(h, key_padding_mask=pad_mask, return_stats=return_stats)
        )
        x, _ = self._residual(x, self.norm2, lambda h: (self.ff(h), None))
        return x, None if stats is None else stats.probs


class DecoderLayer(_Block):
    """Causal self-attention, (optionally) context attention over the encoder memory, feed-forward.

    ``qk_transform`` (optional, a :class:`~adasparse.nn.qk_transform.QKTransform`) goes to the self-attention:
    RoPE and/or length scaling of its projected queries and keys."""

    def __init__(
        self,
        d_model,
        n_heads,
        d_ff,
        *,
        normalizer,
        alpha_init,
        dropout,
        attn_dropout,
        pre_norm,
        activation,
        context_normalizer=None,
        alpha_parametrization="sigmoid",
        qk_transform=None,
    ):
        super().__init__(pre_norm, dropout)
        self.self_attn = _mha(
            d_model, n_heads, normalizer, alpha_init, attn_dropout, alpha_parametrization, qk_transform
        )
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = None
        if context_normalizer is not None:
            self.cross_attn = _mha(
                d_model, n_heads, context_normalizer, alpha_init, attn_dropout, alpha_parametrization
            )
            self.norm2 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout, activation)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        x: Tensor,
        pad_mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        self_cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
        return_stats: bool = False,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """x ``(B, T, E)`` → (x, self probabilities ``(B, H, T, T_total)``, context probabilities ``(B, H, T, S)``)."""
        x, s_stats = self._residual(
            x,
            self.norm1,
            lambda h: self.self_attn(
                h, key_padding_mask=pad_mask, is_causal=True, cache=self_cache, return_stats=return_stats
            ),
        )
        c_stats = None
        if self.cross_attn is not None:
            x, c_stats = self._residual(
                x,
                self.norm2,
                lambda h: self.cross_attn(
                    h, memory, key_padding_mask=memory_mask, cache=cross_cache, return_stats=return_stats
                ),
            )
        x, _ = self._residual(x, self.norm3, lambda h: (self.ff(h), None))
        return x, None if s_stats is None else s_stats.probs, None if c_stats is None else c_stats.probs


class Encoder(nn.Module):
    """A stack of :class:`EncoderLayer` (+ a final LayerNorm when pre-norm)."""

    def __init__(self, layers: list[EncoderLayer], d_model: int, pre_norm: bool):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.final_norm = nn.LayerNorm(d_model) if pre_norm else nn.Identity()

    def forward(self, x: Tensor, pad_mask: Tensor | None, return_stats: bool = False) -> tuple[Tensor, list[Tensor]]:
        maps = []
        for layer in self.layers:
            x, p = layer(x, pad_mask, return_stats)
            if return_stats:
                maps.append(p)
        return self.final_norm(x), maps


@dataclass
class DecoderCache:
    """Incremental-decoding state of a decoder: one :class:`KVCache` per layer for self-attention
    (growing) and, for encoder–decoder models, one static cache per layer for context attention
    (the projected encoder memory).  ``length`` is the number of target positions consumed so far.

    Beam search: ``cache.reorder(index)`` keeps batch rows ``index`` (in place, returns self).
    """

    self_attn: list[KVCache]
    cross_attn: list[KVCache] = field(default_factory=list)
    length: int = 0

    def reorder(self, index: Tensor) -> DecoderCache:
        for c in self.self_attn:
            c.reorder(index)
        for c in self.cross_attn:
            c.reorder(index)
        return self


def reorder_cache(cache: DecoderCache, index: Tensor) -> DecoderCache:
    """Function form of :meth:`DecoderCache.reorder`."""
    return cache.reorder(index)


class Decoder(nn.Module):
    """A stack of :class:`DecoderLayer` (+ a final LayerNorm when pre-norm)."""

    def __init__(self, layers: list[DecoderLayer], d_model: int, pre_norm: bool):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.final_norm = nn.LayerNorm(d_model) if pre_norm else nn.Identity()

    def init_cache(self) -> DecoderCache:
        """An empty cache for :meth:`forward` with ``cache=``."""
        has_cross = self.layers[0].cross_attn is not None
        return DecoderCache(
            self_attn=[KVCache() for _ in self.layers],
            cross_attn=[KVCache(static=True) for _ in self.layers] if has_cross else [],
        )

    def forward(
        self,
        x: Tensor,
        pad_mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
        return_stats: bool = False,
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        self_maps, ctx_maps = [], []
        for i, layer in enumerate(self.layers):
            sc = cache.self_attn[i] if cache is not None else None
            cc = cache.cross_attn[i] if cache is not None and cache.cross_attn else None
            x, ps, pc = layer(x, pad_mask, memory, memory_mask, sc, cc, return_stats)
            if return_stats:
                self_maps.append(ps)
                if pc is not None:
                    ctx_maps.append(pc)
        if cache is not None:
            cache.length += x.shape[1]
        return self.final_norm(x), self_maps, ctx_maps


def label_smoothed_loss(
    logits: Tensor, target: Tensor, label_smoothing: float = 0.1, ignore_index: int = 0, reduction: str = "mean"
) -> tuple[Tensor, Tensor]:
    """Label-smoothed cross-entropy over the vocabulary (``torch.nn.functional.cross_entropy``'s
    smoothing: the target gets ``1 − ε + ε/V``, every other class ``ε/V``), averaged (or summed) over
    the tokens whose target is not ``ignore_index``.

    Args:
        logits: ``(B, T, V)`` (or ``(N, V)``).
        target: ``(B, T)`` (or ``(N,)``) token ids.
        reduction: ``"mean"`` over the counted tokens, or ``"sum"`` (what a token-weighted mean over
            several batches or processes adds up; the trainer uses it).

    Returns:
        ``(loss, n_tokens)``: 0-dim float32 tensor and 0-dim int64 tensor (number of non-ignored
        targets; the mean is 0 when there are none).  ``mean_loss * n_tokens`` is the summed loss.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if logits.shape[:-1] != target.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} disagree (need (..., V) and (...))"
        )
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        target.reshape(-1),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        reduction="sum",
    )
    n = (target != ignore_index).sum()
    return (total if reduction == "sum" else total / n.clamp_min(1)), n


def _init_embedding(emb: nn.Embedding, d_model: int, pad_id: int) -> None:
    nn.init.normal_(emb.weight, 0.0, d_model**-0.5)
    with torch.no_grad():
        emb.weight[pad_id].zero_()


class _Base(nn.Module):
    """Shared helpers: embedding + positions, loss."""

    config: Seq2SeqConfig | DecoderOnlyConfig

    def _embed(self, tokens: Tensor, emb: nn.Embedding, offset: int = 0) -> Tensor:
        x = emb(tokens) * self.embed_scale + self.positions(tokens.shape[1], offset)  # (B, T, E)
        return self.embed_dropout(x)

    def loss(
        self,
        logits: Tensor,
        target: Tensor,
        label_smoothing: float = 0.1,
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> tuple[Tensor, Tensor]:
        """Label-smoothed cross-entropy, mean (or sum) over non-pad targets → ``(loss, n_tokens)``
        (see :func:`label_smoothed_loss`; ``ignore_index`` defaults to ``config.pad_id``)."""
        ignore = self.config.pad_id if ignore_index is None else ignore_index
        return label_smoothed_loss(logits, target, label_smoothing, ignore, reduction)

    def _init_linear(self) -> None:
        """Xavier-uniform feed-forward weights, zero biases (attention projections init themselves)."""
        for mod in self.modules():
            if isinstance(mod, FeedForward):
                for lin in (mod.linear1, mod.linear2):
                    nn.init.xavier_uniform_(lin.weight)
                    nn.init.zeros_(lin.bias)

    def _pad_mask(self, tokens: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None:
            return tokens != self.config.pad_id
        if mask.dtype != torch.bool or mask.shape != tokens.shape:
            raise ValueError(
                f"padding mask must be boolean of the tokens' shape {tuple(tokens.shape)} with True = real token, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        return mask


class Seq2SeqTransformer(_Base):
    """Encoder–decoder Transformer whose every attention head uses α-entmax (fixed or learned α).

    Built from a :class:`~adasparse.models.config.Seq2SeqConfig`.  Methods:

    * ``forward(src (B, S), tgt_in (B, T), src_pad_mask=None, tgt_pad_mask=None, return_attention=False)``
      → logits ``(B, T, V)``; with ``return_attention=True`` → ``(logits, maps)`` where ``maps`` has keys
      ``"enc_self"``, ``"dec_self"``, ``"context"``, each a list over layers of ``(B, H, Q, K)`` probabilities.
      Masks are boolean, True = real token, derived from ``pad_id`` when None.
    * ``encode(src, src_pad_mask=None)`` → ``(memory (B, S, E), src_pad_mask (B, S))``.
    * ``decode_step(tokens (B, t), memory, src_pad_mask, cache=None)`` → ``(logits (B, V), cache)``:
      logits of the last of the ``t`` new positions (usually ``t = 1``); pass ``cache=None`` at the first step.
      ``memory``/``src_pad_mask`` fill the context-attention cache at the first step and are reused afterwards.
      ``cache.reorder(index)`` (or :func:`reorder_cache`) keeps rows for beam search.
    * ``loss(logits, target, label_smoothing=0.1, ignore_index=pad_id)`` → ``(mean_loss, n_tokens)``.
    * ``alphas()`` → ``{"enc_self", "dec_self", "context"}`` → ``(layers, heads)`` α tensors.
    * ``attention_maps(src, tgt_in, ...)`` → the ``maps`` dict above.
    """

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(f"config must be a Seq2SeqConfig, got {type(config).__name__}")
        self.config = c = config
        common = dict(
            alpha_init=c.alpha_init,
            alpha_parametrization=c.alpha_parametrization,
            dropout=c.dropout,
            attn_dropout=c.attn_dropout,
            pre_norm=c.pre_norm,
            activation=c.activation,
        )
        self.src_embed = nn.Embedding(c.src_vocab_size, c.d_model, padding_idx=c.pad_id)
        _init_embedding(self.src_embed, c.d_model, c.pad_id)
        if c.share_embeddings == "all":
            self.tgt_embed = self.src_embed
        else:
            self.tgt_embed = nn.Embedding(c.tgt_vocab_size, c.d_model, padding_idx=c.pad_id)
            _init_embedding(self.tgt_embed, c.d_model, c.pad_id)
        self.positions = SinusoidalPositions(c.d_model, c.max_len)
        self.embed_scale = math.sqrt(c.d_model) if c.scale_embeddings else 1.0
        self.embed_dropout = nn.Dropout(c.dropout)
        self.encoder = Encoder(
            [EncoderLayer(c.d_model, c.n_heads, c.d_ff, normalizer=c.enc_self, **common) for _ in range(c.enc_layers)],
            c.d_model,
            c.pre_norm,
        )
        self.decoder = Decoder(
            [
                DecoderLayer(
                    c.d_model, c.n_heads, c.d_ff, normalizer=c.dec_self, context_normalizer=c.context, **common
                )
                for _ in range(c.dec_layers)
            ],
            c.d_model,
            c.pre_norm,
        )
        self.output = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)
        if c.share_embeddings in ("decoder", "all"):
            self.output.weight = self.tgt_embed.weight
        else:
            nn.init.normal_(self.output.weight, 0.0, c.d_model**-0.5)
        self._init_linear()

    def _encode(self, src: Tensor, src_pad_mask: Tensor | None, return_stats: bool):
        src_pad_mask = self._pad_mask(src, src_pad_mask)
        memory, maps = self.encoder(self._embed(src, self.src_embed), src_pad_mask, return_stats)
        return memory, src_pad_mask, maps

    def encode(self, src: Tensor, src_pad_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """src ``(B, S)`` → ``(memory (B, S, E), src_pad_mask (B, S) bool, True = real token)``."""
        memory, mask, _ = self._encode(src, src_pad_mask, False)
        return memory, mask

    def forward(
        self,
        src: Tensor,
        tgt_in: Tensor,
        src_pad_mask: Tensor | None = None,
        tgt_pad_mask: Tensor | None = None,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, list[Tensor]]]:
        """src ``(B, S)``, tgt_in ``(B, T)`` (starting with BOS) → logits ``(B, T, V)`` (see class docstring)."""
        memory, src_pad_mask, enc_maps = self._encode(src, src_pad_mask, return_attention)
        tgt_pad_mask = self._pad_mask(tgt_in, tgt_pad_mask)
        x = self._embed(tgt_in, self.tgt_embed)
        x, self_maps, ctx_maps = self.decoder(x, tgt_pad_mask, memory, src_pad_mask, None, return_attention)
        logits = self.output(x)  # (B, T, V)
        if not return_attention:
            return logits
        return logits, {"enc_self": enc_maps, "dec_self": self_maps, "context": ctx_maps}

    def attention_maps(
        self, src: Tensor, tgt_in: Tensor, src_pad_mask: Tensor | None = None, tgt_pad_mask: Tensor | None = None
    ) -> dict[str, list[Tensor]]:
        """``{"enc_self", "dec_self", "context"}`` → list over layers of ``(B, H, Q, K)`` probabilities."""
        return self.forward(src, tgt_in, src_pad_mask, tgt_pad_mask, return_attention=True)[1]

    def init_cache(self) -> DecoderCache:
        """An empty :class:`DecoderCache` (``decode_step`` makes one when given None)."""
        return self.decoder.init_cache()

    def decode_step(
        self, tokens: Tensor, memory: Tensor, src_pad_mask: Tensor | None, cache: DecoderCache | None = None
    ) -> tuple[Tensor, DecoderCache]:
        """Feed ``tokens`` ``(B, t)`` (the next target positions, usually ``t = 1``) → ``(logits (B, V), cache)``.

        Equals ``forward``'s logits at the same position.  The cache is updated in place and returned.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (B, t) token ids, got shape {tuple(tokens.shape)}")
        cache = self.init_cache() if cache is None else cache
        x = self._embed(tokens, self.tgt_embed, offset=cache.length)  # (B, t, E)
        x, _, _ = self.decoder(x, None, memory, src_pad_mask, cache)
        return self.output(x[:, -1]), cache  # (B, V)

    def alphas(self) -> dict[str, Tensor]:
        """Current α per attention type (detached): ``{"enc_self", "dec_self", "context"}`` → ``(layers, heads)``.

        Fixed normalizers give constants (1 for softmax, 1.5, 2 for sparsemax, or the given α).  For a
        differentiable α use ``layer.self_attn.alpha`` / ``layer.cross_attn.alpha`` directly.
        """
        return {
            "enc_self": torch.stack([layer.self_attn.alpha for layer in self.encoder.layers]).detach(),
            "dec_self": torch.stack([layer.self_attn.alpha for layer in self.decoder.layers]).detach(),
            "context": torch.stack([layer.cross_attn.alpha for layer in self.decoder.layers]).detach(),
        }


class DecoderOnlyTransformer(_Base):
    """Causal language model built from the same blocks (no context attention).

    * ``forward(tokens (B, T), pad_mask=None, return_attention=False)`` → logits ``(B, T, V)``
      (or ``(logits, {"self": [ (B, H, T, T) per layer ]})``).
    * ``decode_step(tokens (B, t), cache=None)`` → ``(logits (B, V), cache)``; ``cache.reorder(index)``.
    * ``loss``, ``alphas()`` → ``{"self": (layers, heads)}``, ``attention_maps(tokens)``,
      ``length_scales()`` → the learned length-scaling parameters per layer and head.

    ``config.positions`` picks sinusoidal embeddings, RoPE on every self-attention layer, or none (NoPE);
    ``config.length_scaling`` adds a :class:`~adasparse.nn.length_scaling.LengthScaling` to every layer.
    """

    def __init__(self, config: DecoderOnlyConfig):
        super().__init__()
        if not isinstance(config, DecoderOnlyConfig):
            raise TypeError(f"config must be a DecoderOnlyConfig, got {type(config).__name__}")
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        _init_embedding(self.embed, c.d_model, c.pad_id)
        self.positions = SinusoidalPositions(c.d_model, c.max_len) if c.positions == "sinusoidal" else None
        self.embed_scale = math.sqrt(c.d_model) if c.scale_embeddings else 1.0
        self.embed_dropout = nn.Dropout(c.dropout)
        self.decoder = Decoder(
            [
                DecoderLayer(
                    c.d_model,
                    c.n_heads,
                    c.d_ff,
                    normalizer=c.self_attn,
                    alpha_init=c.alpha_init,
                    alpha_parametrization=c.alpha_parametrization,
                    dropout=c.dropout,
                    attn_dropout=c.attn_dropout,
                    pre_norm=c.pre_norm,
                    activation=c.activation,
                    qk_transform=self._qk_transform(c),
                )
                for _ in range(c.n_layers)
            ],
            c.d_model,
            c.pre_norm,
        )
        self.output = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.output.weight = self.embed.weight
        else:
            nn.init.normal_(self.output.weight, 0.0, c.d_model**-0.5)
        self._init_linear()

    @staticmethod
    def _qk_transform(c: DecoderOnlyConfig) -> QKTransform | None:
        """RoPE and/or length scaling of one layer's self-attention (None when the config asks for neither)."""
        rotary = RotaryEmbedding(c.d_model // c.n_heads, c.rope_base) if c.positions == "rope" else None
        scaling = LengthScaling(c.n_heads, c.length_scaling) if c.length_scaling != "none" else None
        return None if rotary is None and scaling is None else QKTransform(rotary, scaling)

    def _embed(self, tokens: Tensor, emb: nn.Embedding, offset: int = 0) -> Tensor:
        x = emb(tokens) * self.embed_scale  # (B, T, E)
        if self.positions is not None:  # sinusoidal; RoPE acts inside the attention, NoPE nowhere
            x = x + self.positions(tokens.shape[1], offset)
        return self.embed_dropout(x)

    def forward(
        self, tokens: Tensor, pad_mask: Tensor | None = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, dict[str, list[Tensor]]]:
        """tokens ``(B, T)`` → logits ``(B, T, V)`` (next-token prediction at every position)."""
        x, maps = self._features(tokens, pad_mask, return_attention)
        logits = self.output(x)  # (B, T, V)
        return (logits, {"self": maps}) if return_attention else logits

    def _features(self, tokens: Tensor, pad_mask: Tensor | None, return_stats: bool) -> tuple[Tensor, list[Tensor]]:
        pad_mask = self._pad_mask(tokens, pad_mask)
        if not torch.compiler.is_compiling() and bool(pad_mask.all()):  # no padding: the causal mask alone is faster
            pad_mask = None
        x, maps, _ = self.decoder(self._embed(tokens, self.embed), pad_mask, return_stats=return_stats)
        return x, maps

    def features(self, tokens: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """The last hidden states ``(B, T, E)`` (after the final LayerNorm): ``self.output(features)`` are the
        logits.  Projecting only the positions that are scored saves most of the time on a large vocabulary."""
        return self._features(tokens, pad_mask, False)[0]

    def attention_maps(self, tokens: Tensor, pad_mask: Tensor | None = None) -> dict[str, list[Tensor]]:
        """``{"self": [(B, H, T, T) per layer]}``."""
        return self.forward(tokens, pad_mask, return_attention=True)[1]

    def init_cache(self) -> DecoderCache:
        return self.decoder.init_cache()

    def decode_step(self, tokens: Tensor, cache: DecoderCache | None = None) -> tuple[Tensor, DecoderCache]:
        """Feed ``tokens`` ``(B, t)`` → ``(logits of the last position (B, V), cache)``; equals ``forward``."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (B, t) token ids, got shape {tuple(tokens.shape)}")
        cache = self.init_cache() if cache is None else cache
        x = self._embed(tokens, self.embed, offset=cache.length)  # (B, t, E)
        x, _, _ = self.decoder(x, cache=cache)
        return self.output(x[:, -1]), cache  # (B, V)

    def alphas(self) -> dict[str, Tensor]:
        """``{"self": (layers, heads)}`` current α (detached)."""
        return {"self": torch.stack([layer.self_attn.alpha for layer in self.decoder.layers]).detach()}

    def length_scales(self) -> dict[str, Tensor]:
        """Learned length-scaling parameters, detached, each ``(layers, heads)``: ``{"delta", "beta"}``
        (``length_scaling="learned"``), ``{"sigma"}`` (``"ssmax"``) or ``{}`` (none)."""
        mode = self.config.length_scaling
        if mode == "none":
            return {}
        names = ("delta", "beta") if mode == "learned" else ("sigma",)
        mods = [layer.self_attn.qk_transform.scaling for layer in self.decoder.layers]
        return {n: torch.stack([getattr(m, n) for m in mods]).detach() for n in names}


def build_model(config: Seq2SeqConfig | DecoderOnlyConfig) -> Seq2SeqTransformer | DecoderOnlyTransformer:
    """The model described by ``config``."""
    if isinstance(config, Seq2SeqConfig):
        return Seq2SeqTransformer(config)
    if isinstance(config, DecoderOnlyConfig):
        return DecoderOnlyTransformer(config)
    raise TypeError(f"config must be a Seq2SeqConfig or a DecoderOnlyConfig, got {type(config).__name__}")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _fmt_count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def summary(model: nn.Module) -> str:
    """One line: layers, heads, sizes, the normalizer per attention type and the parameter count."""
    n = _fmt_count(count_parameters(model))
    c = getattr(model, "config", None)
    if isinstance(c, Seq2SeqConfig):
        norms = " ".join(f"{t}={getattr(c, t)}" for t in ATTENTION_TYPES)
        return (
            f"Seq2SeqTransformer: {c.enc_layers}+{c.dec_layers} layers x {c.n_heads} heads, d_model {c.d_model}, "
            f"d_ff {c.d_ff}, {'pre' if c.pre_norm else 'post'}-norm; {norms}; {n} parameters"
        )
    if isinstance(c, DecoderOnlyConfig):
        return (
            f"DecoderOnlyTransformer: {c.n_layers} layers x {c.n_heads} heads, d_model {c.d_model}, d_ff {c.d_ff}, "
            f"{'pre' if c.pre_norm else 'post'}-norm; self={c.self_attn}; positions={c.positions}, "
            f"length_scaling={c.length_scaling}; {n} parameters"
        )
    return f"{type(model).__name__}: {n} parameters"
