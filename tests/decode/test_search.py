import itertools
import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from adasparse.decode.search import SearchConfig, beam_search, generate, greedy_search, reorder_nested

PAD, BOS, EOS = 0, 1, 2


@dataclass(frozen=True)
class FakeConfig:
    pad_id: int = PAD
    bos_id: int = BOS
    eos_id: int = EOS


class StateCache:
    """A cache object with its own ``reorder`` (the models' KV cache API)."""

    def __init__(self, h, calls):
        self.h, self.calls = h, calls

    def reorder(self, index):
        self.calls.append(len(index))
        return StateCache(self.h.index_select(0, index), self.calls)


class GRUModel(nn.Module):
    """A seeded random recurrent decoder: the next-token distribution depends on the whole prefix and the source."""

    def __init__(self, vocab=9, dim=16, eos_bias=0.0, tuple_cache=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.config = FakeConfig()
        self.emb = nn.Embedding(vocab, dim)
        self.cell = nn.GRUCell(dim, dim)
        self.out = nn.Linear(dim, vocab)
        with torch.no_grad():
            self.out.weight.mul_(3.0)
            self.out.bias[EOS] += eos_bias
        self.tuple_cache = tuple_cache
        self.reorders = []

    def encode(self, src, src_mask):
        e = self.emb(src) * src_mask[..., None]  # (B, S, E)
        memory = e.sum(1) / src_mask.sum(1, keepdim=True)  # (B, E)
        return memory, src_mask

    def decode_step(self, tokens, memory, src_mask, cache):
        if cache is None:
            h = torch.tanh(memory)
        else:
            h = cache[0] if self.tuple_cache else cache.h
        h = self.cell(self.emb(tokens[:, 0]), h)  # (B, E)
        logits = self.out(h + memory)
        return logits, ((h,) if self.tuple_cache else StateCache(h, self.reorders))

    def sequence_log_prob(self, src, src_mask, hyp, with_eos):
        """Teacher-forced log-probability of one hypothesis for one source sentence."""
        memory, mask = self.encode(src[None], src_mask[None])
        tokens, cache, total = [BOS] + hyp, None, 0.0
        targets = hyp + ([EOS] if with_eos else [])
        for t, y in enumerate(targets):
            logits, cache = self.decode_step(torch.tensor([[tokens[t]]]), memory, mask, cache)
            total += torch.log_softmax(logits.float(), -1)[0, y].item()
        return total


def _batch(n=6, seed=1, vocab=9):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, 7, (n,), generator=g)
    src = torch.randint(3, vocab, (n, int(lens.max())), generator=g)
    mask = torch.arange(src.shape[1])[None] < lens[:, None]
    return src.masked_fill(~mask, PAD), mask


@pytest.mark.parametrize("tuple_cache", [False, True])
@pytest.mark.parametrize("eos_bias", [0.0, 2.0])
def test_beam_size_one_equals_greedy(tuple_cache, eos_bias):
    model = GRUModel(eos_bias=eos_bias, tuple_cache=tuple_cache)
    src, mask = _batch(n=8)
    config = SearchConfig(beam_size=1, max_len_ratio=1.0, max_len_offset=4)
    g = greedy_search(model, src, mask, config)
    b = beam_search(model, src, mask, config)
    assert b.tokens == g.tokens
    assert b.log_probs == pytest.approx(g.log_probs, abs=1e-9)
    assert generate(model, src, mask, config).tokens == g.tokens
    # some sentences end with eos, others at their maximum length: both paths were exercised
    max_lens = (mask.sum(1) + 4).tolist()
    ended = [len(t) < m for t, m in zip(g.tokens, max_lens)]
    assert all(len(t) <= m for t, m in zip(g.tokens, max_lens))
    if eos_bias:
        assert any(ended)
    else:
        assert not all(ended)


@pytest.mark.parametrize("beam", [2, 4])
def test_beam_scores_match_teacher_forcing(beam):
    """Wrong cache reordering would make the returned score disagree with a fresh teacher-forced pass."""
    model = GRUModel(eos_bias=1.0)
    src, mask = _batch(n=5, seed=3)
    config = SearchConfig(beam_size=beam, length_penalty=0.6, max_len_ratio=1.0, max_len_offset=3)
    res = beam_search(model, src, mask, config)
    assert model.reorders and all(n == 5 * beam for n in model.reorders)  # cache.reorder was used
    greedy = greedy_search(model, src, mask, config)
    for i, hyp in enumerate(res.tokens):
        max_len = int(mask[i].sum()) + 3
        lp = model.sequence_log_prob(src[i], mask[i], hyp, with_eos=len(hyp) < max_len)
        assert res.log_probs[i] == pytest.approx(lp, abs=1e-6)
        n = len(hyp) + (len(hyp) < max_len)
        assert res.scores[i] == pytest.approx(lp / ((5 + n) / 6) ** 0.6, abs=1e-6)
        g_n = len(greedy.tokens[i]) + (len(greedy.tokens[i]) < max_len)
        assert res.scores[i] >= greedy.log_probs[i] / ((5 + g_n) / 6) ** 0.6 - 1e-9


def test_wide_beam_is_exhaustive():
    """With a beam wider than every prefix set, beam search (no length penalty) finds the exact best sequence."""
    vocab, max_len = 5, 3
    model = GRUModel(vocab=vocab, eos_bias=0.5, seed=4)
    src, mask = _batch(n=2, seed=5, vocab=vocab)
    config = SearchConfig(beam_size=200, length_penalty=0.0, max_len_ratio=0.0, max_len_offset=max_len)
    res = beam_search(model, src, mask, config, reorder_cache=lambda c, i: StateCache(c.h.index_select(0, i), []))
    for i in range(2):
        best, best_lp = None, -math.inf
        for n in range(max_len + 1):
            for hyp in itertools.product([t for t in range(vocab) if t != EOS], repeat=n):
                if n < max_len:
                    lp = model.sequence_log_prob(src[i], mask[i], list(hyp), with_eos=True)
                elif n == max_len:
                    lp = model.sequence_log_prob(src[i], mask[i], list(hyp), with_eos=False)
                if lp > best_lp:
                    best, best_lp = list(hyp), lp
        assert res.tokens[i] == best
        assert res.log_probs[i] == pytest.approx(best_lp, abs=1e-6)


class TableModel:
    """Step 1: P(A)=0.5, P(B)=0.4, P(C)=0.1. After A: eos 0.34, C 0.33, D 0.33. After B: eos 0.9, C 0.1. Greedy: A, eos
    (p = 0.17); the better sequence is B, eos (p = 0.36)."""

    A, B, C, D = 3, 4, 5, 6
    config = FakeConfig()

    def encode(self, src, src_mask):
        return src.float(), src_mask

    def decode_step(self, tokens, memory, src_mask, cache):
        prefix = tokens if cache is None else torch.cat([cache, tokens], 1)  # (N, t)
        probs = torch.full((prefix.shape[0], 7), 1e-4)
        for r, seq in enumerate(prefix.tolist()):
            if len(seq) == 1:
                probs[r, self.A], probs[r, self.B], probs[r, self.C] = 0.5, 0.4, 0.1
            elif seq[1] == self.A:
                probs[r, EOS], probs[r, self.C], probs[r, self.D] = 0.34, 0.33, 0.33
            else:
                probs[r, EOS], probs[r, self.C] = 0.9, 0.1
        return (probs / probs.sum(-1, keepdim=True)).log(), prefix


def test_beam_finds_better_sequence_than_greedy():
    model = TableModel()
    src = torch.tensor([[5, 5, 5], [6, 6, 0]])
    mask = src != 0
    config = SearchConfig(beam_size=2, length_penalty=0.0)
    g = greedy_search(model, src, mask, config)
    b = beam_search(model, src, mask, config)  # tensor cache: reordered by reorder_nested
    assert g.tokens == [[TableModel.A]] * 2
    assert b.tokens == [[TableModel.B]] * 2
    assert b.log_probs[0] == pytest.approx(math.log(0.4 * 0.9), abs=2e-3)
    assert g.log_probs[0] == pytest.approx(math.log(0.5 * 0.34), abs=2e-3)


def test_max_length_per_sentence():
    model = GRUModel(eos_bias=-50.0)  # never ends by itself
    src, mask = _batch(n=4, seed=2)
    for search in (greedy_search, beam_search):
        res = search(model, src, mask, SearchConfig(beam_size=3, max_len_ratio=2.0, max_len_offset=1))
        assert [len(t) for t in res.tokens] == (2 * mask.sum(1) + 1).tolist()
    res = greedy_search(model, src, mask, SearchConfig(max_len=3))
    assert all(len(t) == 3 for t in res.tokens)


def test_reorder_nested_and_errors():
    cache = {"k": [torch.arange(6).view(3, 2)], "n": 3}
    out = reorder_nested(cache, torch.tensor([2, 2, 0]))
    assert out["k"][0].tolist() == [[4, 5], [4, 5], [0, 1]] and out["n"] == 3
    with pytest.raises(TypeError, match="reorder_cache"):
        reorder_nested(object(), torch.tensor([0]))
    with pytest.raises(ValueError, match="beam_size"):
        SearchConfig(beam_size=0)
    with pytest.raises(ValueError, match="length_penalty_kind"):
        SearchConfig(length_penalty_kind="wu")
    # values that would cut every output short or rank hypotheses by nan, silently: refused, naming the flag
    for bad, flag in (
        (dict(max_len_ratio=math.nan), "--max-len-ratio"),
        (dict(max_len_ratio=math.inf), "--max-len-ratio"),
        (dict(max_len_ratio=-1.0), "--max-len-ratio"),
        (dict(length_penalty=math.nan), "--length-penalty"),
        (dict(length_penalty=math.inf), "--length-penalty"),
        (dict(max_len_offset=-100), "--max-len-offset"),
        (dict(max_len_offset=2.5), "--max-len-offset"),
        (dict(max_len_ratio=0.0, max_len_offset=1), "--max-len-offset"),
    ):
        with pytest.raises(ValueError, match=flag):
            SearchConfig(**bad)
    SearchConfig(max_len_ratio=1.5, max_len_offset=0)  # round(1.5 · L) leaves room: allowed
    with pytest.raises(ValueError, match="eos_id"):
        greedy_search(
            object(), torch.ones(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool), pad_id=0, bos_id=1
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_search_on_cuda_matches_cpu():
    model = GRUModel(eos_bias=1.0)
    src, mask = _batch(n=6)
    config = SearchConfig(beam_size=3, max_len_ratio=1.0, max_len_offset=3)
    cpu = beam_search(model, src, mask, config)
    gpu_model = GRUModel(eos_bias=1.0).cuda()
    gpu = beam_search(gpu_model, src.cuda(), mask.cuda(), config)
    assert gpu.tokens == cpu.tokens
    g = greedy_search(gpu_model, src.cuda(), mask.cuda(), config)
    assert g.tokens == greedy_search(model, src, mask, config).tokens
