import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from adasparse.data.tokenizer import TokenizerConfig, TokenizerPair
from adasparse.train.checkpoint import (
    CheckpointManager,
    atomic_write_text,
    capture_rng_state,
    flatten_state,
    load_checkpoint,
    load_weights,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
    save_weights,
    unflatten_state,
)
from adasparse.train.schedule import InverseSqrtSchedule, build_scheduler

REPO = Path(__file__).resolve().parents[2]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.hidden = nn.Linear(8, 8)
        self.out = nn.Linear(8, 11, bias=False)
        self.out.weight = self.emb.weight  # tied

    def forward(self, x):
        return self.out(torch.relu(self.hidden(self.emb(x))))


def _setup(seed=0):
    torch.manual_seed(seed)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.98), weight_decay=0.01)
    sched = build_scheduler(opt, InverseSqrtSchedule(warmup=3))
    return model, opt, sched


def _train_step(model, opt, sched):
    x = torch.randint(0, 11, (4, 5))  # uses the global torch RNG
    loss = nn.functional.cross_entropy(model(x).view(-1, 11), x.view(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def _state(model, opt, sched, step):
    return {
        "step": step,
        "epoch": 1,
        "data": {"epoch": 1, "batch_index": 7},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": capture_rng_state(),
        "metrics": {"valid_loss": 1.25},
    }


def test_round_trip_resumes_exactly(tmp_path):
    model, opt, sched = _setup()
    for _ in range(3):
        _train_step(model, opt, sched)
    random.random(), np.random.rand()
    pair = TokenizerPair.train(["a b"], ["c d"], TokenizerConfig(kind="whitespace"))
    path = save_checkpoint(
        tmp_path / "ck",
        model_state=model.state_dict(),
        config={"d_model": 8},
        trainer_state=_state(model, opt, sched, 3),
        tokenizer=pair,
    )
    # the uninterrupted run continues
    for _ in range(2):
        _train_step(model, opt, sched)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    expected_py, expected_np = random.random(), np.random.rand()

    # a fresh process-like start: different RNG, new objects, then load
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    ck = load_checkpoint(path)
    model2, opt2, sched2 = _setup(seed=99)
    model2.load_state_dict(ck.model_state)
    opt2.load_state_dict(ck.trainer_state["optimizer"])
    sched2.load_state_dict(ck.trainer_state["scheduler"])
    restore_rng_state(ck.trainer_state["rng"])
    assert ck.step == 3 and ck.config == {"d_model": 8}
    assert ck.trainer_state["data"] == {"epoch": 1, "batch_index": 7}
    assert ck.trainer_state["metrics"] == {"valid_loss": 1.25}
    assert TokenizerPair.load(ck.tokenizer_dir).src.encode("a b") == pair.src.encode("a b")
    assert model2.out.weight is model2.emb.weight
    for _ in range(2):
        _train_step(model2, opt2, sched2)
    for k, v in model2.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert (random.random(), np.random.rand()) == (expected_py, expected_np)


def test_tied_weights_stored_once(tmp_path):
    model = Tiny()
    save_weights(model.state_dict(), tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert keys == {"emb.weight", "hidden.weight", "hidden.bias"}
    loaded = load_weights(tmp_path / "m.safetensors")
    assert loaded["out.weight"] is loaded["emb.weight"]
    fresh = Tiny()
    fresh.load_state_dict(loaded)
    assert torch.equal(fresh.out.weight, model.emb.weight)


def test_flatten_state_round_trip():
    state = {
        "ints": {0: {"t": torch.arange(3.0), "n": 2}, 5: (1, 2.5, None)},
        "tuple_keys": {(1, 2): "x"},
        "arr": np.arange(4, dtype=np.uint32),
        "bytes": b"\x00\xff",
        "nested": [torch.zeros(2, 2, dtype=torch.bfloat16), {"__tensor__": "not a marker"}],
        "scalar": torch.tensor(7.0),
        "inf": float("inf"),
    }
    structure, tensors = flatten_state(state)
    back = unflatten_state(json.loads(json.dumps(structure)), tensors)
    assert torch.equal(back["ints"][0]["t"], state["ints"][0]["t"]) and back["ints"][0]["n"] == 2
    assert back["ints"][5] == (1, 2.5, None) and back["tuple_keys"] == {(1, 2): "x"}
    assert back["arr"].dtype == np.uint32 and back["arr"].tolist() == [0, 1, 2, 3]
    assert back["bytes"] == b"\x00\xff" and back["inf"] == float("inf")
    assert back["nested"][0].dtype == torch.bfloat16 and back["nested"][1] == {"__tensor__": "not a marker"}
    assert back["scalar"].shape == () and back["scalar"].item() == 7.0
    with pytest.raises(TypeError, match=r"\.obj"):
        flatten_state({"obj": object()})


def _save(mgr, step, metric=None):
    model = Tiny()
    return mgr.save(
        step, metric=metric, model_state=model.state_dict(), config={"step": step}, trainer_state={"step": step}
    )


def test_keep_last_k_and_best(tmp_path):
    mgr = CheckpointManager(tmp_path / "run", keep_last=2, metric_mode="min")
    metrics = [3.0, 1.0, 2.0, 2.5, 1.5, 4.0]
    for step, m in enumerate(metrics, start=1):
        _save(mgr, step * 100, m)
    names = [p.name for p in mgr.checkpoints()]
    assert names == ["step_00000200", "step_00000500", "step_00000600"]
    assert mgr.best().name == "step_00000200" and mgr.best_metric() == 1.0
    assert mgr.latest().name == "step_00000600"
    assert resolve_checkpoint(tmp_path / "run") == mgr.latest()
    assert resolve_checkpoint(tmp_path / "run" / "checkpoints") == mgr.latest()
    assert load_checkpoint(tmp_path / "run").config == {"step": 600}
    high = CheckpointManager(tmp_path / "run2", keep_last=1, metric_mode="max")
    for step, m in enumerate(metrics, start=1):
        _save(high, step, m)
    assert high.best().name == "step_00000006" and [p.name for p in high.checkpoints()] == ["step_00000006"]


def test_latest_without_pointer(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=5)
    _save(mgr, 1), _save(mgr, 20), _save(mgr, 3)
    assert mgr.latest().name == "step_00000003"  # the pointer names the last saved
    (mgr.root / "latest.json").unlink()
    assert mgr.latest().name == "step_00000020"  # fallback: highest step


def test_missing_files_are_named(tmp_path):
    mgr = CheckpointManager(tmp_path)
    path = _save(mgr, 1)
    (path / "trainer_state.safetensors").unlink()
    (path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing config.json, trainer_state.safetensors"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "elsewhere")


_CRASH = textwrap.dedent(
    """
    import os, sys, torch
    import adasparse.train.checkpoint as ck
    real = ck.atomic_write_json
    def crash(path, obj):
        if str(path).endswith(sys.argv[2]):
            os._exit(9)  # like SIGKILL: no cleanup, no exception handlers
        real(path, obj)
    ck.atomic_write_json = crash
    mgr = ck.CheckpointManager(sys.argv[1], keep_last=1)
    mgr.save(2, metric=0.5, model_state={"w": torch.full((3,), 2.0)}, config={"v": 2}, trainer_state={"step": 2})
    """
)


@pytest.mark.parametrize("crash_at", ["trainer_state.json", "latest.json"])
def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, crash_at):
    mgr = CheckpointManager(tmp_path, keep_last=1)
    mgr.save(1, metric=1.0, model_state={"w": torch.full((3,), 1.0)}, config={"v": 1}, trainer_state={"step": 1})
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _CRASH, str(tmp_path), crash_at], env=env, capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()
    mgr = CheckpointManager(tmp_path, keep_last=1)  # cleans up temporary leftovers
    assert not list(mgr.root.glob(".*tmp*"))
    if crash_at == "trainer_state.json":  # died while assembling: the new checkpoint never appeared
        assert [p.name for p in mgr.checkpoints()] == ["step_00000001"]
        ck = load_checkpoint(tmp_path)
        assert ck.config == {"v": 1} and ck.model_state["w"].tolist() == [1.0, 1.0, 1.0]
    else:  # died after the rename, before the pointer: both complete, the pointer still names the old one
        assert load_checkpoint(mgr.latest()).config == {"v": 1}
        assert load_checkpoint(mgr.root / "step_00000002").config == {"v": 2}


def test_overwrite_failure_keeps_old_content(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "ck", model_state={"w": torch.ones(2)}, config={"v": 1})
    import adasparse.train.checkpoint as ck

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_weights", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model_state={"w": torch.zeros(2)}, config={"v": 2})
    assert load_checkpoint(path).config == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_atomic_write_replaces_whole_file(tmp_path):
    f = tmp_path / "x.txt"
    atomic_write_text(f, "old")
    atomic_write_text(f, "new content")
    assert f.read_text() == "new content" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]
