"""The main job: data, train, evaluate in order, each a child run of one parent run."""
from __future__ import annotations

from typing import Callable

from omegaconf import DictConfig

from . import data, evaluate, tracking, train
from .config import to_yaml


def main(cfg: DictConfig, log: Callable[[str], None] = print) -> dict[str, str]:
    """Run data, train and evaluate as nested runs; the parent records the children's run ids."""
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
    log("pipeline finished: " + ", ".join(f"{stage} run {run_id}" for stage, run_id in ids.items()))
    return ids
