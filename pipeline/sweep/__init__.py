"""Optuna sweeps: a sweep file (``sweeps/*.yaml``) defines the study; every trial is a training
run nested under one parent MLflow run, reported to the pruner after each in-training evaluation.

One study may be worked on by several processes, on one machine (``--workers N``) or many
(``--storage postgresql+psycopg2://...``). Workers take turns at a lock while they count the
study's trials and start one, so the study gets exactly ``n_trials`` finished trials whatever the
number of workers. A worker that dies leaves a RUNNING trial whose heartbeat stops; any worker
later marks it failed and Optuna's retry callback queues it again, and the retry resumes the
dead trial's MLflow run from its last checkpoint.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from .. import names
from ..config import ConfigError
from .spec import ObjectiveSpec, SweepSpec, base_config, load_spec
from .study import check_storage, default_storage, describe, prepare_study, quiet_experimental, requeue_interrupted
from .summary import best_trial, drop_checkpoints, summarise, write_best
from .worker import work

__all__ = ["ObjectiveSpec", "SweepSpec", "base_config", "best_trial", "check_storage", "default_storage", "describe",
           "drop_checkpoints", "load_spec", "prepare_study", "quiet_experimental", "requeue_interrupted", "stage",
           "summarise", "work", "write_best"]


def stage(path: str | Path, storage: Optional[str] = None, workers: int = 1,
        export_best: Optional[Path] = None, log: Callable[[str], None] = print) -> Optional[Any]:
    """``infogan sweep``: prepare the study, run ``workers`` local workers on it, then log the
    trials table, best params and Optuna's figures to the parent run. Returns the best trial."""
    spec = load_spec(path)
    if workers < 1:
        raise ConfigError(f"--workers is {workers}; it must be >= 1")
    from .. import data, tracking
    from ..hardware import pick_device
    from ..reference import get_classifier

    url = storage or spec.storage or default_storage()
    check_storage(url)
    base = base_config(spec)
    # Data and the reference classifier once, here, so that workers do not race to build them.
    arrays, info = data.prepare(base.data, log=log)
    get_classifier(base, data.as_tensors(arrays, pick_device(base.train.device)), info.sha256, log)
    study, parent = prepare_study(spec, url, log)
    # Under `mlflow run -e sweep` the launcher's run only points at the sweep's parent run (which
    # outlives it when the sweep is resumed by a later command).
    launcher = os.environ.pop("MLFLOW_RUN_ID", None)
    if launcher:
        tracking.MlflowTracker(launcher).set_tags({names.STAGE: "sweep-launcher",
                                                   names.SWEEP_PARENT_RUN_ID: parent,
                                                   names.OPTUNA_STUDY: spec.study_name})
    status = "FAILED"
    try:
        if workers == 1:
            work(spec, url, log=log)
        else:
            _spawn_workers(path, url, workers, log)
        status = "FINISHED"
    except (KeyboardInterrupt, InterruptedError):
        status = "KILLED"
        raise
    finally:
        best = summarise(study, spec, parent, log)
        tracking.end_run(parent, status)
        if status == "KILLED":
            log(f"sweep '{spec.study_name}' interrupted. Run the same command again to go on: "
                f"interrupted trials are retried from their checkpoints")
    if status == "FINISHED" and spec.keep_checkpoints == "best":
        drop_checkpoints(study, spec, best, log)
    if export_best is not None:
        write_best(spec, best, export_best, log)
    return best




def _spawn_workers(path, url: str, workers: int, log: Callable[[str], None]) -> None:
    threads = max(1, (os.cpu_count() or 1) // workers)
    cmd = [sys.executable, "-m", "pipeline", "sweep", str(path), "--storage", url, "--worker",
           "--threads", str(threads)]
    procs = [subprocess.Popen([*cmd, "--worker-name", f"worker-{i}"]) for i in range(workers)]
    log(f"started {workers} worker processes ({threads} torch threads each)")
    try:
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise
    bad = [f"worker-{i} exited {c}" for i, c in enumerate(codes) if c != 0]
    if bad:
        raise RuntimeError("; ".join(bad))
