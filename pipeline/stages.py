"""The main job: data, train, evaluate and report in order, each a child run of one parent run;
and the lab report's set of experiments."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable, Sequence

from omegaconf import DictConfig

from . import data, evaluate, report, tracking, train
from .config import ConfigError, config_hash, load_config, to_yaml


def main(cfg: DictConfig, log: Callable[[str], None] = print) -> dict[str, str]:
    """Run data, train, evaluate and report as nested runs; the parent records the children's
    run ids. The report covers the training run just made (reports/<experiment>/)."""
    with tracking.start_run(cfg.tracking.experiment, cfg.tracking.run_name or "pipeline") as parent:
        tracker = tracking.MlflowTracker(parent.info.run_id)
        tracker.set_tags({"infogan.stage": "pipeline"})
        tracker.log_text(to_yaml(cfg), "config.yaml")
        ids = {"data": data.run(cfg, nested=True, log=log)}
        tracker.set_tags({"infogan.data_run_id": ids["data"]})
        ids["train"] = train.run(cfg, nested=True, log=log)
        tracker.set_tags({"infogan.train_run_id": ids["train"]})
        ids["evaluate"] = evaluate.stage(ids["train"], nested=True, log=log)
        tracker.set_tags({"infogan.evaluate_run_id": ids["evaluate"]})
        with tracking.start_run(cfg.tracking.experiment, "report", nested=True) as child:
            report.build(cfg.tracking.experiment, [ids["train"]], log=log, report_run=child.info.run_id)
            ids["report"] = child.info.run_id
        tracker.set_tags({"infogan.report_run_id": ids["report"]})
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
        found = tracking.find_finished_run(cfg.tracking.experiment, {"infogan.config_hash": config_hash(cfg)})
        if found is not None:
            log(f"{where}: reusing finished run {found.info.run_id}")
            run_id = found.info.run_id
        else:
            log(f"{where}: training ({cfg.model.arch}, {cfg.train.g_loss} G loss, {cfg.train.epochs} epochs)")
            run_id = train.run(cfg, log=log)
        if evaluate.read_mapping(run_id) is None:
            evaluate.stage(run_id, log=log)
        run_ids.append(run_id)
    return report.build(experiments_named.pop(), run_ids, out=out, log=log)
