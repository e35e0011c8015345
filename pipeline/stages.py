"""The data stage; the main job (data, train, evaluate and report in order, each a child run of
one parent run); and the lab report's set of experiments."""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Callable, Sequence

from omegaconf import DictConfig

from . import evaluate, lanes, names, report, runs, tracking, train
from .config import ConfigError, UsageError, config_hash, load_config, to_yaml
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
                out: Path | None = None, workers: int = 1, build_report: bool = True,
                log: Callable[[str], None] = print) -> Path | None:
    """Train (or resume, or reuse) and evaluate every config in ``files`` with every seed, then
    build one report of those runs. Seeds go round the configs (seed 0 of each first), so the
    first runs already cover every experiment. All configs are checked before anything trains.
    With ``workers`` > 1 the runs train that many at a time, each in a process of its own with
    its share of the cores (where a config leaves ``train.threads`` at 0)."""
    if not files:
        raise ConfigError("no experiment configs given (the lab's set is configs/experiments/*.yaml)")
    if workers < 1:
        raise UsageError(f"--workers is {workers}; it must be at least 1")
    threads = lanes.threads_each(workers) if workers > 1 else None
    jobs = []
    for seed in seeds:
        for path in files:
            base = load_config([path], overrides)
            name = base.tracking.run_name or Path(path).stem
            extra = [f"train.threads={threads}"] if threads and not base.train.threads else []
            named = shlex.quote(f"tracking.run_name={name} s{seed}")  # overrides are split at spaces
            jobs.append((path, seed, [*overrides, *extra], load_config([path], [*overrides, *extra, f"seed={seed}", named])))
    experiments_named = {cfg.tracking.experiment for *_, cfg in jobs}
    if len(experiments_named) != 1:
        raise ConfigError(f"the experiment configs log to different experiments "
                          f"({', '.join(sorted(experiments_named))}); one report needs one")
    if workers > 1:
        todo = [(path, seed, job) for path, seed, job, cfg in jobs if _finished_run(cfg) is None]
        log(f"{len(todo)} of {len(jobs)} runs to train, {lanes.describe(workers, threads)}")
        failed = lanes.run([(f"{Path(path).stem} s{seed}",
                             lanes.command("run-experiments", path, *job, "--seeds", str(seed), "--job"))
                            for path, seed, job in todo], workers, log)
        if failed:
            raise lanes.JobsFailed(f"runs that did not finish: {', '.join(failed)}; run the same command "
                                   f"again to resume them")
    run_ids = []
    for number, (path, seed, _, cfg) in enumerate(jobs, start=1):
        run_ids.append(_experiment_run(cfg, f"[{number}/{len(jobs)}] {path}, seed {seed}", log))
    return report.build(experiments_named.pop(), run_ids, out=out, log=log) if build_report else None


def _finished_run(cfg: DictConfig):
    return tracking.find_finished_run(cfg.tracking.experiment, {names.CONFIG_HASH: config_hash(cfg)})


def _experiment_run(cfg: DictConfig, where: str, log: Callable[[str], None]) -> str:
    """The finished, evaluated run of ``cfg``: reused, or trained (or resumed) and evaluated."""
    found = _finished_run(cfg)
    if found is not None:
        log(f"{where}: reusing finished run {found.info.run_id}")
        run_id = found.info.run_id
    else:
        log(f"{where}: training ({cfg.model.arch}, {cfg.train.g_loss} G loss, {cfg.train.epochs} epochs)")
        run_id = train.stage(cfg, log=log)
    if runs.read_mapping(run_id) is None:
        evaluate.stage(run_id, log=log)
    return run_id
