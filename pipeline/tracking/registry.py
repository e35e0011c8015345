"""The Model Registry: registered generator and classifier versions and the alias a demo uses."""
from __future__ import annotations

import logging
from typing import Any, Optional

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from .store import param_value


GENERATOR = ("InfoGAN generators of MNIST digits; each version is a pyfunc model taking rows of "
             "{digit | code, n, seed}.")
CLASSIFIER = ("InfoGAN's Q as an unsupervised MNIST classifier; each version is a pyfunc model taking rows "
              "of {pixels | png} and giving {digit, code, probability}.")


def register(model_uri: str, name: str, run_id: str, tags: dict[str, Any], description: str = GENERATOR) -> int:
    """Register the logged model ``model_uri`` (of training run ``run_id``) as a new version of
    ``name`` in the Model Registry, tagged with ``tags``; returns the version number."""
    client = MlflowClient()
    if client.search_registered_models(filter_string=f"name = '{name}'") == []:
        try:
            client.create_registered_model(name, description=description)
        except MlflowException as error:  # a run evaluated side by side registered it first
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    quiet = logging.getLogger("mlflow.tracking._model_registry.client")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # MLflow prints a line per version made; the caller says one
    try:
        shown = {k: f"{v:.4f}" if isinstance(v, float) else param_value(v) for k, v in tags.items()}
        version = client.create_model_version(name, model_uri, run_id=run_id, tags=shown)
    finally:
        quiet.setLevel(level)
    return int(version.version)


def registered_version(name: str, run_id: str) -> Optional[int]:
    """The newest version of registered model ``name`` made from training run ``run_id``, or None."""
    try:
        versions = MlflowClient().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        return None
    return max((int(v.version) for v in versions), default=None)


def set_alias(name: str, alias: str, version: int) -> None:
    MlflowClient().set_registered_model_alias(name, alias, str(version))


