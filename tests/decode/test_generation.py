"""Language-model generation: the KV-cache loop against re-running the whole prefix, batched prompts of different
lengths against one at a time, greedy limits of sampling, the nucleus and top-k sets, seeds, eos and lengths."""

import math

import pytest
import torch

from adasparse.data.tokenizer import SymbolTokenizer
from adasparse.decode.generation import (
    GenerationConfig,
    choose_next,
    generate_ids,
    generate_text,
    next_token_scores,
)
from adasparse.models import DecoderOnlyTransformer, tiny_lm
from adasparse.nn.length_scaling import LengthScaling

BOS, PAD = 1, 0


def _model(norm="learned", seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("tie_embeddings", False)  # tied, a random model mostly repeats its input id
    kw.setdefault("eos_id", 63)  # the tests choose when a row ends
    model = DecoderOnlyTransformer(tiny_lm(norm, **kw)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in model.modules():  # move δ, β (σ) off their start so the scaling matters
            if isinstance(mod, LengthScaling):
                for p in mod.parameters():
                    p.add_(0.5 * torch.randn(p.shape, generator=g))
        # larger logits than at initialisation: the greedy path then visits many different ids
        model.output.weight.mul_(4.0)
    return model


def _prompts(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[BOS] + torch.randint(4, 64, (n - 1,), generator=g).tolist() for n in lengths]


def _greedy_by_full_forward(model, prompt, max_new):
    """Independent path: no cache, the whole sequence through ``forward`` at every step."""
    seq, new = list(prompt), []
    with torch.no_grad():
        for _ in range(max_new):
            x = torch.tensor([seq])
            logits = model(x, pad_mask=torch.ones_like(x, dtype=torch.bool))[0, -1]  # (V,)
            logits[[PAD, BOS]] = float("-inf")  # never generated
            t = int(logits.argmax())
            new.append(t)
            seq.append(t)
            if t == model.config.eos_id:
                break
    return new


CONFIGS = [
    dict(norm="softmax", positions="sinusoidal"),
    dict(norm="entmax15", positions="rope", length_scaling="learned"),
    dict(norm="learned", positions="none", length_scaling="learned"),
    dict(norm="learned", positions="rope", length_scaling="ssmax"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_greedy_kv_cache_equals_full_forward(cfg):
    cfg = dict(cfg)
    model = _model(cfg.pop("norm"), **cfg)
    visited = set()
    for prompt in _prompts([1, 4, 9]):
        got = generate_ids(model, [prompt], 16)[0]
        assert got == _greedy_by_full_forward(model, prompt, 16)
        visited.update(got)
    assert len(visited) > 5  # paths through several ids, not a constant


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_batched_prompts_of_different_lengths_equal_one_at_a_time(cfg):
    cfg = dict(cfg)
    model = _model(cfg.pop("norm"), **cfg)
    prompts = _prompts([5, 1, 8, 3, 8])
    batched = generate_ids(model, prompts, 12)
    alone = [generate_ids(model, [p], 12)[0] for p in prompts]
    assert batched == alone


def test_stops_at_eos_per_row():
    """With eos = an id that greedy decoding reaches, each row ends at its first occurrence (eos returned last)
    while the others go on; a row that never reaches it runs to max_new_tokens."""
    model = _model("softmax")
    prompts = _prompts([2, 3, 6, 4], seed=3)
    ref = generate_ids(model, prompts, 10)  # eos (63) not reached on these prompts
    assert all(len(r) == 10 for r in ref)
    eos = ref[0][2]
    model.config = model.config.replace(eos_id=eos)
    out = generate_ids(model, prompts, 10)
    for o, r in zip(out, ref):
        assert o == (r[: r.index(eos) + 1] if eos in r else r)
    assert len({len(o) for o in out}) > 1  # the rows did end at different steps


def test_max_new_tokens_and_the_position_table():
    model = _model("softmax")
    prompts = _prompts([3, 7])
    assert [len(o) for o in generate_ids(model, prompts, 5)] == [5, 5]
    assert generate_ids(model, prompts, 0) == [[], []]
    max_len = model.config.max_len  # sinusoidal: positions 0 .. max_len - 1 can be read
    long = _prompts([max_len - 2])[0]
    out = generate_ids(model, [long], 10)[0]
    assert len(out) == 3  # positions up to max_len - 1 are read; the last id chosen (max_len + 1-th) is not
    with pytest.raises(ValueError, match="max_len"):
        generate_ids(model, [list(range(max_len + 1))], 1)
    rope = _model("softmax", positions="rope")
    assert len(generate_ids(rope, [long], 10)[0]) == 10  # RoPE has no position table


# -- choosing the next id ---------------------------------------------------------------------------------------


def test_top_k_1_sampling_equals_greedy():
    model = _model("learned", positions="rope")
    prompts = _prompts([1, 5, 3])
    greedy = generate_ids(model, prompts, 12)
    sampled = generate_ids(model, prompts, 12, GenerationConfig("sample", temperature=2.0, top_k=1, seed=4))
    assert sampled == greedy


def test_low_temperature_sampling_tends_to_greedy():
    model = _model("learned", positions="rope")
    prompts = _prompts([1, 5, 3])
    greedy = generate_ids(model, prompts, 12)
    assert generate_ids(model, prompts, 12, GenerationConfig("sample", temperature=0.0)) == greedy
    assert generate_ids(model, prompts, 12, GenerationConfig("sample", temperature=1e-4, seed=1)) == greedy
    hot = generate_ids(model, prompts, 12, GenerationConfig("sample", temperature=3.0, seed=1))
    assert hot != greedy  # sampling does sample


def test_sampling_is_reproducible_for_a_seed():
    model = _model("entmax15", positions="none")
    prompts = _prompts([2, 6, 4])
    cfg = GenerationConfig("sample", temperature=1.5, top_p=0.95, seed=11)
    a = generate_ids(model, prompts, 10, cfg)
    assert generate_ids(model, prompts, 10, cfg) == a
    assert generate_ids(model, prompts, 10, GenerationConfig("sample", temperature=1.5, top_p=0.95, seed=12)) != a


_PROBS = torch.tensor([0.05, 0.4, 0.25, 0.2, 0.1])  # fixed distribution, no ties


def _nucleus(probs, p):
    """Reference: add ids by decreasing probability until their mass reaches p."""
    kept, mass = set(), 0.0
    for i in sorted(range(len(probs)), key=lambda i: -float(probs[i])):
        if mass >= p:
            break
        kept.add(i)
        mass += float(probs[i])
    return kept


@pytest.mark.parametrize("top_p", [0.01, 0.39, 0.5, 0.64, 0.7, 0.84, 0.9, 0.96, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_top_p_keeps_exactly_the_nucleus(top_p, temperature):
    logits = _PROBS.log()[None]  # (1, V)
    scaled = (logits / temperature).softmax(-1)[0]
    expected = _nucleus(scaled, top_p)
    scores = next_token_scores(logits, GenerationConfig("sample", temperature=temperature, top_p=top_p))[0]
    assert {i for i in range(5) if math.isfinite(float(scores[i]))} == expected
    # the samples stay inside, and follow the renormalised distribution
    cfg = GenerationConfig("sample", temperature=temperature, top_p=top_p)
    g = torch.Generator().manual_seed(0)
    draws = choose_next(logits.expand(20000, -1), cfg, g)
    assert set(draws.tolist()) <= expected
    counts = torch.bincount(draws, minlength=5).double() / len(draws)
    target = torch.zeros(5, dtype=torch.float64)
    idx = sorted(expected)
    target[idx] = scaled[idx].double() / scaled[idx].sum()
    assert torch.allclose(counts, target, atol=0.015)


def test_top_k_then_top_p():
    logits = _PROBS.log()[None]
    scores = next_token_scores(logits, GenerationConfig("sample", top_k=3))[0]
    assert {i for i in range(5) if math.isfinite(float(scores[i]))} == {1, 2, 3}
    # within the top 3 (renormalised 0.47, 0.29, 0.24), a nucleus of 0.6 is {1, 2}
    scores = next_token_scores(logits, GenerationConfig("sample", top_k=3, top_p=0.6))[0]
    assert {i for i in range(5) if math.isfinite(float(scores[i]))} == {1, 2}


def test_sampling_filters_equal_hugging_faces():
    """Defaults (top_k 50, top_p 1, temperature 1) and each filter, against transformers' own logits warpers."""
    transformers = pytest.importorskip("transformers")
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    hf = transformers.GenerationConfig
    # transformers 5 leaves unset fields None and applies these defaults at generate(); 4.x set them directly
    hf_defaults = hf._get_default_generation_params() if hasattr(hf, "_get_default_generation_params") else vars(hf())
    ours = GenerationConfig("sample")
    assert (ours.temperature, ours.top_k, ours.top_p) == tuple(
        hf_defaults[k] for k in ("temperature", "top_k", "top_p")
    )
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 300, generator=g) * 3
    logits[0, :10] = 5.0  # ties at the k-th value
    for temperature, top_k, top_p in ((1.0, 50, 1.0), (0.7, 0, 0.9), (1.3, 5, 1.0), (1.0, 10, 0.5), (2.0, 0, 1.0)):
        cfg = GenerationConfig("sample", temperature=temperature, top_k=top_k, top_p=top_p)
        ref = TemperatureLogitsWarper(temperature)(None, logits.clone())
        if top_k:
            ref = TopKLogitsWarper(top_k)(None, ref)
        if top_p < 1.0:
            ref = TopPLogitsWarper(top_p)(None, ref)
        got = next_token_scores(logits, cfg)
        assert torch.equal(torch.isfinite(got), torch.isfinite(ref)), (temperature, top_k, top_p)
        torch.testing.assert_close(got[torch.isfinite(got)], ref[torch.isfinite(ref)])


def test_config_is_checked():
    for bad in (dict(method="beam"), dict(temperature=-1.0), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            GenerationConfig(**bad)


# -- strings in, strings out ------------------------------------------------------------------------------------


def test_generate_text_keeps_the_order_and_matches_the_ids():
    lines = ["the cat sees a dog", "a dog runs", "the bird sings in the tree"]
    tok = SymbolTokenizer.train(lines)
    model = _model("learned", positions="rope", vocab_size=tok.vocab_size, eos_id=2)
    prompts = ["the cat", "", "a dog runs in the", "bird"]
    texts = generate_text(model, tok, prompts, 6, batch_size=2)
    for prompt, text in zip(prompts, texts):
        ids = tok.encode(prompt, add_bos=True, add_eos=False)
        assert text == tok.decode(generate_ids(model, [ids], 6)[0])
    full = generate_text(model, tok, prompts, 6, include_prompt=True)
    assert all(f == " ".join(filter(None, [p, t])) for f, p, t in zip(full, prompts, texts))
