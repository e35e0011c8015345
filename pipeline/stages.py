"""The data stage; the main job (data, train, evaluate and report in order, each a child run of
one parent run); and the lab report's set of experiments."""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Callable, Sequence

from omegaconf import DictConfig

from . import evaluate, names, report, runs, tracking, train
from .config import ConfigError, config_hash, load_config, to_yaml
from .data import CACHE_FILE, prepare


def data(cfg: DictConfig, nested: bool = False, log: Callable[[str], None] = print) -> str:
    """The ``data`` stage: prepare the cache and log what was used (source, checksum, counts)
    as an MLflow dataset input plus tags; returns the run id."""
    arrays, info = prepare(cfg.data, log=log)
    with tracking.start_run(cfg.tracking.experiment, "data", nested=nested) as active:
        tracker = tracking.MlflowTracker(active.info.run_id)
        tracker.set_tags({names.STAGE: "data", names.DATA_SOURCE: info.source,
                          names.DATA_SHA256: info.sha256, names.DATA_CACHE: str(info.cache)})
        tracker.log_params({"data.train_images": len(arrays["train_labels"]),
                            "data.test_images": len(arrays["test_labels"])})
        for split in ("train", "test"):
            tracker.log_dataset(arrays[f"{split}_images"], arrays[f"{split}_labels"], name=f"mnist-{split}",
                                source=str(info.cache / CACHE_FILE), digest=info.sha256, context=split)
        tracker.log_text(json.dumps({"source": info.source, "sha256": info.sha256,
                                     "train_counts": list(info.train_counts),
                                     "test_counts": list(info.test_counts)}, indent=2), names.DATA_MANIFEST_FILE)
        log(f"MNIST ready: {len(arrays['train_labels'])} train / {len(arrays['test_labels'])} test "
            f"images from {info.source}")
        return active.info.run_id


def main(cfg: DictConfig, log: Callable[[str], None] = print) -> dict[str, str]:
    """Run data, train, evaluate and report as nested runs; the parent records the children's
    run ids. The report covers the training run just made (reports/<experiment>/), in the
    experiment the parent run is in: ``mlflow run --experiment-name`` may name another than
    ``tracking.experiment``."""
    with tracking.start_run(cfg.tracking.experiment, cfg.tracking.run_name or "pipeline") as parent:
        experiment = tracking.experiment_name(parent.info.experiment_id)
        tracker = tracking.MlflowTracker(parent.info.run_id)
        tracker.set_tags({names.STAGE: "pipeline"})
        tracker.log_text(to_yaml(cfg), names.CONFIG_FILE)
        ids = {"data": data(cfg, nested=True, log=log)}
        tracker.set_tags({names.stage_run_id("data"): ids["data"]})
        ids["train"] = train.stage(cfg, nested=True, log=log)
        tracker.set_tags({names.stage_run_id("train"): ids["train"]})
        ids["evaluate"] = evaluate.stage(ids["train"], nested=True, log=log)
        tracker.set_tags({names.stage_run_id("evaluate"): ids["evaluate"]})
        with tracking.start_run(experiment, "report", nested=True) as child:
            report.build(experiment, [ids["train"]], log=log, report_run=child.info.run_id)
            ids["report"] = child.info.run_id
        tracker.set_tags({names.stage_run_id("report"): ids["report"]})
    log("pipeline finished: " + ", ".join(f"{stage} run {run_id}" for stage, run_id in ids.items()))
    return ids


def experiments(files: Sequence[str], overrides: Sequence[str] = (), seeds: Sequence[int] = (0,),
                out: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """Train (or resume, or reuse) and evaluate every config in ``files`` with every seed, then
    build one report of those runs. Seeds go round the configs (seed 0 of each first), so the
    first runs already cover every experiment. All configs are checked before anything trains."""
    if not files:
        raise ConfigError("no experiment configs given (the lab's set is configs/experiments/*.yaml)")
    jobs = []
    for seed in seeds:
        for path in files:
            name = load_config([path], overrides).tracking.run_name or Path(path).stem
            named = shlex.quote(f"tracking.run_name={name} s{seed}")  # overrides are split at spaces
            jobs.append((path, seed, load_config([path], [*overrides, f"seed={seed}", named])))
    experiments_named = {cfg.tracking.experiment for _, _, cfg in jobs}
    if len(experiments_named) != 1:
        raise ConfigError(f"the experiment configs log to different experiments "
                          f"({', '.join(sorted(experiments_named))}); one report needs one")
    run_ids = []
    for number, (path, seed, cfg) in enumerate(jobs, start=1):
        where = f"[{number}/{len(jobs)}] {path}, seed {seed}"
        found = tracking.find_finished_run(cfg.tracking.experiment, {names.CONFIG_HASH: config_hash(cfg)})
        if found is not None:
            log(f"{where}: reusing finished run {found.info.run_id}")
            run_id = found.info.run_id
        else:
            log(f"{where}: training ({cfg.model.arch}, {cfg.train.g_loss} G loss, {cfg.train.epochs} epochs)")
            run_id = train.stage(cfg, log=log)
        if runs.read_mapping(run_id) is None:
            evaluate.stage(run_id, log=log)
        run_ids.append(run_id)
    return report.build(experiments_named.pop(), run_ids, out=out, log=log)
