import math

import pytest
import torch

from adasparse.train.schedule import InverseSqrtSchedule, build_scheduler


def test_inverse_sqrt_values():
    s = InverseSqrtSchedule(warmup=4)
    assert [s.factor(n) for n in (1, 2, 4)] == [0.25, 0.5, 1.0]
    assert s.factor(16) == pytest.approx(0.5)
    assert s.lr(64, base_lr=1e-3) == pytest.approx(1e-3 * math.sqrt(4 / 64))


def test_noam_values_and_peak():
    s = InverseSqrtSchedule(warmup=100, kind="noam", d_model=256, noam_factor=2.0)
    assert s.factor(100) == pytest.approx(2.0 / math.sqrt(256 * 100))
    assert s.factor(10) == pytest.approx(2.0 * 256**-0.5 * 10 * 100**-1.5)
    assert s.factor(400) == pytest.approx(2.0 * 256**-0.5 * 400**-0.5)
    # same shape as inverse_sqrt, up to the peak value
    ref = InverseSqrtSchedule(warmup=100)
    for n in (1, 50, 100, 1000):
        assert s.factor(n) / s.factor(100) == pytest.approx(ref.factor(n))


def test_lambda_lr_first_update_is_nonzero_and_state_round_trips():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = build_scheduler(opt, InverseSqrtSchedule(warmup=10))
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert (
        lrs[0] == pytest.approx(0.01)
        and lrs[9] == pytest.approx(0.1)
        and lrs[11] == pytest.approx(0.1 * (10 / 12) ** 0.5)
    )
    opt2 = torch.optim.SGD([p], lr=0.1)
    sched2 = build_scheduler(opt2, InverseSqrtSchedule(warmup=1))
    sched2.load_state_dict(sched.state_dict())
    assert sched2.lr_lambdas[0].warmup == 10 and sched2.get_last_lr() == sched.get_last_lr()


def test_no_warmup_is_hugging_faces_inverse_sqrt_schedule():
    """warmup 0 (HF's name, num_warmup_steps=0): the rate starts at lr and decays on HF's 10,000-update
    timescale, update by update as ``transformers.get_inverse_sqrt_schedule``; not 1/√step from update 1."""
    transformers = pytest.importorskip("transformers", reason="transformers is the reference here")
    p = torch.nn.Parameter(torch.zeros(1))
    ours_opt, hf_opt = torch.optim.SGD([p], lr=0.1), torch.optim.SGD([p], lr=0.1)
    ours = build_scheduler(ours_opt, InverseSqrtSchedule(warmup=0))
    hf = transformers.get_inverse_sqrt_schedule(hf_opt, num_warmup_steps=0)
    for n in range(1, 30001):
        if n in (1, 2, 10, 100, 1000, 10000, 30000):
            assert ours_opt.param_groups[0]["lr"] == pytest.approx(hf_opt.param_groups[0]["lr"], rel=1e-12), n
        ours_opt.step(), hf_opt.step()
        ours.step(), hf.step()
    noam = InverseSqrtSchedule(warmup=0, kind="noam", d_model=256, noam_factor=2.0)
    assert noam.factor(1) == pytest.approx(2.0 / 16) and noam.factor(400) == pytest.approx(2.0 / 16 / 20)


def test_errors():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="warmup"):
            InverseSqrtSchedule(warmup=bad)
    with pytest.raises(ValueError, match="kind"):
        InverseSqrtSchedule(kind="cosine")
    with pytest.raises(ValueError, match="from 1"):
        InverseSqrtSchedule().factor(0)
