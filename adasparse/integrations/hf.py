"""Make a Hugging Face ``transformers`` model adaptively sparse.

Three lines turn a pretrained model into an α-entmax model with one learned α per head and layer::

    model = AutoModelForSequenceClassification.from_pretrained("bert-base-uncased")
    sparsify(model, alpha="learned")   # or a fixed α: 1.5, "entmax15", "sparsemax"
    ...train as usual (the α are ordinary parameters, saved by save_pretrained)...

How it plugs in. ``transformers`` (≥ 4.53) looks the attention kernel up by name in ``AttentionInterface`` and
builds masks with the function registered under the same name in ``AttentionMaskInterface``; a name present
only in the first gets ``attention_mask=None``, i.e. padding and causality silently dropped. :func:`register`
therefore registers both: :func:`adasparse_attention_forward` and :func:`adasparse_mask`, a boolean mask
(True = may attend) that is always materialised, so the kernel never has to guess causality.

Where α lives. The kernel reads α from the attention module that calls it (the ``module`` argument of the
interface): attribute ``adasparse_alpha``, either a float (fixed α) or an :class:`adasparse.LearnableAlpha`
of shape ``(H,)`` registered as a submodule (learned α; H = number of query heads). The settings are recorded
in ``model.config.adasparse`` so that :func:`from_pretrained` can rebuild the same α modules before loading
their values from the checkpoint.

The math: the kernel is a thin adapter over :func:`adasparse.entmax_attention` (SDPA's arguments): bool masks
pass through (so the fused Triton kernel serves HF models on CUDA where the masks allow), float masks and T5's
``position_bias`` become an additive bias, GQA goes through ``enable_gqa``, dropout through ``dropout_p`` (in
training only), GPT-OSS attention sinks become one extra key per head with the sink's logit and a zero value;
only Gemma-2's soft-capping (a non-linear map of the scores) is done on materialised scores here. α = 1 is the
model's own eager attention; a query with no attendable key gets a zero row (eager softmax: uniform or NaN).
Attention weights are returned only when asked for (``output_attentions``, which transformers' output capturing
may ask for without passing the flag, as in GPT-2; :func:`capture_attention`); in training they are the weights
after dropout, as eager's.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..analysis.stats import js_divergence
from ..nn.activations import LearnableAlpha
from ..nn.attention import entmax_attention
from ..ops.entmax import entmax
from ..ops.normalizers import LEARNED, canonical_normalizer, normalizer_alpha

__all__ = [
    "DEFAULT_NAME",
    "ALPHA_ATTRIBUTE",
    "CONFIG_KEY",
    "register",
    "adasparse_attention_forward",
    "adasparse_mask",
    "sparsify",
    "alphas",
    "attention_modules",
    "from_pretrained",
    "AttentionRecord",
    "capture_attention",
    "LayerAttentionStats",
    "attention_stats",
]

DEFAULT_NAME = "adasparse"
ALPHA_ATTRIBUTE = "adasparse_alpha"  # attribute of each attention module: float or LearnableAlpha
CONFIG_KEY = "adasparse"  # key in model.config holding the sparsify settings (saved in config.json)
DEFAULT_ALPHA = 1.5  # α of a module running our kernel that was never sparsified (attn_implementation="adasparse")

_HEAD_ATTRIBUTES = ("num_heads", "num_attention_heads", "n_heads", "n_head")


def _require_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "adasparse.integrations.hf needs Hugging Face transformers>=4.53: pip install 'adasparse[hf]'"
        ) from e


# ---------------------------------------------------------------------------------------------------------------
# registration: the kernel and the mask function


def register(name: str = DEFAULT_NAME) -> str:
    """Register the α-entmax kernel and its boolean mask function with ``transformers`` under ``name``.

    After this, ``AutoModel.from_pretrained(..., attn_implementation=name)`` or
    ``model.set_attn_implementation(name)`` routes every attention module through
    :func:`adasparse_attention_forward`, with padding/causal/sliding-window masks built by
    :func:`adasparse_mask`. Idempotent; returns ``name``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if name in ("eager", "sdpa", "flex_attention") or name.startswith(("flash_attention", "paged")):
        raise ValueError(f"name={name!r} would replace a built-in transformers attention; choose another name")
    _require_transformers()
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(name, adasparse_attention_forward)
    AttentionMaskInterface.register(name, adasparse_mask)
    return name


def adasparse_mask(*args, **kwargs) -> Tensor | None:
    """Mask function for ``AttentionMaskInterface``: a boolean ``(B, 1, Q, K)`` mask, True = may attend.

    It is ``transformers``' ``sdpa_mask`` with the "causal skip" disabled: sdpa may return ``None`` for a plain
    causal mask and rely on its own ``is_causal`` flag; we always materialise it. ``None`` is still returned for a
    bidirectional mask without padding when the caller allows it (nothing to mask).
    """
    from transformers.masking_utils import sdpa_mask

    kwargs["allow_is_causal_skip"] = False
    kwargs.pop("dtype", None)  # eager's float-mask dtype; our mask is boolean
    return sdpa_mask(*args, **kwargs)


def _module_alpha(module: nn.Module, num_heads: int) -> float | Tensor:
    """α for ``module``: a float, or a ``(1, H, 1, 1)`` tensor for a learned α."""
    a = getattr(module, ALPHA_ATTRIBUTE, None)
    if a is None:
        settings = getattr(getattr(module, "config", None), CONFIG_KEY, None) or {}
        a = settings.get("alpha", DEFAULT_ALPHA)
        if a == "learned":
            raise RuntimeError(
                f"{type(module).__name__} runs adasparse attention with learned α, but has no "
                f"`{ALPHA_ATTRIBUTE}`: load it with adasparse.integrations.hf.from_pretrained(...) or call sparsify()"
            )
        return normalizer_alpha(a, f"model.config.{CONFIG_KEY}['alpha']")
    if isinstance(a, LearnableAlpha):
        alpha = a()
        if alpha.shape != (num_heads,):
            raise RuntimeError(
                f"{type(module).__name__}.{ALPHA_ATTRIBUTE} has shape {tuple(alpha.shape)} but the attention has "
                f"{num_heads} query heads: expected ({num_heads},)"
            )
        return alpha.view(1, num_heads, 1, 1)
    return float(a)


def _allowed_and_bias(
    attention_mask: Tensor | None, position_bias: Tensor | None, q_len: int, k_len: int
) -> tuple[Tensor | None, Tensor | None]:
    """transformers' mask (bool True = may attend, or additive float with ``finfo.min``-style entries for masked
    keys) and an optional additive ``position_bias`` → (bool mask or None, float bias with ``-inf`` for masked
    keys or None). A float mask of only 0 / masked entries becomes a bool mask (the fused kernel takes those)."""
    allowed, bias = None, None
    if attention_mask is not None:
        mask = attention_mask[..., :k_len]
        if mask.dtype == torch.bool:
            allowed = mask
        else:
            allowed = mask > torch.finfo(mask.dtype).min / 2
            rest = mask.masked_fill(~allowed, 0.0)
            if bool((rest != 0).any()):  # a real additive bias besides the masking
                bias = rest
    if position_bias is not None:
        pb = position_bias[..., -q_len:, -k_len:]
        bias = pb if bias is None else bias + pb
    if bias is not None and allowed is not None:
        bias = bias.masked_fill(~allowed, float("-inf"))
        allowed = None
    return allowed, bias


def adasparse_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[Tensor, Tensor | None]:
    """α-entmax attention with the ``transformers`` ``AttentionInterface`` signature: a thin adapter over
    :func:`adasparse.entmax_attention` (so the fused kernel serves it on CUDA wherever the masks allow).

    Args:
        module: the calling attention module; α is read from its ``adasparse_alpha`` attribute.
        query: ``(B, H, Q, D)``; key, value: ``(B, Hkv, K, D)`` with ``H`` a multiple of ``Hkv`` (GQA/MQA).
        attention_mask: boolean ``(B, 1|H, Q, K')`` (True = may attend), an additive float mask (0 / very
            negative), or ``None``; ``K' ≥ K`` is cropped to ``K``. Sliding windows arrive inside it.
        scaling: multiplies ``q kᵀ``; ``None`` means ``D**-0.5`` (T5 passes 1.0).
        dropout: dropout probability on the attention probabilities (applied only in training).
        kwargs: ``position_bias`` (T5-style additive bias, broadcastable to ``(B, H, Q, K)``), ``softcap``
            (Gemma-2 style ``tanh`` capping of the scores), ``s_aux``/``sinks`` (one attention-sink logit per
            head, GPT-OSS style: an extra key with that score and a zero value), ``is_causal`` (used only when
            no mask is given), ``output_attentions``.

    Returns:
        ``(out, weights)``: ``out`` of shape ``(B, Q, H, D)`` (the layout transformers reshapes to ``(B, Q, H·D)``);
        ``weights`` ``(B, H, Q, K)`` when asked for (``output_attentions``, :func:`capture_attention`), else None.
    """
    b, h, q_len, d = query.shape
    hkv, k_len = key.shape[1], key.shape[2]
    if h % hkv != 0:
        raise ValueError(f"query has {h} heads, not a multiple of the {hkv} key/value heads")
    scaling = d**-0.5 if scaling is None else scaling
    alpha = _module_alpha(module, h)
    allowed, bias = _allowed_and_bias(attention_mask, kwargs.get("position_bias"), q_len, k_len)
    is_causal = False
    if attention_mask is None:
        causal = kwargs.get("is_causal")
        causal = getattr(module, "is_causal", False) if causal is None else causal
        if causal and q_len > 1:  # sdpa's is_causal alignment (top-left), as transformers' sdpa kernel
            if bias is None:
                is_causal = True
            else:
                tril = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril()
                bias = bias.masked_fill(~tril, float("-inf"))
    if allowed is not None and bias is None:  # transformers materialises (B, 1, Q, K): say it compactly if we can
        allowed, is_causal = _compact_mask(allowed, is_causal)
    need_weights = _RECORDER is not None or bool(kwargs.get("output_attentions")) or _collector_wants_attentions()
    p_drop = dropout if module.training else 0.0

    softcap = kwargs.get("softcap")
    if softcap is not None:  # a non-linear map of the scores: materialise them (no SDPA-style kernel takes it)
        out, p = _softcapped_attention(query, key, value, allowed, bias, is_causal, scaling, softcap, alpha, p_drop)
    else:
        sinks = kwargs.get("s_aux", kwargs.get("sinks"))
        if sinks is not None:  # one more key per head: score = the sink logit, value 0
            key = torch.cat([key, key.new_zeros(b, hkv, 1, d)], dim=2)
            value = torch.cat([value, value.new_zeros(b, hkv, 1, value.shape[-1])], dim=2)
            if bias is None:
                bias = query.new_zeros(1, 1, 1, k_len)
                if allowed is not None:
                    bias = bias.masked_fill(~allowed, float("-inf"))
                if is_causal:
                    tril = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril()
                    bias = bias.masked_fill(~tril, float("-inf"))
                allowed, is_causal = None, False
            sink = sinks.reshape(1, h, 1, 1).to(bias.dtype).expand(*bias.shape[:-3], h, bias.shape[-2], 1)
            bias = torch.cat([bias.expand(*sink.shape[:-1], k_len), sink], dim=-1)  # (B|1, H, Q|1, K + 1)
        mask = bias if bias is not None else allowed
        if need_weights and p_drop > 0:  # the weights returned are those after dropout, as eager's: drop them here
            _, stats = entmax_attention(
                query, key, value, mask, 0.0, is_causal,
                scale=scaling, enable_gqa=h != hkv, alpha=alpha, return_stats=True,
            )  # fmt: skip
            p = nn.functional.dropout(stats.probs, p=p_drop)
            out = p.to(value.dtype) @ value.repeat_interleave(h // hkv, dim=1)
            p = p[..., :k_len]  # without the sink column
        else:
            res = entmax_attention(
                query, key, value, mask, p_drop, is_causal,
                scale=scaling, enable_gqa=h != hkv, alpha=alpha, return_stats=need_weights,
            )  # fmt: skip
            out, p = res if need_weights else (res, None)
            if p is not None:
                p = p.probs[..., :k_len]  # without the sink column
    if _RECORDER is not None:
        _RECORDER.record(module, p, _allowed_for_record(allowed, bias, is_causal, q_len, k_len, query.device))
    return out.transpose(1, 2).contiguous(), p  # (B, Q, H, D)


def _collector_wants_attentions() -> bool:
    """Whether transformers' output capturing (``output_attentions=True`` on a model whose layers drop the flag
    before calling the kernel, e.g. GPT-2) is collecting attention weights in this forward."""
    global _ACTIVE_COLLECTOR
    if _ACTIVE_COLLECTOR is None:
        try:
            from transformers.utils.output_capturing import _active_collector
        except ImportError:  # an older or newer transformers without it: the flag in kwargs is all there is
            _active_collector = False
        _ACTIVE_COLLECTOR = _active_collector
    if _ACTIVE_COLLECTOR is False:
        return False
    collected = _ACTIVE_COLLECTOR.get()
    return bool(collected) and any("attentions" in k for k in collected)


_ACTIVE_COLLECTOR = None


def _compact_mask(allowed: Tensor, is_causal: bool) -> tuple[Tensor, bool]:
    """A materialised ``(B, 1, Q, K)`` mask that is only key padding, or causal (top-left) and key padding, as a
    key-padding mask ``(B, 1, 1, K)`` (+ ``is_causal``): the form the fused kernel takes. Otherwise unchanged."""
    if is_causal or allowed.dim() != 4 or allowed.shape[1] != 1:
        return allowed, is_causal
    q_len, k_len = allowed.shape[-2:]
    keys = allowed.any(dim=-2, keepdim=True)  # (B, 1, 1, K): keys some query may attend
    if bool((allowed == keys).all()):
        return keys, False
    if q_len == k_len:
        tril = torch.ones(q_len, k_len, dtype=torch.bool, device=allowed.device).tril()
        if bool((allowed == (tril & keys)).all()):
            return keys, True
    return allowed, is_causal


def _allowed_for_record(allowed, bias, is_causal, q_len, k_len, device) -> Tensor | None:
    """The boolean mask (True = may attend) the analysis needs, whichever way it reached the kernel."""
    if bias is not None:
        return torch.isfinite(bias[..., :k_len])
    if is_causal:
        return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril()
    return allowed


def _softcapped_attention(query, key, value, allowed, bias, is_causal, scaling, softcap, alpha, p_drop):
    """Gemma-2 style ``softcap · tanh(scores / softcap)`` before α-entmax, on materialised scores."""
    h, hkv = query.shape[1], key.shape[1]
    key = key.repeat_interleave(h // hkv, dim=1)  # (B, H, K, D)
    value = value.repeat_interleave(h // hkv, dim=1)
    compute = torch.float32 if query.dtype in (torch.float16, torch.bfloat16) else query.dtype
    scores = (query @ key.transpose(-1, -2) * scaling).to(compute)  # (B, H, Q, K)
    scores = torch.tanh(scores / softcap) * softcap
    if bias is not None:
        scores = scores + bias.to(compute)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    if is_causal:
        q_len, k_len = scores.shape[-2:]
        tril = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~tril, float("-inf"))
    p = entmax(scores, alpha, dim=-1)  # a fully masked row gives zeros
    p = nn.functional.dropout(p, p=p_drop) if p_drop > 0 else p  # returned after dropout, as eager's
    return p.to(value.dtype) @ value, p  # (B, H, Q, D)


# ---------------------------------------------------------------------------------------------------------------
# sparsify / alphas / reload


def _calls_attention_interface(cls: type) -> bool:
    """Does ``cls.forward`` fetch its kernel from ``AttentionInterface`` (i.e. call the kernel with itself)?"""
    cached = _INTERFACE_CLASSES.get(cls)
    if cached is None:
        try:
            src = inspect.getsource(cls.forward)
        except (OSError, TypeError):
            src = ""
        cached = "ALL_ATTENTION_FUNCTIONS" in src or "AttentionInterface" in src
        _INTERFACE_CLASSES[cls] = cached
    return cached


_INTERFACE_CLASSES: dict[type, bool] = {}


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs of ``model`` that call the attention kernel (one per attention layer).

    Found as the modules whose ``forward`` dispatches through ``transformers``' ``ALL_ATTENTION_FUNCTIONS``
    (every model that supports ``attn_implementation`` does).
    """
    return [(n, m) for n, m in model.named_modules() if _calls_attention_interface(type(m))]


def _inline_attention_classes(model: nn.Module) -> list[str]:
    """Class names of attention modules that compute attention themselves (e.g. Bloom's): modules named
    ``*Attention`` that neither dispatch through ``AttentionInterface`` nor contain a module that does."""
    dispatching = {n for n, _ in attention_modules(model)}
    names = set()
    for n, m in model.named_modules():
        if not n or n in dispatching or not type(m).__name__.endswith("Attention"):
            continue
        if not any(d.startswith(n + ".") for d in dispatching):  # not a container of a dispatching module
            names.add(type(m).__name__)
    return sorted(names)


def _num_heads(name: str, module: nn.Module) -> int:
    for attr in _HEAD_ATTRIBUTES:
        v = getattr(module, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    v = getattr(getattr(module, "config", None), "num_attention_heads", None)
    if isinstance(v, int) and v > 0:
        return v
    raise ValueError(
        f"cannot tell the number of heads of attention module {name!r} ({type(module).__name__}): it has none of "
        f"the attributes {_HEAD_ATTRIBUTES} nor config.num_attention_heads"
    )


def _check_alpha_setting(alpha) -> str | float:
    """``"learned"``, or the α of a fixed setting (a name or a number >= 1) as a float."""
    setting = canonical_normalizer(alpha, "alpha")
    return setting if setting == LEARNED else normalizer_alpha(setting, "alpha")


def sparsify(
    model: nn.Module,
    alpha: str | float = "learned",
    init: str | float = "normal",
    *,
    alpha_min: float = 1.01,
    alpha_max: float = 2.0,
    parametrization: str = "sigmoid",
    name: str = DEFAULT_NAME,
) -> nn.Module:
    """Switch a loaded ``transformers`` model to α-entmax attention, in place; returns the model.

    Args:
        model: a ``PreTrainedModel`` whose attention goes through ``AttentionInterface`` (encoder, decoder or
            encoder–decoder; every sub-config is switched).
        alpha: ``"learned"`` (one :class:`adasparse.LearnableAlpha` of shape ``(H,)`` per attention module,
            registered as submodule ``adasparse_alpha``: trained with the model, in its ``state_dict``), a fixed
            number ≥ 1 (1 = the model's softmax attention), ``"entmax15"`` (1.5) or ``"sparsemax"`` (2).
        init: initial learned α: ``"normal"`` (θ ~ N(0, 1) as in the paper) or a number in (1, 2); only with
            ``alpha="learned"``.
        alpha_min, alpha_max: range of a learned α.
        parametrization: ``"sigmoid"`` (default, no dead zone below ``alpha_min``) or ``"clamp"`` (the paper's), see
            :class:`adasparse.LearnableAlpha`.
        name: the name registered with ``transformers`` (see :func:`register`).

    The settings are stored in ``model.config.adasparse`` (saved in ``config.json``); reload a saved model with
    :func:`from_pretrained`. Calling ``sparsify`` again replaces the previous α (learned values are discarded).
    """
    setting = _check_alpha_setting(alpha)
    if setting != "learned" and init != "normal":
        raise ValueError(f"init={init!r} only applies to alpha='learned', got alpha={alpha!r}")
    register(name)
    mods = attention_modules(model)
    inline = _inline_attention_classes(model)
    if not mods or inline:
        found = f"its attention modules {inline} compute" if inline else "it has no attention module that computes"
        raise ValueError(
            f"cannot sparsify {type(model).__name__}: {found} attention inline instead of calling the kernel "
            "that transformers' AttentionInterface (ALL_ATTENTION_FUNCTIONS) registers, so adasparse cannot "
            "replace their softmax. sparsify needs models whose attention modules dispatch through it (Llama, "
            "Mistral, Qwen2, Gemma, GPT-2, BERT, T5, Marian, BART, ...); "
            f"attn_implementation={name!r} would leave these modules dense."
        )
    heads = {n: _num_heads(n, m) for n, m in mods}
    if setting == "learned":  # validates init and the clamp range before the model is touched
        LearnableAlpha((1,), init=init, alpha_min=alpha_min, alpha_max=alpha_max, parametrization=parametrization)

    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:
        model.config._attn_implementation = name
    configs = [model.config] + [m.config for m in model.modules() if hasattr(m, "config")]
    not_switched = {type(c).__name__ for c in configs if getattr(c, "_attn_implementation", name) != name}
    if not_switched:
        raise ValueError(f"could not switch {sorted(not_switched)} to attn_implementation={name!r}")

    for n, m in mods:
        if ALPHA_ATTRIBUTE in m._modules:
            del m._modules[ALPHA_ATTRIBUTE]
        elif hasattr(m, ALPHA_ATTRIBUTE):
            delattr(m, ALPHA_ATTRIBUTE)
        if setting == "learned":
            ref = next(m.parameters(), None)
            la = LearnableAlpha(
                (heads[n],), init=init, alpha_min=alpha_min, alpha_max=alpha_max, parametrization=parametrization
            )
            if ref is not None:
                la = la.to(device=ref.device)
            m.add_module(ALPHA_ATTRIBUTE, la)
        else:
            setattr(m, ALPHA_ATTRIBUTE, setting)

    settings = {"alpha": setting, "name": name}
    if setting == "learned":
        settings.update(
            init=init, alpha_min=float(alpha_min), alpha_max=float(alpha_max), parametrization=parametrization
        )
    model.config.adasparse = settings
    # saved into config.json by save_pretrained; transformers reads it back as the attention to use, so a
    # sparsified model never reloads silently as a softmax one (see from_pretrained)
    model.config.attn_implementation = name
    return model


def alphas(model: nn.Module) -> dict[str, Tensor]:
    """α of every head of every attention module of a sparsified model: ``{module name: (H,) tensor}``.

    Detached copies (float32, on the module's device); fixed α are repeated over the heads.
    """
    out = {}
    for n, m in attention_modules(model):
        a = getattr(m, ALPHA_ATTRIBUTE, None)
        if a is None:
            continue
        if isinstance(a, LearnableAlpha):
            out[n] = a().detach().float().clone()
        else:
            ref = next(m.parameters(), None)
            out[n] = torch.full((_num_heads(n, m),), float(a), device=None if ref is None else ref.device)
    if not out:
        raise ValueError(f"{type(model).__name__} is not sparsified: call adasparse.integrations.hf.sparsify first")
    return out


def _checkpoint_files(path: str | os.PathLike, revision: str | None = None) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.safetensors"))
    else:  # a Hub id: the files are already in the local cache after from_pretrained
        from huggingface_hub import snapshot_download

        local = snapshot_download(str(path), revision=revision, allow_patterns=["*.safetensors"])
        files = sorted(Path(local).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors checkpoint found for {str(path)!r}")
    return files


def _load_learned_alphas(model: nn.Module, path: str | os.PathLike, revision: str | None = None) -> None:
    """Copy the saved θ of every LearnableAlpha from the checkpoint into ``model``."""
    from safetensors import safe_open

    wanted = {n: p for n, p in model.named_parameters() if f"{ALPHA_ATTRIBUTE}." in n}
    prefix = getattr(model, "base_model_prefix", "") or ""
    found: dict[str, Tensor] = {}
    for f in _checkpoint_files(path, revision):
        with safe_open(str(f), framework="pt") as fh:
            keys = set(fh.keys())
            for n in wanted:
                cands = [n, f"{prefix}.{n}" if prefix else n]
                if prefix and n.startswith(prefix + "."):
                    cands.append(n[len(prefix) + 1 :])
                for c in cands:
                    if c in keys:
                        found[n] = fh.get_tensor(c)
                        break
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ValueError(f"checkpoint {str(path)!r} lacks the learned α of {len(missing)} modules, e.g. {missing[0]}")
    with torch.no_grad():
        for n, t in found.items():
            wanted[n].copy_(t)


def _saved_settings(path: str | os.PathLike, kwargs: dict) -> dict | None:
    """``config.adasparse`` of a saved model, read before the model is built (None if it has none)."""
    from transformers import PretrainedConfig

    keep = ("revision", "cache_dir", "token", "local_files_only", "subfolder")
    config_dict, _ = PretrainedConfig.get_config_dict(path, **{k: v for k, v in kwargs.items() if k in keep})
    settings = config_dict.get(CONFIG_KEY)
    return settings if isinstance(settings, dict) and "alpha" in settings else None


@contextlib.contextmanager
def _alpha_keys_expected(model_class, path, kwargs: dict) -> Iterator[None]:
    """While loading, transformers' own rule for expected extra weights (``_keys_to_ignore_on_load_unexpected``)
    covers the learned-α θ, which the model class does not create (:func:`from_pretrained` adds them after)."""
    from transformers import AutoConfig, PreTrainedModel

    cls = model_class
    mapping = getattr(model_class, "_model_mapping", None)
    if mapping is not None:  # an Auto class: the concrete class it will build
        keep = ("revision", "cache_dir", "token", "local_files_only", "subfolder", "trust_remote_code")
        config = kwargs.get("config") or AutoConfig.from_pretrained(
            path, **{k: v for k, v in kwargs.items() if k in keep}
        )
        cls = mapping.get(type(config), None)
        cls = cls[0] if isinstance(cls, tuple | list) else cls
    classes = [cls] if isinstance(cls, type) and issubclass(cls, PreTrainedModel) else []
    pattern = rf"(^|\.){ALPHA_ATTRIBUTE}\.theta$"
    saved = {c: c.__dict__.get("_keys_to_ignore_on_load_unexpected", _MISSING) for c in classes}
    try:
        for c in classes:
            c._keys_to_ignore_on_load_unexpected = [*(c._keys_to_ignore_on_load_unexpected or []), pattern]
        yield
    finally:
        for c, old in saved.items():
            if old is _MISSING:
                del c._keys_to_ignore_on_load_unexpected
            else:
                c._keys_to_ignore_on_load_unexpected = old


_MISSING = object()


def from_pretrained(model_class, path: str | os.PathLike, **kwargs) -> nn.Module:
    """Load a model saved after :func:`sparsify` (``save_pretrained``), with its α.

    ``model_class`` is any ``transformers`` class with ``from_pretrained`` (e.g. ``AutoModel``); ``kwargs`` go
    to it. The α settings are read from ``config.adasparse``; learned α values from the safetensors files.

    A sparsified model's ``config.json`` also names ``attn_implementation="adasparse"``, so a plain
    ``AutoModel.from_pretrained`` never gives it back silently dense: without adasparse imported transformers
    refuses the unknown attention; after :func:`register` a fixed α reloads exactly, and a learned α is
    reported missing (its θ are not created by the model class) — use this function for those.
    """
    _require_transformers()
    settings = _saved_settings(path, kwargs)
    if settings is None:
        raise ValueError(f"{str(path)!r} was not saved from a sparsified model: its config has no {CONFIG_KEY!r}")
    name = settings.get("name", DEFAULT_NAME)
    register(name)
    with _alpha_keys_expected(model_class, path, kwargs):
        model = model_class.from_pretrained(path, **kwargs)
    extra = {k: settings[k] for k in ("init", "alpha_min", "alpha_max", "parametrization") if k in settings}
    if settings["alpha"] == "learned":  # saved before the map was stored (and before "sigmoid" was the default)
        extra.setdefault("parametrization", "clamp")
    sparsify(model, alpha=settings["alpha"], name=name, **extra)
    if settings["alpha"] == "learned":
        _load_learned_alphas(model, path, kwargs.get("revision"))
    return model


# ---------------------------------------------------------------------------------------------------------------
# analysis: capture probabilities, density and head diversity per layer


@dataclass
class AttentionRecord:
    """One kernel call: ``probs`` ``(B, H, Q, K)`` and ``allowed`` (bool, broadcastable, or None = all)."""

    name: str
    module: nn.Module
    probs: Tensor
    allowed: Tensor | None


@dataclass
class _Recorder:
    names: dict[int, str]
    records: list[AttentionRecord] = field(default_factory=list)

    def record(self, module: nn.Module, probs: Tensor, allowed: Tensor | None) -> None:
        name = self.names.get(id(module), type(module).__name__)
        self.records.append(AttentionRecord(name, module, probs.detach(), None if allowed is None else allowed))


_RECORDER: _Recorder | None = None


@contextlib.contextmanager
def capture_attention(model: nn.Module) -> Iterator[list[AttentionRecord]]:
    """Within the block, every call of the adasparse kernel in ``model`` appends an :class:`AttentionRecord`.

    Example::

        with capture_attention(model) as records:
            model(**inputs)
        records[0].probs  # (B, H, Q, K)
    """
    global _RECORDER
    if _RECORDER is not None:
        raise RuntimeError("capture_attention blocks cannot be nested")
    _RECORDER = _Recorder({id(m): n for n, m in model.named_modules()})
    try:
        yield _RECORDER.records
    finally:
        _RECORDER = None


@dataclass(frozen=True)
class LayerAttentionStats:
    """Statistics of one attention module over a batch.

    density: fraction of attendable (query, key) pairs with non-zero weight, over non-pad queries, averaged
        over heads (1 for softmax). Pairs are pooled per head: Σ nnz / Σ attendable, i.e. denominators src² for
        encoder self-attention, src·tgt for cross-attention, T(T+1)/2 for causal self-attention.
    js: head diversity: Jensen–Shannon divergence H(mean_h p_h) − mean_h H(p_h) of one query's H head
        distributions, divided by log H, averaged over non-pad queries (0: all heads agree; nan if H = 1).
    density_per_head: ``(H,)``.
    queries: number of non-pad queries counted.
    """

    density: float
    js: float
    density_per_head: Tensor
    queries: int


def _is_cross_attention(module: nn.Module) -> bool:
    if "cross" in type(module).__name__.lower() or getattr(module, "is_cross_attention", False):
        return True
    return bool(getattr(module, "is_decoder", False)) and not bool(getattr(module, "is_causal", True))


def attention_stats(model: nn.Module, **inputs) -> dict[str, LayerAttentionStats]:
    """Run ``model(**inputs)`` without gradients and return density and head diversity per attention module.

    The model must run adasparse attention (:func:`sparsify`). Non-pad queries: for self-attention, queries whose
    own position is attendable (padding masks hide pad keys, so a pad query cannot see itself); for
    cross-attention, queries with ``decoder_attention_mask`` (if given) and at least one attendable key.
    """
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if impl != getattr(model.config, CONFIG_KEY, {}).get("name", DEFAULT_NAME):
        raise ValueError(f"attention_stats needs a sparsified model; this one runs attn_implementation={impl!r}")
    with torch.no_grad(), capture_attention(model) as records:
        model(**inputs)
    if not records:
        raise RuntimeError("no adasparse attention call was recorded")
    dec_mask = inputs.get("decoder_attention_mask")

    sums: dict[str, dict[str, Tensor | float]] = {}
    for r in records:
        p = r.probs.float()  # (B, H, Q, K)
        b, h, q, k = p.shape
        allowed = (
            torch.ones(1, 1, q, k, dtype=torch.bool, device=p.device) if r.allowed is None else r.allowed.to(p.device)
        )
        allowed = allowed.expand(b, h, q, k)  # (B, H, Q, K)
        valid_q = allowed.any(-1)  # (B, H, Q)
        if _is_cross_attention(r.module):
            if dec_mask is not None and dec_mask.shape[-1] == q:
                valid_q = valid_q & dec_mask.bool()[:, None, :].to(p.device)
        else:
            own = torch.arange(q, device=p.device) + (k - q)  # the key position of each query
            valid_q = valid_q & allowed.gather(-1, own.view(1, 1, q, 1).expand(b, h, q, 1)).squeeze(-1)
        vq = valid_q[..., None]  # (B, H, Q, 1)
        nnz = ((p > 0) & allowed & vq).sum(dim=(0, 2, 3)).float()  # (H,)
        att = (allowed & vq).sum(dim=(0, 2, 3)).float()  # (H,)
        valid = valid_q[:, 0]  # (B, Q): the same for every head
        pq = p.permute(0, 2, 1, 3)[valid]  # (N, H, K)
        if h > 1 and pq.shape[0]:
            js = js_divergence(pq, dim_heads=1)  # (N,)
            js_sum, n = float(js.sum()), int(pq.shape[0])
        else:
            js_sum, n = float("nan") if h == 1 else 0.0, int(pq.shape[0])
        s = sums.setdefault(r.name, {"nnz": torch.zeros(h), "att": torch.zeros(h), "js": 0.0, "n": 0})
        s["nnz"] += nnz.cpu()
        s["att"] += att.cpu()
        s["js"] += js_sum
        s["n"] += n

    out = {}
    for name, s in sums.items():
        per_head = s["nnz"] / s["att"].clamp_min(1)
        out[name] = LayerAttentionStats(
            density=float(per_head.mean()),
            js=s["js"] / s["n"] if s["n"] else float("nan"),
            density_per_head=per_head,
            queries=int(s["n"]),
        )
    return out
