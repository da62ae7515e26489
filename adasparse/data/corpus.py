"""Parallel corpora: reading plain or gzip text files, one sentence per line.

Two ways to name a corpus:

* two files, ``load_parallel(src_file, tgt_file)`` (the ``--src FILE --tgt FILE`` form);
* a folder, ``find_corpus(folder)``, holding ``{split}.{lang}`` or ``{split}.{lang}.gz`` files, where ``split`` is
  ``train``, a validation prefix (``valid``, ``val``, ``dev`` or ``validation``) or a test prefix (``test`` or ``test*``, e.g.
  ``test_2016_flickr``), and ``lang`` a language or side suffix (``de``, ``en``, ``graphemes``...). The source and
  target languages are given explicitly, read from an optional ``corpus.json`` (``{"src_lang": .., "tgt_lang":
  ..}``) in the folder, or inferred when the folder holds exactly two languages and one of them was named.

Errors are precise: a line-count mismatch names both files and both counts; invalid UTF-8 names the file and the
1-based line number. Empty pairs (either side blank after stripping) and over-long pairs (more than ``max_words``
whitespace-separated words on either side) are dropped, and the counts are kept on the result and logged.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ParallelCorpus",
    "CorpusFiles",
    "read_lines",
    "iter_lines",
    "decode_lines",
    "load_parallel",
    "find_corpus",
    "VALID_PREFIXES",
]

log = logging.getLogger(__name__)

VALID_PREFIXES = ("valid", "val", "dev", "validation")
_GZIP_MAGIC = b"\x1f\x8b"


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def decode_lines(raw_lines: Iterable[bytes], name: str | Path) -> Iterator[str]:
    """Decode byte lines as UTF-8, stripped of surrounding space; ``ValueError`` naming ``name`` and the 1-based
    line number for a line that is not valid UTF-8 (``name`` is a file, or e.g. ``"<stdin>"``). A byte-order mark
    opening the first line (files saved by some Windows editors) is dropped, as Python's ``utf-8-sig`` does."""
    for lineno, raw in enumerate(raw_lines, start=1):
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{name}: line {lineno} is not valid UTF-8 (byte {e.start}: {raw[e.start : e.start + 4]!r}); "
                "convert the file to UTF-8 (e.g. with iconv)"
            ) from None
        yield text.strip()


def iter_lines(path: str | Path) -> Iterator[str]:
    """Yield the lines of a plain or gzip text file (detected from its first bytes), stripped of surrounding space.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for a line that is not valid
    UTF-8 (with its 1-based line number) and for a damaged or cut-short gzip file.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"corpus file {path} is a folder, not a text file")
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    if not _is_gzip(path):
        with open(path, "rb") as f:
            yield from decode_lines(f, path)
        return
    with gzip.open(path, "rb") as f:
        try:
            yield from decode_lines(f, path)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:  # cut short; corrupted data or CRC
            raise ValueError(
                f"{path}: the gzip file is damaged or cut short ({e}); download or copy it again "
                "(`gzip -t` checks a file)"
            ) from None


def read_lines(path: str | Path) -> list[str]:
    """All lines of a plain or gzip text file, stripped (see :func:`iter_lines`)."""
    return list(iter_lines(path))


@dataclass(frozen=True)
class ParallelCorpus:
    """Aligned source/target sentences and what filtering removed.

    ``kept_lines`` holds the 1-based line numbers (in the files) of the kept pairs, so a result can be traced back.
    """

    src: list[str]
    tgt: list[str]
    src_path: Path | None = None
    tgt_path: Path | None = None
    n_read: int = 0
    n_empty: int = 0
    n_too_long: int = 0
    kept_lines: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if len(self.src) != len(self.tgt):
            raise ValueError(f"ParallelCorpus: {len(self.src)} source vs {len(self.tgt)} target sentences")

    def __len__(self) -> int:
        return len(self.src)

    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.src, self.tgt))

    def summary(self) -> str:
        """One line for the user: how many pairs were read, kept and dropped (and why)."""
        name = f"{self.src_path} / {self.tgt_path}" if self.src_path else "corpus"
        return (
            f"{name}: read {self.n_read} pairs, kept {len(self)}, "
            f"dropped {self.n_empty} empty and {self.n_too_long} over-long"
        )


def load_parallel(
    src_path: str | Path,
    tgt_path: str | Path,
    *,
    max_words: int | None = 250,
    max_pairs: int | None = None,
) -> ParallelCorpus:
    """Read two aligned files into a :class:`ParallelCorpus`.

    Args:
        src_path, tgt_path: plain or gzip UTF-8 text files with the same number of lines.
        max_words: drop pairs where either side has more whitespace-separated words than this (``None``: keep all).
            Sub-word lengths are bounded later, by the batcher's ``max_tokens``.
        max_pairs: keep only the first ``max_pairs`` pairs after filtering (quick runs and tests).

    Raises:
        ValueError: line counts differ (both files and counts named), a line is not UTF-8 (file and line named),
            or an argument is out of range.
    """
    if max_words is not None and max_words < 1:
        raise ValueError(f"max_words must be >= 1 or None, got {max_words}")
    if max_pairs is not None and max_pairs < 0:
        raise ValueError(f"max_pairs must be >= 0 or None, got {max_pairs}")
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    src_lines, tgt_lines = read_lines(src_path), read_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        raise ValueError(
            f"parallel files differ in length: {src_path} has {len(src_lines)} lines, "
            f"{tgt_path} has {len(tgt_lines)} lines; line N of one must translate line N of the other"
        )
    src, tgt, kept = [], [], []
    n_empty = n_long = 0
    for i, (s, t) in enumerate(zip(src_lines, tgt_lines), start=1):
        if not s or not t:
            n_empty += 1
            continue
        if max_words is not None and (len(s.split()) > max_words or len(t.split()) > max_words):
            n_long += 1
            continue
        if max_pairs is not None and len(src) >= max_pairs:
            break
        src.append(s)
        tgt.append(t)
        kept.append(i)
    corpus = ParallelCorpus(src, tgt, src_path, tgt_path, len(src_lines), n_empty, n_long, kept)
    if n_empty or n_long:
        log.warning(corpus.summary())
    else:
        log.info(corpus.summary())
    return corpus


class _SplitLookup:
    """Finding a split in ``self.splits`` (split name → files), shared by the folder descriptions of parallel
    corpora and of language-model text (:class:`~adasparse.data.text.TextFiles`)."""

    directory: Path
    splits: dict

    @property
    def test_names(self) -> list[str]:
        return sorted(name for name in self.splits if name.startswith("test"))

    def has(self, split: str) -> bool:
        """Whether :meth:`get` finds ``split``."""
        return split in self.splits or (split == "test" and len(self.test_names) == 1)

    def _lookup(self, split: str, what: str):
        """``splits[split]``; ``"test"`` falls back to the only test set; ``KeyError`` naming ``what`` else."""
        if split in self.splits:
            return self.splits[split]
        if split == "test" and len(self.test_names) == 1:
            return self.splits[self.test_names[0]]
        raise KeyError(f"{self.directory}: no split {split!r} {what}; available: {sorted(self.splits)}")


@dataclass(frozen=True)
class CorpusFiles(_SplitLookup):
    """The files of a corpus folder: ``splits`` maps a split name to its ``(src_file, tgt_file)``.

    Split names are ``train``, ``valid`` (whatever its prefix in the folder) and every test prefix as written
    (``test``, ``test_2016_flickr``...).
    """

    directory: Path
    src_lang: str
    tgt_lang: str
    splits: dict[str, tuple[Path, Path]]

    def get(self, split: str) -> tuple[Path, Path]:
        """The files of ``split``; ``"test"`` falls back to the only test set when there is exactly one."""
        return self._lookup(split, f"for {self.src_lang}->{self.tgt_lang}")

    def load(self, split: str, **kwargs) -> ParallelCorpus:
        """:func:`load_parallel` on the files of ``split``."""
        return load_parallel(*self.get(split), **kwargs)


def _split_name(prefix: str) -> str | None:
    if prefix == "train":
        return "train"
    if prefix in VALID_PREFIXES:
        return "valid"
    if prefix.startswith("test"):
        return prefix
    return None


def _split_files(directory: Path, suffix_name: str = "language") -> dict[tuple[str, str], Path]:
    """``{(split, suffix): file}`` for the ``{split}.{suffix}[.gz]`` files of ``directory`` (other files are
    ignored); ``ValueError`` for two files of one split and suffix (``suffix_name`` says what a suffix is)."""
    files: dict[tuple[str, str], Path] = {}
    for p in sorted(directory.iterdir()):
        if not p.is_file():
            continue
        name = p.name[:-3] if p.name.endswith(".gz") else p.name
        prefix, dot, suffix = name.rpartition(".")
        if not dot or not prefix or "." in prefix:
            continue
        split = _split_name(prefix)
        if split is None:
            continue
        if (split, suffix) in files:
            raise ValueError(
                f"{directory}: two files for split {split!r}, {suffix_name} {suffix!r}: {files[split, suffix]}, {p}"
            )
        files[split, suffix] = p
    return files


def find_corpus(directory: str | Path, src_lang: str | None = None, tgt_lang: str | None = None) -> CorpusFiles:
    """Discover ``{split}.{lang}[.gz]`` files in ``directory`` (see the module docstring).

    Raises ``FileNotFoundError`` when the folder or its training files are missing and ``ValueError`` when the
    languages cannot be decided or a split has only one side.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"corpus folder not found: {directory}")
    meta_path = directory / "corpus.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{meta_path} is not valid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise ValueError(f'{meta_path} must hold {{"src_lang": ..., "tgt_lang": ...}}, got {meta!r}')
        src_lang = src_lang or meta.get("src_lang")
        tgt_lang = tgt_lang or meta.get("tgt_lang")
    files = _split_files(directory)
    train_langs = sorted(lang for split, lang in files if split == "train")
    if not train_langs:
        raise FileNotFoundError(
            f"{directory}: no training files; expected train.SRC and train.TGT (optionally .gz), e.g. train.de.gz"
        )
    if src_lang is None or tgt_lang is None:
        if len(train_langs) == 2 and (src_lang in train_langs or tgt_lang in train_langs):
            known = src_lang or tgt_lang
            other = next(lang for lang in train_langs if lang != known)
            src_lang, tgt_lang = (known, other) if src_lang else (other, known)
        else:
            raise ValueError(
                f"{directory}: cannot tell the source from the target language among {train_langs}; "
                "give src_lang and tgt_lang (--src-lang/--tgt-lang on the command line) or write corpus.json"
            )
    for lang in (src_lang, tgt_lang):
        if lang not in train_langs:
            raise FileNotFoundError(f"{directory}: no train.{lang} file (training languages found: {train_langs})")
    splits: dict[str, tuple[Path, Path]] = {}
    for split in sorted({s for s, _ in files}):
        has_src, has_tgt = (split, src_lang) in files, (split, tgt_lang) in files
        if has_src and has_tgt:
            splits[split] = (files[split, src_lang], files[split, tgt_lang])
        elif has_src != has_tgt:
            present = files.get((split, src_lang)) or files.get((split, tgt_lang))
            missing = tgt_lang if has_src else src_lang
            raise ValueError(f"{directory}: split {split!r} has {present.name} but no file for language {missing!r}")
    return CorpusFiles(directory, src_lang, tgt_lang, splits)
