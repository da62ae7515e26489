"""Encoder–decoder and decoder-only models: torch agreement, causality, padding, cache, learned α, training."""

import json
import math

import pytest
import torch
from torch import nn

from adasparse.models import (
    DecoderOnlyConfig,
    DecoderOnlyTransformer,
    Seq2SeqConfig,
    Seq2SeqTransformer,
    base,
    build_model,
    count_parameters,
    label_smoothed_loss,
    reorder_cache,
    small,
    small_lm,
    summary,
    tiny,
    tiny_lm,
)
from adasparse.models.transformer import DecoderLayer, EncoderLayer
from adasparse.nn.multihead import Attention

NORMALIZERS = ["softmax", "sparsemax", "entmax15", 1.3, "learned"]
PAD, BOS, EOS = 0, 1, 2


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny shapes


def _tokens(b, n, vocab=64, seed=0):
    return torch.randint(3, vocab, (b, n), generator=torch.Generator().manual_seed(seed))


def _batch(seed=0):
    """Right-padded src (3, 7) and tgt_in (3, 5) starting with BOS."""
    src = _tokens(3, 7, seed=seed)
    src[0, 4:] = PAD
    src[2, 6:] = PAD
    tgt = _tokens(3, 5, seed=seed + 1)
    tgt[:, 0] = BOS
    tgt[0, 3:] = PAD
    return src, tgt


def _model(norm, **kw):
    torch.manual_seed(0)
    return Seq2SeqTransformer(tiny(norm, **kw)).eval()


# --------------------------------------------------------------------------- agreement with torch


def _copy_mha(dst: nn.MultiheadAttention, src) -> None:
    dst.in_proj_weight.copy_(torch.cat([src.q_proj.weight, src.k_proj.weight, src.v_proj.weight]))
    dst.in_proj_bias.copy_(torch.cat([src.q_proj.bias, src.k_proj.bias, src.v_proj.bias]))
    dst.out_proj.weight.copy_(src.out_proj.weight)
    dst.out_proj.bias.copy_(src.out_proj.bias)


def _copy_layer(dst, src) -> None:
    _copy_mha(dst.self_attn, src.self_attn)
    if hasattr(dst, "multihead_attn"):
        _copy_mha(dst.multihead_attn, src.cross_attn)
        dst.norm3.load_state_dict(src.norm3.state_dict())
        dst.norm2.load_state_dict(src.norm2.state_dict())
        dst.norm1.load_state_dict(src.norm1.state_dict())
    else:
        dst.norm1.load_state_dict(src.norm1.state_dict())
        dst.norm2.load_state_dict(src.norm2.state_dict())
    dst.linear1.load_state_dict(src.ff.linear1.state_dict())
    dst.linear2.load_state_dict(src.ff.linear2.state_dict())


def _perturb_norms(model):
    """LayerNorm weights start at 1/0; make them non-trivial so that copying them is tested."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
def test_softmax_model_matches_torch_transformer():
    model = _model("softmax", share_embeddings="none")
    _perturb_norms(model)
    c = model.config
    ref = nn.Transformer(
        c.d_model, c.n_heads, c.enc_layers, c.dec_layers, c.d_ff, dropout=0.0, batch_first=True, norm_first=True
    ).eval()
    with torch.no_grad():
        for d, s in zip(ref.encoder.layers, model.encoder.layers):
            _copy_layer(d, s)
        for d, s in zip(ref.decoder.layers, model.decoder.layers):
            _copy_layer(d, s)
        ref.encoder.norm.load_state_dict(model.encoder.final_norm.state_dict())
        ref.decoder.norm.load_state_dict(model.decoder.final_norm.state_dict())
    src, tgt = _batch()
    sm, tm = src != PAD, tgt != PAD
    scale = math.sqrt(c.d_model)
    xs = model.src_embed(src) * scale + model.positions(src.shape[1])
    xt = model.tgt_embed(tgt) * scale + model.positions(tgt.shape[1])
    causal = torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool).triu(1)  # torch: True = masked
    with torch.no_grad():
        h = ref(
            xs,
            xt,
            tgt_mask=causal,
            src_key_padding_mask=~sm,
            tgt_key_padding_mask=~tm,
            memory_key_padding_mask=~sm,
            tgt_is_causal=True,
        )
        expected = model.output(h)
        got = model(src, tgt)
    torch.testing.assert_close(got[tm], expected[tm], atol=1e-5, rtol=1e-5)


def test_post_norm_layers_match_torch_layers():
    torch.manual_seed(0)
    d, h, f = 16, 4, 32
    common = dict(normalizer="softmax", alpha_init="normal", dropout=0.0, attn_dropout=0.0, pre_norm=False)
    enc = EncoderLayer(d, h, f, activation="relu", **common).eval()
    dec = DecoderLayer(d, h, f, activation="relu", context_normalizer="softmax", **common).eval()
    _perturb_norms(enc)
    _perturb_norms(dec)
    ref_enc = nn.TransformerEncoderLayer(d, h, f, dropout=0.0, batch_first=True).eval()
    ref_dec = nn.TransformerDecoderLayer(d, h, f, dropout=0.0, batch_first=True).eval()
    with torch.no_grad():
        _copy_layer(ref_enc, enc)
        _copy_layer(ref_dec, dec)
    x, mem = torch.randn(2, 5, d), torch.randn(2, 6, d)
    pad = torch.ones(2, 6, dtype=torch.bool)
    pad[1, 4:] = False
    with torch.no_grad():
        torch.testing.assert_close(
            enc(mem, pad)[0][pad], ref_enc(mem, src_key_padding_mask=~pad)[pad], atol=1e-5, rtol=1e-5
        )
        causal = torch.ones(5, 5, dtype=torch.bool).triu(1)  # torch: True = masked
        expected = ref_dec(x, mem, tgt_mask=causal, memory_key_padding_mask=~pad, tgt_is_causal=True)
        torch.testing.assert_close(dec(x, None, mem, pad)[0], expected, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- causality, padding, cache


@pytest.mark.parametrize("norm", NORMALIZERS)
def test_causality(norm):
    model = _model(norm)
    src, tgt = _batch()
    tgt[0, 3:] = 7  # no padding in this test
    out = model(src, tgt)
    tgt2 = tgt.clone()
    tgt2[:, 3] = 9
    out2 = model(src, tgt2)
    torch.testing.assert_close(out2[:, :3], out[:, :3], atol=1e-6, rtol=0)
    assert not torch.allclose(out2[:, 3:], out[:, 3:])
    lm = DecoderOnlyTransformer(tiny_lm(norm)).eval()
    a = lm(tgt)
    b = lm(tgt2)
    torch.testing.assert_close(b[:, :3], a[:, :3], atol=1e-6, rtol=0)
    assert not torch.allclose(b[:, 3:], a[:, 3:])


@pytest.mark.parametrize("norm", NORMALIZERS)
def test_padding_invariance_and_zero_weight_on_pads(norm):
    model = _model(norm)
    src, tgt = _batch()
    full, maps = model(src, tgt, return_attention=True)
    alone = model(src[:1, :4], tgt[:1, :3])
    torch.testing.assert_close(full[:1, :3], alone, atol=1e-5, rtol=1e-5)
    for layer in range(model.config.enc_layers):
        assert (maps["enc_self"][layer][0, :, :, 4:] == 0).all()
        assert (maps["enc_self"][layer][2, :, :, 6:] == 0).all()
    for layer in range(model.config.dec_layers):
        assert (maps["context"][layer][0, :, :, 4:] == 0).all()
        assert (maps["dec_self"][layer][0, :, :, 3:] == 0).all()
        # probabilities of real queries sum to one
        torch.testing.assert_close(maps["context"][layer].sum(-1), torch.ones(3, model.config.n_heads, 5))
    # decoder-only model: right padding does not change the real positions
    lm = DecoderOnlyTransformer(tiny_lm(norm)).eval()
    torch.testing.assert_close(lm(src)[0, :4], lm(src[:1, :4])[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", NORMALIZERS)
def test_incremental_decoding_equals_forward(norm):
    model = _model(norm)
    src, tgt = _batch()
    tgt[0, 3:] = 5
    full = model(src, tgt)
    memory, mask = model.encode(src)
    cache, steps = None, []
    for t in range(tgt.shape[1]):
        logits, cache = model.decode_step(tgt[:, t : t + 1], memory, mask, cache)
        steps.append(logits)
    assert cache.length == tgt.shape[1]
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)
    # reorder for beam search: rows (2, 2, 0) continue as rows (2, 2, 0) of the batch
    memory, mask = model.encode(src)
    _, cache = model.decode_step(tgt[:, :3], memory, mask)  # a chunk of 3 positions at once
    idx = torch.tensor([2, 2, 0])
    cache = reorder_cache(cache, idx)
    logits, _ = model.decode_step(tgt[idx, 3:4], memory[idx], mask[idx], cache)
    torch.testing.assert_close(logits, full[idx, 3], atol=1e-5, rtol=1e-5)
    # decoder-only
    lm = DecoderOnlyTransformer(tiny_lm(norm)).eval()
    full = lm(tgt)
    cache, steps = None, []
    for t in range(tgt.shape[1]):
        logits, cache = lm.decode_step(tgt[:, t : t + 1], cache)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)
    cache.reorder(torch.tensor([1, 0, 2]))
    assert cache.self_attn[0].k.shape[0] == 3


def test_fully_masked_source_gives_finite_outputs_and_grads():
    for norm in NORMALIZERS:
        model = _model(norm)
        src, tgt = _batch()
        src[1] = PAD  # an empty source sentence: every encoder and context query has nothing to attend to
        logits, maps = model(src, tgt, return_attention=True)
        assert torch.isfinite(logits).all()
        assert (maps["context"][0][1] == 0).all() and (maps["enc_self"][0][1] == 0).all()
        loss, _ = model.loss(logits, tgt)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --------------------------------------------------------------------------- learned α


def test_learned_alpha_gradients_reach_every_theta():
    model = _model("learned")
    src, tgt = _batch()
    loss, _ = model.loss(model(src, tgt), tgt)
    loss.backward()
    thetas = [(n, p) for n, p in model.named_parameters() if n.endswith("alpha_module.theta")]
    assert len(thetas) == 3 * 2  # three attention types x two layers (tiny)
    for n, p in thetas:
        assert p.grad is not None and torch.isfinite(p.grad).all() and (p.grad != 0).all(), n
    alphas = model.alphas()
    assert set(alphas) == {"enc_self", "dec_self", "context"}
    assert all(a.shape == (2, 2) for a in alphas.values())


def _copy_batch(b, n, vocab, reverse, g):
    body = torch.randint(3, vocab, (b, n), generator=g)
    out = body.flip(1) if reverse else body
    tgt_in = torch.cat([torch.full((b, 1), BOS), out], 1)
    tgt_out = torch.cat([out, torch.full((b, 1), EOS)], 1)
    return body, tgt_in, tgt_out


def test_learned_alpha_heads_move_apart_and_stay_in_range():
    torch.manual_seed(0)
    model = Seq2SeqTransformer(tiny("learned", alpha_init=1.5, vocab_size=12)).train()
    before = model.alphas()
    assert all(torch.equal(a, torch.full_like(a, 1.5)) for a in before.values())
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        src, tgt_in, tgt_out = _copy_batch(16, 6, 12, True, g)
        loss, _ = model.loss(model(src, tgt_in), tgt_out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    spreads = []
    for k, a in model.alphas().items():  # (layers, heads), all 1.5 at the start
        assert (a.max(1).values > a.min(1).values).all(), (k, a)  # in every layer the heads now differ
        spreads.append((a.max(1).values - a.min(1).values).max())
    assert max(spreads) > 0.05, spreads  # and somewhere by a clear margin after 10 steps
    # a huge learning rate cannot push α out of [1.01, 2]
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if "theta" in n], lr=1e4)
    for _ in range(3):
        src, tgt_in, tgt_out = _copy_batch(16, 6, 12, True, g)
        loss, _ = model.loss(model(src, tgt_in), tgt_out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for a in model.alphas().values():
        assert ((a >= 1.01) & (a <= 2.0)).all()


class _Reverser(nn.Module):
    """One attention module: position queries attend over (token + position) keys; the answer is a lookup."""

    def __init__(self, normalizer, vocab=10, n=6, d=32, heads=2):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos_in = nn.Parameter(torch.randn(n, d))
        self.pos_out = nn.Parameter(torch.randn(n, d))
        self.attn = Attention(d, heads, normalizer=normalizer)
        self.out = nn.Linear(d, vocab)

    def forward(self, x):
        kv = self.tok(x) + self.pos_in  # (B, n, d)
        q = self.pos_out.expand(x.shape[0], -1, -1)  # (B, n, d)
        return self.out(self.attn(q, kv)[0])  # (B, n, vocab)


def _train(model, batch_fn, loss_fn, lr, max_steps, target=0.05):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(max_steps):
        loss = loss_fn(model, *batch_fn())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if sum(losses[-5:]) / 5 < target:
            break
    return sum(losses[-5:]) / 5, len(losses)


@pytest.mark.parametrize("norm", NORMALIZERS)
def test_module_trains_reverse_task_to_near_zero_loss(norm):
    """The attention module learns to reverse 6-token sequences (early stop at mean loss < 0.05)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)

    def batch():
        x = torch.randint(0, 10, (32, 6), generator=g)
        return x, x.flip(1)

    def loss_fn(m, x, y):
        return nn.functional.cross_entropy(m(x).reshape(-1, 10), y.reshape(-1))

    final, steps = _train(_Reverser(norm), batch, loss_fn, lr=1e-2, max_steps=200)
    assert final < 0.05, f"{norm}: loss {final:.3f} after {steps} steps"


@pytest.mark.parametrize("norm", NORMALIZERS)
def test_model_trains_copy_task_to_near_zero_loss(norm):
    """The full (1+1-layer) encoder–decoder learns to copy 5-token sequences."""
    torch.manual_seed(0)
    model = Seq2SeqTransformer(tiny(norm, vocab_size=10, enc_layers=1, dec_layers=1)).train()
    g = torch.Generator().manual_seed(1)

    def loss_fn(m, src, tgt_in, tgt_out):
        loss, n = m.loss(m(src, tgt_in), tgt_out, label_smoothing=0.0)
        assert n == 32 * 6
        return loss

    final, steps = _train(model, lambda: _copy_batch(32, 5, 10, False, g), loss_fn, lr=3e-3, max_steps=400)
    assert final < 0.05, f"{norm}: loss {final:.3f} after {steps} steps"


# --------------------------------------------------------------------------- precision and compile


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("norm", ["softmax", "entmax15", "learned"])
def test_autocast_cpu(dtype, norm):
    model = _model(norm)
    src, tgt = _batch()
    ref = model(src, tgt)
    with torch.autocast("cpu", dtype=dtype):
        logits = model(src, tgt)
        loss, _ = model.loss(logits, tgt)
    loss.backward()
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    err = (logits.float() - ref).abs().max() / ref.abs().max()
    assert err < 0.05, err


@pytest.mark.slow
def test_torch_compile_forward():
    """One small compile (a couple of tens of seconds on CPU): compiled forward equals eager."""
    torch._dynamo.reset()
    model = Seq2SeqTransformer(tiny("learned", enc_layers=1, dec_layers=1, d_model=16, d_ff=32)).eval()
    src, tgt = _batch()
    compiled = torch.compile(model, fullgraph=False)
    with torch.no_grad():
        torch.testing.assert_close(compiled(src, tgt), model(src, tgt), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- loss, configs, summary


def test_label_smoothed_loss_matches_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 7, generator=g)
    target = torch.tensor([[3, 4, 0, 0], [5, 6, 1, 0]])
    eps = 0.1
    loss, n = label_smoothed_loss(logits, target, eps, ignore_index=0)
    logp = logits.log_softmax(-1)
    keep = target != 0
    nll = -logp.gather(-1, target[..., None])[..., 0]
    smooth = -logp.mean(-1)
    expected = ((1 - eps) * nll + eps * smooth)[keep].mean()
    assert n.item() == 5
    torch.testing.assert_close(loss, expected)
    assert label_smoothed_loss(logits, torch.zeros_like(target))[0].item() == 0.0  # nothing to predict
    total, n_sum = label_smoothed_loss(logits, target, eps, ignore_index=0, reduction="sum")  # the trainer's
    assert n_sum.item() == 5
    torch.testing.assert_close(total, ((1 - eps) * nll + eps * smooth)[keep].sum())
    with pytest.raises(ValueError, match="reduction"):
        label_smoothed_loss(logits, target, reduction="none")


def test_configs_roundtrip_and_presets():
    cfg = small("entmax15", context="learned", vocab_size=1234, alpha_init=1.2)
    assert (cfg.enc_self, cfg.dec_self, cfg.context) == ("entmax15", "entmax15", "learned")
    assert (cfg.enc_layers, cfg.dec_layers, cfg.d_model, cfg.n_heads) == (3, 3, 256, 4)
    assert cfg.src_vocab_size == cfg.tgt_vocab_size == 1234
    assert Seq2SeqConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert Seq2SeqConfig.from_json(cfg.to_json()) == cfg
    b = base(1.25)
    assert (b.enc_layers, b.dec_layers, b.d_model, b.n_heads, b.d_ff) == (6, 6, 512, 8, 2048)
    assert b.normalizers == {"enc_self": 1.25, "dec_self": 1.25, "context": 1.25}
    per_type = tiny({"enc_self": "sparsemax", "context": "softmax"})
    assert per_type.normalizers == {"enc_self": "sparsemax", "dec_self": "learned", "context": "softmax"}
    lm = small_lm("softmax")
    assert DecoderOnlyConfig.from_dict(lm.to_dict()) == lm and isinstance(build_model(lm), DecoderOnlyTransformer)
    with pytest.raises(ValueError, match="DecoderOnlyConfig, not a Seq2SeqConfig"):
        Seq2SeqConfig.from_dict(lm.to_dict())
    with pytest.raises(dataclasses_frozen_error()):
        cfg.d_model = 3


def dataclasses_frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"d_model": 30, "n_heads": 4}, "divisible"),
        ({"enc_self": "relu"}, "enc_self='relu' is not allowed"),
        ({"context": 0.5}, "context must be a finite number >= 1"),
        ({"share_embeddings": "some"}, "share_embeddings must be one of"),
        ({"share_embeddings": "all", "src_vocab_size": 10}, "needs src_vocab_size == tgt_vocab_size"),
        ({"dropout": 1.0}, "dropout must be"),
        ({"alpha_init": 2.0}, "alpha_init"),
        ({"pad_id": 64}, "pad_id must be"),
        ({"enc_layers": 0}, "enc_layers"),
        ({"typo": 1}, "unknown Seq2SeqConfig fields"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_share_embeddings_parameter_counts_and_summary():
    counts = {}
    for share in ("none", "decoder", "all"):
        torch.manual_seed(0)
        m = Seq2SeqTransformer(tiny("learned", share_embeddings=share))
        counts[share] = count_parameters(m)
        assert counts[share] == sum(p.numel() for p in {id(p): p for p in m.parameters()}.values())
    v, d = 64, 32
    assert counts["none"] - counts["decoder"] == v * d
    assert counts["decoder"] - counts["all"] == v * d
    m = Seq2SeqTransformer(tiny({"enc_self": "sparsemax", "dec_self": 1.3, "context": "learned"}))
    assert m.output.weight is m.tgt_embed.weight
    a = m.alphas()
    assert torch.equal(a["enc_self"], torch.full((2, 2), 2.0)) and torch.equal(a["dec_self"], torch.full((2, 2), 1.3))
    assert ((a["context"] >= 1.01) & (a["context"] <= 2)).all() and not a["context"].requires_grad
    src, tgt = _batch()
    maps = m.eval().attention_maps(src, tgt)
    assert [tuple(p.shape) for p in maps["context"]] == [(3, 2, 5, 7)] * 2
    assert (maps["enc_self"][0][1] == 0).any()  # sparsemax encoder heads: exact zeros in an unpadded row
    line = summary(m)
    assert "\n" not in line and "2+2 layers" in line and "2 heads" in line
    assert "enc_self=sparsemax" in line and "dec_self=1.3" in line and "context=learned" in line
    assert f"{count_parameters(m) / 1e3:.1f}k" in line
    lm_line = summary(DecoderOnlyTransformer(tiny_lm("entmax15")))
    assert "self=entmax15" in lm_line and "4 layers" in lm_line
    assert DecoderOnlyTransformer(tiny_lm()).alphas()["self"].shape == (4, 2)


def test_model_argument_errors():
    model = _model("softmax")
    src, tgt = _batch()
    with pytest.raises(ValueError, match="padding mask must be boolean"):
        model(src, tgt, src_pad_mask=torch.ones(3, 7))
    with pytest.raises(ValueError, match="exceed max_len"):
        model(src, torch.ones(1, 300, dtype=torch.long))
    with pytest.raises(TypeError, match="Seq2SeqConfig"):
        Seq2SeqTransformer(tiny_lm())
    with pytest.raises(TypeError, match="config must be"):
        build_model({"d_model": 3})
