"""The training loop: one process or ``torchrun`` (DistributedDataParallel), resumable exactly.

``train(config, run_dir, resume=False)`` does, in order: read the corpora, train (or, on resume, load)
the tokenizers, build the model from the preset, then loop over token-budget batches with AdamW and the
inverse-square-root schedule, logging every ``log_every`` updates (loss, lr, tokens/s and every head's α)
and validating every ``valid_every`` updates (loss and BLEU/chrF or WER/PER from greedy/beam decoding),
writing a checkpoint after each validation (best + last K kept) and stopping at ``max_steps``,
``max_epochs``, ``max_minutes`` or when the metric has not improved for ``patience`` validations.

Exact resumption: a checkpoint holds the weights, the optimizer and scheduler states, every RNG state and
the batcher's position, so a run killed at any moment (even by SIGKILL) and resumed from its latest
checkpoint ends with the same weights as an uninterrupted run with the same seed (on CPU). A resumed run
keeps its options (only :data:`~adasparse.train.config.RESUMABLE_OPTIONS` may change), its data (checked by a
fingerprint of the pairs) and continues from its newest *intact* checkpoint (each one carries a manifest of
checksums; damaged ones are moved aside with a warning).

Interruption: SIGINT (Ctrl-C) or SIGTERM (``kill``, a job scheduler's pre-emption, ``torchrun`` passing it on)
lets the update under way finish, writes a checkpoint at that update (without validating, so it takes
seconds) and returns with ``stopped_because`` ``"interrupted (SIGTERM)"``; nothing since the last checkpoint
is lost, and ``--resume`` continues bit-exactly. A second signal stops at once (``KeyboardInterrupt``), keeping
the last complete checkpoint. In a distributed run a signal to any rank stops every rank at the same update.

Safety: the run folder is locked for the life of the run (:mod:`adasparse.train.lock`); a non-finite loss or
gradient norm ends the run with :class:`TrainingDiverged` before the update is applied, so no NaN reaches the
weights, α or a checkpoint.

Several processes: each rank takes its share of every global step's batches (see
:mod:`adasparse.data.batching`); the loss of a step is the sum over all label tokens of the step divided by
their global count, so ``W`` ranks compute the same gradient as one process accumulating ``W`` batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.tokenizer import TokenizerConfig, TokenizerPair, auto_vocab_size, min_vocab_size
from ..models import build_model, summary
from ..models.config import FORMER_DEFAULTS, saved_model_config
from ..nn import alpha_parameters
from .checkpoint import (
    CheckpointManager,
    CorruptCheckpointError,
    _complete,
    capture_rng_state,
    load_checkpoint,
    read_manifest,
    restore_rng_state,
)
from .config import (
    AUTO_OPTIONS,
    RESUMABLE_OPTIONS,
    TrainConfig,
    auto_log_every,
    auto_warmup_steps,
    resume_differences,
)
from .distributed import DistInfo, all_reduce_sum, cleanup_distributed, init_distributed
from .loading import load_weights_into, pick_device
from .lock import RunLock
from .logger import RunLogger, read_log
from .schedule import InverseSqrtSchedule, build_scheduler
from .tasks import task_for

__all__ = ["train", "TrainResult", "TrainingDiverged", "saved_train_options"]

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm of an update was not finite: the run stops before applying it.

    ``step`` is the update that failed; the weights (and every checkpoint) are those of the update before.
    """

    def __init__(self, message: str, step: int, loss: float, grad_norm: float):
        super().__init__(message)
        self.step, self.loss, self.grad_norm = step, loss, grad_norm


@dataclass
class TrainResult:
    """What a finished run reports: its folder, last step, best checkpoint and last validation metrics.

    ``stopped_because``: ``"max_steps"``, ``"max_epochs"``, ``"max_minutes"``, ``"patience"``, or
    ``"interrupted (SIGINT)"`` / ``"interrupted (SIGTERM)"`` (checkpointed at ``step``; ``resume=True`` continues),
    when ``interrupted_by`` is that signal's number.
    """

    run_dir: Path
    step: int
    best_checkpoint: Path | None
    last_metrics: dict[str, float]
    stopped_because: str
    interrupted_by: int | None = None


class _StopOnSignal:
    """While active (in the main thread), SIGINT and SIGTERM set :attr:`signum` instead of killing the process,
    so the loop can finish its update and checkpoint; a second signal raises ``KeyboardInterrupt`` at once.
    Elsewhere (not the main thread, where Python cannot install handlers) it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # asked twice: stop now
            self._restore()
            raise KeyboardInterrupt
        self.signum = signum

    def _restore(self) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    @property
    def name(self) -> str:
        """The received signal's name ("SIGTERM"), or "" before one arrives."""
        return signal.Signals(self.signum).name if self.signum is not None else ""


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "none" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _tokenizer_config(cfg: TrainConfig) -> TokenizerConfig:
    if cfg.tokenizer in ("bpe", "unigram"):
        return TokenizerConfig(
            kind="sentencepiece",
            model_type=cfg.tokenizer,
            vocab_size=cfg.vocab_size,
            joint=cfg.joint_vocab,
            seed=cfg.seed,
        )
    return TokenizerConfig(kind=cfg.tokenizer, vocab_size=None, joint=cfg.joint_vocab)


def _resolve_auto(cfg: TrainConfig, corpus, task) -> tuple[TrainConfig, list[str]]:
    """``cfg`` with its automatic options (``None``) chosen from the data and ``max_steps``, and what was chosen
    (or a notice where an explicit vocabulary is far larger than the data support)."""
    changes: dict[str, Any] = {}
    said: list[str] = []
    if cfg.tokenizer in ("bpe", "unigram"):
        sides = task.vocab_sides(corpus, cfg.joint_vocab)
        need = max(min_vocab_size(x) for x in sides)
        auto = max(min(auto_vocab_size(x) for x in sides), need)
        words = sum(len(line.split()) for x in sides for line in x)
        if cfg.vocab_size is None:
            changes["vocab_size"] = auto
            said.append(f"vocab_size {auto} (one piece per 20 of the {words} training words, at most 8000)")
        elif cfg.vocab_size > 2 * max(need, words // 20):  # uncapped: a large vocabulary for a large corpus is fine
            said.append(
                f"vocab_size {cfg.vocab_size} is large for {words} training words: most pieces will be seen only "
                f"a few times (the automatic choice, vocab_size=null, would be {auto})"
            )
    if cfg.warmup_steps is None:
        changes["warmup_steps"] = auto_warmup_steps(cfg.max_steps)
        said.append(f"warmup_steps {changes['warmup_steps']} (max_steps // 10, at most 4000)")
    if cfg.log_every is None:
        changes["log_every"] = auto_log_every(cfg.max_steps)
        said.append(f"log_every {changes['log_every']} (max_steps // 20, from 1 to 50)")
    return (dataclasses.replace(cfg, **changes) if changes else cfg), said


def saved_train_options(run_dir: str | Path) -> dict[str, Any] | None:
    """The training options stored in the checkpoint ``--resume`` will continue from (the newest intact one
    of ``run_dir``); ``None`` if there is none; :class:`CorruptCheckpointError` when all it holds are damaged."""
    ckpt, damaged = CheckpointManager(run_dir, create=False).latest_intact()  # newer damaged ones: --resume says
    if ckpt is None and damaged:
        raise CorruptCheckpointError(
            f"cannot resume {run_dir}: no intact checkpoint ("
            + "; ".join(why for _, why in damaged)
            + "); start again with --overwrite"
        )
    if ckpt is None:
        return None
    try:
        saved = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved["train"] if isinstance(saved, dict) and isinstance(saved.get("train"), dict) else None


def _alpha_record(model) -> dict[str, list[list[float]]]:
    return {k: [[round(float(a), 5) for a in row] for row in v.detach().cpu()] for k, v in model.alphas().items()}


def _param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: weight matrices (decayed); biases, norms and learned-α θ (not decayed); with
    ``alpha_lr_scale != 1`` the θ get a group of their own at ``alpha_lr_scale`` times the others' rate."""
    theta = alpha_parameters(model)
    ids = {id(p) for p in theta}
    split = cfg.alpha_lr_scale != 1.0 and theta
    decay, no_decay = [], []
    for p in model.parameters():
        if id(p) in ids and split:
            continue
        (no_decay if p.dim() < 2 or id(p) in ids else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if split:
        groups.append({"params": theta, "weight_decay": 0.0, "lr": _base_lr(cfg) * cfg.alpha_lr_scale})
    return groups


def _base_lr(cfg: TrainConfig) -> float:
    """The optimizer's lr that the schedule multiplies: ``lr`` itself, or 1 for noam (whose factor is ``lr``)."""
    return 1.0 if cfg.schedule == "noam" else cfg.lr


def _schedule(cfg: TrainConfig, d_model: int) -> InverseSqrtSchedule:
    return InverseSqrtSchedule(warmup=cfg.warmup_steps, kind=cfg.schedule, d_model=d_model, noam_factor=cfg.lr)


def _expected_stop(step: int, max_steps: int, session_steps: int, session_elapsed: float, budget: float | None) -> int:
    """The update at which the run will stop: ``max_steps``, or sooner when the time ``budget`` (seconds of this
    session) binds, estimated from this session's speed so far."""
    if budget is None or session_steps == 0 or session_elapsed <= 0:
        return max_steps
    left = max(budget - session_elapsed, 0.0)
    return min(max_steps, step + int(left * session_steps / session_elapsed))


class _Progress:
    """The training bar. It counts to the update that will actually stop the run: ``max_steps``, or what the
    time left allows when ``max_minutes`` binds (so its ETA is the time left), with the loss and the time left."""

    def __init__(self, cfg: TrainConfig, step: int):
        from tqdm import tqdm

        desc = "train" if cfg.max_minutes is None else f"train (≤ {cfg.max_minutes:g} min)"
        total = cfg.max_steps if cfg.max_minutes is None else None  # with a time budget: known after an update
        self.bar = tqdm(total=total, initial=step, desc=desc, unit="step", mininterval=2.0, dynamic_ncols=True)
        self.postfix: dict[str, str] = {}

    def update(self, step: int, stop_at: int, session_elapsed: float, budget: float | None, rec) -> None:
        if stop_at != self.bar.total:
            self.bar.total = stop_at
        if rec is not None:
            self.postfix.update(loss=f"{rec['loss']:.3f}", tok_s=f"{rec['tokens_per_s']:.0f}")
        if budget is not None:
            left = max(budget - session_elapsed, 0.0)
            self.postfix["left"] = f"{int(left // 60)}:{int(left % 60):02d}"
        self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(step - self.bar.n)

    def write(self, msg: str) -> None:
        self.bar.write(msg)

    def close(self, finished: bool = True) -> None:
        if finished and self.bar.n < (self.bar.total or 0):  # stopped by time, epochs or patience: end at 100 %
            self.bar.total = self.bar.n
            self.bar.refresh()
        self.bar.close()


class _Trainer:
    """One training run on one process (see the module docstring); :func:`train` builds it and calls :meth:`fit`.

    Set-up order matters for exact resumption (each step may draw from the seeded RNGs): device and process
    group, the run folder, the checkpoint to resume from, data and tokenizers, model and optimizer, saved state.
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, resume: bool, quiet: bool, overwrite: bool = False):
        self.cfg, self.run_dir, self.quiet = cfg, run_dir, quiet
        self._setup_device()
        torch.manual_seed(cfg.seed)
        self._setup_run_dir(resume, overwrite)
        train_corpus = self._setup_data()
        try:
            self._setup_tokenizers(train_corpus)
            self._setup_batchers(train_corpus)
        except BaseException:
            if self.resume_from is None and self.dist.is_main:  # the new tokenizers of a run that cannot start
                shutil.rmtree(self.run_dir / ".tokenizer-new", ignore_errors=True)
            raise
        if self.resume_from is None:  # the data, tokenizers and batchers are good: only now is anything replaced
            self._start_new_run()
        self._setup_model()
        self._setup_state()
        self._print(
            f"model: {summary(self.model)}; device {self.device}, {self.dist.world_size} process(es), amp {self.amp}"
        )

    # ------------------------------------------------------------------ set-up

    def _setup_device(self) -> None:
        """Device, process group (one per ``torchrun`` rank), CPU threads and the autocast dtype."""
        cfg = self.cfg
        self.device = pick_device(cfg.device)
        self.dist: DistInfo = init_distributed(self.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.amp = _amp_dtype(cfg.amp, self.device)

    def _setup_run_dir(self, resume: bool, overwrite: bool) -> None:
        """The run folder; with ``resume`` its checkpoints, the one to resume from and its options. A new run
        (``overwrite`` too) touches nothing here: :meth:`_start_new_run` clears and writes once the data and
        tokenizers have been read and checked, so a bad corpus or option costs no earlier run."""
        cfg, run_dir = self.cfg, self.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.resume_from = None
        self._clear_old = False
        if not resume:
            if CheckpointManager(run_dir, create=False).checkpoints():
                if not overwrite:
                    raise ValueError(
                        f"{run_dir} already holds the checkpoints of a run: pass --resume to continue it, "
                        "--overwrite to start again from scratch, or choose another --out"
                    )
                self._clear_old = True
            return
        _check_resumable(run_dir)
        self._open_checkpoints()
        self.resume_from = self._pick_resume()
        self.cfg = self._resumed_config(cfg, self.resume_from)  # the run's own; only RESUMABLE_OPTIONS may change

    def _open_checkpoints(self) -> None:
        cfg = self.cfg
        self.ckpts = CheckpointManager(
            self.run_dir, keep_last=cfg.keep_last, metric_mode=cfg.metric_mode, create=self.dist.is_main
        )

    def _start_new_run(self) -> None:
        """A new run: ``--overwrite`` deletes the earlier one now, the tokenizers move into place, and the
        checkpoint folder is opened (rank 0 writes; the others wait)."""
        if self.dist.enabled:  # every rank has read the new tokenizers before they move
            torch.distributed.barrier()
        if self.dist.is_main:
            if self._clear_old:
                self._clear_run_dir()
            tok_dir = self.run_dir / "tokenizer"
            if tok_dir.exists():  # renamed first: a kill leaves no half-deleted folder
                trash = self.run_dir / f".trash-tokenizer-{os.getpid()}"
                os.replace(tok_dir, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(self._new_tokenizer_dir, tok_dir)
        if self.dist.enabled:
            torch.distributed.barrier()
        self._open_checkpoints()

    def _clear_run_dir(self) -> None:
        """``--overwrite``: delete the earlier run's checkpoints and TensorBoard folder (rank 0)."""
        for sub in ("checkpoints", "tensorboard"):  # renamed first: a kill leaves no half-deleted folder
            if (self.run_dir / sub).exists():
                trash = self.run_dir / f".trash-{sub}-{os.getpid()}"
                os.replace(self.run_dir / sub, trash)
                shutil.rmtree(trash, ignore_errors=True)

    def _setup_data(self):
        """Read the corpora (``self.valid``; the training corpus is returned), fingerprint them and, for a new
        run, choose the automatic options from them."""
        cfg = self.cfg
        self.task = task_for(cfg)
        train_corpus, valid_corpus, looked = self.task.load_data(cfg)
        self._print(f"training data: {train_corpus.summary()}")
        if valid_corpus is None:
            if cfg.patience is not None:
                raise ValueError(
                    f"patience={cfg.patience} stops on validation, but there is no validation set: {looked}"
                )
            self._print(
                f"no validation set ({looked}): validation is off, no {cfg.valid_metric} is measured and the last "
                f"checkpoint stands for the best; checkpoints every valid_every={cfg.valid_every} updates"
            )
        else:
            self._print(f"validation data: {valid_corpus.summary()}")
        self.valid = valid_corpus
        self.corpus = {"train": self.task.fingerprint(train_corpus), "valid": self.task.fingerprint(valid_corpus)}
        if self.resume_from is None:
            self.cfg, chosen = _resolve_auto(cfg, train_corpus, self.task)
            if chosen:
                self._print("chosen for this run: " + "; ".join(chosen))
        return train_corpus

    def _setup_tokenizers(self, train_corpus) -> None:
        """The checkpoint's tokenizers on resume; else trained on the training data (rank 0) and saved."""
        if self.resume_from is not None:
            self.tokenizers = TokenizerPair.load(self.resume_from / "tokenizer")
            return
        # written beside the run's ``tokenizer/``, which :meth:`_start_new_run` replaces once all is checked
        tok_dir = self._new_tokenizer_dir = self.run_dir / ".tokenizer-new"
        if self.dist.is_main:
            self._print(f"training tokenizer ({self.cfg.tokenizer}) on the training data")
            if tok_dir.exists():  # left by a run that failed here
                shutil.rmtree(tok_dir)
            self.task.train_tokenizers(train_corpus, _tokenizer_config(self.cfg)).save(tok_dir)
        if self.dist.enabled:
            torch.distributed.barrier()
        self.tokenizers = TokenizerPair.load(tok_dir)

    def _setup_batchers(self, train_corpus) -> None:
        """The model's configuration (it bounds the length of a sequence) and the training/validation batchers."""
        cfg = self.cfg
        self.model_config = self.task.model_config(cfg, self.tokenizers)
        dws = cfg.data_world_size or self.dist.world_size
        if self.dist.enabled and dws != self.dist.world_size:
            raise ValueError(f"data_world_size={dws} must equal the number of processes ({self.dist.world_size})")
        rank = self.dist.rank if self.dist.enabled or dws == 1 else None
        self.batcher, self.valid_batcher = self.task.batchers(
            cfg, self.tokenizers, self.model_config, train_corpus, self.valid, rank, dws, self._print
        )

    def _setup_model(self) -> None:
        """The model (wrapped in DDP across processes), AdamW with its parameter groups, schedule, loss scaler."""
        cfg = self.cfg
        self.model = build_model(self.model_config).to(self.device)
        self.ddp = None
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.model, cfg), lr=_base_lr(cfg), betas=cfg.betas, eps=cfg.adam_eps
        )
        self.scheduler = build_scheduler(self.optimizer, _schedule(cfg, self.model_config.d_model))
        self.scaler = torch.amp.GradScaler(enabled=self.amp == torch.float16 and self.device.type == "cuda")

    def _setup_state(self) -> None:
        """Counters from zero, or the resumed checkpoint's state; then the run log (cut back to the resumed step)."""
        self.session_elapsed = 0.0  # training time of this session: what max_minutes bounds
        self.step = 0
        self._saved_step = -1
        self.bad_validations = 0
        self.patience_best: float | None = None  # the best metric of the scheduled validations (what patience counts)
        self.elapsed = 0.0
        self.last_metrics: dict[str, float] = {}
        self.interrupted_by: int | None = None  # the signal that stopped this session (SIGINT / SIGTERM)
        if self.resume_from is not None:
            self._restore(self.resume_from)
        resume_step = self.step if self.resume_from else None
        self.logger = RunLogger(self.run_dir, enabled=self.dist.is_main, resume_step=resume_step)

    # ------------------------------------------------------------------ state

    def _resumed_config(self, cfg: TrainConfig, path: Path) -> TrainConfig:
        """``cfg`` checked against the options saved in checkpoint ``path``, automatic ones filled from them."""
        try:
            both = json.loads((path / "config.json").read_text(encoding="utf-8"))
            saved, built = both.get("train") or {}, saved_model_config(both.get("model") or {})
        except (OSError, ValueError, AttributeError):
            saved, built = {}, dict(FORMER_DEFAULTS)

        # a model default that changed since the run started: the run keeps the model it was built with (its
        # saved model configuration says which; one saved before the option existed had the former default)
        def keep_built(model: dict[str, Any]) -> dict[str, Any]:
            return {**{k: built[k] for k in FORMER_DEFAULTS}, **model}

        cfg = dataclasses.replace(cfg, model=keep_built(cfg.model))
        if isinstance(saved.get("model"), dict):
            saved = {**saved, "model": keep_built(saved["model"])}
        moved = resume_differences(saved, cfg)
        if moved:
            raise ValueError(
                f"cannot resume {path} with other options ({'; '.join(moved)}): a resumed run keeps the options "
                "it started with (`adasparse train --out RUN --resume` takes them from its checkpoint); only "
                f"{', '.join(RESUMABLE_OPTIONS)} may change (--set key=value); or start a new run"
            )
        filled = {k: saved[k] for k in AUTO_OPTIONS if getattr(cfg, k) is None and saved.get(k) is not None}
        if cfg.warmup_steps is None and "warmup_steps" not in filled:  # a checkpoint without saved options
            filled["warmup_steps"] = auto_warmup_steps(cfg.max_steps)
        if cfg.log_every is None and "log_every" not in filled:
            filled["log_every"] = auto_log_every(cfg.max_steps)
        return dataclasses.replace(cfg, **filled) if filled else cfg

    def _pick_resume(self) -> Path | None:
        """The newest intact checkpoint (rank 0 verifies and decides; damaged newer ones are moved aside)."""
        step = -1
        if self.dist.is_main:
            path, damaged = self.ckpts.latest_intact()
            if damaged and path is None:
                raise CorruptCheckpointError(
                    f"cannot resume {self.run_dir}: no intact checkpoint ("
                    + "; ".join(why for _, why in damaged)
                    + "); start again with --overwrite"
                )
            for bad, why in damaged:
                aside = self.ckpts.move_aside(bad)
                log.warning("--resume: skipping %s: %s; moved it aside to %s", bad.name, why, aside.name)
            if path is not None:
                step = CheckpointManager.step_of(path)
                if read_manifest(path) is None:
                    log.warning("%s has no manifest.json (written by an older adasparse): resuming unverified", path)
        if self.dist.enabled:
            t = torch.tensor([step], dtype=torch.int64, device=self.device)
            torch.distributed.broadcast(t, 0)
            step = int(t.item())
        return None if step < 0 else self.ckpts.root / CheckpointManager.name_for(step)

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "data": self.batcher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "bad_validations": self.bad_validations,
            "patience_best": self.patience_best,
            "elapsed": self.elapsed,
            "metrics": self.last_metrics,
            "corpus": self.corpus,
        }

    def _restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path, device="cpu", verify=not self.dist.is_main)  # rank 0 verified it already
        saved, now = ckpt.config.get("model") or {}, self.model_config.to_dict()
        saved = saved_model_config(saved) if saved else saved
        differ = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
        if saved and differ:
            changes = ", ".join(f"{k}: {saved.get(k)!r} → {now.get(k)!r}" for k in differ)
            raise ValueError(
                f"cannot resume {path}: this configuration builds a different model ({changes}); resume with the "
                f"run's own options (its config.json, key 'train'), or start a new run"
            )
        st = ckpt.trainer_state
        for split, was in (st.get("corpus") or {}).items():  # checkpoints before fingerprints have none
            now = self.corpus.get(split)
            if was != now:

                def said(f):
                    if f is None:
                        return "none"
                    n, unit = (f["lines"], "lines") if "lines" in f else (f["pairs"], "pairs")
                    return f"{n} {unit}, SHA-256 {f['sha256'][:12]}…"

                raise ValueError(
                    f"cannot resume {path}: its {split} data differ from the data given now (the run had "
                    f"{said(was)}; now {said(now)}); a resumed run continues on its own data: give the run's "
                    "own files, or start a new run (--overwrite, or another --out)"
                )
        load_weights_into(self.model, ckpt)
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        if st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.batcher.load_state_dict(st["data"])
        restore_rng_state(st["rng"])
        self.step = int(st["step"])
        if "patience_best" in st:
            self.bad_validations, self.patience_best = int(st["bad_validations"]), st["patience_best"]
        else:  # written before only scheduled validations counted toward patience: recount from the run's log
            self.bad_validations, self.patience_best = self._recount_patience(int(st.get("bad_validations", 0)))
        self.elapsed = float(st.get("elapsed", 0.0))
        self.last_metrics = dict(st.get("metrics") or {})
        self._saved_step = self.step
        self._print(f"resumed from {path} at step {self.step}")

    def _save(self, metric: float | None) -> None:
        bad = next((n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())), None)
        if bad is not None:  # never reached through _train_step's checks; kept so that no NaN model is ever saved
            raise TrainingDiverged(
                f"training diverged by step {self.step}: parameter {bad} is not finite; nothing was saved",
                self.step, float("nan"), float("nan"),
            )  # fmt: skip
        self._saved_step = self.step
        if self.dist.is_main:
            self.ckpts.save(
                self.step,
                metric,
                model_state=self.model.state_dict(),
                config={"model": self.model_config.to_dict(), "train": self.cfg.to_dict()},
                trainer_state=self._state(),
                tokenizer=self.tokenizers,
            )
        if self.dist.enabled:
            torch.distributed.barrier()

    def _print(self, msg: str) -> None:
        if not self.quiet and self.dist.is_main:
            print(msg, flush=True)

    # ------------------------------------------------------------------ steps

    def _batches(self):
        while True:
            if self.cfg.max_epochs is not None and self.batcher.epoch >= self.cfg.max_epochs:
                return
            yield from self.batcher

    def _train_step(self, micro: list) -> tuple[float, int, int]:
        """One optimizer update over ``micro`` batches; returns (summed loss, label tokens, all tokens) over
        every rank. A non-finite loss or gradient norm raises :class:`TrainingDiverged` before the update."""
        model = self.ddp or self.model
        model.train()
        n_local = sum(self.task.n_labels(b) for b in micro)
        n_global = int(all_reduce_sum(torch.tensor(float(n_local)), self.dist).item())
        scale = self.dist.world_size / max(n_global, 1)
        total, n_all = 0.0, 0
        for i, b in enumerate(micro):
            b = b.to(self.device)
            sync = self.ddp is None or i == len(micro) - 1
            ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()
            with ctx:
                with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                    logits = self.task.logits(model, b)
                loss, n_read = self.task.loss(self.model, logits, b, self.cfg.smoothing)
                self.scaler.scale(loss * scale).backward()
            total += float(loss.detach())
            n_all += n_read
        sums = all_reduce_sum(torch.tensor([total, float(n_all)], dtype=torch.float64), self.dist)
        self.scaler.unscale_(self.optimizer)
        # the norm is always measured (max_norm=inf scales by exactly 1): every rank sees the same synced gradients
        max_norm = self.cfg.clip_norm if self.cfg.clip_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        loss_sum = float(sums[0])
        # with fp16 loss scaling, inf gradients are expected now and then: the scaler skips that update
        if not math.isfinite(loss_sum) or (not math.isfinite(grad_norm) and not self.scaler.is_enabled()):
            self.optimizer.zero_grad(set_to_none=True)
            raise self._diverged(loss_sum / max(n_global, 1), grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, n_global, int(sums[1])

    def _diverged(self, loss: float, grad_norm: float) -> TrainingDiverged:
        step, cfg = self.step + 1, self.cfg
        last = self.ckpts.latest() if self.dist.is_main else None
        kept = f"the last checkpoint, {last}, is intact" if last is not None else "no checkpoint was written"
        lr = self.scheduler.get_last_lr()[0]
        return TrainingDiverged(
            f"training diverged at step {step}: the loss per token is {loss:.4g} and the gradient norm "
            f"{grad_norm:.4g}; the update was not applied and {kept}. The learning rate ({lr:.3g} at this step, "
            f"lr={cfg.lr:g}, warmup_steps={cfg.warmup_steps}) is probably too high: start again with a lower lr "
            f"or a longer warmup (--overwrite), or clip the gradients (clip_norm, now {cfg.clip_norm:g})",
            step,
            loss,
            grad_norm,
        )

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """The task's validation metrics (loss, and BLEU/chrF, WER/PER or perplexity), on rank 0 (others get {})."""
        if self.valid is None or not self.dist.is_main:
            return {}
        self.model.eval()
        return self.task.validate(self)

    def _metric(self, metrics: dict[str, float]) -> float | None:
        key = "valid_loss" if self.cfg.valid_metric == "loss" else self.cfg.valid_metric
        return metrics.get(key)

    # ------------------------------------------------------------------ loop

    def fit(self) -> TrainResult:
        bar = _Progress(self.cfg, self.step) if self.dist.is_main and not self.quiet else None
        finished = False
        try:
            with _StopOnSignal() as stop:
                stopped = self._loop(bar, stop)
            finished = True
        finally:
            if bar is not None:
                bar.close(finished)
            self.logger.close()
        best = self.ckpts.best() or self.ckpts.latest()
        return TrainResult(self.run_dir, self.step, best, self.last_metrics, stopped, self.interrupted_by)

    def _note(self, bar: _Progress | None, msg: str) -> None:
        if bar is not None:
            bar.write(msg)
        else:
            self._print(msg)

    def _log_window(self) -> dict[str, Any] | None:
        """One ``train`` record for the updates since the last one (none if there were none)."""
        w = self._window
        if w["steps"] == 0:
            return
        rec = {
            "kind": "train",
            "step": self.step,
            "epoch": self.batcher.epoch,
            "loss": w["loss"] / max(w["tokens"], 1),
            "lr": self.scheduler.get_last_lr()[0],
            "tokens_per_s": w["all"] / max(time.perf_counter() - w["t0"], 1e-9),
            "alpha": _alpha_record(self.model),
            "time": round(self.elapsed, 2),
        }
        self.logger.log(rec)
        self._window = {"steps": 0, "loss": 0.0, "tokens": 0, "all": 0, "t0": time.perf_counter()}
        return rec

    def _loop(self, bar: _Progress | None, stop: _StopOnSignal | None = None) -> str:
        cfg = self.cfg
        batches = self._batches()
        stopped = "max_steps"
        if self.step == 0:  # the initial α, so trajectories start where training starts
            self.logger.log({"kind": "init", "step": 0, "alpha": _alpha_record(self.model)})
        self._window = {"steps": 0, "loss": 0.0, "tokens": 0, "all": 0, "t0": time.perf_counter()}
        budget = None if cfg.max_minutes is None else 60.0 * cfg.max_minutes  # seconds, this session
        t_start, session_t0, session_steps = time.perf_counter() - self.elapsed, time.perf_counter(), 0
        warned_warmup = False
        while self.step < cfg.max_steps:
            micro = []
            for _ in range(cfg.accum_steps):
                b = next(batches, None)
                if b is None:
                    break
                micro.append(b)
            if not micro:
                stopped = "max_epochs"
                break
            try:
                loss, ntok, nall = self._train_step(micro)
            except TrainingDiverged:
                self._log_window()  # the α trajectory up to the last good update
                raise
            self.step += 1
            session_steps += 1
            now = time.perf_counter()
            self.elapsed, self.session_elapsed = now - t_start, now - session_t0
            w = self._window
            w["steps"], w["loss"] = w["steps"] + 1, w["loss"] + loss
            w["tokens"], w["all"] = w["tokens"] + ntok, w["all"] + nall
            rec = self._log_window() if self.step % cfg.log_every == 0 else None
            stop_at = _expected_stop(self.step, cfg.max_steps, session_steps, self.session_elapsed, budget)
            if bar is not None:
                bar.update(self.step, stop_at, self.session_elapsed, budget, rec)
            if not warned_warmup and budget and session_steps >= 10 and self.session_elapsed >= min(2, budget / 20):
                warned_warmup = True
                if stop_at < cfg.warmup_steps:
                    self._note(
                        bar,
                        f"note: at this speed max_minutes={cfg.max_minutes:g} stops the run near update {stop_at}, "
                        f"before its learning-rate warmup ends (warmup_steps={cfg.warmup_steps}): set max_steps to "
                        "about that (the automatic warmup scales with it) or a smaller warmup_steps",
                    )
            out_of_time = budget is not None and self.session_elapsed >= budget
            signum = (stop.signum if stop is not None else None) or 0
            if self.dist.enabled:  # every rank must stop at the same update, or the others hang
                out_of_time, signum = self._ranks_agree(out_of_time, signum)
            if signum:  # SIGINT / SIGTERM: checkpoint this update now (no validation: seconds, not minutes)
                self._log_window()
                self._save(None)
                self.interrupted_by = signum
                stopped = f"interrupted ({signal.Signals(signum).name})"
                break
            scheduled = self.step % cfg.valid_every == 0 or self.step == cfg.max_steps
            if scheduled or out_of_time:
                self._log_window()  # the training record of a step before its validation (a no-op if just logged)
                if self._validate_and_save(scheduled):
                    stopped = "patience"
                    break
            if out_of_time:
                stopped = "max_minutes"
                break
        self._log_window()  # the last update is always logged (analyze's α trajectory ends where training ended)
        if self._saved_step != self.step:
            self._validate_and_save(scheduled=False)
        if self.dist.enabled:  # every rank must hold the same weights: record their checksums
            h = hashlib.sha256()
            for p in self.model.parameters():
                h.update(p.detach().cpu().contiguous().numpy().tobytes())
            mine = torch.tensor([int(h.hexdigest()[:15], 16)], dtype=torch.int64, device=self.device)
            every = [torch.zeros_like(mine) for _ in range(self.dist.world_size)]
            torch.distributed.all_gather(every, mine)
            self.logger.log({"kind": "final", "step": self.step, "rank_weight_hashes": [int(x) for x in every]})
        return stopped

    def _validate_and_save(self, scheduled: bool) -> bool:
        """Validate, checkpoint; True when early stopping triggers.

        Only ``scheduled`` validations (every ``valid_every`` updates, and at ``max_steps``) count toward
        ``patience``, against the best of the scheduled ones: the extra validations at a session's end
        (``max_minutes``) neither count nor move that best, so where sessions end does not change when a run stops.
        They are still checkpointed with their metric, and the best checkpoint is the best of all.
        """
        metrics = self.validate()
        value = self._metric(metrics)
        if metrics:
            self.last_metrics = metrics
            self.logger.log({"kind": "valid", "step": self.step, "scheduled": scheduled, **metrics})
            self._print(f"step {self.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        if scheduled:
            self.bad_validations, self.patience_best = self._patience_step(
                self.bad_validations, self.patience_best, value
            )
        self._save(value)
        stop = self.cfg.patience is not None and self.bad_validations >= self.cfg.patience
        return self._rank0_decides(stop) if self.dist.enabled else stop

    def _recount_patience(self, saved_bad: int) -> tuple[int, float | None]:
        """(bad validations, best) by the scheduled-validation rule, from the validations in the run log up to the
        resumed step; the saved counter and the best recorded metric where the log is absent."""
        try:
            records = read_log(self.run_dir / "log.jsonl")
        except (OSError, ValueError):
            return saved_bad, self.ckpts.best_metric()
        values = {
            r["step"]: self._metric(r)
            for r in records
            if r.get("kind") == "valid" and r.get("step", 0) <= self.step
            and (r["step"] % self.cfg.valid_every == 0 or r["step"] == self.cfg.max_steps)
        }  # fmt: skip
        bad, best = 0, None
        for _, value in sorted(values.items()):
            bad, best = self._patience_step(bad, best, value)
        return bad, best

    def _patience_step(self, bad: int, best: float | None, value: float | None) -> tuple[int, float | None]:
        """(bad validations, best) after one scheduled validation of metric ``value`` (None: no metric, no change)."""
        if value is None:
            return bad, best
        return (0, value) if self.ckpts.better(value, best) else (bad + 1, best)

    def _ranks_agree(self, out_of_time: bool, signum: int) -> tuple[bool, int]:
        """(rank 0's out_of_time, the signal any rank received or 0), the same on every rank (a collective): clocks
        differ, so rank 0's decides the time budget; a signal may reach one rank only, so any rank's counts."""
        t = torch.tensor([float(out_of_time and self.dist.is_main), float(signum)], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t[0].item()), int(t[1].item())

    def _rank0_decides(self, flag: bool) -> bool:
        """Rank 0's value of ``flag`` on every rank (a collective: every rank must call it)."""
        t = torch.tensor([float(flag)], device=self.device)
        torch.distributed.broadcast(t, 0)
        return bool(t.item())


def _check_resumable(run_dir: Path) -> None:
    if not CheckpointManager(run_dir, create=False).checkpoints():
        raise ValueError(
            f"--resume: {run_dir} holds no checkpoint to resume (none under {run_dir / 'checkpoints'}): "
            "check --out, or leave out --resume to start a new run there"
        )


def _launch_rank() -> int:
    """This process's rank as ``torchrun`` announces it (0 outside a distributed launch)."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def train(
    cfg: TrainConfig, run_dir: str | Path, resume: bool = False, quiet: bool = False, overwrite: bool = False
) -> TrainResult:
    """Train a sequence-to-sequence model (see the module docstring); returns a :class:`TrainResult`.

    ``resume`` continues from the run folder's latest checkpoint (a folder without one is an error); without it
    a folder that already holds checkpoints is an error unless ``overwrite``, which deletes them once the new
    run's data and tokenizers have been read and checked. The run folder is locked for the
    whole call (:class:`~adasparse.train.lock.RunLock`): a second run on it fails at once naming this one's PID.
    In a distributed run rank 0 takes the lock before the process group forms, so no rank touches the folder
    before it is held.
    """
    if resume and overwrite:
        raise ValueError(
            "--resume and --overwrite contradict each other: --resume continues the run in --out, "
            "--overwrite deletes it and starts again; give one of them"
        )
    run_dir = Path(run_dir)
    if _complete(run_dir) or (run_dir.parent.name == "checkpoints" and CheckpointManager.step_of(run_dir)):
        raise ValueError(
            f"--out {run_dir} is a checkpoint folder, not a run folder: give the run's folder "
            f"({run_dir.parent.parent if run_dir.parent.name == 'checkpoints' else run_dir.parent} here)"
        )
    if resume and _launch_rank() == 0:  # before the lock creates the folder: a mistyped --out is left alone
        _check_resumable(run_dir)
    with RunLock(run_dir, enabled=_launch_rank() == 0):
        try:
            return _Trainer(cfg, run_dir, resume, quiet, overwrite).fit()
        finally:
            cleanup_distributed()
