"""The ``train`` stage: one MLflow run around the training loop. It resumes an interrupted run of
the same config, logs what the run learnt from (config, params, dataset, fixed noise, real
digits), trains, and closes the run with the final grid, the models and the checkpoint."""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from . import checkpoint, faults, hardware, latents, loop, models, names, runs, tracking
from .config import ConfigError, config_hash, flatten, from_yaml, to_yaml
from .data import CACHE_FILE, as_tensors, prepare
from .figures import sample_grid
from .images import grid_array
from .loop import Interrupted, NonFiniteLoss  # noqa: F401  (what callers of the stage catch)
from .runs import checkpoint_path


@dataclass
class Child:
    """How a run started by a sweep or a seed check joins it: ``parent_run_id`` (the run is its
    child), extra ``tags``, ``on_start(run_id)`` (called once the run exists) and ``on_eval``
    (see :func:`loop.fit`)."""
    parent_run_id: Optional[str] = None
    tags: Optional[dict] = None
    on_eval: Optional[Callable[[int, int, dict], None]] = None
    on_start: Optional[Callable[[str], None]] = None


def stage(cfg: DictConfig, resume: Optional[str] = None, epochs: Optional[int] = None,
          auto_resume: bool = True, nested: bool = False, log: Callable[[str], None] = print,
          child: Optional[Child] = None) -> str:
    """Train ``cfg`` inside an MLflow run; returns the run id.

    ``resume`` continues that run from its last checkpoint with the config stored in it
    (``epochs``, when given, extends or shortens the schedule). Without it, an interrupted run of
    the same config is resumed when ``auto_resume`` is on. A sweep trial or a seed check passes
    ``child``.
    """
    child = child or Child()
    tracking.configure()
    # Under `mlflow run` the run is already chosen (MLFLOW_RUN_ID): never swap in another one.
    if resume is None and auto_resume and not os.environ.get("MLFLOW_RUN_ID"):
        resume = runs.find_interrupted_run(cfg, log)
        if resume:
            log(f"found interrupted run {resume} with this config; resuming it (--fresh starts anew)")
    state = None
    if resume is not None:
        cfg, state = _resumed(cfg, resume, epochs, log)
    # Every computation of the run, the real digits' FLD features included, at the run's thread
    # count: a convolution's sums can round differently on another count, and a resumed run must
    # measure what the uninterrupted one did.
    hardware.set_threads(cfg.train.threads)
    arrays, info = prepare(cfg.data, log=log)
    evaluator = _evaluator(cfg, arrays, info.sha256, log) if cfg.eval.every_epochs else None
    name = None if resume is not None else cfg.tracking.run_name or f"train {cfg.model.arch} s{cfg.seed}"
    with tracking.start_run(cfg.tracking.experiment, name, run_id=resume, nested=nested,
                            parent_run_id=child.parent_run_id, system_metrics=cfg.tracking.system_metrics) as active:
        run_id = active.info.run_id
        tracker = tracking.MlflowTracker(run_id)
        if child.tags:
            tracker.set_tags(child.tags)
        if child.on_start is not None:
            child.on_start(run_id)
        lock = checkpoint.RunLock(checkpoint_path(cfg, run_id).parent)
        if not lock.acquire():
            raise RuntimeError(f"run {run_id} is being trained by another process")
        checkpoint.remove_partial(checkpoint_path(cfg, run_id).parent)
        try:
            if state is None:
                _log_inputs(tracker, cfg, arrays, info)
            try:
                result = loop.fit(cfg, tracker, checkpoint_path(cfg, run_id), resume=state, log=log,
                                  arrays=arrays, evaluation=loop.Evaluation(evaluator, child.on_eval))
            except NonFiniteLoss:
                tracker.set_tags({names.STOP_REASON: "non_finite"})
                raise
            faults.point("trained")
            _close(tracker, cfg, result, first_close=state is None)
        finally:
            lock.release()
    if cfg.tracking.checkpoint_keep == "last":
        # The logged copy is the one kept; resume and evaluate read it from there.
        shutil.rmtree(checkpoint_path(cfg, run_id).parent, ignore_errors=True)
    log(f"run {run_id} finished at step {result.step}")
    return run_id


def _resumed(cfg: DictConfig, run_id: str, epochs: Optional[int], log) -> tuple[DictConfig, dict]:
    """The stored config (with ``epochs`` when given) and checkpoint of the run to resume."""
    state = runs.load_checkpoint(cfg, run_id)
    if state is None:
        raise ConfigError(f"run {run_id} has no checkpoint to resume from "
                          f"(looked in {checkpoint_path(cfg, run_id).parent} and its artifacts)")
    cfg = from_yaml(state["config"])
    if epochs is not None:
        cfg.train.epochs = epochs
    if state["epoch"] >= cfg.train.epochs:
        stored = tracking.get_run(run_id)
        if stored is None or stored.info.status == "FINISHED":
            raise ConfigError(f"run {run_id} already trained {state['epoch']} epochs; pass "
                              f"train.epochs=N with N > {state['epoch']} to train it longer")
        # Its training ended but the process died before the close: the final grid, the
        # models and the run's status are all that is left to do.
        log(f"run {run_id} finished training but was not closed; completing it")
    return cfg, state


def _evaluator(cfg: DictConfig, arrays: dict, data_sha256: str, log):
    from .measure import Evaluator
    from .reference import get_classifier

    tensors = as_tensors(arrays, hardware.pick_device(cfg.train.device))
    classifier, _, _ = get_classifier(cfg, tensors, data_sha256, log)
    return Evaluator(cfg, classifier, tensors)


def _log_inputs(tracker, cfg: DictConfig, arrays: dict, info) -> None:
    """A new run's config, tags, dataset, fixed noise and the real digits its grids are shown beside."""
    tracker.log_params(flatten(cfg))
    tracker.set_tags({names.STAGE: "train", names.CONFIG_HASH: config_hash(cfg), names.HOST: socket.gethostname(),
                      names.DATA_SOURCE: info.source, names.DATA_SHA256: info.sha256})
    tracker.log_text(to_yaml(cfg), names.CONFIG_FILE)
    # What it learnt from, as an input of the run (the UI's dataset column).
    tracker.log_dataset(arrays["train_images"], arrays["train_labels"], name="mnist-train",
                        source=str(info.cache / CACHE_FILE), digest=info.sha256, context="training")
    noise = latents.fixed_noise(loop.N_STYLES, cfg.model.noise_dim, cfg.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / names.FIXED_NOISE_FILE
        np.save(path, noise.numpy())
        tracker.log_artifact(path)
    # Real test digits in the sample grid's layout: what the report compares grids with.
    real = torch.from_numpy(arrays["test_images"][:loop.N_STYLES * cfg.model.code_dim]).unsqueeze(1)
    _log_png(tracker, grid_array(real.float() / 255.0, nrow=loop.N_STYLES), names.REAL_GRID)


def _close(tracker, cfg: DictConfig, result: loop.FitResult, first_close: bool) -> None:
    """The final grid, the models (each once: a resumed close skips those logged) and the checkpoint."""
    from .tracking import serving

    _log_png(tracker, grid_array(sample_grid(result.g, result.noise), nrow=loop.N_STYLES), names.FINAL_GRID)
    if cfg.tracking.log_model:
        for name, module in (("generator", result.g), ("discriminator", result.d)):
            if first_close or not tracker.has_model(name):
                tracker.log_model(models.exportable(module.cpu()), name)
            faults.point(f"{name}_logged")
        if first_close or not tracker.has_model(serving.MODEL_NAME):
            # Servable without this package or unpickling; digits once evaluate maps the codes.
            serving.log_generator(result.g.cpu(), tracker.run_id)
    if cfg.tracking.checkpoint_keep == "last":
        tracker.log_artifact(checkpoint_path(cfg, tracker.run_id), names.CHECKPOINTS_DIR)
        faults.point("checkpoint_logged")
    tracker.set_tags({names.STOP_REASON: "finished"})
    tracker.flush()


def _log_png(tracker, image: np.ndarray, artifact_file: str) -> None:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        Image.fromarray(image).save(path)
        tracker.log_artifact(path, str(Path(artifact_file).parent))
