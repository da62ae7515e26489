"""Language-model text: finding and reading the files, the one tokenizer, sequences and windows, LM batches."""

import importlib.util
from pathlib import Path

import pytest
import torch

from adasparse.data.text import (
    LMBatcher,
    collate_lm,
    encode_text,
    find_text,
    lm_sequences,
    lm_tokenizer,
    load_text,
    split_sequence,
    train_lm_tokenizer,
)
from adasparse.data.tokenizer import BOS_ID, EOS_ID, SymbolTokenizer, TokenizerConfig, TokenizerPair

from .files import write_lines

HERE = Path(__file__).parent
TINY = HERE / "tiny_text"
MULTI30K = HERE.parents[1] / ".." / "shared" / "data" / "multi30k"


_write = write_lines


# -- the tiny text that ships with the tests --------------------------------------------------------------------


def test_tiny_text_is_what_its_script_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_tiny_text", HERE / "make_tiny_text.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.make(tmp_path)
    for split, n in mod.SPLITS.items():
        committed = (TINY / f"{split}.txt").read_bytes()
        assert (tmp_path / f"{split}.txt").read_bytes() == committed, f"{split}.txt differs from the script's"
        assert len(load_text(TINY / f"{split}.txt")) == n
    assert sum(p.stat().st_size for p in TINY.iterdir()) < 50_000


def test_tiny_text_folder_is_found():
    files = find_text(TINY)
    assert sorted(files.splits) == ["test", "train", "valid"]
    assert files.load("train")[0] == (TINY / "train.txt").read_text(encoding="utf-8").splitlines()[0]


@pytest.mark.skipif(not MULTI30K.is_dir(), reason=f"Multi30k not found at {MULTI30K}")
def test_english_side_of_multi30k():
    files = find_text(MULTI30K, suffix="en")
    assert set(files.splits) == {"train", "valid", "test_2016_flickr"}
    assert files.get("test") == files.splits["test_2016_flickr"]  # the only test set
    valid = files.load("valid")
    assert len(valid) == 1014 and all(valid)


# -- finding and reading ----------------------------------------------------------------------------------------


def test_find_plain_gzip_and_prefixes(tmp_path):
    _write(tmp_path / "train.txt.gz", ["a b", "c"], gz=True)
    _write(tmp_path / "dev.txt", ["d"])
    _write(tmp_path / "test_2016.txt", ["e"])
    _write(tmp_path / "test_2017.txt", ["f"])
    _write(tmp_path / "notes.md", ["ignored"])
    files = find_text(tmp_path)
    assert sorted(files.splits) == ["test_2016", "test_2017", "train", "valid"]
    assert files.load("train") == ["a b", "c"]
    assert files.has("valid") and not files.has("test")  # two test sets: name one
    with pytest.raises(KeyError, match="test_2016"):
        files.get("test")


def test_missing_train_names_the_other_suffixes(tmp_path):
    _write(tmp_path / "train.de", ["x"])
    _write(tmp_path / "train.en.gz", ["y"], gz=True)
    with pytest.raises(FileNotFoundError, match=r"no train\.txt.*de, en"):
        find_text(tmp_path)
    assert find_text(tmp_path, suffix="en").load("train") == ["y"]
    with pytest.raises(FileNotFoundError, match="text folder not found"):
        find_text(tmp_path / "nope")


def test_two_files_for_one_split_is_an_error(tmp_path):
    _write(tmp_path / "train.txt", ["a"])
    _write(tmp_path / "train.txt.gz", ["a"], gz=True)
    with pytest.raises(ValueError, match=r"two files for split 'train'"):
        find_text(tmp_path)


def test_blank_lines_are_skipped_and_lines_stripped(tmp_path):
    p = _write(tmp_path / "train.txt", ["  one  ", "", "   ", "two"])
    assert load_text(p) == ["one", "two"]
    assert load_text(p, max_lines=1) == ["one"]


@pytest.mark.parametrize("gz", [False, True])
def test_bad_utf8_names_file_and_line(tmp_path, gz):
    p = _write(tmp_path / "train.txt", [], gz=gz, raw=b"fine\n\nbad \xff byte\n")
    with pytest.raises(ValueError, match=rf"{p}: line 3 is not valid UTF-8"):
        find_text(tmp_path).load("train")


def test_truncated_gzip_names_the_file(tmp_path):
    full = _write(tmp_path / "full.gz", [f"line {i} " * 20 for i in range(200)], gz=True).read_bytes()
    p = tmp_path / "train.txt.gz"
    p.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match=rf"{p}: the gzip file is damaged or cut short"):
        load_text(p)


# -- tokenizer --------------------------------------------------------------------------------------------------


def test_lm_tokenizer_is_one_joint_model_that_saves_and_loads(tmp_path):
    lines = load_text(TINY / "train.txt")
    pair = train_lm_tokenizer(lines, TokenizerConfig(vocab_size=120, joint=False))
    assert pair.joint and pair.config.joint and lm_tokenizer(pair) is pair.tgt
    pair.save(tmp_path / "tok")
    loaded = lm_tokenizer(TokenizerPair.load(tmp_path / "tok"))
    for line in lines[:20]:
        ids = encode_text(loaded, line)
        assert ids == pair.tgt.encode(line) and ids[0] == BOS_ID and ids[-1] == EOS_ID
        assert loaded.decode(ids) == line


def test_lm_tokenizer_rejects_a_pair_of_two_models():
    a, b = SymbolTokenizer.train(["a b"]), SymbolTokenizer.train(["c d"])
    with pytest.raises(ValueError, match="one tokenizer"):
        lm_tokenizer(TokenizerPair(a, b, TokenizerConfig(kind="whitespace", joint=False)))
    with pytest.raises(TypeError):
        lm_tokenizer("whitespace")
    assert lm_tokenizer(a) is a


# -- sequences and windows --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 6, 7, 11, 12, 13, 40])
@pytest.mark.parametrize("max_len", [1, 2, 5, 6])
def test_windows_predict_every_id_once(n, max_len):
    ids = list(range(100, 100 + n))
    windows = split_sequence(ids, max_len)
    assert all(2 <= len(w) <= max_len + 1 for w in windows)
    assert [t for w in windows for t in w[1:]] == ids[1:]  # the targets, in order, each once
    assert windows[0][0] == ids[0]
    for prev, cur in zip(windows, windows[1:]):
        assert cur[0] == prev[-1]  # a window starts with the last id of the one before
    assert split_sequence(ids, None) == [ids]


def test_lm_sequences_long_lines():
    tok = SymbolTokenizer.train(["a b c d e f g"])
    lines = ["a b", "", "a b c d e f g", "c"]  # 4, -, 9, 3 ids with bos and eos
    seqs, index, n_long = lm_sequences(tok, lines, max_len=4, long="split")
    assert n_long == 1 and index == [0, 2, 2, 3]
    assert seqs[1] + seqs[2][1:] == encode_text(tok, lines[2])
    seqs, index, n_long = lm_sequences(tok, lines, max_len=4, long="truncate")
    assert n_long == 1 and index == [0, 2, 3] and seqs[1] == encode_text(tok, lines[2])[:5]
    seqs, index, n_long = lm_sequences(tok, lines, max_len=4, long="drop")
    assert n_long == 1 and index == [0, 3]
    seqs, index, n_long = lm_sequences(tok, lines)
    assert n_long == 0 and seqs == [encode_text(tok, lines[i]) for i in (0, 2, 3)]
    with pytest.raises(ValueError, match="long must be one of"):
        lm_sequences(tok, lines, 4, long="wrap")


# -- batches ----------------------------------------------------------------------------------------------------


def _tiny_sequences(max_len=12):
    lines = load_text(TINY / "train.txt")
    tok = SymbolTokenizer.train(lines)
    return lm_sequences(tok, lines, max_len=max_len)[0]


def test_collate_shifts_by_one():
    seqs = [[1, 5, 6, 2], [1, 7, 2], [9, 8]]
    b = collate_lm(seqs, pad_id=0)
    assert b.inputs.tolist() == [[1, 5, 6], [1, 7, 0], [9, 0, 0]]
    assert b.targets.tolist() == [[5, 6, 2], [7, 2, 0], [8, 0, 0]]
    assert b.mask.tolist() == [[True] * 3, [True, True, False], [True, False, False]]
    assert b.n_tokens == sum(len(s) - 1 for s in seqs)
    with pytest.raises(ValueError, match="at least 2 ids"):
        collate_lm([[1]])


def test_batcher_epoch_covers_everything_within_budget():
    seqs = _tiny_sequences()
    batcher = LMBatcher(seqs, max_tokens=120, seed=3, pool_size=64)
    seen = []
    for batch in batcher:
        assert batch.size * (batch.inputs.shape[1] + 1) <= 120
        for row, i in enumerate(batch.indices):
            n = len(seqs[i]) - 1
            assert batch.inputs[row, :n].tolist() == seqs[i][:-1]
            assert batch.targets[row, :n].tolist() == seqs[i][1:]
            assert int(batch.mask[row].sum()) == n
        seen.extend(batch.indices)
    assert sorted(seen) == list(range(len(seqs)))
    assert batcher.epoch == 1


def test_batcher_is_deterministic_for_a_seed_and_resumes():
    seqs = _tiny_sequences()
    a = LMBatcher(seqs, 100, seed=7)
    b = LMBatcher(seqs, 100, seed=7)
    assert a.epoch_batches(0) == b.epoch_batches(0)
    assert a.epoch_batches(0) != a.epoch_batches(1)
    assert a.epoch_batches(0) != LMBatcher(seqs, 100, seed=8).epoch_batches(0)
    it = iter(a)
    first = [next(it).indices for _ in range(3)]
    resumed = LMBatcher(seqs, 100, seed=7)
    resumed.load_state_dict(a.state_dict())
    rest = [batch.indices for batch in resumed]
    assert first + rest == a.epoch_batches(0)


def test_batcher_ranks_are_disjoint_and_complete():
    seqs = _tiny_sequences()
    ranks = [LMBatcher(seqs, 100, seed=1, rank=r, world_size=3) for r in range(3)]
    per_rank = [[i for b in r.epoch_batches(0) for i in b] for r in ranks]
    assert len({len(r.epoch_batches(0)) for r in ranks}) == 1
    assert sorted(sum(per_rank, [])) == list(range(len(seqs)))


def test_batcher_errors_are_precise():
    with pytest.raises(ValueError, match="longest sequence"):
        LMBatcher([[1, 4, 5, 6, 2]], max_tokens=4)
    with pytest.raises(ValueError, match="fewer than 2 ids"):
        LMBatcher([[1, 2], [1]], max_tokens=8)
    with pytest.raises(ValueError, match="no sequences"):
        LMBatcher([], max_tokens=8)


def test_batch_moves_to_a_device():
    b = collate_lm([[1, 4, 2]]).to("cpu")
    assert b.inputs.device == torch.device("cpu") and b.indices == [0]
