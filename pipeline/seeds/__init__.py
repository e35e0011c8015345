"""The seed check (``infogan seeds``): one config trained on a list of seeds, every run a child of
one parent MLflow run and evaluated at the evaluate stage's budget, then a table of each seed's
figures with their mean, standard deviation and worst case, printed and logged to the parent.

A GAN's training path forks on tiny numeric differences (another seed, thread count or CPU), so
a recipe is judged by its worst seed, not its mean. Running the same command again goes on where
it stopped: finished children are reused, an interrupted one resumes from its checkpoint.
"""
from __future__ import annotations

import hashlib
import os
import shlex
from pathlib import Path
from typing import Callable, Optional, Sequence

from omegaconf import DictConfig

from .. import lanes, names, tracking
from ..config import UsageError, config_hash, flatten, load_config, to_yaml
from .table import FIGURES, Bar, SeedRow, SeedTable

__all__ = ["EXPERIMENT", "FIGURES", "Bar", "SeedRow", "SeedTable", "configs", "parse_seeds", "read_table",
           "run_seed", "stage", "variant", "worker"]
EXPERIMENT = "seed-check"


def parse_seeds(text: str) -> list[int]:
    """``"100-104"``, ``"0,2,7"`` or both (``"0-2,7"``) as a list of distinct seeds in order."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            first, dash, last = part.strip().partition("-")
            span = range(int(first), int(last) + 1) if dash else [int(first)]
            if dash and not span:
                raise ValueError
            seeds += [s for s in span if s not in seeds]
    except ValueError:
        raise UsageError(f"--seeds takes whole numbers and ranges, e.g. 100-104 or 0,2,7; not {text!r}") from None
    return seeds


def configs(files: Sequence[str], overrides: Sequence[str], seeds: Sequence[int], experiment: str,
            threads: Optional[int] = None) -> dict[int, DictConfig]:
    """Each seed's config: the files and overrides, the seed, the experiment, a run name with the
    seed, and ``threads`` torch threads where the config leaves them to the machine (0)."""
    base = load_config(files, overrides)
    name = variant(files, base)
    extra = [f"tracking.experiment={experiment}"]
    if threads and not base.train.threads:
        extra.append(f"train.threads={threads}")
    # load_config splits overrides at spaces (MLproject passes them as one string): quote the name.
    return {seed: load_config(files, [*overrides, *extra, f"seed={seed}", shlex.quote(f"tracking.run_name={name} s{seed}")])
            for seed in seeds}


def variant(files: Sequence[str], cfg: DictConfig) -> str:
    """The name of what is checked: the config's run name, else its last file's name."""
    return cfg.tracking.run_name or (Path(files[-1]).stem if files else "default")


def stage(files: Sequence[str], overrides: Sequence[str], seeds: Sequence[int], experiment: str = EXPERIMENT,
          workers: int = 1, bar: Bar = Bar(), log: Callable[[str], None] = print) -> SeedTable:
    """``infogan seeds``: train (or resume, or reuse) and evaluate the config on every seed as
    children of one parent run, ``workers`` seeds at a time; log and return the table."""
    if workers < 1:
        raise UsageError(f"--workers is {workers}; it must be at least 1")
    if not seeds:
        raise UsageError("--seeds names no seed")
    threads = lanes.threads_each(workers) if workers > 1 else None
    cfgs = configs(files, overrides, seeds, experiment, threads)
    base = cfgs[seeds[0]]
    from .. import data
    from ..hardware import pick_device
    from ..reference import get_classifier

    tracking.configure()
    launcher = os.environ.pop("MLFLOW_RUN_ID", None)  # under `mlflow run -e seeds`: it points at the parent
    # Data and the reference classifier once, here, so that workers do not race to build them.
    arrays, info = data.prepare(base.data, log=log)
    get_classifier(base, data.as_tensors(arrays, pick_device(base.train.device)), info.sha256, log)
    parent = _parent(cfgs, files, overrides, log)
    if launcher:
        tracking.MlflowTracker(launcher).set_tags({names.STAGE: "seeds-launcher", names.SEEDS_PARENT_RUN_ID: parent})
    log(f"seed check of {variant(files, load_config(files, overrides))} on seeds {', '.join(map(str, seeds))}: "
        f"parent run {parent} in experiment '{experiment}'"
        + (f", {workers} seeds at a time on {threads} thread(s) each" if workers > 1 else ""))
    status = "FAILED"
    try:
        if workers == 1:
            for seed in seeds:
                run_seed(cfgs[seed], parent, log=log)
        else:
            _spawn(files, overrides, seeds, experiment, workers, threads, parent, log)
        status = "FINISHED"
    except (KeyboardInterrupt, InterruptedError):
        status = "KILLED"
        raise
    finally:
        table = read_table(cfgs, parent, bar)
        _log_table(parent, table)
        tracking.end_run(parent, status)
        if status == "KILLED":
            log("seed check interrupted; run the same command again to go on (finished seeds are kept, "
                "an interrupted one resumes from its checkpoint)")
    _print(table, base, log)
    return table


def _parent(cfgs: dict[int, DictConfig], files: Sequence[str], overrides: Sequence[str], log) -> str:
    """The parent run of this config and seed list: found again (and reopened) or made."""
    base = cfgs[next(iter(cfgs))]
    key = hashlib.sha256(" ".join(config_hash(cfg) for cfg in cfgs.values()).encode()).hexdigest()[:16]
    experiment = base.tracking.experiment
    found = tracking.search_runs(experiment, tracking.tag_filter({names.SEEDS_KEY: key}),
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if found:
        run_id = found[0].info.run_id
        tracking.mark_running(run_id)
        log(f"going on with the seed check of run {run_id}")
        return run_id
    seeds = ",".join(map(str, cfgs))
    run_id = tracking.new_run(experiment, f"seeds {variant(files, load_config(files, overrides))}", {names.STAGE: "seeds", names.SEEDS_KEY: key})
    tracker = tracking.MlflowTracker(run_id)
    params = {k: v for k, v in flatten(base).items() if k not in ("seed", "tracking.run_name")}
    tracker.log_params({**params, "seeds": seeds, "seeds.configs": " ".join(files) or "(defaults)",
                        "seeds.overrides": " ".join(overrides) or "(none)"})
    tracker.log_text(to_yaml(base), names.CONFIG_FILE)
    return run_id


def run_seed(cfg: DictConfig, parent: str, log: Callable[[str], None] = print) -> Optional[str]:
    """Train (or reuse, or resume) and evaluate one seed's run as a child of ``parent``; returns
    its run id. A seed whose loss turns non-finite is a result of the check, not its end: it is
    left FAILED and the table says so."""
    from .. import evaluate, train
    from ..loop import NonFiniteLoss

    found = _child(cfg, parent, finished=True)
    if found is not None:
        run_id = found.info.run_id
        log(f"seed {cfg.seed}: reusing finished run {run_id}")
    else:
        log(f"seed {cfg.seed}: training ({cfg.model.arch}, {cfg.train.epochs} epochs)")
        try:
            run_id = train.stage(cfg, log=log, child=train.Child(parent))
        except NonFiniteLoss as e:
            log(f"seed {cfg.seed}: {e}")
            return None
    if tracking.get_run(run_id).data.tags.get(names.EVALUATED_STEP) is None:
        evaluate.evaluate_run(run_id, log=log)
    return run_id


def _child(cfg: DictConfig, parent: str, finished: bool):
    """The newest child run of ``parent`` trained with ``cfg`` (only FINISHED ones when ``finished``)."""
    where = tracking.tag_filter({names.CONFIG_HASH: config_hash(cfg), names.PARENT_RUN_ID: parent})
    if finished:
        where += " and attributes.status = 'FINISHED'"
    found = tracking.search_runs(cfg.tracking.experiment, where, order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None


def read_table(cfgs: dict[int, DictConfig], parent: str, bar: Bar) -> SeedTable:
    """Each seed's row as the store holds it: the evaluate stage's figures of its run."""
    rows = []
    for seed, cfg in cfgs.items():
        run = _child(cfg, parent, finished=False)
        if run is None:
            rows.append(SeedRow(seed, None, {}, "not trained"))
        elif run.info.status != "FINISHED":
            reason = run.data.tags.get(names.STOP_REASON)
            rows.append(SeedRow(seed, run.info.run_id, {},
                                "diverged" if reason == "non_finite" else run.info.status.lower()))
        elif run.data.tags.get(names.EVALUATED_STEP) is None:
            rows.append(SeedRow(seed, run.info.run_id, {}, "not evaluated"))
        else:
            figures = {k: run.data.metrics[k] for k in FIGURES if k in run.data.metrics}
            rows.append(SeedRow(seed, run.info.run_id, figures, "evaluated"))
    return SeedTable(parent, rows, bar)


def _log_table(parent: str, table: SeedTable) -> None:
    tracker = tracking.MlflowTracker(parent)
    tracker.log_metrics(table.metrics(), step=0)
    tracker.log_text(table.markdown(), names.SEEDS_TABLE_MD)
    tracker.log_text(table.csv(), names.SEEDS_TABLE_CSV)
    worst = table.worst_seed()
    tags = {names.SEEDS_PASSED_TAG: f"{table.passed()} of {len(table.rows)}"}
    if worst is not None:
        tags[names.SEEDS_WORST] = str(worst.seed)
    tracker.set_tags(tags)
    tracker.flush()


def _print(table: SeedTable, base: DictConfig, log) -> None:
    log("")
    for line in table.markdown().splitlines():
        log(line)
    worst = table.worst_seed()
    log(f"\n{table.passed()} of {len(table.rows)} seeds meet the bar ({table.bar})"
        + (f"; the worst seed is {worst.seed}" + (f" (generated accuracy {worst.figures[names.GEN_ACCURACY]:.4f})"
                                                    if worst.status == "evaluated" else f" ({worst.status})")
           if worst is not None else "") + ".")
    log(f"parent run {table.parent_run_id}; in the MLflow UI open the experiment '{base.tracking.experiment}', "
        f"tick the seeds' runs and press Compare")


def _spawn(files: Sequence[str], overrides: Sequence[str], seeds: Sequence[int], experiment: str, workers: int,
           threads: int, parent: str, log) -> None:
    """Each seed in a process of its own (``lanes``), ``workers`` at a time."""
    base = ["seeds", *sum((["-c", f] for f in files), []), "--experiment", experiment,
            "--worker-threads", str(threads), "--parent-run", parent, *overrides]
    failed = lanes.run([(f"seed {seed}", lanes.command(*base, "--seeds", str(seed))) for seed in seeds], workers, log)
    if failed:
        log("worker processes failed: " + ", ".join(failed) + "; the table shows what they left")


def worker(files: Sequence[str], overrides: Sequence[str], seed: int, experiment: str, threads: int,
           parent: str, log: Callable[[str], None] = print) -> None:
    """One seed of a seed check started by :func:`stage` with several workers."""
    tracking.configure()
    run_seed(configs(files, overrides, [seed], experiment, threads)[seed], parent, log=log)
