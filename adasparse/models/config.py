"""Model configurations (frozen dataclasses) and presets (plain functions returning configs).

Presets::

    tiny(attention="learned", **overrides)    # tests: 2+2 layers, 32 dims, 2 heads
    small(attention="learned", **overrides)   # CPU training: 3+3 layers, 256 dims, 4 heads, FFN 1024
    base(attention="learned", **overrides)    # the paper: 6+6 layers, 512 dims, 8 heads, FFN 2048

``attention`` sets the normalizer of all three attention types at once (``"softmax"``, ``"sparsemax"``,
``"entmax15"``, ``"learned"`` or a number α), or is a dict ``{"enc_self": ..., "dec_self": ..., "context": ...}``;
per-type keyword overrides (``enc_self=...``) win over it.  ``vocab_size=`` sets both vocabularies.
``tiny_lm``/``small_lm``/``base_lm`` are the decoder-only counterparts (:class:`DecoderOnlyConfig`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from numbers import Real
from typing import Any

from ..nn.length_scaling import LENGTH_SCALINGS
from ..nn.positions import POSITIONS
from ..ops.normalizers import canonical_normalizer, check_alpha_init, check_parametrization

__all__ = [
    "Seq2SeqConfig",
    "DecoderOnlyConfig",
    "ATTENTION_TYPES",
    "FORMER_DEFAULTS",
    "tiny",
    "small",
    "base",
    "tiny_lm",
    "small_lm",
    "base_lm",
]

#: model options whose default has changed, with the value that a configuration saved without the option
#: meant: checkpoints written before still load, and resume, as the model they were. ``alpha_parametrization``
#: was ``"clamp"`` (the only map) until the G2P runs to convergence made ``"sigmoid"`` the default (issue 14).
FORMER_DEFAULTS: dict[str, Any] = {"alpha_parametrization": "clamp"}


def saved_model_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A model configuration read from a checkpoint, with :data:`FORMER_DEFAULTS` for the options it predates."""
    return {**FORMER_DEFAULTS, **saved}


#: the attention types of the encoder–decoder model, in the order used by reports
ATTENTION_TYPES = ("enc_self", "dec_self", "context")
SHARE_EMBEDDINGS = ("none", "decoder", "all")


def _check_common(cfg: Any) -> None:
    """Checks shared by both configs (d_model/heads/dropout/ids/alpha_init)."""
    for name in ("d_model", "n_heads", "d_ff", "max_len"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if cfg.d_model % cfg.n_heads:
        raise ValueError(f"d_model={cfg.d_model} must be divisible by n_heads={cfg.n_heads}")
    for name in ("dropout", "attn_dropout"):
        v = getattr(cfg, name)
        if not isinstance(v, Real) or not 0.0 <= v < 1.0:
            raise ValueError(f"{name} must be a number in [0, 1), got {v!r}")
    if cfg.activation not in ("relu", "gelu"):
        raise ValueError(f"activation must be 'relu' or 'gelu', got {cfg.activation!r}")
    check_alpha_init(cfg.alpha_init, "alpha_init")
    check_parametrization(cfg.alpha_parametrization, "alpha_parametrization")


def _check_ids(cfg: Any, vocab_sizes: dict[str, int]) -> None:
    for name, v in vocab_sizes.items():
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    smallest = min(vocab_sizes.values())
    for name in ("pad_id", "bos_id", "eos_id"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or not 0 <= v < smallest:
            raise ValueError(f"{name} must be an int in [0, {smallest}) (the vocabulary), got {v!r}")


class _JsonMixin:
    """``to_dict``/``from_dict``/``to_json``/``from_json`` for a flat frozen dataclass."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable), with a ``"kind"`` key naming the config class."""
        return {"kind": type(self).__name__, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        d = dict(d)
        kind = d.pop("kind", cls.__name__)
        if kind != cls.__name__:
            raise ValueError(f"this dict describes a {kind}, not a {cls.__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; allowed: {sorted(names)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, s: str):
        return cls.from_dict(json.loads(s))

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


@dataclass(frozen=True)
class Seq2SeqConfig(_JsonMixin):
    """Encoder–decoder Transformer (Vaswani et al. 2017) with α-entmax attention (Correia et al. 2019).

    Attributes:
        src_vocab_size, tgt_vocab_size: vocabulary sizes.
        d_model, n_heads, enc_layers, dec_layers, d_ff: sizes.
        dropout: on embeddings, residual branches and inside the feed-forward block.
        attn_dropout: on attention probabilities.
        pre_norm: LayerNorm before each sub-layer (+ a final LayerNorm per stack), as in the paper's
            OpenNMT-py models; False = post-norm (original Transformer).
        share_embeddings: ``"none"`` (three matrices), ``"decoder"`` (target embedding = output
            projection), ``"all"`` (source = target = output; needs equal vocabularies).
        max_len: longest sequence (size of the sinusoidal position table).
        pad_id, bos_id, eos_id: special token ids.
        enc_self, dec_self, context: normalizer of each attention type: ``"softmax"``, ``"sparsemax"``,
            ``"entmax15"``, ``"learned"`` (one α per head) or a number α ≥ 1.
        alpha_init: learned α initialisation: ``"normal"`` (θ ~ N(0, 1), the paper) or a number in (1, 2).
        alpha_parametrization: learned α as ``"sigmoid"`` (default: ``1.01 + 0.99 · sigmoid θ``, no dead zone)
            or ``"clamp"`` (the paper's ``clamp(1 + sigmoid θ, 1.01, 2)``, whose clamp zeroes θ's gradient below
            1.01); see :class:`adasparse.nn.LearnableAlpha`.
        activation: ``"relu"`` (default) or ``"gelu"``.
        scale_embeddings: multiply embeddings by √d_model (Vaswani et al.).
    """

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 512
    n_heads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1
    attn_dropout: float = 0.1
    pre_norm: bool = True
    share_embeddings: str = "decoder"
    max_len: int = 1024
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    enc_self: str | float = "learned"
    dec_self: str | float = "learned"
    context: str | float = "learned"
    alpha_init: str | float = "normal"
    alpha_parametrization: str = "sigmoid"
    activation: str = "relu"
    scale_embeddings: bool = True

    def __post_init__(self):
        _check_common(self)
        _check_ids(self, {"src_vocab_size": self.src_vocab_size, "tgt_vocab_size": self.tgt_vocab_size})
        for name in ("enc_layers", "dec_layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.share_embeddings not in SHARE_EMBEDDINGS:
            raise ValueError(f"share_embeddings must be one of {list(SHARE_EMBEDDINGS)}, got {self.share_embeddings!r}")
        if self.share_embeddings == "all" and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(
                "share_embeddings='all' needs src_vocab_size == tgt_vocab_size, "
                f"got {self.src_vocab_size} and {self.tgt_vocab_size}"
            )
        for name in ATTENTION_TYPES:
            object.__setattr__(self, name, canonical_normalizer(getattr(self, name), name))

    @property
    def normalizers(self) -> dict[str, str | float]:
        """``{"enc_self": ..., "dec_self": ..., "context": ...}``."""
        return {t: getattr(self, t) for t in ATTENTION_TYPES}


@dataclass(frozen=True)
class DecoderOnlyConfig(_JsonMixin):
    """Decoder-only (causal language model) Transformer with α-entmax self-attention.

    Attributes mirror :class:`Seq2SeqConfig`; ``n_layers`` decoder blocks without cross-attention,
    ``self_attn`` is the normalizer, ``tie_embeddings`` ties the input embedding and the output projection.

    Positions and length scaling (configs saved without these fields load with the defaults, the old behaviour):

    * ``positions``: ``"sinusoidal"`` (default: absolute encodings added to the embeddings, at most ``max_len``
      positions), ``"rope"`` (rotary, Su et al. 2021, half-split convention as Llama's, on every head's
      queries and keys; ``rope_base`` its wavelength base) or ``"none"`` (NoPE: the causal mask alone).
      With ``"rope"`` or ``"none"`` the model has no position table and takes sequences of any length.
    * ``length_scaling``: ``"none"`` (default), ``"learned"`` (each query's scores × ``δ + β·log n``, ``n`` the
      keys it may attend to, ``δ``/``β`` learned per head and layer from ``δ = 1``, ``β = 0``) or ``"ssmax"``
      (Scalable-Softmax: × ``σ·log n``, ``σ`` learned per head from 1); see :mod:`adasparse.nn.length_scaling`.
    """

    vocab_size: int
    d_model: int = 512
    n_heads: int = 8
    n_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1
    attn_dropout: float = 0.1
    pre_norm: bool = True
    tie_embeddings: bool = True
    max_len: int = 1024
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    self_attn: str | float = "learned"
    alpha_init: str | float = "normal"
    alpha_parametrization: str = "sigmoid"
    activation: str = "relu"
    scale_embeddings: bool = True
    positions: str = "sinusoidal"
    rope_base: float = 10000.0
    length_scaling: str = "none"

    def __post_init__(self):
        _check_common(self)
        _check_ids(self, {"vocab_size": self.vocab_size})
        if not isinstance(self.n_layers, int) or self.n_layers <= 0:
            raise ValueError(f"n_layers must be a positive int, got {self.n_layers!r}")
        object.__setattr__(self, "self_attn", canonical_normalizer(self.self_attn, "self_attn"))
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {list(POSITIONS)}, got {self.positions!r}")
        if self.positions == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"positions='rope' needs an even head dim, got d_model/n_heads = {self.d_model}/{self.n_heads}"
            )
        rb = self.rope_base
        if isinstance(rb, bool) or not isinstance(rb, Real) or not math.isfinite(rb) or rb <= 1:
            raise ValueError(f"rope_base must be a finite number > 1, got {rb!r}")
        if self.length_scaling not in LENGTH_SCALINGS:
            raise ValueError(f"length_scaling must be one of {list(LENGTH_SCALINGS)}, got {self.length_scaling!r}")

    @property
    def normalizers(self) -> dict[str, str | float]:
        """``{"self": ...}``."""
        return {"self": self.self_attn}


# --------------------------------------------------------------------------- presets

_SIZES = {
    "tiny": dict(d_model=32, n_heads=2, layers=2, d_ff=64, dropout=0.0, attn_dropout=0.0, max_len=256, vocab=64),
    "small": dict(d_model=256, n_heads=4, layers=3, d_ff=1024, dropout=0.1, attn_dropout=0.1, max_len=512, vocab=8000),
    "base": dict(d_model=512, n_heads=8, layers=6, d_ff=2048, dropout=0.1, attn_dropout=0.1, max_len=1024, vocab=32000),
}


def _attention_kwargs(attention: str | float | dict[str, str | float]) -> dict[str, str | float]:
    if isinstance(attention, dict):
        unknown = sorted(set(attention) - set(ATTENTION_TYPES))
        if unknown:
            raise ValueError(f"unknown attention types {unknown}; allowed: {list(ATTENTION_TYPES)}")
        return {t: attention.get(t, "learned") for t in ATTENTION_TYPES}
    return {t: attention for t in ATTENTION_TYPES}


def _seq2seq(size: str, attention, overrides: dict[str, Any]) -> Seq2SeqConfig:
    s = _SIZES[size]
    kw: dict[str, Any] = dict(
        src_vocab_size=s["vocab"],
        tgt_vocab_size=s["vocab"],
        d_model=s["d_model"],
        n_heads=s["n_heads"],
        enc_layers=s["layers"],
        dec_layers=s["layers"],
        d_ff=s["d_ff"],
        dropout=s["dropout"],
        attn_dropout=s["attn_dropout"],
        max_len=s["max_len"],
        **_attention_kwargs(attention),
    )
    if "vocab_size" in overrides:
        v = overrides.pop("vocab_size")
        kw["src_vocab_size"] = kw["tgt_vocab_size"] = v
    names = {f.name for f in fields(Seq2SeqConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown Seq2SeqConfig fields {unknown}; allowed: {sorted(names | {'vocab_size'})}")
    kw.update(overrides)
    return Seq2SeqConfig(**kw)


def _lm(size: str, attention, overrides: dict[str, Any]) -> DecoderOnlyConfig:
    s = _SIZES[size]
    if isinstance(attention, dict):
        raise TypeError("a decoder-only model has one attention type: pass attention as a string or a number")
    kw: dict[str, Any] = dict(
        vocab_size=s["vocab"],
        d_model=s["d_model"],
        n_heads=s["n_heads"],
        n_layers=s["layers"] * 2,
        d_ff=s["d_ff"],
        dropout=s["dropout"],
        attn_dropout=s["attn_dropout"],
        max_len=s["max_len"],
        self_attn=attention,
    )
    names = {f.name for f in fields(DecoderOnlyConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown DecoderOnlyConfig fields {unknown}; allowed: {sorted(names)}")
    kw.update(overrides)
    return DecoderOnlyConfig(**kw)


def tiny(attention: str | float | dict = "learned", **overrides) -> Seq2SeqConfig:
    """Tiny encoder–decoder for tests: 2+2 layers, d_model 32, 2 heads, FFN 64, vocabulary 64, no dropout."""
    return _seq2seq("tiny", attention, overrides)


def small(attention: str | float | dict = "learned", **overrides) -> Seq2SeqConfig:
    """Small encoder–decoder for CPU training: 3+3 layers, d_model 256, 4 heads, FFN 1024, vocabulary 8000."""
    return _seq2seq("small", attention, overrides)


def base(attention: str | float | dict = "learned", **overrides) -> Seq2SeqConfig:
    """The paper's model (Transformer base): 6+6 layers, d_model 512, 8 heads, FFN 2048, vocabulary 32000."""
    return _seq2seq("base", attention, overrides)


def tiny_lm(attention: str | float = "learned", **overrides) -> DecoderOnlyConfig:
    """Tiny decoder-only model for tests: 4 layers, d_model 32, 2 heads, vocabulary 64."""
    return _lm("tiny", attention, overrides)


def small_lm(attention: str | float = "learned", **overrides) -> DecoderOnlyConfig:
    """Small decoder-only model: 6 layers, d_model 256, 4 heads, FFN 1024, vocabulary 8000."""
    return _lm("small", attention, overrides)


def base_lm(attention: str | float = "learned", **overrides) -> DecoderOnlyConfig:
    """Base decoder-only model: 12 layers, d_model 512, 8 heads, FFN 2048, vocabulary 32000."""
    return _lm("base", attention, overrides)
