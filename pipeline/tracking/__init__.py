"""Everything that talks to MLflow, and nothing else does.

- ``store``: where the store is, experiments, runs, reading back what runs logged;
- ``tracker``: the :class:`Tracker` protocol a stage logs through, its MLflow and null versions;
- ``sender``: metric points sent from a background thread (a store outage never stalls training);
- ``registry``: registered generator versions and aliases;
- ``serving``: a generator as an MLflow pyfunc model (``generator_model.py`` names its class);
- ``classifier_serving``: Q as a digit classifier, the same way (``classifier_model.py``).

The names below are read from those modules on first use: a served generator imports
``pipeline.tracking.serving`` where only torch, numpy, pandas, pillow and mlflow are installed,
so importing this package must not load the rest of the project (the config needs omegaconf).
"""
from __future__ import annotations

import importlib
import os

# Set before mlflow loads. Telemetry stays off unless the user sets it themselves; artifacts here
# are small local files, so a progress bar per download is only noise on the terminal.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

_EXPORTS = {
    "store": ("SYSTEM_METRICS_INTERVAL", "TrackingError", "TrackingUnreachable", "artifact_location",
              "check_server", "configure", "delete_artifacts", "download_artifact", "downloaded", "end_run",
              "ensure_experiment", "experiment_name", "find_finished_run", "get_experiment", "get_run",
              "get_training_run", "image_files", "is_local_store", "list_artifacts", "load_state_dict_model",
              "mark_running", "metric_history", "new_run", "read_text", "search_runs", "stage_filter", "start_run",
              "tag_filter", "tracking_uri"),
    "tracker": ("MlflowTracker", "NullTracker", "Tracker", "as_active"),
    "sender": ("MetricSender",),
    "registry": ("register", "registered_version", "set_alias"),
}
_HOME = {name: module for module, exported in _EXPORTS.items() for name in exported}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value
