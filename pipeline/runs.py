"""Finding what training left behind: a run's checkpoint (the local working copy or the logged
one), an interrupted run of the same config to resume, and a trained run's networks."""
from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from omegaconf import DictConfig

from . import checkpoint, metrics, models, names, tracking
from .config import UsageError, config_hash, from_yaml, load_config, resolve_path

LOGGED_CHECKPOINT = f"{names.CHECKPOINTS_DIR}/{checkpoint.CHECKPOINT_FILE}"


def checkpoint_path(cfg: DictConfig, run_id: str) -> Path:
    return resolve_path(cfg.tracking.checkpoint_dir) / run_id / checkpoint.CHECKPOINT_FILE


def checkpoint_logged(run_id: str) -> bool:
    """Whether the run has logged a checkpoint as its artifact (nothing is downloaded)."""
    try:
        logged = tracking.list_artifacts(run_id, names.CHECKPOINTS_DIR)
    except Exception:
        return False
    return any(path.endswith(f"/{checkpoint.CHECKPOINT_FILE}") for path in logged)


def has_checkpoint(cfg: DictConfig, run_id: str) -> bool:
    """Whether the run has a local checkpoint or a logged one (nothing is downloaded)."""
    return checkpoint_path(cfg, run_id).is_file() or checkpoint_logged(run_id)


def load_checkpoint(cfg: DictConfig, run_id: str) -> Optional[dict]:
    """The run's checkpoint: the local working copy, else the logged one (downloaded to a
    temporary folder, so no second copy stays on disk); None when it has neither."""
    local = checkpoint_path(cfg, run_id)
    if local.is_file():
        return checkpoint.load(local)
    with tracking.downloaded(run_id, LOGGED_CHECKPOINT, missing=(Exception,)) as path:
        return None if path is None else checkpoint.load(path)


def find_interrupted_run(cfg: DictConfig, log: Callable[[str], None] = print) -> Optional[str]:
    """A run of the same config that stopped before finishing, has a checkpoint, and no live
    process holds: what ``infogan train`` resumes automatically after a crash.

    A run of this config and this machine still marked RUNNING that no process holds and that
    has no checkpoint (killed before its first epoch ended) cannot be resumed: it is ended
    FAILED with the reason as a tag, and the user is told."""
    runs = tracking.search_runs(
        cfg.tracking.experiment,
        tracking.tag_filter({names.CONFIG_HASH: config_hash(cfg)}) + " and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=20)
    found = None
    for run in runs:
        if run.data.tags.get(names.STOP_REASON) == "non_finite":
            continue
        folder = checkpoint_path(cfg, run.info.run_id).parent
        if checkpoint.RunLock(folder).is_held_elsewhere():
            continue
        if has_checkpoint(cfg, run.info.run_id):
            found = found or run.info.run_id
        elif run.info.status == "RUNNING" and run.data.tags.get(names.HOST) == socket.gethostname():
            tracking.end_run(run.info.run_id, "FAILED", reason="killed before its first checkpoint")
            log(f"run {run.info.run_id} was left RUNNING by a process that died before its first "
                "checkpoint; nothing to resume, so it is now marked FAILED")
    return found


@dataclass
class TrainedRun:
    run_id: str
    cfg: DictConfig
    g: models.Generator
    d: Optional[models.Discriminator]
    step: int


def load_run(run_id: str, log: Callable[[str], None] = print) -> TrainedRun:
    """A training run's generator and discriminator/Q, from its checkpoint (local or logged)."""
    tracking.configure()
    run = tracking.get_training_run(run_id)
    # Only the checkpoint folder is needed before the checkpoint (which holds the whole config):
    # the run's logged param, so no artifact (config.yaml may be gone) is downloaded for it.
    folder = run.data.params.get("tracking.checkpoint_dir")
    cfg = load_config([], [f"tracking.checkpoint_dir={folder}"] if folder else [])
    state = load_checkpoint(cfg, run_id)
    if state is None:
        raise UsageError(f"run {run_id} has no checkpoint (local or logged); it never finished an epoch")
    cfg = from_yaml(state["config"])
    g, d = models.build(cfg.model)
    # G's moving average when the run kept one (train.ema_decay): the generator it evaluated.
    g.load_state_dict(state["g"] if state.get("g_ema") is None else state["g_ema"])
    d.load_state_dict(state["d"])
    return TrainedRun(run_id, cfg, g.eval(), d.eval(), state["step"])


def load_model(uri: str, what: str = "model", hint: str = ""):
    """A logged or registered model of the project (a generator or Q's classifier) as a pyfunc
    model; UsageError in one line, naming ``what`` and ``uri``, when it cannot be loaded."""
    from .tracking import serving

    tracking.configure()
    try:
        return serving.load(uri)
    except (tracking.TrackingError, OSError) as e:
        raise UsageError(f"cannot load the {what} {uri}: {str(e).splitlines()[0]}{hint}") from None


def read_mapping(run_id: str) -> Optional[metrics.CodeMapping]:
    """The code -> digit mapping the evaluate stage logged, or None before it ran."""
    text = tracking.read_text(run_id, names.MAPPING_FILE)
    return None if text is None else metrics.CodeMapping.from_dict(json.loads(text))
