from dataclasses import dataclass

import pytest
import torch

from adasparse.data.tokenizer import TokenizerConfig, TokenizerPair
from adasparse.decode.search import SearchConfig
from adasparse.decode.translate import translate_lines


@dataclass(frozen=True)
class _Config:
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2


class CopyModel:
    """Emits the source ids (which end with eos) one by one: a perfect model of the identity task."""

    def __init__(self, vocab):
        self.config, self.vocab = _Config(), vocab

    def encode(self, src, src_mask):
        return src, src_mask

    def decode_step(self, tokens, memory, src_mask, cache):
        step = torch.zeros(tokens.shape[0], dtype=torch.long) if cache is None else cache + 1  # (N,)
        pos = step.clamp(max=memory.shape[1] - 1)
        target = memory.gather(1, pos[:, None])[:, 0]  # (N,)
        logits = torch.full((tokens.shape[0], self.vocab), -5.0)
        logits[torch.arange(tokens.shape[0]), target] = 5.0
        return logits, step


@pytest.mark.parametrize("beam", [1, 3])
def test_translate_lines_copies_in_input_order(beam):
    lines = ["h e l l o", "a", "w o r l d s", "", "z z z z z z z z z"]
    pair = TokenizerPair.train(lines, lines, TokenizerConfig(kind="whitespace"))
    model = CopyModel(pair.tgt.vocab_size)
    out = translate_lines(model, pair, lines, SearchConfig(beam_size=beam), max_tokens=12)
    assert out == lines
    # truncated sources (eos kept) give truncated outputs
    with pytest.warns(UserWarning, match="3 input lines are longer than 3 tokens"):
        out = translate_lines(model, pair, lines, SearchConfig(beam_size=beam), max_src_len=3)
    assert out == [" ".join(line.split()[:2]) for line in lines]


def test_translate_lines_respects_the_model_positions():
    """Sources and outputs longer than the model's position table are cut (with a warning), not a crash."""
    from adasparse.models import build_model
    from adasparse.models.config import tiny

    lines = ["a b c", "", " ".join("abcdefgh" * 5)]  # the last: 41 source ids, far beyond max_len=12
    pair = TokenizerPair.train(lines, lines, TokenizerConfig(kind="whitespace"))
    v = pair.tgt.vocab_size
    ids = dict(pad_id=pair.tgt.pad_id, bos_id=pair.tgt.bos_id, eos_id=pair.tgt.eos_id)
    torch.manual_seed(0)
    model = build_model(tiny(attention="softmax", vocab_size=v, max_len=12, **ids)).eval()
    step = model.decode_step

    specials = torch.tensor([pair.tgt.pad_id, pair.tgt.bos_id, pair.tgt.eos_id, pair.tgt.unk_id])

    def no_eos_step(*args):  # only letters, never eos: every output runs to the length limit
        logits, cache = step(*args)
        return logits.index_fill(1, specials, float("-inf")), cache

    model.decode_step = no_eos_step
    for beam in (1, 2):
        with pytest.warns(UserWarning, match="1 input lines are longer than 12 tokens"):
            out = translate_lines(model, pair, lines, SearchConfig(beam_size=beam, max_len=100))
        assert [len(h.split()) for h in out] == [12, 0, 12]  # max_len outputs (eos never chosen); blank stays blank


def test_blank_lines_give_blank_lines_without_running_the_model():
    lines = ["a b", "", "   ", "b"]
    pair = TokenizerPair.train(lines, lines, TokenizerConfig(kind="whitespace"))
    model = CopyModel(pair.tgt.vocab_size)
    seen = []
    encode = model.encode
    model.encode = lambda src, mask: seen.append(src.shape[0]) or encode(src, mask)
    assert translate_lines(model, pair, lines, SearchConfig(beam_size=2)) == ["a b", "", "", "b"]
    assert sum(seen) == 2  # only the two non-blank lines were encoded
    assert translate_lines(model, pair, ["", " "]) == ["", ""] and sum(seen) == 2


def test_text_the_vocabulary_does_not_know_is_a_warning():
    """Input mostly outside the vocabulary (another language or script, the wrong checkpoint) decodes to
    confident nonsense: above 10 % <unk> tokens, a warning with the rate; known text, none."""
    import warnings

    lines = ["h e l l o", "w o r l d"]
    pair = TokenizerPair.train(lines, lines, TokenizerConfig(kind="whitespace"))
    model = CopyModel(pair.tgt.vocab_size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known text: no warning
        translate_lines(model, pair, ["h e l l o", "l o w"], max_tokens=64)
    with pytest.warns(UserWarning, match=r"the input: 80% of the tokens \(4 of 5, in 2 of 2 lines\) are unknown"):
        translate_lines(model, pair, ["x y z", "h q"], max_tokens=64)
