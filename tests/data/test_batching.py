import random

import pytest
import torch

from adasparse.data.batching import TokenBatcher, collate, encode_pairs, encode_sources, inference_batches


def _data(n=300, seed=0):
    rng = random.Random(seed)
    src = [[5 + rng.randrange(20) for _ in range(rng.randint(1, 30))] for _ in range(n)]
    tgt = [[1] + [5 + rng.randrange(20) for _ in range(rng.randint(0, 30))] + [2] for _ in range(n)]
    return src, tgt


def _indices(batches):
    return [i for b in batches for i in b]


def test_every_pair_once_per_epoch_and_budget():
    src, tgt = _data()
    batcher = TokenBatcher(src, tgt, max_tokens=128, seed=3)
    for epoch in range(3):
        batches = batcher.epoch_batches(epoch)
        assert sorted(_indices(batches)) == list(range(len(src)))
        for b in batches:
            width = max(max(len(src[i]), len(tgt[i])) for i in b)
            assert len(b) * width <= 128
    # bucketing: padding is small compared with random batches of the same sizes
    batches = batcher.epoch_batches(0)
    pad = sum(len(b) * max(len(tgt[i]) for i in b) - sum(len(tgt[i]) for i in b) for b in batches)
    assert pad < 0.1 * sum(len(t) for t in tgt)


def test_deterministic_given_seed_and_epoch():
    src, tgt = _data()
    a = TokenBatcher(src, tgt, max_tokens=100, seed=1)
    b = TokenBatcher(src, tgt, max_tokens=100, seed=1)
    c = TokenBatcher(src, tgt, max_tokens=100, seed=2)
    assert a.epoch_batches(0) == b.epoch_batches(0)
    assert a.epoch_batches(1) == b.epoch_batches(1)
    assert a.epoch_batches(0) != a.epoch_batches(1)
    assert a.epoch_batches(0) != c.epoch_batches(0)


def test_pools_and_max_sentences_and_no_shuffle():
    src, tgt = _data()
    pooled = TokenBatcher(src, tgt, max_tokens=200, pool_size=50, max_sentences=7)
    batches = pooled.epoch_batches(0)
    assert sorted(_indices(batches)) == list(range(len(src)))
    assert max(len(b) for b in batches) == 7
    ordered = TokenBatcher(src, tgt, max_tokens=200, shuffle=False)
    assert _indices(ordered.epoch_batches(0)) == list(range(len(src)))
    assert ordered.epoch_batches(0) == ordered.epoch_batches(5)


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_distributed_split_disjoint_complete_and_even(world_size):
    src, tgt = _data(n=101)
    ranks = [TokenBatcher(src, tgt, max_tokens=90, seed=5, rank=r, world_size=world_size) for r in range(world_size)]
    for epoch in range(2):
        per_rank = [r.epoch_batches(epoch) for r in ranks]
        assert len({len(b) for b in per_rank}) == 1  # same number of steps on every rank
        flat = [i for batches in per_rank for i in _indices(batches)]
        assert sorted(flat) == list(range(len(src)))  # disjoint and complete
    # the global schedule (rank=None) interleaves the ranks' batches: step k = global batches kW .. kW+W-1
    glob = TokenBatcher(src, tgt, max_tokens=90, seed=5, rank=None, world_size=world_size).epoch_batches(0)
    for r in range(world_size):
        assert glob[r::world_size] == ranks[r].epoch_batches(0)


def test_tiny_data_spread_over_ranks():
    src, tgt = [[5]], [[1, 2]]
    with pytest.raises(ValueError, match="cannot be spread"):
        TokenBatcher(src, tgt, max_tokens=10, world_size=2, rank=0).epoch_batches(0)


def test_resume_position():
    src, tgt = _data()
    full = TokenBatcher(src, tgt, max_tokens=100, seed=9)
    run = [b.indices for _ in range(2) for b in full]  # two whole epochs
    assert full.state_dict()["epoch"] == 2
    part = TokenBatcher(src, tgt, max_tokens=100, seed=9)
    seen = []
    for b in part:
        seen.append(b.indices)
        if len(seen) == 5:
            break
    state = part.state_dict()
    assert state["epoch"] == 0 and state["batch_index"] == 5
    resumed = TokenBatcher(src, tgt, max_tokens=100, seed=9)
    resumed.load_state_dict(state)
    seen += [b.indices for b in resumed]
    seen += [b.indices for b in resumed]
    assert seen == run
    with pytest.raises(ValueError, match="saved seed=9"):
        TokenBatcher(src, tgt, max_tokens=100, seed=10).load_state_dict(state)


def test_collate_padding_and_masks():
    b = collate([[5, 6, 7], [8]], [[1, 9, 2], [1, 2]], pad_id=0)
    assert b.src.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b.src_mask.tolist() == [[True, True, True], [True, False, False]]
    assert b.tgt_in.tolist() == [[1, 9], [1, 0]]
    assert b.tgt_out.tolist() == [[9, 2], [2, 0]]
    assert b.tgt_mask.tolist() == [[True, True], [True, False]]
    assert (b.n_src_tokens, b.n_tgt_tokens, b.size) == (4, 3, 2)
    assert b.src.dtype == torch.long and b.src_mask.dtype == torch.bool


def test_errors():
    with pytest.raises(ValueError, match="longer than max_tokens=4"):
        TokenBatcher([[5] * 5], [[1, 2]], max_tokens=4)
    with pytest.raises(ValueError, match="rank"):
        TokenBatcher([[5]], [[1, 2]], max_tokens=4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="at least bos and eos"):
        collate([[5]], [[1]])


class _Tok:
    """Ids = symbol codes; enough of the tokenizer interface for encode_pairs."""

    def encode(self, text, add_bos=True, add_eos=True):
        return [1] * add_bos + [4 + ord(c) - ord("a") for c in text.split()] + [2] * add_eos


class _Pair:
    src = tgt = _Tok()


def test_encode_pairs_and_sources():
    src, tgt, dropped = encode_pairs(_Pair(), ["a b", "a b c d e"], ["c", "d"], max_len=4)
    assert (src, tgt, dropped) == ([[4, 5, 2]], [[1, 6, 2]], 1)
    assert encode_sources(_Tok(), ["a b c d e", "a"], max_len=3) == [[4, 5, 2], [4, 2]]


def test_inference_batches_cover_all_within_budget():
    src, _ = _data(n=97)
    seen = []
    for indices, s, mask in inference_batches(src, max_tokens=64, max_sentences=10):
        assert s.shape == mask.shape and s.shape[0] == len(indices) <= 10
        assert s.numel() <= 64 or len(indices) == 1
        assert mask.sum(1).tolist() == [len(src[i]) for i in indices]
        seen += indices
    assert sorted(seen) == list(range(97))
    assert [len(src[i]) for i in seen] == sorted((len(x) for x in src), reverse=True)
