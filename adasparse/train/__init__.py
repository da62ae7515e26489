"""Training support: checkpoints (safetensors + JSON, atomic) and learning-rate schedules.

The training loop (``loop.py``) builds on these."""

from .checkpoint import (
    Checkpoint,
    CheckpointManager,
    capture_rng_state,
    load_checkpoint,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .schedule import InverseSqrtSchedule, build_scheduler

__all__ = [
    "Checkpoint",
    "CheckpointManager",
    "capture_rng_state",
    "load_checkpoint",
    "resolve_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "InverseSqrtSchedule",
    "build_scheduler",
]
