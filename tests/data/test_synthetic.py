"""Synthetic length-generalisation tasks: exact lengths, answers determined by the sequence (independent
solvers written here), seeded reproducibility, the published layouts (Zoology's MQAR, Liu et al.'s flip-flop)."""

import pytest
import torch

from adasparse.data.synthetic import EOS, IGNORE, MQAR, Copy, FlipFlop, make_task

LENGTHS = [16, 64, 130, 1024]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _mqar_answers(task: MQAR, x: torch.Tensor) -> torch.Tensor:
    """Independent rule: at the second occurrence of a key, the answer is the token after its first occurrence."""
    out = torch.full_like(x, IGNORE)
    is_key = (x >= task.key0) & (x < task.value0)
    for b in range(x.shape[0]):
        pos = is_key[b].nonzero().flatten()
        for key in x[b, pos].unique():
            where = (x[b] == key).nonzero().flatten()
            assert len(where) == 2, "every key occurs exactly twice (its pair and its query)"
            out[b, where[1]] = x[b, where[0] + 1]
    return out


def _flipflop_answers(task: FlipFlop, x: torch.Tensor) -> torch.Tensor:
    out = torch.full_like(x, IGNORE)
    instr, bits = x[:, 0::2], x[:, 1::2]
    for b in range(x.shape[0]):
        writes = (instr[b] == task.w).nonzero().flatten()
        for t in (instr[b] == task.r).nonzero().flatten():
            last = writes[writes < t].max()  # the first instruction is a write, so one always exists
            out[b, 2 * t] = bits[b, last]
    return out


def _copy_answers(task: Copy, x: torch.Tensor) -> torch.Tensor:
    out = torch.full_like(x, IGNORE)
    n = x.shape[1] // 2 - 1
    out[:, n + 1 : 2 * n + 1] = x[:, 1 : n + 1]
    out[:, 2 * n + 1] = EOS
    return out


TASKS = [
    (MQAR(num_keys=128, kv_ratio=8), _mqar_answers),
    (Copy(num_symbols=8), _copy_answers),
    (FlipFlop(p_ignore=0.6), _flipflop_answers),
]


@pytest.mark.parametrize(("task", "answers"), TASKS, ids=[t.name for t, _ in TASKS])
@pytest.mark.parametrize("length", LENGTHS)
def test_lengths_vocabulary_and_answers_determined_by_the_sequence(task, answers, length):
    x, y = task.sample(3, length, _gen())
    assert x.shape == y.shape == (3, length) and x.dtype == y.dtype == torch.long
    assert int(x.min()) >= 0 and int(x.max()) < task.vocab_size
    lab = y != IGNORE
    assert lab.any(1).all(), "every sequence asks at least one question"
    assert int(y[lab].min()) >= 0 and int(y[lab].max()) < task.vocab_size
    assert torch.equal(answers(task, x), y)
    assert torch.equal(task.solve(x), y)
    # causal: the answer at t is a function of inputs[: t + 1]; for the LM tasks it is the next input token
    if task.name != "mqar":
        t_next = lab[:, :-1].nonzero()
        assert torch.equal(y[t_next[:, 0], t_next[:, 1]], x[t_next[:, 0], t_next[:, 1] + 1])


@pytest.mark.parametrize(("task", "answers"), TASKS, ids=[t.name for t, _ in TASKS])
def test_seeds_reproduce_and_differ(task, answers):
    a, b, c = (task.sample(4, 64, _gen(s)) for s in (7, 7, 8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_mqar_follows_zoology_layout():
    task = MQAR(num_keys=64, kv_ratio=8)
    x, y = task.sample(200, 64, _gen())
    p = 64 // 8
    ctx = x[:, : 2 * p]
    keys, values = ctx[:, 0::2], ctx[:, 1::2]
    assert ((keys >= task.key0) & (keys < task.value0)).all()  # keys: lower half of the task vocabulary
    assert (values >= task.value0).all()  # values: upper half
    assert all(len(set(r)) == p for r in keys.tolist()) and all(len(set(r)) == p for r in values.tolist())
    q = (y != IGNORE).nonzero()
    assert (y != IGNORE).sum(1).eq(p).all(), "each key queried once"
    offsets = q[:, 1] - 2 * p
    assert (offsets >= 0).all() and (offsets % 2 == 0).all(), "queries at even offsets after the pairs"
    # power law with a = 0.01: early slots far more likely than under a uniform placement
    slots = (64 - 2 * p) // 2
    assert (offsets // 2).float().mean() < 0.8 * (slots - 1) / 2
    assert (offsets == 0).float().mean() > 1.5 / slots
    uniform = MQAR(num_keys=64, kv_ratio=8, power_a=1.0).sample(200, 64, _gen())[1]
    uo = (uniform != IGNORE).nonzero()[:, 1] - 2 * p
    assert (uo // 2).float().mean() > (offsets // 2).float().mean()


def test_mqar_pairs_grow_with_length_and_need_enough_keys():
    task = MQAR(num_keys=32, kv_ratio=8)
    assert task.num_pairs(64) == 8 and task.num_pairs(256) == 32
    with pytest.raises(ValueError, match="num_keys >= 64"):
        task.sample(1, 512, _gen())


def test_flipflop_instruction_frequencies_and_first_write():
    task = FlipFlop(p_ignore=0.8)
    x, _ = task.sample(64, 512, _gen())
    instr = x[:, 0::2]
    assert (instr[:, 0] == task.w).all()
    rest = instr[:, 1:].flatten()
    freqs = [(rest == t).float().mean().item() for t in (task.w, task.r, task.i)]
    assert freqs == pytest.approx([0.1, 0.1, 0.8], abs=0.01)
    assert ((x[:, 1::2] == task.bit0) | (x[:, 1::2] == task.bit0 + 1)).all()


def test_copy_repeats_the_first_half():
    task = Copy(num_symbols=32)
    x, y = task.sample(2, 20, _gen())
    n = 9
    assert (x[:, 0] == 1).all() and (x[:, n + 1] == task.sep).all()
    assert torch.equal(x[:, 1 : n + 1], x[:, n + 2 :])
    assert (y != IGNORE).sum(1).eq(n + 1).all() and (y[:, -1] == EOS).all()


@pytest.mark.parametrize(
    ("make", "length", "error", "match"),
    [
        (lambda: Copy(), 9, ValueError, "even int"),
        (lambda: Copy(), 2, ValueError, ">= 4"),
        (lambda: FlipFlop(), 7, ValueError, "even int"),
        (lambda: MQAR(kv_ratio=8), 6, ValueError, ">= 8"),
        (lambda: Copy(), 8.0, TypeError, "int"),
    ],
)
def test_bad_lengths(make, length, error, match):
    with pytest.raises(error, match=match):
        make().sample(2, length, _gen())


def test_bad_options():
    with pytest.raises(ValueError, match="unknown synthetic task"):
        make_task("sort")
    with pytest.raises(ValueError, match="kv_ratio"):
        MQAR(kv_ratio=2)
    with pytest.raises(ValueError, match="p_ignore"):
        FlipFlop(p_ignore=1.0)
    with pytest.raises(ValueError, match="num_symbols"):
        Copy(num_symbols=1)
    with pytest.raises(ValueError, match="batch"):
        Copy().sample(0, 8)
    assert isinstance(make_task("mqar", num_keys=8), MQAR)
