"""Atomic save and load of everything a resume needs, and a lock that marks a run as live."""
from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from . import faults

CHECKPOINT_FILE = "last.pt"


def save(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the old one:
    a crash at any moment leaves either the previous checkpoint or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        faults.point("checkpoint_written")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_partial(folder: Path) -> None:
    """Remove the temporary files of writes that a crash cut off (the checkpoint itself is only
    ever replaced by the atomic rename in :func:`save`, so it is whole)."""
    for tmp in folder.glob(f"{CHECKPOINT_FILE}*.tmp"):
        tmp.unlink(missing_ok=True)


def load(path: Path) -> dict[str, Any]:
    # weights_only: a checkpoint holds tensors, numbers and strings; refuse anything executable.
    return torch.load(path, map_location="cpu", weights_only=True)


class RunLock:
    """An exclusive lock file held while a process trains a run, so that auto-resume never
    picks up a run that another live process is still writing."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "lock"
        self._file = None

    def acquire(self) -> bool:
        self._file = open(self.path, "w")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            self._file.close()
            self._file = None
            return False

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def is_held_elsewhere(self) -> bool:
        if self.acquire():
            self.release()
            return False
        return True
