"""Reading what MLflow holds about the runs a report covers: params, metric histories, the
logged sample grids and evaluation images, and the experiment's sweeps. Nothing else is read."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from ..config import UsageError

# What every training run logs; a run without one of these cannot be reported on.
TRAIN_METRICS = ("loss/d", "loss/g", "loss/info", "prob/d_real", "prob/d_fake_before_g", "prob/d_fake_after_g")
IMAGE_NAME = re.compile(r"^samples\+step\+(\d+)\+")
TRAVERSAL_NAME = re.compile(r"^traversal~c(\d+)\+step\+(\d+)\+")
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

    from mlflow import MlflowClient

    from .. import tracking

    tracking.configure()
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ReportError(f"experiment '{experiment}' does not exist in {tracking.tracking_uri()}; "
                          f"train runs into it first (tracking.experiment={experiment})")
    if run_ids:
        runs = [tracking.get_training_run(run_id) for run_id in run_ids]
    else:
        runs = client.search_runs([exp.experiment_id], max_results=500, order_by=["attributes.start_time ASC"],
                                  filter_string="tags.`infogan.stage` = 'train' and attributes.status = 'FINISHED'")
        if not runs:
            raise ReportError(f"experiment '{experiment}' has no finished training runs to report on")
    _check_metrics(runs)

    folder = Path(folder or tempfile.mkdtemp())
    out = []
    names = [r.info.run_name or r.info.run_id[:8] for r in runs]
    for run, name in zip(runs, names):
        if names.count(name) > 1:
            name = f"{name}-{run.info.run_id[:6]}"
        rows = [(key, m.step, m.value, m.timestamp) for key in sorted(run.data.metrics)
                for m in client.get_metric_history(run.info.run_id, key)]
        history = pd.DataFrame(rows, columns=["key", "step", "value", "timestamp"])
        data = RunData(run.info.run_id, name, dict(run.data.params), history)
        _fetch_images(client, data, folder / run.info.run_id)
        out.append(data)
        log(f"read run {run.info.run_id} ({name}): {len(history)} metric points")
    return out, _collect_sweeps(client, exp.experiment_id, folder / "sweeps")


def _check_metrics(runs) -> None:
    missing = []
    for run in runs:
        lacking = [k for k in TRAIN_METRICS if k not in run.data.metrics]
        if lacking:
            missing.append(f"run {run.info.run_id} ({run.info.run_name}) lacks {', '.join(lacking)}")
    if missing:
        raise ReportError("cannot report on runs missing training metrics:\n  " + "\n  ".join(missing))


def _fetch_images(client, data: RunData, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    steps, traversals = {}, {}
    for item in client.list_artifacts(data.run_id, "images"):
        if not item.path.endswith(".png"):
            continue
        match = IMAGE_NAME.match(Path(item.path).name)
        if match:
            steps[int(match.group(1))] = item.path
        match = TRAVERSAL_NAME.match(Path(item.path).name)
        if match:
            code, step = int(match.group(1)), int(match.group(2))
            if step >= traversals.get(code, (-1, ""))[0]:
                traversals[code] = (step, item.path)
    for code, (_, path) in sorted(traversals.items()):
        data.images[f"traversal_c{code}"] = client.download_artifacts(data.run_id, path, str(folder))
    data.grid_steps = sorted(steps)
    for step in data.grid_steps:  # a few small PNGs per run: every epoch's grid
        data.images[f"step{step}"] = client.download_artifacts(data.run_id, steps[step], str(folder))
    if steps:
        data.images["first"] = data.images[f"step{min(steps)}"]
        data.images["final"] = data.images[f"step{max(steps)}"]
    wanted = (("demo", "eval", "eval/demo.png"), ("confusion", "eval", "eval/confusion.png"),
              ("real", "samples", "samples/real.png"))
    for name, parent, path in wanted:
        if any(a.path == path for a in client.list_artifacts(data.run_id, parent)):
            data.images[name] = client.download_artifacts(data.run_id, path, str(folder))


def _collect_sweeps(client, experiment_id: str, folder: Path) -> dict:
    sweeps = {}
    for run in client.search_runs([experiment_id], filter_string="tags.`infogan.stage` = 'sweep'",
                                  order_by=["attributes.start_time ASC"]):
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        if "trials.csv" not in names:
            continue
        target = folder / run.info.run_id
        target.mkdir(parents=True, exist_ok=True)
        trials = pd.read_csv(client.download_artifacts(run.info.run_id, "trials.csv", str(target)))
        figures = [client.download_artifacts(run.info.run_id, a.path, str(target))
                   for a in client.list_artifacts(run.info.run_id, "optuna") if a.path.endswith(".png")]
        sweeps[run.data.tags.get("optuna.study", run.info.run_id)] = {"trials": trials, "figures": sorted(figures)}
    return sweeps


def read_png(path: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))
