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
