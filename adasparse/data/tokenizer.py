"""Tokenizers trained from the training text and stored with the model.

Three kinds, one interface (:class:`Tokenizer`):

* ``"sentencepiece"``: SentencePiece BPE or unigram sub-words; detokenization is lossless up to SentencePiece's
  normalisation (NFKC, runs of spaces collapsed, outer spaces removed) for characters seen in training;
* ``"whitespace"``: every whitespace-separated symbol is a token (grapheme-to-phoneme: ``"p h o n e"`` →
  ``p``, ``h``, ...; ``"F OW N"`` → ``F``, ``OW``, ``N``); decoding joins symbols with one space;
* ``"char"``: every character is a token, a space is written ``▁``; decoding restores the spaces.

Ids follow one convention everywhere: ``pad = 0``, ``bos = 1``, ``eos = 2``, ``unk = 3``, then the pieces.
:class:`TokenizerPair` holds a source and a target tokenizer, either one joint model (the same object on both
sides, as for tied embeddings) or two separate ones; ``save(directory)`` writes ``tokenizer.json`` and the model
files, ``TokenizerPair.load(directory)`` reads them back (a checkpoint stores this folder).
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .._io import atomic_write_bytes, atomic_write_text

__all__ = [
    "PAD_ID",
    "BOS_ID",
    "EOS_ID",
    "UNK_ID",
    "SPECIAL_PIECES",
    "TokenizerConfig",
    "Tokenizer",
    "SymbolTokenizer",
    "SentencePieceTokenizer",
    "TokenizerPair",
    "auto_vocab_size",
    "min_vocab_size",
]

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_PIECES = ("<pad>", "<s>", "</s>", "<unk>")
_SPACE = "\u2581"  # ▁, SentencePiece's word-boundary mark; also the space symbol of the "char" kind
_KINDS = ("sentencepiece", "whitespace", "char")
_MODEL_TYPES = ("bpe", "unigram")


@dataclass(frozen=True)
class TokenizerConfig:
    """How to build the tokenizers.

    Args:
        kind: ``"sentencepiece"``, ``"whitespace"`` or ``"char"`` (see the module docstring).
        model_type: SentencePiece algorithm, ``"bpe"`` or ``"unigram"``.
        vocab_size: SentencePiece vocabulary size (a soft limit: a small corpus may give fewer pieces); for the
            symbol kinds, the largest number of symbols kept (most frequent first), ``None`` for all.
        joint: one vocabulary trained on source + target text (``True``) or one per side.
        character_coverage: SentencePiece's share of characters covered (1.0 for Latin scripts, 0.9995 for CJK).
        byte_fallback: SentencePiece encodes unknown characters as UTF-8 bytes instead of ``<unk>``.
        min_frequency: symbol kinds: drop symbols seen fewer times in training (they become ``<unk>``).
        max_sentences: SentencePiece samples at most this many training sentences.
        seed: SentencePiece's sampling seed (training is deterministic given the data and the seed).
    """

    kind: str = "sentencepiece"
    model_type: str = "bpe"
    vocab_size: int | None = 8000
    joint: bool = True
    character_coverage: float = 1.0
    byte_fallback: bool = False
    min_frequency: int = 1
    max_sentences: int = 2_000_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"tokenizer kind must be one of {_KINDS}, got {self.kind!r}")
        if self.model_type not in _MODEL_TYPES:
            raise ValueError(f"model_type must be one of {_MODEL_TYPES}, got {self.model_type!r}")
        if self.kind == "sentencepiece" and (self.vocab_size is None or self.vocab_size <= len(SPECIAL_PIECES)):
            raise ValueError(f"sentencepiece needs vocab_size > {len(SPECIAL_PIECES)}, got {self.vocab_size}")
        if self.vocab_size is not None and self.vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1 or None, got {self.vocab_size}")
        if not 0.0 < self.character_coverage <= 1.0:
            raise ValueError(f"character_coverage must be in (0, 1], got {self.character_coverage}")
        if self.min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {self.min_frequency}")


class Tokenizer:
    """Text ↔ ids for one side. Subclasses implement :meth:`tokenize`, :meth:`piece_to_id` and :meth:`_detok`."""

    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def tokenize(self, text: str) -> list[str]:
        """The pieces of ``text`` (no bos/eos)."""
        raise NotImplementedError

    def piece_to_id(self, piece: str) -> int:
        raise NotImplementedError

    def id_to_piece(self, index: int) -> str:
        raise NotImplementedError

    def _detok(self, pieces: list[str]) -> str:
        raise NotImplementedError

    def _word_starts(self, pieces: list[str]) -> list[bool]:
        """Whether each piece begins a new word."""
        raise NotImplementedError

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        """Ids of ``text``, with ``bos``/``eos`` around it when asked."""
        ids = [self.piece_to_id(p) for p in self.tokenize(text)]
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Iterable[int]) -> str:
        """Detokenized text of ``ids``: stops at the first ``eos``, skips ``bos`` and ``pad``."""
        pieces = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            pieces.append(self.id_to_piece(i))
        return self._detok(pieces)

    def word_ids(self, text: str, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        """For each id of ``encode(text, add_bos, add_eos)``, the 0-based index of the word it belongs to.

        ``bos``/``eos`` get ``-1``. Words are whitespace-separated words of the text for ``sentencepiece`` and
        ``char``; for ``whitespace`` every symbol is its own word.
        """
        starts = self._word_starts(self.tokenize(text))
        out, w = [], -1
        for s in starts:
            w += 1 if (s or w < 0) else 0
            out.append(w)
        return ([-1] if add_bos else []) + out + ([-1] if add_eos else [])


class SymbolTokenizer(Tokenizer):
    """One token per whitespace-separated symbol (``mode="whitespace"``) or per character (``mode="char"``)."""

    def __init__(self, pieces: Sequence[str], mode: str = "whitespace"):
        if mode not in ("whitespace", "char"):
            raise ValueError(f"SymbolTokenizer mode must be 'whitespace' or 'char', got {mode!r}")
        pieces = list(pieces)
        if tuple(pieces[: len(SPECIAL_PIECES)]) != SPECIAL_PIECES:
            raise ValueError(f"the vocabulary must start with {SPECIAL_PIECES}, got {pieces[:4]}")
        if len(set(pieces)) != len(pieces):
            raise ValueError("the vocabulary has duplicate pieces")
        self.mode = mode
        self.pieces = pieces
        self._index = {p: i for i, p in enumerate(pieces)}

    @classmethod
    def train(
        cls, lines: Iterable[str], mode: str = "whitespace", max_size: int | None = None, min_frequency: int = 1
    ) -> SymbolTokenizer:
        """Vocabulary of the symbols in ``lines``: most frequent first (ties alphabetical), at most ``max_size``."""
        counts: Counter[str] = Counter()
        probe = cls(SPECIAL_PIECES, mode)
        for line in lines:
            counts.update(probe.tokenize(line))
        for special in SPECIAL_PIECES:
            counts.pop(special, None)
        ranked = sorted((s for s, c in counts.items() if c >= min_frequency), key=lambda s: (-counts[s], s))
        return cls(list(SPECIAL_PIECES) + ranked[:max_size], mode)

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def tokenize(self, text: str) -> list[str]:
        if self.mode == "whitespace":
            return text.split()
        return [_SPACE if c == " " else c for c in " ".join(text.split())]

    def piece_to_id(self, piece: str) -> int:
        return self._index.get(piece, UNK_ID)

    def id_to_piece(self, index: int) -> str:
        return self.pieces[index]

    def _detok(self, pieces: list[str]) -> str:
        if self.mode == "whitespace":
            return " ".join(pieces)
        return "".join(pieces).replace(_SPACE, " ").strip()

    def _word_starts(self, pieces: list[str]) -> list[bool]:
        if self.mode == "whitespace":
            return [True] * len(pieces)
        starts, prev_space = [], True
        for p in pieces:
            starts.append(prev_space and p != _SPACE)
            prev_space = p == _SPACE
        return starts

    def save(self, directory: Path, name: str) -> list[str]:
        path = Path(directory) / f"{name}.vocab.json"
        atomic_write_text(path, json.dumps({"mode": self.mode, "pieces": self.pieces}, ensure_ascii=False) + "\n")
        return [path.name]

    @classmethod
    def load(cls, directory: Path, name: str) -> SymbolTokenizer:
        data = json.loads((Path(directory) / f"{name}.vocab.json").read_text(encoding="utf-8"))
        return cls(data["pieces"], data["mode"])


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (BPE or unigram) with the project's special ids."""

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.model_proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        got = (self.sp.pad_id(), self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id())
        if got != (PAD_ID, BOS_ID, EOS_ID, UNK_ID):
            raise ValueError(f"SentencePiece model has (pad, bos, eos, unk) ids {got}; expected (0, 1, 2, 3)")

    @classmethod
    def train(cls, lines: Iterable[str], config: TokenizerConfig) -> SentencePieceTokenizer:
        import sentencepiece as spm

        lines = [line for line in lines if line.strip()]
        if not lines:
            raise ValueError("cannot train a SentencePiece model on no text")
        writer = io.BytesIO()
        spm.set_random_generator_seed(config.seed)
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines),
                model_writer=writer,
                model_type=config.model_type,
                vocab_size=config.vocab_size,
                hard_vocab_limit=False,
                character_coverage=config.character_coverage,
                byte_fallback=config.byte_fallback,
                pad_id=PAD_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                unk_id=UNK_ID,
                input_sentence_size=config.max_sentences,
                shuffle_input_sentence=True,
                num_threads=1,
                minloglevel=2,
            )
        except RuntimeError as e:  # SentencePiece's C++ checks
            m = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(e))
            if m is None:
                raise
            raise ValueError(
                f"vocab_size={config.vocab_size} is too small for this text: SentencePiece needs at least "
                f"{m.group(2)} pieces (every character seen, the word mark ▁ and the special pieces)"
            ) from None
        return cls(writer.getvalue())

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def tokenize(self, text: str) -> list[str]:
        return self.sp.encode(text, out_type=str)

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        ids = self.sp.encode(text)
        return ([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else [])

    def piece_to_id(self, piece: str) -> int:
        return self.sp.piece_to_id(piece)

    def id_to_piece(self, index: int) -> str:
        return self.sp.id_to_piece(index)

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                out.append(i)
        return self.sp.decode(out)

    def _word_starts(self, pieces: list[str]) -> list[bool]:
        return [p.startswith(_SPACE) for p in pieces]

    def save(self, directory: Path, name: str) -> list[str]:
        path = Path(directory) / f"{name}.model"
        atomic_write_bytes(path, self.model_proto)
        return [path.name]

    @classmethod
    def load(cls, directory: Path, name: str) -> SentencePieceTokenizer:
        return cls((Path(directory) / f"{name}.model").read_bytes())


def min_vocab_size(lines: Iterable[str]) -> int:
    """The smallest SentencePiece vocabulary for ``lines`` at full character coverage: every character seen,
    the word mark ``▁`` and the special pieces."""
    chars: set[str] = set()
    for line in lines:
        chars.update(unicodedata.normalize("NFKC", line))  # SentencePiece normalises (nmt_nfkc) first
    chars -= set(" \t\n\r")
    return len(chars) + 1 + len(SPECIAL_PIECES)


def auto_vocab_size(lines: Sequence[str], words_per_piece: int = 20, cap: int = 8000) -> int:
    """A vocabulary the text supports: one piece per ``words_per_piece`` whitespace-separated words (so a piece
    is seen about that often), at least :func:`min_vocab_size`, at most ``cap``."""
    words = sum(len(line.split()) for line in lines)
    return max(min_vocab_size(lines), min(cap, words // words_per_piece))


_CLASSES = {"sentencepiece": SentencePieceTokenizer, "whitespace": SymbolTokenizer, "char": SymbolTokenizer}


def _train_one(lines: list[str], config: TokenizerConfig) -> Tokenizer:
    if config.kind == "sentencepiece":
        return SentencePieceTokenizer.train(lines, config)
    return SymbolTokenizer.train(lines, config.kind, config.vocab_size, config.min_frequency)


@dataclass
class TokenizerPair:
    """Source and target tokenizers (the same object when ``config.joint``)."""

    src: Tokenizer
    tgt: Tokenizer
    config: TokenizerConfig

    @classmethod
    def train(cls, src_lines: Sequence[str], tgt_lines: Sequence[str], config: TokenizerConfig) -> TokenizerPair:
        """Train on the training text: one model on both sides if ``config.joint``, else one per side."""
        if config.joint:
            shared = _train_one(list(src_lines) + list(tgt_lines), config)
            return cls(shared, shared, config)
        return cls(_train_one(list(src_lines), config), _train_one(list(tgt_lines), config), config)

    @property
    def joint(self) -> bool:
        return self.src is self.tgt

    def save(self, directory: str | Path) -> None:
        """Write ``tokenizer.json`` and the model files into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = {"joint": self.src} if self.joint else {"src": self.src, "tgt": self.tgt}
        files = {}
        for name, tok in names.items():
            files[name] = tok.save(directory, name)
        meta = {"config": asdict(self.config), "joint": self.joint, "files": files}
        atomic_write_text(directory / "tokenizer.json", json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> TokenizerPair:
        """Read a folder written by :meth:`save`; a missing file raises ``FileNotFoundError`` naming it, a damaged
        one (cut short, edited) a ``ValueError`` naming it."""
        directory = Path(directory)
        meta_path = directory / "tokenizer.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {directory}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            files = meta["files"]
            config = TokenizerConfig(**meta["config"])
            joint = bool(meta["joint"])
            names = [f for group in files.values() for f in group]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"{meta_path} is damaged ({type(e).__name__}: {e})") from None
        for f in names:
            if not (directory / f).is_file():
                raise FileNotFoundError(f"tokenizer file {directory / f} is missing (listed in {meta_path})")
        cls_ = _CLASSES[config.kind]

        def one(name: str) -> Tokenizer:
            try:
                return cls_.load(directory, name)
            except (
                OSError,
                RuntimeError,
                ValueError,
                KeyError,
                TypeError,
            ) as e:  # RuntimeError: SentencePiece's parser
                if isinstance(e, FileNotFoundError):
                    raise
                files = ", ".join(str(directory / f) for f in meta["files"].get(name, [name]))
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ValueError(f"tokenizer file {files} is damaged or cut short ({reason})") from None

        if joint:
            shared = one("joint")
            return cls(shared, shared, config)
        return cls(one("src"), one("tgt"), config)
