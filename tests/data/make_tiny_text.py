"""Write the tiny English-like text that ships with the tests: ``tests/data/tiny_text/{train,valid,test}.txt``.

Templated sentences from a small vocabulary (a cat sees the red ball .), one per line, drawn by a seeded
``random.Random``: the files are reproducible byte for byte (``tests/data/test_text.py`` checks the committed
files against this script). A language model can learn the templates quickly, so the text suits smoke tests of
training, perplexity and generation; it is not a benchmark.

Run from the repository root: ``python tests/data/make_tiny_text.py [OUT_DIR]``.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

SPLITS = {"train": 400, "valid": 60, "test": 60}
SEED = 15

_DET = ["the", "a", "one", "every"]
_ADJ = ["small", "big", "red", "old", "happy", "quiet", "green", "young"]
_NOUN = {  # singular: plural
    "cat": "cats", "dog": "dogs", "bird": "birds", "child": "children", "woman": "women", "man": "men",
    "ball": "balls", "tree": "trees", "house": "houses", "river": "rivers", "teacher": "teachers",
    "farmer": "farmers",
}  # fmt: skip
_PLACE = ["park", "garden", "kitchen", "street", "field", "school", "market"]
_VERB = {  # third person: base form
    "sees": "see", "likes": "like", "follows": "follow", "finds": "find", "watches": "watch", "helps": "help",
    "paints": "paint", "carries": "carry",
}  # fmt: skip
_INTRANS = ["sleeps", "runs", "sings", "waits", "laughs", "swims", "reads"]
_ADV = ["slowly", "quickly", "today", "again", "quietly"]
_TIME = ["in the morning", "at night", "after lunch", "on sunday"]


def _np(r: random.Random) -> str:
    words = [r.choice(_DET)]
    if r.random() < 0.5:
        words.append(r.choice(_ADJ))
    words.append(r.choice(list(_NOUN)))
    return " ".join(words)


def _pp(r: random.Random) -> str:
    return f"{r.choice(['in', 'near', 'behind'])} the {r.choice(_PLACE)}"


def sentence(r: random.Random) -> str:
    """One sentence from one of six templates, capitalised, ending with ``.`` or ``?``."""
    t = r.randrange(6)
    if t == 0:
        s = f"{_np(r)} {r.choice(list(_VERB))} {_np(r)} ."
    elif t == 1:
        s = f"{_np(r)} {r.choice(_INTRANS)} {r.choice(_ADV)} ."
    elif t == 2:
        s = f"{_np(r)} {r.choice(_INTRANS)} {_pp(r)} {r.choice(_TIME)} ."
    elif t == 3:
        s = f"{_np(r)} {r.choice(list(_VERB))} {_np(r)} and {_np(r)} {r.choice(_INTRANS)} ."
    elif t == 4:
        s = f"does {_np(r)} {_VERB[r.choice(list(_VERB))]} {_np(r)} {_pp(r)} ?"
    else:
        n = r.randint(2, 5)
        s = f"there are {['two', 'three', 'four', 'five'][n - 2]} {_NOUN[r.choice(list(_NOUN))]} {_pp(r)} ."
    return s[0].upper() + s[1:]


def make(out_dir: Path) -> None:
    r = random.Random(SEED)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, n in SPLITS.items():
        (out_dir / f"{split}.txt").write_text("".join(sentence(r) + "\n" for _ in range(n)), encoding="utf-8")


if __name__ == "__main__":
    make(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "tiny_text")
