"""Reading what MLflow holds about the runs a report covers: params, metric histories, the
logged sample grids and evaluation images, and the experiment's sweeps. Nothing else is read."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from .. import names, tracking
from ..config import UsageError

# What every training run logs; a run without one of these cannot be reported on.
TRAIN_METRICS = names.CURVE_METRICS
SEED_SUFFIX = re.compile(r"\s+s\d+$")
# Params that do not make two runs different experiments: the seed, where things were stored
# and how many threads trained them.
NOT_THE_EXPERIMENT = ("seed", "tracking.", "data.cache_dir", "data.root", "train.device", "train.threads")


class ReportError(UsageError):
    """The report cannot be built from what is logged; the message names what is missing."""


@dataclass
class RunData:
    run_id: str
    name: str
    params: dict
    history: pd.DataFrame  # columns: key, step, value, timestamp
    # local PNGs: "step<N>" (the sample grid logged at step N), "first", "final", "real" (real
    # test digits in the same layout), "demo", "confusion" (the evaluate stage's), "traversal_c<k>"
    # (the last traversal of continuous code k)
    images: dict = field(default_factory=dict)
    grid_steps: list = field(default_factory=list)  # steps of the logged sample grids

    @property
    def arch(self) -> str:
        return self.params.get("model.arch", "?")

    @property
    def g_loss(self) -> str:
        return self.params.get("train.g_loss", "?")

    @property
    def seed(self) -> str:
        return self.params.get("seed", "?")

    @property
    def variant(self) -> str:
        """The experiment this run is a seed of: its name without a trailing ' s<seed>'."""
        return SEED_SUFFIX.sub("", self.name)

    def setting(self) -> tuple:
        """The params that make it this experiment (every param but the seed and bookkeeping)."""
        return tuple(sorted((k, v) for k, v in self.params.items()
                            if not any(k == p or (p.endswith(".") and k.startswith(p)) for p in NOT_THE_EXPERIMENT)))

    def curve(self, key: str) -> pd.DataFrame:
        return self.history[self.history.key == key].sort_values(["step", "timestamp"], kind="stable")

    def final(self, key: str) -> float:
        """The last value logged for ``key`` (the evaluate stage's, when it ran), or NaN."""
        curve = self.curve(key)
        return float(curve.value.iloc[-1]) if not curve.empty else float("nan")

    @property
    def evaluated(self) -> bool:
        return "demo" in self.images


def variants(runs: Sequence[RunData]) -> dict[str, list[RunData]]:
    """Runs grouped by experiment (their variant name), in order of first appearance."""
    out: dict[str, list[RunData]] = {}
    for run in runs:
        out.setdefault(run.variant, []).append(run)
    return out


def collect(experiment: str, run_ids: Sequence[str] = (), folder: Optional[Path] = None,
            log: Callable[[str], None] = print) -> tuple[list[RunData], dict]:
    """The training runs (``run_ids``, or every finished training run of ``experiment``) with
    their metric histories and images, and the experiment's sweeps (trials tables and figures)."""
    import tempfile

    tracking.configure()
    if tracking.get_experiment(experiment) is None:
        raise ReportError(f"experiment '{experiment}' does not exist in {tracking.tracking_uri()}; "
                          f"train runs into it first (tracking.experiment={experiment})")
    if run_ids:
        runs = [tracking.get_training_run(run_id) for run_id in run_ids]
    else:
        runs = tracking.search_runs(experiment, tracking.stage_filter("train") + " and attributes.status = 'FINISHED'",
                                    order_by=["attributes.start_time ASC"], max_results=500)
        if not runs:
            raise ReportError(f"experiment '{experiment}' has no finished training runs to report on")
    _check_metrics(runs)

    folder = Path(folder or tempfile.mkdtemp())
    out = []
    run_names = [r.info.run_name or r.info.run_id[:8] for r in runs]
    for run, name in zip(runs, run_names):
        if run_names.count(name) > 1:
            name = f"{name}-{run.info.run_id[:6]}"
        rows = [(key, m.step, m.value, m.timestamp) for key in sorted(run.data.metrics)
                for m in tracking.metric_history(run.info.run_id, key)]
        history = pd.DataFrame(rows, columns=["key", "step", "value", "timestamp"])
        data = RunData(run.info.run_id, name, dict(run.data.params), history)
        _fetch_images(data, folder / run.info.run_id)
        out.append(data)
        log(f"read run {run.info.run_id} ({name}): {len(history)} metric points")
    return out, _collect_sweeps(experiment, folder / "sweeps")


def _check_metrics(runs) -> None:
    missing = []
    for run in runs:
        lacking = [k for k in TRAIN_METRICS if k not in run.data.metrics]
        if lacking:
            missing.append(f"run {run.info.run_id} ({run.info.run_name}) lacks {', '.join(lacking)}")
    if missing:
        raise ReportError("cannot report on runs missing training metrics:\n  " + "\n  ".join(missing))


def _fetch_images(data: RunData, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    logged = tracking.image_files(data.run_id)
    for index in range(int(data.params.get("model.continuous_codes", 0) or 0)):
        steps = logged.get(names.traversal(index))
        if steps:  # the last traversal of each continuous code
            data.images[f"traversal_c{index + 1}"] = tracking.download_artifact(data.run_id, steps[max(steps)], folder)
    steps = logged.get(names.SAMPLES, {})
    data.grid_steps = sorted(steps)
    for step in data.grid_steps:  # a few small PNGs per run: every epoch's grid
        data.images[f"step{step}"] = tracking.download_artifact(data.run_id, steps[step], folder)
    if steps:
        data.images["first"] = data.images[f"step{min(steps)}"]
        data.images["final"] = data.images[f"step{max(steps)}"]
    wanted = (("demo", names.DEMO_FIGURE), ("confusion", names.CONFUSION_FIGURE), ("real", names.REAL_GRID))
    for name, path in wanted:
        if path in tracking.list_artifacts(data.run_id, path.rsplit("/", 1)[0]):
            data.images[name] = tracking.download_artifact(data.run_id, path, folder)


def _collect_sweeps(experiment: str, folder: Path) -> dict:
    sweeps = {}
    for run in tracking.search_runs(experiment, tracking.stage_filter("sweep"), order_by=["attributes.start_time ASC"]):
        run_id = run.info.run_id
        if "trials.csv" not in tracking.list_artifacts(run_id):
            continue
        target = folder / run_id
        target.mkdir(parents=True, exist_ok=True)
        trials = pd.read_csv(tracking.download_artifact(run_id, "trials.csv", target))
        figures = [tracking.download_artifact(run_id, path, target)
                   for path in tracking.list_artifacts(run_id, "optuna") if path.endswith(".png")]
        sweeps[run.data.tags.get(names.OPTUNA_STUDY, run_id)] = {"trials": trials, "figures": sorted(figures)}
    return sweeps


def read_png(path: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))
