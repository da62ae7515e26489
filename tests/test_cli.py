"""User errors on the command line end with one clear line (exit status 2), never a traceback."""

import pytest
import torch

from adasparse.cli import main as cli_main
from adasparse.train.loading import pick_device


def _lines(path, n):
    path.write_text("".join(f"a b {i}\n" for i in range(n)))
    return str(path)


def test_evaluate_src_without_checkpoint(tmp_path, capsys):
    rc = cli_main(["evaluate", "--src", _lines(tmp_path / "s", 3), "--ref", _lines(tmp_path / "r", 3)])
    assert rc == 2
    assert "--src needs --checkpoint" in capsys.readouterr().err


def test_evaluate_checks_line_counts_before_loading_the_model(tmp_path, capsys):
    # the checkpoint does not exist: the count mismatch must be reported first, without decoding anything
    src, ref = _lines(tmp_path / "s", 3), _lines(tmp_path / "r", 4)
    rc = cli_main(["evaluate", "--checkpoint", str(tmp_path / "none"), "--src", src, "--ref", ref])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{src} has 3 lines but {ref} has 4" in err


def test_evaluate_baseline_prints_the_paired_comparisons(tmp_path, capsys):
    from adasparse.evaluation import compare_g2p, compare_translation

    refs = ["F OW N", "T AH M EY T OW", "K AE T", "D AO G"]
    hyps = ["F OW N", "T AH M AA T OW", "K AE T S", "D G"]
    base = ["F OW", "T AH M EY T OW", "K AE T S", "D AO G"]
    for name, lines in (("r", refs), ("h", hyps), ("b", base)):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    argv = ["evaluate", "--hyp", str(tmp_path / "h"), "--ref", str(tmp_path / "r"), "--baseline", str(tmp_path / "b")]
    assert cli_main([*argv, "--task", "g2p"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == f"against --baseline {tmp_path / 'b'}: {compare_translation(hyps, base, refs)}"
    assert out[-1] == f"against --baseline {tmp_path / 'b'}: {compare_g2p([hyps], [base], refs)}"
    (tmp_path / "short").write_text("F OW N\n")
    assert cli_main([*argv[:-1], str(tmp_path / "short")]) == 2
    assert f"--baseline {tmp_path / 'short'} has 1 lines but {tmp_path / 'r'} has 4" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["gpu", "cuda:x", ""])
def test_bad_device_name(name):
    with pytest.raises(ValueError, match="device must be"):
        pick_device(name)


def test_device_names():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_train_out_is_an_existing_file(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    for name in ("train.in", "train.out"):
        _lines(tmp_path / "data" / name, 3)
    (tmp_path / "run").write_text("not a folder")
    rc = cli_main(["train", "--data", str(tmp_path / "data"), "--src-lang", "in", "--tgt-lang", "out"]
                  + ["--out", str(tmp_path / "run"), "--quiet"])  # fmt: skip
    assert rc == 2
    assert str(tmp_path / "run") in capsys.readouterr().err


def test_train_interrupted_says_how_to_resume(tmp_path, capsys, monkeypatch):
    """Ctrl-C during training ends with one line naming the last checkpoint (none yet here), exit 130."""
    import adasparse.train.trainer as trainer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", interrupted)
    (tmp_path / "data").mkdir()
    for name in ("train.in", "train.out"):
        _lines(tmp_path / "data" / name, 3)
    rc = cli_main(["train", "--data", str(tmp_path / "data"), "--src-lang", "in", "--tgt-lang", "out"]
                  + ["--out", str(tmp_path / "run"), "--quiet"])  # fmt: skip
    assert rc == 130
    err = capsys.readouterr().err
    assert "interrupted; no checkpoint was written yet" in err and "--resume" in err


def _options(parser, path=()):
    """(command path, action) of every option of ``parser`` and its sub-commands."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif action.option_strings and not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield path, action


def test_every_option_has_help_with_its_default():
    from adasparse.cli import build_parser

    found = list(_options(build_parser()))
    assert {p[0] for p, _ in found if p} >= {"train", "translate", "evaluate", "generate", "demo", "analyze"}
    for path, action in found:
        name = f"adasparse {' '.join(path)} {action.option_strings[-1]}"
        assert action.help and action.help.strip(), f"{name} has no help text"
        if action.default is not None and action.default is not False:  # 0 == False, but 0 is a default to show
            parser = build_parser()._subparsers._group_actions[0].choices[path[0]] if path else build_parser()
            text = " ".join(parser.format_help().split())  # unwrapped
            assert f"(default: {action.default})" in text or "default:" in action.help, f"{name}: default not shown"
    train_help = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for shown in ("model size (default: small)", "(default: learned)", "(default: 1)"):
        assert shown in " ".join(train_help.split()), shown
