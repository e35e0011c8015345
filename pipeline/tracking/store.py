"""The tracking store: where it is, its experiments and runs, and reading back what runs logged.

Default store: ``sqlite:///<project>/mlflow.db`` with artifacts in ``<project>/mlartifacts``;
``MLFLOW_TRACKING_URI`` points everything at a server instead.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from .. import names
from ..config import UsageError, project_dir

# MLflow's UI opens an experiment in the view this tag names; without it, MLflow 3 may infer the
# GenAI view (traces, judges, prompts) for an experiment of training runs.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# Any failure the store reports (no such run, artifact or model; a refused request).
TrackingError = MlflowException


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_dir() / 'mlflow.db'}"


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:")


class TrackingUnreachable(RuntimeError):
    """The tracking server named by MLFLOW_TRACKING_URI does not answer."""


_answered: set[str] = set()


def check_server(uri: str, timeout: float = 5.0) -> None:
    """An HTTP tracking server must answer its health check within ``timeout`` seconds: without
    this, MLflow's client retries for minutes before its first error."""
    if not uri.startswith(("http://", "https://")) or uri in _answered:
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        pass  # it answered (an authenticating proxy may refuse /health); requests will say more
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise TrackingUnreachable(f"the MLflow tracking server {uri} does not answer ({reason}); start it, "
                                  "or unset MLFLOW_TRACKING_URI to use the local store ./mlflow.db") from None
    _answered.add(uri)


# Seconds between samples of a training run's system metrics, unless the environment's
# MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL says otherwise (a run shorter than one interval logs none).
SYSTEM_METRICS_INTERVAL = 10.0
# Its monitor announces every start and stop; the metrics themselves are what matters.
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)


def configure() -> str:
    """Point MLflow at the project's store (or ``MLFLOW_TRACKING_URI``, checked to answer);
    returns the URI."""
    uri = tracking_uri()
    check_server(uri)
    mlflow.set_tracking_uri(uri)
    if not os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"):
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL)
    return uri


def ensure_experiment(name: str) -> str:
    """The experiment's id, creating it with artifacts beside the local store when needed (once,
    when processes started side by side on a new store race to create it). Either way it is
    marked as a model-training experiment, so the MLflow UI opens on runs and metrics."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment.experiment_id
    location = None
    if is_local_store(mlflow.get_tracking_uri()):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        location = (project_dir() / "mlartifacts" / safe).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location,
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except MlflowException as error:
        # Runs started side by side on a new store race to create it: the loser uses the winner's.
        made = client.get_experiment_by_name(name) if error.error_code == "RESOURCE_ALREADY_EXISTS" else None
        if made is None:
            raise
        return made.experiment_id


@contextlib.contextmanager
def start_run(experiment: str, run_name: Optional[str] = None, run_id: Optional[str] = None,
              nested: bool = False, tags: Optional[dict] = None,
              parent_run_id: Optional[str] = None, system_metrics: bool = False) -> Iterator[Any]:
    """The run a stage logs into, ended FINISHED, FAILED on an error or KILLED on Ctrl-C (an
    exception may name its own end state in a ``run_status`` attribute: a pruned trial's KILLED).

    ``run_id`` resumes that run (renamed ``run_name`` when one is given: a run that ``mlflow run``
    opened has a random name). ``parent_run_id`` opens a new child of that run (a sweep trial;
    the parent need not be active in this process). Otherwise a stage already inside a run (a
    caller's, or the one ``mlflow run`` opened and passed as ``MLFLOW_RUN_ID``) logs into it;
    ``nested`` opens a child of the active run in the parent's experiment; else a new run in
    ``experiment``. ``system_metrics`` samples CPU, memory, disk and network (and GPU where
    MLflow can read it) every SYSTEM_METRICS_INTERVAL seconds (or the environment's interval)
    into the run's system/ metrics.
    """
    configure()
    active = mlflow.active_run()
    if parent_run_id is not None and run_id is None:
        experiment_id = MlflowClient().get_run(parent_run_id).info.experiment_id
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                               parent_run_id=parent_run_id, tags=tags, log_system_metrics=system_metrics)
        yield from _ended(run)
        return
    if run_id is None and not nested and active is not None:
        yield active
        return
    if run_id is None and not nested and os.environ.get("MLFLOW_RUN_ID"):
        # Taken out of the environment, as MLflow does, so nested runs do not reopen it.
        run_id = os.environ.pop("MLFLOW_RUN_ID")
    if run_id is not None:
        run = mlflow.start_run(run_id=run_id, nested=active is not None, tags=tags,
                               log_system_metrics=system_metrics)
        if run_name and run.info.run_name != run_name:
            mlflow.set_tag("mlflow.runName", run_name)
    else:
        experiment_id = active.info.experiment_id if nested and active else ensure_experiment(experiment)
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=nested, tags=tags,
                               log_system_metrics=system_metrics)
    yield from _ended(run)


def _ended(run) -> Iterator[Any]:
    try:
        yield run
    except (KeyboardInterrupt, InterruptedError):
        mlflow.end_run("KILLED")
        raise
    except BaseException as e:
        mlflow.end_run(getattr(e, "run_status", "FAILED"))
        raise
    else:
        mlflow.end_run("FINISHED")


def new_run(experiment: str, run_name: str, tags: dict[str, Any]) -> str:
    """A top-level run created outside the fluent API (so it is never nested in an active run);
    end it with :func:`end_run`. Returns its id."""
    configure()
    run = MlflowClient().create_run(ensure_experiment(experiment), run_name=run_name,
                                    tags={k: param_value(v) for k, v in tags.items()})
    return run.info.run_id


def end_run(run_id: str, status: str, reason: Optional[str] = None) -> None:
    """End a run from outside it; ``reason`` goes to the tag infogan.stop_reason."""
    client = MlflowClient()
    if reason:
        client.set_tag(run_id, names.STOP_REASON, reason)
    client.set_terminated(run_id, status)


def get_run(run_id: str):
    """The run, or None when the store has no such run."""
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException:
        return None


def get_training_run(run_id: str):
    """The training run ``run_id``; a UsageError when the store has no such run or it is another stage's."""
    run = get_run(run_id)
    if run is None:
        raise UsageError(f"no run {run_id!r} in the tracking store {tracking_uri()}")
    if run.data.tags.get(names.STAGE) != "train":
        raise UsageError(f"run {run_id} is not a training run (stage: "
                         f"{run.data.tags.get(names.STAGE, 'unknown')}); pass the train run's id")
    return run


def experiment_name(experiment_id: str) -> str:
    return MlflowClient().get_experiment(experiment_id).name


def find_finished_run(experiment: str, tags: dict[str, str]):
    """The newest FINISHED run of ``experiment`` carrying all ``tags``, or None."""
    runs = search_runs(experiment, tag_filter(tags) + " and attributes.status = 'FINISHED'",
                       order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def read_text(run_id: str, artifact_file: str) -> Optional[str]:
    """A text artifact of the run, or None when it has none by that name."""
    with downloaded(run_id, artifact_file) as path:
        return None if path is None else path.read_text()


def load_state_dict_model(module, run_id: str, artifact_file: str):
    """``module`` with the weights stored as the run's artifact (a ``torch.save``d state dict)."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifact(run_id, artifact_file, Path(tmp))
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return module


def param_value(value: Any) -> str:
    return "null" if value is None else str(value)


# --- reading back what runs logged ---------------------------------------------------------------

def get_experiment(name: str):
    """The experiment named ``name``, or None."""
    return MlflowClient().get_experiment_by_name(name)


def artifact_location(experiment_id: str) -> str:
    return MlflowClient().get_experiment(experiment_id).artifact_location


def search_runs(experiment: str, where: str = "", order_by: Optional[list[str]] = None,
                max_results: int = 1000) -> list:
    """Runs of ``experiment`` matching the filter ``where``; none when the experiment does not exist."""
    found = get_experiment(experiment)
    if found is None:
        return []
    return MlflowClient().search_runs([found.experiment_id], filter_string=where, order_by=order_by,
                                      max_results=max_results)


def tag_filter(tags: dict[str, str]) -> str:
    """The search filter for runs carrying every one of ``tags``."""
    return " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())


def stage_filter(stage: str) -> str:
    """The search filter for runs of one pipeline stage."""
    return tag_filter({names.STAGE: stage})


def list_artifacts(run_id: str, path: Optional[str] = None) -> list[str]:
    """The paths of the run's artifacts in folder ``path`` (the top level when None)."""
    return [a.path for a in MlflowClient().list_artifacts(run_id, path)]


def download_artifact(run_id: str, path: str, folder: Path) -> str:
    """Copy the run's artifact ``path`` into ``folder``; returns the local path."""
    return MlflowClient().download_artifacts(run_id, path, str(folder))


@contextlib.contextmanager
def downloaded(run_id: str, path: str, missing: tuple[type[BaseException], ...] = (MlflowException, OSError)
               ) -> Iterator[Optional[Path]]:
    """The run's artifact ``path`` in a temporary folder for the block; None when downloading it
    raises one of ``missing`` (the store has no such artifact, or it cannot be read)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(download_artifact(run_id, path, Path(tmp)))
        except missing:
            local = None
        yield local


def delete_artifacts(run_id: str, path: str) -> None:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    get_artifact_repository(MlflowClient().get_run(run_id).info.artifact_uri).delete_artifacts(path)


def metric_history(run_id: str, key: str) -> list:
    """Every point logged for ``key`` (objects with ``step``, ``value`` and ``timestamp``)."""
    return MlflowClient().get_metric_history(run_id, key)


def mark_running(run_id: str) -> None:
    """Reopen a run that a later process continues (a resumed sweep's parent)."""
    MlflowClient().update_run(run_id, status="RUNNING")


def image_files(run_id: str) -> dict[str, dict[int, str]]:
    """The run's step-indexed images: ``{key: {step: artifact path of its PNG}}``. MLflow names
    each file ``images/<key with / as ~>+step+<step>+timestamp+...``."""
    found: dict[str, dict[int, str]] = {}
    for path in list_artifacts(run_id, "images"):
        name = path.rsplit("/", 1)[-1]
        key, marker, rest = name.partition("+step+")
        if marker and name.endswith(".png"):
            found.setdefault(key.replace("~", "/"), {})[int(rest.split("+", 1)[0])] = path
    return found
