"""Training support: checkpoints (safetensors + JSON, atomic, verified), the run-folder lock and learning-rate
schedules. The training loop itself is :mod:`adasparse.train.trainer` (``adasparse train``); loading a trained
model for use is :mod:`adasparse.train.loading` (``translate``, ``evaluate``, ``analyze``)."""

from .checkpoint import (
    Checkpoint,
    CheckpointManager,
    CorruptCheckpointError,
    capture_rng_state,
    load_checkpoint,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
    verify_checkpoint,
)
from .lock import RunLock, RunLockedError
from .schedule import InverseSqrtSchedule, build_scheduler

__all__ = [
    "Checkpoint",
    "CheckpointManager",
    "CorruptCheckpointError",
    "capture_rng_state",
    "load_checkpoint",
    "resolve_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "verify_checkpoint",
    "RunLock",
    "RunLockedError",
    "InverseSqrtSchedule",
    "build_scheduler",
]
