"""What a stage logs through: the :class:`Tracker` protocol, :class:`MlflowTracker` (one run in
the store) and :class:`NullTracker` (logs nothing: unit tests and benchmarks)."""
from __future__ import annotations

import contextlib
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from .sender import MetricSender
from .store import image_files, is_local_store, param_value


class Tracker(Protocol):
    """What the training loop logs through."""

    run_id: Optional[str]
    remote: bool  # artifacts live on a server: the only copy other machines can reach

    def log_params(self, params: dict[str, Any]) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_image(self, image, key: str, step: int) -> None: ...
    def log_artifact(self, path: Path, artifact_path: Optional[str] = None) -> None: ...
    def last_step(self, key: str) -> int: ...
    def image_steps(self, key: str) -> set[int]: ...
    def flush(self, timeout: Optional[float] = None) -> bool: ...
    def waiting(self) -> int: ...


class MlflowTracker:
    """Logs to one run. Metrics go out from a background thread (:class:`MetricSender`);
    :meth:`flush` waits for them."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.client = MlflowClient()
        self._sender: Optional[MetricSender] = None
        # A server's artifacts are the only copy other machines can reach; a local store's
        # artifacts sit on the same disk as the working files.
        self.remote = not is_local_store(mlflow.get_tracking_uri())

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100], synchronous=True)

    def set_tags(self, tags: dict[str, Any]) -> None:
        items = [RunTag(k, param_value(v)) for k, v in tags.items()]
        self.client.log_batch(self.run_id, tags=items, synchronous=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self._sender is None:
            self._sender = MetricSender(self.client, self.run_id)
        now = int(time.time() * 1000)
        self._sender.add([Metric(key, float(value), now, step) for key, value in metrics.items()])

    def log_image(self, image, key: str, step: int) -> None:
        """A step-indexed image (numpy HxWx3 uint8), shown with a step slider in the UI."""
        with as_active(self.run_id):
            mlflow.log_image(image, key=key, step=step, synchronous=True)

    def image_steps(self, key: str) -> set[int]:
        """Steps at which a step-indexed image ``key`` is already logged."""
        return set(image_files(self.run_id).get(key, {}))

    def log_artifact(self, path: Path, artifact_path: Optional[str] = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: Path, artifact_path: Optional[str] = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_figure(self, figure, artifact_file: str, save_kwargs: Optional[dict] = None) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file, save_kwargs=save_kwargs)

    def log_model(self, module, name: str) -> str:
        """Log a torch module as an MLflow model; returns its URI (``runs:/<id>/<name>``)."""
        import mlflow.pytorch  # a second or so; only the runs that log models pay it

        # Pickled module (not a traced pt2 graph) so attributes such as ``code_dim`` survive; the
        # warning MLflow prints about pickles each time says nothing new, so it is held back.
        pytorch_logger = logging.getLogger("mlflow.pytorch")
        level = pytorch_logger.level
        pytorch_logger.setLevel(logging.ERROR)
        with as_active(self.run_id):
            try:
                mlflow.pytorch.log_model(module, name=name, serialization_format="pickle",
                                         pip_requirements=["torch", "torchvision", "infogan-pipeline"])
            finally:
                pytorch_logger.setLevel(level)
        return f"runs:/{self.run_id}/{name}"

    def has_model(self, name: str) -> bool:
        """Whether this run already logged a complete model ``name`` (a resumed close skips it)."""
        experiment_id = self.client.get_run(self.run_id).info.experiment_id
        found = self.client.search_logged_models(
            [experiment_id], filter_string=f"source_run_id = '{self.run_id}' AND name = '{name}'")
        return any(str(m.status).endswith("READY") for m in found)

    def log_dataset(self, features, targets, name: str, source: str, digest: str, context: str) -> None:
        with warnings.catch_warnings():
            # A local path matches two registered source types that are the same class.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            dataset = mlflow.data.from_numpy(features, targets=targets, source=source, name=name,
                                             digest=digest[:20])
        with as_active(self.run_id):
            try:
                mlflow.log_input(dataset, context=context)
            except MlflowException as e:
                # Two processes (sweep workers) adding the same dataset to an experiment at once:
                # the store keeps the first and refuses the second; linking again finds it.
                if "UNIQUE constraint" not in str(e) and "already exists" not in str(e):
                    raise
                mlflow.log_input(dataset, context=context)

    def last_step(self, key: str) -> int:
        """The highest step logged for ``key`` (-1 if none): where a resumed run continues."""
        history = self.client.get_metric_history(self.run_id, key)
        return max((m.step for m in history), default=-1)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every metric point logged so far is stored (at most ``timeout`` seconds);
        True when all are."""
        return True if self._sender is None else self._sender.flush(timeout)

    def waiting(self) -> int:
        """Metric points not yet stored (the tracking store is slow or does not answer)."""
        return 0 if self._sender is None else self._sender.waiting()




class NullTracker:
    """A :class:`Tracker` that logs nothing: unit tests and benchmarks without a store."""

    run_id: Optional[str] = None
    remote = False

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def set_tags(self, tags: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_image(self, image, key: str, step: int) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: Optional[str] = None) -> None:
        pass

    def last_step(self, key: str) -> int:
        return -1

    def image_steps(self, key: str) -> set[int]:
        return set()

    def flush(self, timeout: Optional[float] = None) -> bool:
        return True

    def waiting(self) -> int:
        return 0


@contextlib.contextmanager
def as_active(run_id: str) -> Iterator[None]:
    """Fluent-only MLflow calls (log_image, log_model, log_input) need the run to be active."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield
        return
    with mlflow.start_run(run_id=run_id, nested=active is not None):
        yield
