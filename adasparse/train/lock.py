"""An exclusive lock on a run folder, held for the life of a training run.

Two ``adasparse train`` on the same ``--out`` would interleave their logs and overwrite each other's checkpoints
(``--overwrite`` would delete a live run's files). :class:`RunLock` takes an advisory ``flock`` on
``<run>/.train.lock`` and writes the holder's PID, host and start time into it; a second run fails at once with
:class:`RunLockedError` naming that PID.

Released on any exit: :meth:`RunLock.release` (and the ``with`` block) empties the file and unlocks it, and
when a process dies without running it (SIGKILL, a crash, power loss) the kernel drops the ``flock`` with the
process. The file then still names the dead holder: the next run takes the lock over and says so (a log
warning). The file is never deleted: deleting a lock file races with a process that has just opened it.

Distributed runs: only rank 0 locks (:func:`adasparse.train.trainer.train` does it before the process group is
formed, so the other ranks cannot touch the folder before rank 0 holds it). ``flock`` does not reach across
machines on every network file system; there the lock guards one machine only. Without ``fcntl`` (Windows)
the lock is a no-op.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunLock", "RunLockedError", "LOCK_FILE"]

LOCK_FILE = ".train.lock"
log = logging.getLogger(__name__)


class RunLockedError(RuntimeError):
    """The run folder is locked by another live process; ``holder`` is what that process wrote (pid, host...)."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None):
        super().__init__(message)
        self.holder = holder or {}


def _describe(holder: dict[str, Any]) -> str:
    parts = [f"PID {holder.get('pid', '?')}"]
    if holder.get("host"):
        parts.append(f"on {holder['host']}")
    if holder.get("started"):
        parts.append(f"since {holder['started']}")
    return " ".join(parts)


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 4096):
        raw += chunk
    if not raw.strip():
        return {}
    try:
        info = json.loads(raw.decode("utf-8", errors="replace"))
    except json.JSONDecodeError:
        return {"pid": "?", "note": "unreadable lock file"}
    return info if isinstance(info, dict) else {}


class RunLock:
    """``with RunLock(run_dir): ...`` holds ``run_dir/.train.lock`` exclusively (see the module docstring).

    Args:
        run_dir: the run folder (created if missing).
        enabled: ``False`` makes every method a no-op (other ranks of a distributed run).
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.enabled = enabled and fcntl is not None
        self._fd: int | None = None
        self.previous: dict[str, Any] | None = None  # a dead holder whose lock was taken over
        self._created = False  # acquire made the folder (removed again on release if nothing else was written)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunLockedError` naming its holder; never waits."""
        if not self.enabled or self._fd is not None:
            return self
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise NotADirectoryError(f"--out {self.run_dir} is a file, not a folder")
        self._created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{self.run_dir} is in use by another training run ({_describe(holder)}; lock file {self.path}): "
                "wait for it to finish or stop it, or choose another --out",
                holder,
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            stale = _read_holder(fd)
            if stale:
                self.previous = stale
                log.warning(
                    "%s: taking over the lock of %s, which ended without releasing it (killed or crashed)",
                    self.run_dir,
                    _describe(stale),
                )
            me = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(me) + "\n").encode("utf-8"))
            os.fsync(fd)
        except BaseException:
            os.close(fd)  # closing drops the flock
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the lock file (a clean exit leaves no stale holder) and unlock it. A folder this lock created
        that holds nothing else (a run that failed before writing anything) is removed with it."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            if self._created and [p.name for p in self.run_dir.iterdir()] == [LOCK_FILE]:
                self.path.unlink()  # still holding the flock: no other run can have taken it meanwhile
                self.run_dir.rmdir()
        except OSError:  # a read-only or vanished file: the unlock below still happens
            pass
        finally:
            os.close(fd)  # drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
