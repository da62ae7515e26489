"""Attention statistics on constructed tensors with known answers."""

from __future__ import annotations

import json
import logging
import math
import re

import numpy as np
import pytest
import torch

from adasparse.analysis.stats import (
    AttentionBatch,
    AttentionStats,
    analyze_attention,
    attendable_masks,
    head_density,
    head_density_pooled,
    interrogation_score,
    is_question_mark,
    js_divergence,
    layer_js,
    merge_score,
    prev_next_confidence,
    read_alpha_log,
    top_heads,
)


def one_hot_head(B: int, H: int, Q: int, K: int, target) -> torch.Tensor:
    """(B, H, Q, K) attention where query q of head h attends only to key target(h, q)."""
    p = torch.zeros(B, H, Q, K)
    for h in range(H):
        for q in range(Q):
            p[:, h, q, target(h, q)] = 1.0
    return p


def lengths_mask(lengths, n):
    return torch.arange(n)[None] < torch.as_tensor(lengths)[:, None]  # (B, n)


# ------------------------------------------------------------------------------------------------------ density
@pytest.mark.parametrize("K", [1, 3, 8])
def test_density_of_one_hot_head_is_one_over_K(K):
    p = one_hot_head(2, 3, K, K, lambda h, q: (h + q) % K)
    torch.testing.assert_close(head_density(p, "enc_self"), torch.full((3,), 1 / K, dtype=torch.float64))
    torch.testing.assert_close(head_density_pooled(p, "enc_self"), torch.full((3,), 1 / K, dtype=torch.float64))


def test_density_of_dense_head_is_one_and_ignores_padding():
    B, H, S = 2, 2, 5
    mask = lengths_mask([3, 5], S)
    p = torch.full((B, H, S, S), 1 / S)  # non-zero everywhere, including pad keys and pad queries
    torch.testing.assert_close(head_density(p, "enc_self", src_mask=mask), torch.ones(H, dtype=torch.float64))


def test_encoder_padding_denominators():
    # every real query puts weight on exactly 2 keys; lengths 3 and 5, junk on pad keys must not count
    B, H, S = 2, 1, 5
    mask = lengths_mask([3, 5], S)
    p = torch.zeros(B, H, S, S)
    p[..., 0] = 0.5
    p[..., 1] = 0.5
    p[0, :, :, 3:] = 0.7  # padded keys of sentence 0
    p[0, :, 3:, :] = 0.2  # padded queries of sentence 0
    # per-query average: (3 · 2/3 + 5 · 2/5) / 8 queries = 0.5; pooled: (3·2 + 5·2) / (3² + 5²)
    torch.testing.assert_close(head_density(p, "enc_self", src_mask=mask), torch.tensor([0.5], dtype=torch.float64))
    torch.testing.assert_close(
        head_density_pooled(p, "enc_self", src_mask=mask), torch.tensor([16 / 34], dtype=torch.float64)
    )


def test_context_denominator_is_src_times_tgt():
    S, T = 6, 4
    src_mask = lengths_mask([4, 6], S)
    tgt_mask = lengths_mask([2, 4], T)
    p = torch.zeros(2, 1, T, S)
    p[..., :3] = 1 / 3  # 3 non-zeros per query
    # per query: 3/src; mean over 2 + 4 real queries: (2·3/4 + 4·3/6) / 6; pooled: (2·3 + 4·3) / (4·2 + 6·4)
    got = head_density(p, "context", src_mask=src_mask, tgt_mask=tgt_mask)
    torch.testing.assert_close(got, torch.tensor([(2 * 3 / 4 + 4 * 3 / 6) / 6], dtype=torch.float64))
    got = head_density_pooled(p, "context", src_mask=src_mask, tgt_mask=tgt_mask)
    torch.testing.assert_close(got, torch.tensor([18 / 32], dtype=torch.float64))


@pytest.mark.parametrize("attn_type", ["dec_self", "self"])
def test_causal_denominator_is_T_T_plus_1_over_2(attn_type):
    T = 5
    tgt_mask = lengths_mask([4, 5], T)
    diag = torch.eye(T).expand(2, 1, T, T)  # each query attends to itself only
    full = torch.ones(T, T).tril().expand(2, 1, T, T) / torch.arange(1, T + 1).view(T, 1)  # uniform over past
    p = torch.cat([diag, full], 1)  # (B, 2, T, T)
    per_query = (sum(1 / (i + 1) for i in range(4)) + sum(1 / (i + 1) for i in range(5))) / 9
    want = torch.tensor([per_query, 1.0], dtype=torch.float64)
    torch.testing.assert_close(head_density(p, attn_type, tgt_mask=tgt_mask), want)
    pooled = (4 + 5) / (4 * 5 / 2 + 5 * 6 / 2)  # non-zeros / Σ T(T+1)/2
    want = torch.tensor([pooled, 1.0], dtype=torch.float64)
    torch.testing.assert_close(head_density_pooled(p, attn_type, tgt_mask=tgt_mask), want)


def test_attendable_masks_shapes_and_causality():
    src = lengths_mask([2, 3], 3)
    tgt = lengths_mask([1, 4], 4)
    qm, km = attendable_masks("dec_self", (2, 1, 4, 4), src, tgt)
    assert qm.tolist() == [[True, False, False, False], [True, True, True, True]]
    assert km[1].tolist() == torch.ones(4, 4, dtype=torch.bool).tril().tolist()
    qm, km = attendable_masks("context", (2, 1, 4, 3), src, tgt)
    assert km[0, 0].tolist() == [True, True, False] and not km[0, 1].any()


# ----------------------------------------------------------------------------------------------------------- JS
def test_js_of_identical_heads_is_zero():
    p = torch.softmax(torch.randn(2, 4, 5, 5), -1)[:, :1].expand(2, 4, 5, 5)
    assert layer_js(p, "enc_self") == pytest.approx(0.0, abs=1e-6)


def test_js_of_disjoint_one_hot_heads_is_one():
    H, K = 4, 6
    p = one_hot_head(2, H, K, K, lambda h, q: (h + q) % K)  # heads point at different keys for every query
    assert layer_js(p, "enc_self") == pytest.approx(1.0, abs=1e-6)


def test_js_matches_formula_and_skips_padded_queries():
    torch.manual_seed(0)
    B, H, S = 2, 3, 5
    mask = lengths_mask([3, 5], S)
    z = torch.randn(B, H, S, S).masked_fill(~mask[:, None, None, :], float("-inf"))
    p = torch.softmax(z, -1)
    p[0, :, 3:] = torch.eye(S)[:H, None, :]  # padded queries of sentence 0 with very different heads

    def ent(x):
        x = x[x > 0]
        return -(x * np.log(x)).sum()

    vals = []
    pn = p.double().numpy()
    for b, n in enumerate([3, 5]):
        for q in range(n):
            heads = pn[b, :, q, :n]
            vals.append((ent(heads.mean(0)) - np.mean([ent(h) for h in heads])) / math.log(H))
    assert layer_js(p, "enc_self", src_mask=mask) == pytest.approx(np.mean(vals), rel=1e-5)


def test_js_single_head_is_nan():
    assert torch.isnan(js_divergence(torch.ones(1, 1, 2, 1))).all()


# -------------------------------------------------------------------------------------------------- head roles
def test_previous_and_next_token_of_shift_heads_is_one():
    B, S = 2, 6
    prev = one_hot_head(B, 1, S, S, lambda h, q: max(q - 1, 0))
    nxt = one_hot_head(B, 1, S, S, lambda h, q: min(q + 1, S - 1))
    p = torch.cat([prev, nxt], 1)  # (B, 2, S, S)
    mask = lengths_mask([4, 6], S)
    # padding: sentence 0 has 4 tokens, its query 3 has no next token; put junk on that pad key anyway
    pr, nx = prev_next_confidence(p, "enc_self", src_mask=mask)
    torch.testing.assert_close(pr, torch.tensor([1.0, 0.0], dtype=torch.float64))
    # next-token head: query 3 of sentence 0 points at pad key 4 → not counted; all others at their i+1
    torch.testing.assert_close(nx, torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_previous_token_causal_has_no_next():
    T = 5
    p = one_hot_head(1, 1, T, T, lambda h, q: max(q - 1, 0))
    pr, nx = prev_next_confidence(p, "dec_self")
    assert nx is None
    torch.testing.assert_close(pr, torch.tensor([1.0], dtype=torch.float64))


def test_previous_token_partial_weight():
    S = 4
    p = torch.full((1, 1, S, S), 0.25)
    pr, nx = prev_next_confidence(p, "enc_self")
    torch.testing.assert_close(pr, torch.tensor([0.25], dtype=torch.float64))
    torch.testing.assert_close(nx, torch.tensor([0.25], dtype=torch.float64))


def test_merge_score_on_constructed_words():
    words = [[0, 0, 1, 2, 2, 2]]  # "ab" "c" "def": pieces of multi-piece words are tokens 0,1,3,4,5
    S = 6
    same = torch.tensor([[a == b and i != j for j, b in enumerate(words[0])] for i, a in enumerate(words[0])])
    merge_head = torch.where(same.any(1, keepdim=True), same.float() / same.sum(1, keepdim=True).clamp_min(1), 0.0)
    merge_head[2, 2] = 1.0  # single-piece word attends to itself
    self_head = torch.eye(S)
    half = 0.5 * merge_head + 0.5 * self_head
    half[2] = self_head[2]
    p = torch.stack([merge_head, self_head, half])[None]  # (1, 3, S, S)
    got = merge_score(p, "enc_self", words)
    torch.testing.assert_close(got, torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64))
    # causal: only later pieces see earlier ones (tokens 1, 4, 5); a head on the previous token merges fully
    prev = one_hot_head(1, 1, S, S, lambda h, q: max(q - 1, 0))
    torch.testing.assert_close(merge_score(prev, "dec_self", words), torch.tensor([1.0], dtype=torch.float64))
    stats = analyze_attention([AttentionBatch({"dec_self": [prev]}, tgt_word_ids=words)], keep_sentences=[])
    assert stats.types["dec_self"].merge_tokens == 3


def test_merge_ignores_negative_word_ids_and_padding():
    words = torch.tensor([[0, 0, -1, -1]])  # last two: specials / padding, not words
    p = torch.full((1, 1, 4, 4), 0.25)
    torch.testing.assert_close(merge_score(p, "enc_self", words), torch.tensor([0.25], dtype=torch.float64))


def test_interrogation_score_on_constructed_sentences():
    S = 5
    tokens = [["how", "are", "you", "▁?", "</s>"], ["fine", ".", "</s>"]]
    mask = lengths_mask([5, 3], S)
    p = torch.zeros(2, 2, S, S)
    p[:, 0, :, 3] = 1.0  # head 0 looks at position 3 (the "?" of sentence 0)
    p[:, 1, :, 0] = 1.0
    got = interrogation_score(p, "enc_self", tokens, src_mask=mask)
    torch.testing.assert_close(got, torch.tensor([1.0, 0.0], dtype=torch.float64))
    r = analyze_attention([AttentionBatch({"enc_self": [p]}, src_mask=mask, src_tokens=tokens)], keep_sentences=[])
    assert r.types["enc_self"].question_sentences == 1
    np.testing.assert_allclose(r.types["enc_self"].interrogation, [[1.0, 0.0]])
    assert is_question_mark("Ġ?") and not is_question_mark("?!")


def test_interrogation_without_question_is_nan():
    p = torch.full((1, 1, 2, 2), 0.5)
    assert torch.isnan(interrogation_score(p, "enc_self", [["a", "."]])).all()


# ------------------------------------------------------------------------------------------------- accumulation
def _batch(seed: int, B: int = 4):
    g = torch.Generator().manual_seed(seed)
    S, T, H = 6, 5, 3
    src_mask = lengths_mask(torch.randint(2, S + 1, (B,), generator=g), S)
    tgt_mask = lengths_mask(torch.randint(2, T + 1, (B,), generator=g), T)

    def attn(Q, K, kmask):
        z = torch.randn(B, H, Q, K, generator=g).masked_fill(~kmask, float("-inf"))
        return torch.relu(torch.softmax(z, -1) - 0.15)  # exact zeros, rows not normalised: fine for counting

    causal = torch.ones(T, T, dtype=torch.bool).tril()
    return {
        "attention": {
            "enc_self": [attn(S, S, src_mask[:, None, None]) for _ in range(2)],
            "context": [attn(T, S, src_mask[:, None, None]) for _ in range(2)],
            "dec_self": [attn(T, T, tgt_mask[:, None, None] & causal) for _ in range(2)],
        },
        "src_mask": src_mask,
        "tgt_mask": tgt_mask,
        "src_tokens": [["x"] * (S - 1) + ["?"]] * B,
        "src_word_ids": [[i // 2 for i in range(S)]] * B,
        "tgt_word_ids": [[i // 3 for i in range(T)]] * B,
    }


def _split(batch, lo, hi):
    out = {}
    for k, v in batch.items():
        if k == "attention":
            out[k] = {t: [x[lo:hi] for x in layers] for t, layers in v.items()}
        else:
            out[k] = v[lo:hi]
    return out


def test_batch_by_batch_equals_one_batch():
    full = _batch(0)
    one = analyze_attention([full], keep_sentences=[])
    two = analyze_attention([_split(full, 0, 1), _split(full, 1, 4)], keep_sentences=[])
    assert one.num_sentences == two.num_sentences == 4
    for t in one.types:
        a, b = one.types[t], two.types[t]
        for name in ("density", "density_pooled", "js", "prev", "next", "merge", "interrogation", "density_by_length"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None), (t, name)
            if x is not None:
                np.testing.assert_allclose(x, y, rtol=1e-6, err_msg=f"{t}.{name}")
        np.testing.assert_array_equal(a.lengths, b.lengths)


def test_accumulator_matches_single_batch_functions():
    batch = _batch(1)
    r = analyze_attention([batch], keep_sentences=[])
    for t, layers in batch["attention"].items():
        for li, p in enumerate(layers):
            d = head_density(p, t, batch["src_mask"], batch["tgt_mask"])
            np.testing.assert_allclose(r.types[t].density[li], d.numpy(), rtol=1e-6)
            assert r.types[t].js[li] == pytest.approx(layer_js(p, t, batch["src_mask"], batch["tgt_mask"]), rel=1e-6)


def test_density_by_length_groups_sentences():
    S = 4
    mask = lengths_mask([2, 4, 4], S)
    p = one_hot_head(3, 1, S, S, lambda h, q: 0)  # one key per query → density 1/len
    r = analyze_attention([AttentionBatch({"enc_self": [p]}, src_mask=mask)], keep_sentences=[])
    ts = r.types["enc_self"]
    assert ts.lengths.tolist() == [2, 4] and ts.length_counts.tolist() == [1, 2]
    np.testing.assert_allclose(ts.density_by_length[:, 0, 0], [0.5, 0.25])


def test_kept_attention_maps_are_trimmed_and_indexed_globally():
    b1, b2 = _batch(2, B=2), _batch(3, B=2)
    b1["tgt_tokens"] = [["t"] * 5] * 2
    r = analyze_attention([b1, b2], keep_sentences=[1, 3])
    assert [m.index for m in r.maps] == [1, 3]
    m = r.maps[0]
    n_src, n_tgt = int(b1["src_mask"][1].sum()), int(b1["tgt_mask"][1].sum())
    assert m.attention["context"][0].shape == (3, n_tgt, n_src)
    assert m.attention["enc_self"][1].shape == (3, n_src, n_src)
    assert len(m.src_tokens) == n_src and len(m.tgt_tokens) == n_tgt
    np.testing.assert_array_equal(m.attention["enc_self"][0], b1["attention"]["enc_self"][0][1, :, :n_src, :n_src])


def test_alpha_shape_checked_and_float_broadcast():
    batch = _batch(4)
    stats = AttentionStats(keep_sentences=[])
    stats.update(**batch)
    r = stats.result(alpha={"enc_self": 1.5, "context": torch.ones(2, 3)})
    assert r.types["enc_self"].alpha.shape == (2, 3) and r.types["dec_self"].alpha is None
    with pytest.raises(ValueError, match="alpha\\['context'\\] has shape"):
        stats.result(alpha={"context": torch.ones(3, 2)})
    with pytest.raises(ValueError, match="not in the attention"):
        stats.result(alpha={"self": torch.ones(2, 3)})


def test_input_validation_messages():
    p = torch.full((1, 1, 2, 2), 0.5)
    with pytest.raises(ValueError, match="unknown attention type 'decoder'"):
        head_density(p, "decoder")
    with pytest.raises(ValueError, match="src_mask has shape"):
        head_density(p, "enc_self", src_mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean tensor"):
        head_density(p, "enc_self", src_mask=torch.ones(1, 2))
    stats = AttentionStats()
    stats.update(attention={"enc_self": [p]})
    with pytest.raises(ValueError, match="1 layers × 2 heads"):
        stats.update(attention={"enc_self": [torch.full((1, 2, 2, 2), 0.5)]})


# ------------------------------------------------------------------------------------------------ top heads, log
def test_top_heads_order_and_alpha():
    score = np.array([[0.1, 0.9, np.nan], [0.5, 0.9, 0.2]])
    alpha = np.array([[1.1, 1.2, 1.3], [1.4, 1.5, 1.6]])
    top = top_heads(score, alpha, k=3)
    assert [(h["layer"], h["head"]) for h in top] == [(0, 1), (1, 1), (1, 0)]
    assert [h["alpha"] for h in top] == [1.2, 1.5, 1.4]
    assert top_heads(score, None, k=1)[0]["alpha"] is None


def test_read_alpha_log(tmp_path):
    log = tmp_path / "train.jsonl"
    lines = [
        {"step": 0, "loss": 5.0},
        {"step": 10, "alpha": {"enc_self": [[1.2, 1.3], [1.4, 1.5]], "context": [[1.1, 1.9]]}},
        {"step": 20, "alpha": {"enc_self": [[1.3, 1.3], [1.5, 1.6]], "context": [[1.0, 2.0]]}},
    ]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    traj = read_alpha_log(log)
    assert traj.steps.tolist() == [10, 20]
    assert traj.alpha["enc_self"].shape == (2, 2, 2) and traj.alpha["context"].shape == (2, 1, 2)
    assert traj.alpha["context"][1, 0, 1] == 2.0
    log.write_text(json.dumps({"step": 1, "alpha": {"enc_self": [1.2]}}) + "\n")
    with pytest.raises(ValueError, match="per layer"):
        read_alpha_log(log)
    log.write_text(json.dumps({"step": 1}) + "\n")
    with pytest.raises(ValueError, match="no line"):
        read_alpha_log(log)


def test_read_alpha_log_skips_a_torn_last_line_and_rejects_damage_before_it(tmp_path, caplog):
    log = tmp_path / "log.jsonl"
    good = [{"step": s, "alpha": {"enc_self": [[1.2 + s / 100, 1.3]]}} for s in (0, 10)]
    torn = json.dumps({"step": 20, "alpha": {"enc_self": [[1.5, 1.3]]}})[:-7]  # a run killed mid-write
    log.write_text("".join(json.dumps(r) + "\n" for r in good) + torn)
    with caplog.at_level(logging.WARNING, logger="adasparse"):
        assert read_alpha_log(log).steps.tolist() == [0, 10]
    assert f"{log}:3: skipping the last line" in caplog.text
    log.write_text(json.dumps(good[0]) + "\n" + torn + "\n" + json.dumps(good[1]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{log}:2: not valid JSON")):
        read_alpha_log(log)


def test_alpha_turnarounds_find_heads_that_change_direction():
    from adasparse.analysis.stats import AlphaTrajectory

    steps = np.arange(0, 1100, 100)
    down_up = np.r_[np.linspace(1.6, 1.3, 6), np.linspace(1.3, 1.9, 6)[1:]]  # falls to 1.3 at step 500, climbs
    monotone = np.linspace(1.5, 1.1, 11)
    wiggle = 1.5 + 0.02 * np.sin(np.arange(11))  # moves less than min_move
    a = np.stack([down_up, monotone, wiggle], axis=-1)[:, None, :]  # (N, 1 layer, 3 heads)
    turns = AlphaTrajectory(steps, {"enc_self": a}).turnarounds(min_move=0.05)
    assert [(t["head"], t["step"]) for t in turns] == [(0, 500)]
    assert turns[0]["start"] == pytest.approx(1.6) and turns[0]["turn"] == pytest.approx(1.3)
    assert turns[0]["end"] == pytest.approx(1.9)


def test_alpha_moved_from_start_counts_heads_tests_the_split_and_finds_when_alpha_settled():
    from adasparse.analysis.stats import AlphaTrajectory

    steps = np.arange(0, 1100, 100)
    falls = np.stack(
        [np.r_[np.linspace(1.6 - h / 10, 1.2 - h / 10, 6), np.full(5, 1.2 - h / 10)] for h in range(5)], -1
    )
    rises = np.r_[np.linspace(1.3, 1.5, 9), 1.5, 1.5]  # 0.025 below its end at step 700, 0.05 at 600
    a = {"enc_self": falls[:, None, :], "context": rises[:, None, None]}  # 6 heads: 5 down, 1 up
    got = AlphaTrajectory(steps, a).moved_from_start(tol=0.03)
    assert (got["heads"], got["down"], got["up"]) == (6, 5, 1)
    assert got["settled_step"] == 700  # the falling heads reach their end at 500, the rising one is near at 700
    assert got["mean_move"] == pytest.approx((5 * 0.4 + 0.2) / 6) and got["max_move"] == pytest.approx(0.4)
    # the exact two-sided sign test: P(at most 1 of 6 fair coins one way, either way) = 2 · 7 / 64
    assert got["sign_test_p"] == pytest.approx(14 / 64)
    scipy_stats = pytest.importorskip("scipy.stats", reason="scipy (an independent binomial test) is not installed")
    for down, up in [(5, 1), (23, 1), (10, 10), (0, 7)]:
        x0 = np.full(down + up, 1.5)
        x1 = np.r_[np.full(down, 1.2), np.full(up, 1.8)]
        got = AlphaTrajectory(np.arange(2), {"t": np.stack([x0, x1])[:, None, :]}).moved_from_start()["sign_test_p"]
        assert got == pytest.approx(scipy_stats.binomtest(down, down + up).pvalue, rel=1e-9), (down, up)
