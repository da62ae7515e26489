"""Training options: every bad value is a ValueError naming the option, before any data is read."""

import pytest

from adasparse.cli import main as cli_main
from adasparse.train.config import TrainConfig, load_train_config, parse_overrides


@pytest.mark.parametrize(
    "key, value",
    [
        ("max_minutes", "abc"),
        ("max_minutes", 0),
        ("max_epochs", 1.5),
        ("patience", "3x"),
        ("valid_beam", 0),
        ("valid_max_sentences", -1),
        ("max_tokens_per_sentence", None),
        ("num_threads", 0),
        ("data_world_size", "two"),
        ("seed", 1.5),
        ("clip_norm", "x"),
        ("weight_decay", -0.1),
        ("adam_eps", 0),
        ("label_smoothing", "0.1x"),
        ("joint_vocab", "yes"),
        ("betas", 0.9),
        ("betas", [0.9, "a"]),
        ("data_dir", 3),
        ("model", 3),
        ("model", None),
        ("attention", "sofmax"),
        ("attention", [1.5]),
        ("model.d_model", "abc"),
        ("model.d_modle", 64),
        ("max_minutes", float("nan")),
        ("max_minutes", float("inf")),
        ("lr", float("nan")),
        ("clip_norm", float("inf")),
        ("vocab_size", 0),
        ("warmup_steps", -1),
        ("log_every", 2.5),
    ],
)
def test_bad_option_is_a_value_error_naming_it(key, value):
    name = key.split(".")[-1]
    with pytest.raises(ValueError, match=name if name != "attention" else "enc_self|attention"):
        TrainConfig().with_overrides({key: value})


def test_model_mapping_override_adds_to_the_model_options():
    cfg = TrainConfig(model={"dropout": 0.0}).with_overrides({"model": {"d_model": 64}, "model.n_heads": 2})
    assert cfg.model == {"dropout": 0.0, "d_model": 64, "n_heads": 2}


def test_cli_reports_a_bad_set_value_without_a_traceback(tmp_path, capsys):
    rc = cli_main(["train", "--out", str(tmp_path / "run"), "--set", "max_minutes=abc"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "max_minutes" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing was started


def test_typo_in_config_file_names_the_file_and_key(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("lr: 0.001\nmax_step: 5\n")
    with pytest.raises(ValueError, match=r"cfg\.yaml: unknown training options \['max_step'\]"):
        load_train_config(f)


def test_bad_value_in_config_file_names_the_file_and_option(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("lr: abc\n")
    with pytest.raises(ValueError, match=r"cfg\.yaml: lr must be a positive number, got 'abc'"):
        load_train_config(f)


def test_parse_overrides_syntax():
    assert parse_overrides(["max_steps=20", "model.d_model=64", "attention=1.3"]) == {
        "max_steps": 20,
        "model.d_model": 64,
        "attention": 1.3,
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["max_steps"])


def test_exponent_numbers_are_numbers_on_the_command_line_and_in_files(tmp_path):
    # PyYAML alone reads 5e-4 as the string "5e-4" (YAML 1.1): `--set lr=5e-4` used to be rejected
    assert parse_overrides(["lr=5e-4", "adam_eps=1e-9", "x=1.5e3", "y=abc", "z=e5"]) == {
        "lr": 5e-4,
        "adam_eps": 1e-9,
        "x": 1500.0,
        "y": "abc",
        "z": "e5",
    }
    f = tmp_path / "cfg.yaml"
    f.write_text("lr: 5e-4\nmodel:\n  dropout: 1e-1\n")
    cfg = load_train_config(f, parse_overrides(["label_smoothing=5E-2"]))
    assert (cfg.lr, cfg.model["dropout"], cfg.label_smoothing) == (5e-4, 0.1, 0.05)


def test_unparsable_set_value_is_a_value_error():
    with pytest.raises(ValueError, match=r"--set 'betas=\[0.9,'"):
        parse_overrides(["betas=[0.9,"])


@pytest.mark.parametrize(
    "options, says",
    [
        ({"data_dir": "d", "train_src": "a", "train_tgt": "b"}, r"either data_dir \(--data.*train_src/train_tgt \(--src, --tgt\), not both"),
        ({"data_dir": "d", "valid_src": "a"}, r"valid_src \(--valid-src\), not both"),
        ({"train_src": "a", "train_tgt": "b", "src_lang": "de"}, r"src_lang \(--src-lang\) .* need data_dir"),
        ({"train_src": "a", "train_tgt": "b", "valid_src": "c"}, r"valid_src \(--valid-src\) needs valid_tgt"),
        ({"train_src": "a", "train_tgt": "b", "valid_tgt": "c"}, r"valid_tgt \(--valid-tgt\) needs valid_src"),
        ({"train_src": "a", "train_tgt": "b", "patience": 3}, r"patience=3 stops on validation"),
    ],
)  # fmt: skip
def test_contradictory_or_ignored_options_are_errors(options, says):
    with pytest.raises(ValueError, match=says):
        TrainConfig(**options)


def test_resume_differences_name_what_may_not_change():
    from adasparse.train.config import RESUMABLE_OPTIONS, resume_differences

    saved = TrainConfig(data_dir="d", warmup_steps=40, vocab_size=500, log_every=5).to_dict()
    same = TrainConfig(data_dir="elsewhere", max_steps=7, max_minutes=3, device="cpu")  # autos None: the run's
    assert resume_differences(saved, same) == []
    other = TrainConfig(data_dir="d", lr=1e-3, preset="tiny", warmup_steps=50)
    assert resume_differences(saved, other) == [
        "preset (--preset): 'small' → 'tiny'", "lr: 0.0007 → 0.001", "warmup_steps: 40 → 50",
    ]  # fmt: skip
    older = {k: v for k, v in saved.items() if k != "lr"}  # an older version's checkpoint: missing keys agree
    assert resume_differences(older, TrainConfig(data_dir="d", lr=1e-3)) == []
    assert {"max_steps", "max_minutes", "patience", "data_dir"} <= set(RESUMABLE_OPTIONS)
    assert not {"lr", "seed", "preset", "attention", "batch_tokens", "tokenizer"} & set(RESUMABLE_OPTIONS)
