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
    out = translate_lines(model, pair, lines, SearchConfig(beam_size=beam), max_src_len=3)
    assert out == [" ".join(line.split()[:2]) for line in lines]
