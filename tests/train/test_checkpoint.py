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
    CorruptCheckpointError,
    capture_rng_state,
    flatten_state,
    load_checkpoint,
    load_weights,
    read_manifest,
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


def test_latest_is_the_highest_step_whatever_the_pointer_says(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=5)
    _save(mgr, 1), _save(mgr, 20), _save(mgr, 3)
    assert mgr.latest().name == "step_00000020"
    assert json.loads((mgr.root / "latest.json").read_text())["name"] == "step_00000020"
    (mgr.root / "latest.json").unlink()
    assert mgr.latest().name == "step_00000020"
    CheckpointManager(tmp_path)  # a writable manager rewrites the missing pointer
    assert json.loads((mgr.root / "latest.json").read_text()) == {"name": "step_00000020", "step": 20}


def test_missing_files_are_named(tmp_path):
    mgr = CheckpointManager(tmp_path)
    path = _save(mgr, 1)
    (path / "trainer_state.safetensors").unlink()
    (path / "config.json").unlink()
    with pytest.raises(CorruptCheckpointError, match="incomplete: .*config.json is missing"):
        load_checkpoint(path)
    (path / "manifest.json").unlink()  # the older format: the required files are listed
    with pytest.raises(CorruptCheckpointError, match="missing config.json, trainer_state.safetensors"):
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


@pytest.mark.parametrize("crash_at", ["trainer_state.json", "manifest.json", "latest.json", "best.json"])
def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, crash_at):
    mgr = CheckpointManager(tmp_path, keep_last=1)
    mgr.save(1, metric=1.0, model_state={"w": torch.full((3,), 1.0)}, config={"v": 1}, trainer_state={"step": 1})
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _CRASH, str(tmp_path), crash_at], env=env, capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()
    mgr = CheckpointManager(tmp_path, keep_last=1)  # cleans up temporary leftovers
    assert not list(mgr.root.glob(".*tmp*"))
    if crash_at in ("trainer_state.json", "manifest.json"):  # died while assembling: it never appeared
        assert [p.name for p in mgr.checkpoints()] == ["step_00000001"]
        ck = load_checkpoint(tmp_path)
        assert ck.config == {"v": 1} and ck.model_state["w"].tolist() == [1.0, 1.0, 1.0]
    else:  # died after the rename, before or between the pointer writes: the pointers are repaired
        assert load_checkpoint(mgr.latest()).config == {"v": 2}
        assert mgr.best().name == "step_00000002" and mgr.best_metric() == 0.5  # 0.5 beats 1.0
        assert [p.name for p in mgr.checkpoints()] == ["step_00000001", "step_00000002"]  # pruned at the next save
        for name in ("latest", "best"):
            assert json.loads((mgr.root / f"{name}.json").read_text())["name"] == "step_00000002"


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


def _ckpt_with_tokenizer(tmp_path):
    pair = TokenizerPair.train(["a b c"], ["d e"], TokenizerConfig(kind="whitespace"))
    model = Tiny()
    return save_checkpoint(
        tmp_path / "ck", model_state=model.state_dict(), config={"v": 1}, trainer_state={"step": 1}, tokenizer=pair
    )


def _flip_bit(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, file, message",
    [
        (lambda p: _flip_bit(p / "model.safetensors"), "model.safetensors", "SHA-256 differs"),
        (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:-9]),
         "model.safetensors", "cut short"),
        (lambda p: _flip_bit(p / "trainer_state.safetensors"), "trainer_state.safetensors", "SHA-256 differs"),
        (lambda p: (p / "config.json").write_text("{}"), "config.json", "cut short or overwritten"),
        (lambda p: (p / "tokenizer" / "joint.vocab.json").unlink(), "tokenizer/joint.vocab.json", "is missing"),
        (lambda p: (p / "manifest.json").write_text((p / "manifest.json").read_text().replace('"size": ', '"size": 1', 1)),
         "manifest.json", "damaged"),
    ],
)  # fmt: skip
def test_every_file_is_verified_and_the_damaged_one_named(tmp_path, damage, file, message):
    path = _ckpt_with_tokenizer(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {
        "model.safetensors", "config.json", "trainer_state.json", "trainer_state.safetensors",
        "tokenizer/tokenizer.json", "tokenizer/joint.vocab.json",
    }  # fmt: skip
    assert load_checkpoint(path).manifest == manifest
    damage(path)
    with pytest.raises(CorruptCheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path / file) in str(info.value)


def test_checkpoint_without_manifest_loads_with_a_warning(tmp_path, caplog):
    path = _ckpt_with_tokenizer(tmp_path)
    (path / "manifest.json").unlink()  # as written before manifests existed
    with caplog.at_level("WARNING", logger="adasparse.train.checkpoint"):
        ck = load_checkpoint(path)
    assert ck.manifest is None and ck.config == {"v": 1}
    assert "has no manifest.json (written by an older adasparse): its files cannot be verified" in caplog.text
    (path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{")  # unverifiable, but unreadable
    with pytest.raises(CorruptCheckpointError, match="model.safetensors is not a readable safetensors file"):
        load_checkpoint(path)


def test_non_finite_metric_is_never_best(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=1)
    _save(mgr, 1, float("nan"))
    assert mgr.best() is None and not mgr.is_better(float("nan")) and not mgr.is_better(float("inf"))
    _save(mgr, 2, 3.0), _save(mgr, 3, float("nan")), _save(mgr, 4, float("-inf"))
    assert mgr.best().name == "step_00000002" and mgr.best_metric() == 3.0
    assert [p.name for p in mgr.checkpoints()] == ["step_00000002", "step_00000004"]


@pytest.mark.parametrize("pointer", [[], {"name": "../../other/checkpoints/step_00000001"}, "{not json", {"x": 1}])
def test_pointers_never_lead_outside_the_run(tmp_path, caplog, pointer):
    other = CheckpointManager(tmp_path / "other", keep_last=3)
    _save(other, 1, 0.1)
    mgr = CheckpointManager(tmp_path / "run", keep_last=3)
    _save(mgr, 1, 5.0), _save(mgr, 2, 4.0)
    text = pointer if isinstance(pointer, str) else json.dumps(pointer)
    (mgr.root / "best.json").write_text(text)
    with caplog.at_level("WARNING", logger="adasparse.train.checkpoint"):
        fresh = CheckpointManager(tmp_path / "run", create=False)
        assert fresh.best() == mgr.root / "step_00000002"
    assert "ignoring" in caplog.text and "best.json" in caplog.text
    CheckpointManager(tmp_path / "run")  # writable: repaired from the manifests
    assert json.loads((mgr.root / "best.json").read_text())["name"] == "step_00000002"


def test_older_checkpoints_keep_their_best_json(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    for step, metric in ((1, 2.0), (2, 1.0), (3, 3.0)):
        _save(mgr, step, metric)
        (mgr.root / mgr.name_for(step) / "manifest.json").unlink()  # as written before manifests
    (mgr.root / "best.json").write_text(json.dumps({"name": "step_00000002", "step": 2, "metric": 1.0}))
    assert mgr.best().name == "step_00000002" and mgr.best_metric() == 1.0
    _save(mgr, 4, 0.5)  # a new checkpoint with a manifest beats it
    assert mgr.best().name == "step_00000004"


_KILL_IN_PRUNE = textwrap.dedent(
    """
    import os, shutil, sys, torch
    import adasparse.train.checkpoint as ck
    def dies_halfway(path, ignore_errors=False):
        files = sorted(p for p in __import__("pathlib").Path(path).rglob("*") if p.is_file())
        files[0].unlink()  # one file gone, then killed
        os._exit(9)
    ck.shutil.rmtree = dies_halfway
    mgr = ck.CheckpointManager(sys.argv[1], keep_last=1)
    mgr.save(3, metric=9.0, model_state={"w": torch.full((3,), 3.0)}, config={"v": 3}, trainer_state={"step": 3})
    """
)


def test_kill_during_pruning_leaves_nothing_half_deleted(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=1)
    for step in (1, 2):
        mgr.save(step, metric=float(step), model_state={"w": torch.ones(3)}, config={"v": step}, trainer_state={})
    assert [p.name for p in mgr.checkpoints()] == ["step_00000001", "step_00000002"]  # 1 is the best
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _KILL_IN_PRUNE, str(tmp_path)], env=env, capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()
    # step 2 was being deleted: it is out of sight (a hidden trash folder), not a half-deleted step_00000002
    assert [p.name for p in CheckpointManager(tmp_path, create=False).checkpoints()] == [
        "step_00000001",
        "step_00000003",
    ]
    assert any(p.name.startswith(".trash-step_00000002") for p in mgr.root.iterdir())
    CheckpointManager(tmp_path, keep_last=1)  # the next run clears the trash
    assert sorted(p.name for p in mgr.root.iterdir()) == ["best.json", "latest.json", "step_00000001", "step_00000003"]
    for p in CheckpointManager(tmp_path, create=False).checkpoints():
        load_checkpoint(p)  # both verify


def test_half_deleted_older_folder_is_not_listed_and_is_cleared(tmp_path, caplog):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    _save(mgr, 1), _save(mgr, 2)
    half = mgr.root / "step_00000001"
    (half / "manifest.json").unlink()
    (half / "model.safetensors").unlink()  # what an older adasparse's interrupted rmtree could leave
    assert [p.name for p in CheckpointManager(tmp_path, create=False).checkpoints()] == ["step_00000002"]
    with caplog.at_level("WARNING", logger="adasparse.train.checkpoint"):
        CheckpointManager(tmp_path)
    assert "removing the incomplete checkpoint folder" in caplog.text and not half.exists()


def test_a_run_opened_without_metric_mode_takes_its_own(tmp_path):
    """A BLEU run (higher is better) opened to load its best checkpoint must not pick the lowest BLEU."""
    run = tmp_path / "run"
    mgr = CheckpointManager(run, keep_last=5, metric_mode="max")
    for step, bleu in ((1, 10.0), (2, 30.0), (3, 20.0)):
        _save(mgr, step, bleu)
    assert read_manifest(mgr.root / "step_00000002")["metric_mode"] == "max"
    reader = CheckpointManager(run, create=False)
    assert reader.metric_mode == "max" and reader.best().name == "step_00000002" and reader.best_metric() == 30.0
    assert load_checkpoint(reader.best()).trainer_state["step"] == 2
    with pytest.raises(ValueError, match=r"metric_mode='min', but .*step_00000003/manifest.json records 'max'"):
        CheckpointManager(run, metric_mode="min", create=False)
    assert CheckpointManager(run, metric_mode="max").best().name == "step_00000002"
    assert CheckpointManager(tmp_path / "empty", create=False).metric_mode == "min"  # nothing recorded


@pytest.mark.parametrize(
    ("train_options", "mode", "best"),
    [
        ({"metric": "bleu", "task": "translation"}, "max", "step_00000002"),
        ({"metric": None, "task": "translation"}, "max", "step_00000002"),  # the default metric: BLEU
        ({"metric": "chrf"}, "max", "step_00000002"),
        ({"metric": "wer"}, "min", "step_00000001"),
        ({"metric": None, "task": "lm"}, "min", "step_00000001"),  # the default for a language model: loss
        (None, "min", "step_00000001"),  # no saved options at all
    ],
)
def test_checkpoints_from_before_the_recorded_mode_take_it_from_their_options(tmp_path, train_options, mode, best):
    root = tmp_path / "run" / "checkpoints"
    for step, metric in ((1, 10.0), (2, 30.0), (3, 20.0)):
        config = {"model": {}} if train_options is None else {"model": {}, "train": train_options}
        save_checkpoint(root / CheckpointManager.name_for(step), model_state=Tiny().state_dict(), config=config,
                        trainer_state={"step": step}, info={"step": step, "metric": metric})  # fmt: skip
    assert "metric_mode" not in read_manifest(root / "step_00000001")
    mgr = CheckpointManager(tmp_path / "run", create=False)
    assert mgr.metric_mode == mode and mgr.best().name == best
