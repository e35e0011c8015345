"""``infogan gc``: find the working checkpoints nothing needs any more, and remove them on request.

A working checkpoint (``<checkpoint_dir>/<run id>/``) is needed while its run trains or can be
resumed. It is not needed once the run finished (its kept checkpoint, if any, is the logged
one) or the run is deleted or unknown to the tracking store.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from . import checkpoint, runs, tracking
from .config import resolve_path


@dataclass
class Folder:
    run_id: str
    path: Path
    size: int  # bytes
    state: str  # what a person reads in the listing
    removable: bool


def survey(cfg: DictConfig) -> list[Folder]:
    """Every run folder under ``tracking.checkpoint_dir`` with its size and whether it can go."""
    tracking.configure()
    root = resolve_path(cfg.tracking.checkpoint_dir)
    found = []
    for path in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        has_working_copy = (path / checkpoint.CHECKPOINT_FILE).is_file()
        run = tracking.get_run(path.name)
        if checkpoint.RunLock(path).is_held_elsewhere():
            state, removable = "training now", False
        elif run is None:
            state, removable = "no such run in the tracking store", True
        elif run.info.lifecycle_stage == "deleted":
            state, removable = "run deleted", True
        elif run.info.status == "FINISHED":
            state = "finished; " + ("its checkpoint is logged" if runs.checkpoint_logged(run.info.run_id) else
                                    "this is its only checkpoint (evaluate and resume need it)")
            removable = True
        elif has_working_copy:
            state, removable = f"{run.info.status.lower()}; resumable with: infogan train --resume {path.name}", False
        else:
            state, removable = f"{run.info.status.lower()}; stopped before its first checkpoint", True
        found.append(Folder(path.name, path, size, state, removable))
    return found


def collect(cfg: DictConfig, remove: bool = False, log: Callable[[str], None] = print) -> int:
    """List the folders (a dry run), or remove the removable ones; returns the bytes freed (or
    that would be)."""
    folders = survey(cfg)
    if not folders:
        log(f"no working checkpoints under {resolve_path(cfg.tracking.checkpoint_dir)}")
        return 0
    freed = 0
    for folder in folders:
        action = ("removed" if remove else "would remove") if folder.removable else "kept"
        log(f"{folder.run_id}  {folder.size / 1e6:8.1f} MB  {action:12s}  {folder.state}")
        if folder.removable:
            freed += folder.size
            if remove:
                shutil.rmtree(folder.path, ignore_errors=True)
    if remove:
        log(f"freed {freed / 1e6:.1f} MB")
    else:
        log(f"{freed / 1e6:.1f} MB can be freed; run `infogan gc --yes` to remove them")
    return freed
