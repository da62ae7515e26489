"""Language-model text: a folder of plain or gzip files, one tokenizer, sequences, token-budget batches.

A **text corpus** is a folder holding ``{split}.{suffix}`` or ``{split}.{suffix}.gz`` files (``suffix`` is ``txt``
by default; ``suffix="en"`` reads one side of a translation corpus, e.g. the English side of Multi30k), where
``split`` is ``train``, a validation prefix (``valid``, ``val``, ``dev`` or ``validation``) or a test prefix
(``test`` or ``test*``), as for parallel corpora (:mod:`adasparse.data.corpus`, whose reader this module uses:
the same errors name the file and the 1-based line for invalid UTF-8, and the file for a damaged gzip). One line
is one document or sentence; blank lines are skipped.

**Sequences.** A line becomes ``bos, pieces..., eos`` (:func:`encode_text`); the model reads a sequence without
its last id and predicts it without its first, so a line of ``n`` pieces gives ``n + 1`` predicted tokens (the
pieces and ``eos``). A line longer than the model's window of ``max_len`` inputs is

* ``"split"``: cut into windows of at most ``max_len + 1`` ids that overlap by one id (window ``k`` holds ids
  ``k·max_len .. (k+1)·max_len``): every id after ``bos`` is predicted exactly once, the windows after the first
  start without ``bos`` and see only their own window;
* ``"truncate"``: cut to its first ``max_len + 1`` ids (the rest, ``eos`` included, is never predicted);
* ``"drop"``: left out (counted).

**Batches.** :class:`LMBatcher` is :class:`~adasparse.data.batching.TokenBatcher` on these sequences (same
shuffling, length-sorted pools, distributed split, resuming, ``state_dict``); its padded budget is ``n_rows ·
longest sequence`` (ids, i.e. inputs + 1 per row), and its batches are :class:`LMBatch`.

**Tokenizer.** An LM has one tokenizer; :func:`train_lm_tokenizer` trains it as for translation and returns it as
a joint :class:`~adasparse.data.tokenizer.TokenizerPair` (``pair.src is pair.tgt``), so ``save``/``load`` and the
checkpoint's ``tokenizer/`` folder work unchanged; :func:`lm_tokenizer` takes either form and gives the tokenizer.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .batching import TokenBatcher, _pad
from .corpus import _split_files, _SplitLookup, read_lines
from .tokenizer import Tokenizer, TokenizerConfig, TokenizerPair

__all__ = [
    "TextFiles",
    "find_text",
    "load_text",
    "train_lm_tokenizer",
    "lm_tokenizer",
    "encode_text",
    "split_sequence",
    "lm_sequences",
    "LMBatch",
    "collate_lm",
    "LMBatcher",
    "LONG_POLICIES",
]

log = logging.getLogger(__name__)

LONG_POLICIES = ("split", "truncate", "drop")


# -- files ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextFiles(_SplitLookup):
    """The files of a text-corpus folder: ``splits`` maps ``train``, ``valid`` and each test prefix (``test``,
    ``test_2016_flickr``...) to its file; ``has(split)`` and ``test_names`` as for parallel corpora."""

    directory: Path
    suffix: str
    splits: dict[str, Path]

    def get(self, split: str) -> Path:
        """The file of ``split``; ``"test"`` falls back to the only test file when there is exactly one."""
        return self._lookup(split, f"(*.{self.suffix})")

    def load(self, split: str) -> list[str]:
        """:func:`load_text` on the file of ``split``."""
        return load_text(self.get(split))


def find_text(directory: str | Path, suffix: str = "txt") -> TextFiles:
    """Discover ``{split}.{suffix}[.gz]`` files in ``directory`` (see the module docstring).

    Raises ``FileNotFoundError`` when the folder or its ``train`` file is missing (naming what was looked for and
    the suffixes that are there) and ``ValueError`` for two files of one split (``train.txt`` and ``train.txt.gz``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"text folder not found: {directory}")
    if not suffix or "." in suffix or "/" in suffix:
        raise ValueError(f"suffix must be a file extension without dots, e.g. 'txt' or 'en', got {suffix!r}")
    files = _split_files(directory, "suffix")
    splits = {split: path for (split, ext), path in files.items() if ext == suffix}
    if "train" not in splits:
        others = sorted({ext for _, ext in files} - {suffix})
        hint = (
            f"; files with other suffixes are there ({', '.join(others)}): choose one as the suffix" if others else ""
        )
        raise FileNotFoundError(f"{directory}: no train.{suffix} (or train.{suffix}.gz){hint}")
    return TextFiles(directory, suffix, splits)


def load_text(path: str | Path, max_lines: int | None = None) -> list[str]:
    """The non-blank lines of a plain or gzip UTF-8 file, stripped (errors as :func:`~adasparse.data.corpus.read_lines`:
    file and line named); ``max_lines`` keeps the first ones (quick runs and tests)."""
    if max_lines is not None and max_lines < 0:
        raise ValueError(f"max_lines must be >= 0 or None, got {max_lines}")
    lines = read_lines(path)
    kept = [line for line in lines if line]
    if len(kept) < len(lines):
        log.info("%s: skipped %d blank lines of %d", path, len(lines) - len(kept), len(lines))
    return kept[:max_lines] if max_lines is not None else kept


# -- tokenizer --------------------------------------------------------------------------------------------------


def train_lm_tokenizer(lines: Sequence[str], config: TokenizerConfig) -> TokenizerPair:
    """Train the one tokenizer of a language model on ``lines`` (as :meth:`TokenizerPair.train` trains a joint
    translation vocabulary; ``config.joint`` is set). ``pair.tgt`` (``is pair.src``) is the tokenizer."""
    return TokenizerPair.train(lines, [], dataclasses.replace(config, joint=True))


def lm_tokenizer(tokenizer: Tokenizer | TokenizerPair) -> Tokenizer:
    """The tokenizer of a language model: ``tokenizer`` itself, or the shared one of a joint pair."""
    if isinstance(tokenizer, TokenizerPair):
        if not tokenizer.joint:
            raise ValueError("a language model has one tokenizer; this TokenizerPair has separate src and tgt models")
        return tokenizer.tgt
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"expected a Tokenizer or a joint TokenizerPair, got {type(tokenizer).__name__}")
    return tokenizer


# -- sequences --------------------------------------------------------------------------------------------------


def encode_text(tokenizer: Tokenizer | TokenizerPair, line: str) -> list[int]:
    """``bos, pieces..., eos`` of one line."""
    return lm_tokenizer(tokenizer).encode(line, add_bos=True, add_eos=True)


def split_sequence(ids: Sequence[int], max_len: int | None) -> list[list[int]]:
    """Windows of at most ``max_len + 1`` ids overlapping by one (see the module docstring): every id but the
    first is a target of exactly one window. ``max_len=None`` keeps the sequence whole."""
    ids = list(ids)
    if max_len is None or len(ids) <= max_len + 1:
        return [ids]
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1 or None, got {max_len}")
    return [ids[s : s + max_len + 1] for s in range(0, len(ids) - 1, max_len)]


def lm_sequences(
    tokenizer: Tokenizer | TokenizerPair,
    lines: Iterable[str],
    max_len: int | None = None,
    long: str = "split",
) -> tuple[list[list[int]], list[int], int]:
    """Encode ``lines`` as LM sequences (module docstring) of at most ``max_len + 1`` ids (``max_len`` model
    inputs; ``None``: no limit); blank lines are skipped.

    Returns ``(sequences, line_index, n_long)``: ``line_index[j]`` is the 0-based index in ``lines`` of the line
    that sequence ``j`` comes from (several for a split line), ``n_long`` the number of lines longer than the
    window (split, truncated or dropped according to ``long``).
    """
    if long not in LONG_POLICIES:
        raise ValueError(f"long must be one of {LONG_POLICIES}, got {long!r}")
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be >= 1 or None, got {max_len}")
    tok = lm_tokenizer(tokenizer)
    seqs: list[list[int]] = []
    index: list[int] = []
    n_long = 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        ids = tok.encode(line, add_bos=True, add_eos=True)
        if max_len is not None and len(ids) > max_len + 1:
            n_long += 1
            if long == "drop":
                continue
            parts = split_sequence(ids, max_len) if long == "split" else [ids[: max_len + 1]]
        else:
            parts = [ids]
        seqs.extend(parts)
        index.extend([i] * len(parts))
    return seqs, index, n_long


# -- batches ----------------------------------------------------------------------------------------------------


@dataclass
class LMBatch:
    """A padded batch of LM sequences.

    ``inputs`` (B, T) are the sequences without their last id, ``targets`` (B, T) without their first (the next
    id at every position), ``mask`` (B, T) True where a target is real (the same positions hold real inputs:
    ``model(inputs, pad_mask=mask)``); padding is ``pad_id``. ``indices`` are the sequences' positions in the
    data set; ``n_tokens`` counts the targets (the loss normaliser).
    """

    inputs: Tensor
    targets: Tensor
    mask: Tensor
    indices: list[int]

    @property
    def size(self) -> int:
        return self.inputs.shape[0]

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> LMBatch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return LMBatch(move(self.inputs), move(self.targets), move(self.mask), self.indices)


def collate_lm(seqs: Sequence[Sequence[int]], pad_id: int = 0, indices: Sequence[int] | None = None) -> LMBatch:
    """Pad sequences (at least 2 ids each) into an :class:`LMBatch`."""
    if any(len(s) < 2 for s in seqs):
        raise ValueError("collate_lm: every sequence needs at least 2 ids (bos and eos, or a split window)")
    inputs, mask = _pad([s[:-1] for s in seqs], pad_id)
    targets, _ = _pad([s[1:] for s in seqs], pad_id)
    return LMBatch(inputs, targets, mask, list(indices if indices is not None else range(len(seqs))))


class LMBatcher(TokenBatcher):
    """Token-budget batches of LM sequences: :class:`~adasparse.data.batching.TokenBatcher`'s schedule (shuffled
    with ``(seed, epoch)``, length-sorted pools, every sequence once per epoch, ``rank``/``world_size``, resuming
    with ``state_dict``/``load_state_dict``) over ``sequences``, with :class:`LMBatch` batches.

    Args:
        sequences: id lists from :func:`lm_sequences` (at least 2 ids each).
        max_tokens: budget of padded ids per batch, ``n_rows · longest sequence`` (a sequence of ``n`` ids gives
            ``n - 1`` inputs and targets, so a batch holds at most ``max_tokens`` inputs).
        The other arguments are :class:`~adasparse.data.batching.TokenBatcher`'s.
    """

    def __init__(
        self,
        sequences: Sequence[Sequence[int]],
        max_tokens: int,
        *,
        max_sentences: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        pool_size: int | None = None,
        rank: int | None = 0,
        world_size: int = 1,
        pad_id: int = 0,
    ):
        if not sequences:
            raise ValueError("LMBatcher: no sequences")
        short = [i for i, s in enumerate(sequences) if len(s) < 2]
        if short:
            raise ValueError(f"LMBatcher: {len(short)} sequences have fewer than 2 ids (e.g. sequence {short[0]})")
        longest = max(len(s) for s in sequences)
        if longest > max_tokens:
            raise ValueError(
                f"max_tokens={max_tokens} is smaller than the longest sequence ({longest} ids); raise it or lower "
                "the window (max_len)"
            )
        super().__init__(
            sequences, sequences, max_tokens, max_sentences=max_sentences, seed=seed, shuffle=shuffle,
            pool_size=pool_size, rank=rank, world_size=world_size, pad_id=pad_id,
        )  # fmt: skip
        self.sequences = sequences

    def make_batch(self, indices: Sequence[int]) -> LMBatch:
        return collate_lm([self.sequences[i] for i in indices], self.pad_id, indices)
