"""The paper's recipe as named options, and the noam schedule as the trainer builds it."""

import math

import pytest
import torch

from adasparse.models import build_model, tiny
from adasparse.train.config import RECIPES, TrainConfig, load_train_config
from adasparse.train.schedule import build_scheduler
from adasparse.train.trainer import _base_lr, _param_groups, _schedule


def test_paper_recipe_sets_the_papers_options():
    cfg = load_train_config(None, {"recipe": "paper"})
    assert (cfg.schedule, cfg.lr, cfg.warmup_steps, cfg.betas) == ("noam", 2.0, 8000, (0.9, 0.998))
    assert (cfg.batch_tokens, cfg.clip_norm, cfg.weight_decay, cfg.label_smoothing) == (8192, 0.0, 0.0, 0.1)
    assert cfg.model["alpha_parametrization"] == "clamp" and cfg.model["alpha_init"] == "normal"
    assert cfg.recipe == "paper"


def test_options_in_the_file_and_on_the_command_line_win_over_the_recipe(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("recipe: paper\nwarmup_steps: 4000\nmodel:\n  dropout: 0.3\n")
    cfg = load_train_config(f, {"lr": 1.0, "model.alpha_parametrization": "sigmoid"})
    assert (cfg.schedule, cfg.warmup_steps, cfg.lr) == ("noam", 4000, 1.0)
    assert cfg.model == {**RECIPES["paper"]["model"], "dropout": 0.3, "alpha_parametrization": "sigmoid"}
    # the recipe given with --set goes beneath the file's options too
    g = tmp_path / "d.yaml"
    g.write_text("warmup_steps: 100\n")
    assert load_train_config(g, {"recipe": "paper"}).warmup_steps == 100


def test_unknown_recipe_and_schedule_are_value_errors():
    with pytest.raises(ValueError, match="recipe"):
        load_train_config(None, {"recipe": "papers"})
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="cosine")


def test_a_saved_config_reloads_to_the_same_options():
    cfg = load_train_config(None, {"recipe": "paper", "warmup_steps": 10})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("alpha_lr_scale", [1.0, 10.0])
def test_noam_schedule_gives_every_group_the_noam_rate(alpha_lr_scale):
    """lr(step) = factor · d^{-1/2} · min(step^{-1/2}, step · warmup^{-3/2}) (OpenNMT-py), θ at its scale."""
    cfg = TrainConfig(schedule="noam", lr=2.0, warmup_steps=50, alpha_lr_scale=alpha_lr_scale)
    model = build_model(tiny("learned", vocab_size=20))
    opt = torch.optim.AdamW(_param_groups(model, cfg), lr=_base_lr(cfg))
    sched = build_scheduler(opt, _schedule(cfg, model.config.d_model))
    for step in range(1, 121):
        want = 2.0 * 32**-0.5 * min(step**-0.5, step * 50**-1.5)
        lrs = [g["lr"] for g in opt.param_groups]
        assert lrs[0] == pytest.approx(want, rel=1e-12)
        if alpha_lr_scale != 1.0:
            assert lrs[-1] == pytest.approx(want * alpha_lr_scale, rel=1e-12)
        opt.step()
        sched.step()
    peak = 2.0 / math.sqrt(32 * 50)
    assert max(2.0 * 32**-0.5 * min(s**-0.5, s * 50**-1.5) for s in range(1, 121)) == pytest.approx(peak)


def test_inverse_sqrt_schedule_is_unchanged():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10)
    model = build_model(tiny("softmax", vocab_size=20))
    opt = torch.optim.AdamW(_param_groups(model, cfg), lr=_base_lr(cfg))
    sched = build_scheduler(opt, _schedule(cfg, model.config.d_model))
    got = []
    for _ in range(30):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert got == pytest.approx([1e-3 * min(s / 10, math.sqrt(10 / s)) for s in range(1, 31)])
