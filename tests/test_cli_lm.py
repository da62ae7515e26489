"""The language-model commands: ``evaluate --text`` (perplexity) and ``generate`` against the library functions
they call, on one tiny LM trained once for the module; each wrong use ends with one line naming the option."""

import gzip
import io
import json
import sys
from pathlib import Path

import pytest

from adasparse.cli import main as cli_main
from adasparse.data.text import load_text
from adasparse.decode.generation import GenerationConfig, generate_text
from adasparse.decode.perplexity import score_text
from adasparse.train.loading import load_model

TINY_TEXT = Path(__file__).parent / "data" / "tiny_text"
TEST_TEXT = TINY_TEXT / "test.txt"
PROMPTS = ["The cat", "A dog likes every", "", "One bird"]
SMALL = ["--set", "batch_tokens=512", "--set", "tokenizer=whitespace", "--quiet"]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "run"
    rc = cli_main(["train", "--task", "lm", "--data", str(TINY_TEXT), "--preset", "tiny", "--out", str(out),
                   "--set", "max_steps=60", "--set", "valid_every=30", *SMALL])  # fmt: skip
    assert rc == 0
    return str(out)


@pytest.fixture(scope="module")
def seq2seq_run(tmp_path_factory):
    """A 2-step encoder–decoder run (the copy task on the tiny text): only its kind matters here."""
    root = tmp_path_factory.mktemp("s2s")
    (root / "data").mkdir()
    for split in ("train", "valid"):
        text = (TINY_TEXT / f"{split}.txt").read_text()
        for lang in ("in", "out"):
            (root / "data" / f"{split}.{lang}").write_text(text)
    rc = cli_main(["train", "--data", str(root / "data"), "--src-lang", "in", "--tgt-lang", "out", "--preset", "tiny",
                   "--out", str(root / "run"), "--set", "max_steps=2", "--set", "valid_every=2", *SMALL])  # fmt: skip
    assert rc == 0
    return str(root / "run")


@pytest.fixture(scope="module")
def loaded(lm_run):
    model, toks, _ = load_model(lm_run)
    return model, toks


def _run(capsys, argv):
    """(exit status, stdout, stderr) of ``adasparse argv``; argparse's own errors exit through SystemExit."""
    try:
        rc = cli_main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------------------------------------- evaluate --text


def test_evaluate_text_equals_score_text(lm_run, loaded, capsys):
    model, toks = loaded
    direct = score_text(model, toks, load_text(TEST_TEXT), max_tokens=4096)  # 4096: evaluate's --batch-tokens
    assert direct.n_lines == 60 and direct.n_tokens > direct.n_lines
    rc, out, _ = _run(capsys, ["evaluate", "--checkpoint", lm_run, "--text", str(TEST_TEXT), "--json"])
    assert rc == 0
    assert json.loads(out) == pytest.approx(direct.as_dict(), rel=1e-12)
    rc, out, _ = _run(capsys, ["evaluate", "--checkpoint", lm_run, "--text", str(TEST_TEXT)])
    assert rc == 0 and out.strip() == direct.summary()
    assert "per token" in out and "bits per byte" in out


def test_evaluate_text_gz_and_stdin_read_the_same_text(lm_run, tmp_path, capsys, monkeypatch):
    text = TEST_TEXT.read_text()
    gz = tmp_path / "test.txt.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write("\n" + text.replace("\n", "\n\n", 3))  # blank lines are skipped: the same figures
    results = []
    for source in (str(TEST_TEXT), str(gz), "-"):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8")), encoding="utf-8"))
        rc, out, _ = _run(capsys, ["evaluate", "--checkpoint", lm_run, "--text", source, "--json"])
        assert rc == 0
        results.append(json.loads(out))
    assert results[0]["n_lines"] == 60
    assert results[1] == results[0] and results[2] == results[0]


def test_evaluate_translation_mode_still_works(seq2seq_run, tmp_path, capsys):
    lines = TEST_TEXT.read_text().splitlines()[:4]
    src = tmp_path / "src.in"
    src.write_text("".join(line + "\n" for line in lines))
    rc, out, _ = _run(capsys, ["evaluate", "--checkpoint", seq2seq_run, "--src", str(src), "--ref", str(src),
                               "--beam", "1", "--output", str(tmp_path / "hyp")])  # fmt: skip
    assert rc == 0 and "BLEU" in out and "chrF" in out
    assert len((tmp_path / "hyp").read_text().splitlines()) == 4
    rc, out, _ = _run(capsys, ["evaluate", "--hyp", str(src), "--ref", str(src)])
    assert rc == 0 and out.startswith("BLEU 100.00")


# ---------------------------------------------------------------------------------------------- generate


def _prompt_args(prompts):
    return [a for p in prompts for a in ("--prompt", p)]


def _generate(capsys, run, *options, prompts=PROMPTS):
    rc, out, err = _run(capsys, ["generate", "--checkpoint", run, "--max-new-tokens", "12", *_prompt_args(prompts),
                                 *options])  # fmt: skip
    assert rc == 0, err
    return out.splitlines()


def test_generate_greedy_equals_generate_text(lm_run, loaded, tmp_path, capsys):
    model, toks = loaded
    direct = generate_text(model, toks, PROMPTS, 12, GenerationConfig())
    assert len(set(direct)) > 1 and all(direct)  # a non-trivial comparison: the texts differ and are not empty
    assert _generate(capsys, lm_run, "--batch-size", "2") == direct
    # the same prompts from a file, to a file, with the prompts written in front
    (tmp_path / "prompts.txt").write_text("".join(p + "\n" for p in PROMPTS))
    out = tmp_path / "out.txt"
    rc, printed, _ = _run(capsys, ["generate", "--checkpoint", lm_run, "--max-new-tokens", "12", "--input",
                                   str(tmp_path / "prompts.txt"), "--output", str(out), "--include-prompt"])  # fmt: skip
    assert rc == 0 and printed == ""
    with_prompt = generate_text(model, toks, PROMPTS, 12, GenerationConfig(), include_prompt=True)
    assert out.read_text().splitlines() == with_prompt
    assert with_prompt[0].startswith("The cat ") and with_prompt[0].endswith(direct[0])


def test_generate_sampling_is_seeded(lm_run, loaded, capsys):
    model, toks = loaded
    hot = ["--method", "sample", "--temperature", "50"]  # nearly uniform over 99 ids: two seeds cannot agree
    first = _generate(capsys, lm_run, *hot, "--seed", "1")
    assert _generate(capsys, lm_run, *hot, "--seed", "1") == first
    assert first == generate_text(model, toks, PROMPTS, 12, GenerationConfig("sample", temperature=50.0, seed=1))
    assert _generate(capsys, lm_run, *hot, "--seed", "2") != first
    assert _generate(capsys, lm_run) != first  # greedy
    # top-k 1 keeps only the most likely id: greedy, whatever the temperature
    assert _generate(capsys, lm_run, *hot, "--top-k", "1", "--seed", "3") == _generate(capsys, lm_run)


# ---------------------------------------------------------------------------------------------- wrong uses


def _files(tmp_path):
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    (tmp_path / "latin1.txt").write_bytes(b"The cat runs .\nLa na\xefve\n")
    return tmp_path


BAD = [  # (argv, what the error line says); LM and S2S stand for the runs, DIR for tmp_path
    (["generate", "--checkpoint", "LM", "--method", "sample", "--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
    (["generate", "--checkpoint", "LM", "--method", "sample", "--temperature", "-1"], "--temperature must be a"),
    (["generate", "--checkpoint", "LM", "--method", "sample", "--temperature", "nan"], "--temperature must be a"),
    (
        ["generate", "--checkpoint", "LM", "--method", "sample", "--top-k", "-1"],
        "--top-k must be an int >= 0 (0 = all ids), got -1",
    ),
    (["generate", "--checkpoint", "LM", "--temperature", "0.7"], "--temperature applies only to --method sample"),
    (["generate", "--checkpoint", "LM", "--top-k", "5", "--top-p", "0.9"], "--top-k, --top-p apply only to"),
    (["generate", "--checkpoint", "LM", "--method", "beam"], "argument --method: invalid choice: 'beam'"),
    (["generate", "--checkpoint", "LM", "--max-new-tokens", "-1"], "--max-new-tokens must be >= 0, got -1"),
    (["generate", "--checkpoint", "LM", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["generate", "--checkpoint", "LM", "--prompt", "a", "--input", "DIR/blank.txt"], "not allowed with argument"),
    (
        ["generate", "--checkpoint", "LM", "--prompt", "cat " * 300, "--prompt", "a", "--prompt", "b"],
        "prompt 1 of 3 has 301 ids (bos included); the model reads at most max_len=256",
    ),
    (["generate", "--checkpoint", "S2S"], "generate: S2S/checkpoints/step_00000002 is an encoder–decoder"),
    (["evaluate", "--checkpoint", "S2S", "--text", str(TEST_TEXT)], "evaluate --text: S2S/checkpoints/step_"),
    (
        ["evaluate", "--checkpoint", "LM", "--text", str(TEST_TEXT), "--ref", str(TEST_TEXT)],
        "--text (perplexity of a language model) cannot be combined with --ref",
    ),
    (
        ["evaluate", "--checkpoint", "LM", "--text", str(TEST_TEXT), "--src", "x", "--hyp", "y"],
        "cannot be combined with --src, --hyp",
    ),
    (["evaluate", "--checkpoint", "LM", "--text", str(TEST_TEXT), "--beam", "2"], "cannot be combined with --beam"),
    (["evaluate", "--text", str(TEST_TEXT)], "evaluate: --text needs --checkpoint"),
    (["evaluate", "--checkpoint", "LM", "--text", "DIR/blank.txt"], "DIR/blank.txt holds no text"),
    (["evaluate", "--checkpoint", "LM", "--text", "DIR/latin1.txt"], "DIR/latin1.txt: line 2 is not valid UTF-8"),
    (
        ["evaluate", "--checkpoint", "LM", "--src", str(TEST_TEXT), "--ref", str(TEST_TEXT)],
        "evaluate --src: LM/checkpoints/step_",
    ),
    (["evaluate", "--checkpoint", "LM"], "evaluate: give --ref FILE"),
    (["evaluate", "--hyp", str(TEST_TEXT), "--ref", str(TEST_TEXT), "--json"], "--json prints the perplexity"),
    (["translate", "--checkpoint", "LM", "--input", str(TEST_TEXT)], "translate: LM/checkpoints/step_"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a[0:1] + a[3:5])[:40] for a, _ in BAD])
def test_wrong_uses_end_with_one_line(argv, message, lm_run, seq2seq_run, tmp_path, capsys):
    names = {"LM": lm_run, "S2S": seq2seq_run, "DIR": str(_files(tmp_path))}

    def fill(s):
        for k, v in names.items():
            s = s.replace(k, v) if s == k or s.startswith(k + "/") else s
        return s

    argv = [fill(a) for a in argv]
    message = " ".join(fill(w) for w in message.split(" "))
    rc, out, err = _run(capsys, argv)
    assert rc == 2
    assert message in err
    assert "Traceback" not in err and out == ""
    if "not allowed" not in message and "invalid choice" not in message:  # argparse prints its usage first
        assert err.count("\n") == 1 and err.startswith("adasparse: error: ")
