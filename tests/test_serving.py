"""The generator as a pyfunc model: logged by training, logged again with the mapping and
registered by evaluate, promoted, drawn from by URI, and served over HTTP on loopback."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import free_port, own_store, subprocess_env
from pipeline import cli, evaluate, names, runs, tracking, train
from pipeline.tracking import serving
from pipeline.config import load_config

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_cache, store_template):
    """A smoke run with its models logged (the default), before any evaluation: (home, run id)."""
    with own_store(tmp_path_factory.mktemp("served"), store_template) as home:
        cfg = load_config([SMOKE], [f"data.cache_dir={mnist_cache}", "tracking.log_model=true"])
        run_id = train.stage(cfg, log=lambda m: None)
        yield home, run_id


@pytest.fixture
def store(trained, monkeypatch):
    home, run_id = trained
    monkeypatch.setenv("INFOGAN_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    tracking.configure()
    return trained


def test_a_generator_logged_by_the_earlier_layout_loads_in_a_process_that_imported_the_package(
        store, tmp_path, monkeypatch):
    # Generators logged before the package moved its serving code name `pipeline.serving` in their
    # generator_model.py; `infogan generate --model` loads them after importing this package.
    home, run_id = store
    old = tmp_path / "generator_model.py"
    old.write_text(serving.MODEL_CODE.read_text().replace("pipeline.tracking.serving", "pipeline.serving"))
    assert "from pipeline.serving import GeneratorModel" in old.read_text()
    monkeypatch.setattr(serving, "MODEL_CODE", old)
    g = runs.load_run(run_id).g
    serving.log_generator(g, run_id, name="earlier_layout")
    images = serving.load(f"runs:/{run_id}/earlier_layout").predict(pd.DataFrame([{"code": 3, "n": 2, "seed": 1}]))
    assert images.shape == (2, 28, 28)


def test_generator_goes_from_codes_to_digits_to_the_registry(store, tmp_path, capsys):
    home, run_id = store
    before = serving.load(f"runs:/{run_id}/{serving.MODEL_NAME}")
    images = before.predict(pd.DataFrame([{"code": 3, "n": 5, "seed": 1}]))
    assert images.shape == (5, 28, 28) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    with pytest.raises(Exception, match="before `infogan evaluate` mapped its codes"):
        before.predict(pd.DataFrame([{"digit": 7, "n": 2, "seed": 0}]))
    assert before.metadata.get_input_schema().input_names() == ["digit", "code", "n", "seed"]
    assert (Path(before._model_impl.context.artifacts["weights"]).name == "generator_state.pt")  # no pickled module

    evaluate.stage(run_id, log=lambda m: None)
    mapping = json.loads(tracking.read_text(run_id, names.MAPPING_FILE))
    after = serving.load(f"runs:/{run_id}/{serving.MODEL_NAME}")  # the newest: mapping inside
    code = mapping["code_of_digit"]["7"]
    by_digit = after.predict(pd.DataFrame([{"digit": 7, "n": 4, "seed": 2}]))
    by_code = after.predict(pd.DataFrame([{"code": code, "n": 4, "seed": 2}]))
    np.testing.assert_array_equal(by_digit, by_code)

    client = MlflowClient()
    points = len(client.get_metric_history(run_id, "eval/gen_accuracy"))
    evaluate.stage(run_id, log=lambda m: None)  # the same checkpoint again: nothing added
    assert len(client.get_metric_history(run_id, "eval/gen_accuracy")) == points
    (version,) = client.search_model_versions(f"name = 'infogan-generator' and run_id = '{run_id}'")
    assert float(version.tags["eval/gen_accuracy"]) == pytest.approx(
        client.get_run(run_id).data.metrics["eval/gen_accuracy"])

    assert cli.main(["promote", run_id]) == 0
    assert client.get_model_version_by_alias("infogan-generator", "champion").version == version.version
    out = tmp_path / "sevens.png"
    assert cli.main(["generate", "--model", "models:/infogan-generator@champion", "--digit", "7",
                     "--n", "9", "--out", str(out)]) == 0
    from PIL import Image

    assert Image.open(out).size == (3 * 28 + 4 * 2, 3 * 28 + 4 * 2)
    capsys.readouterr()
    assert cli.main(["generate", "--model", "models:/no-such-model@champion", "--digit", "7",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot load the model models:/no-such-model@champion" in err and len(err.strip().splitlines()) == 1


def test_promote_of_an_unknown_run_says_so_in_one_line(store, capsys):
    assert cli.main(["promote", "0123456789abcdef0123456789abcdef"]) == 2
    err = capsys.readouterr().err
    assert "no run '0123456789abcdef0123456789abcdef'" in err and len(err.strip().splitlines()) == 1


def _post(port: int, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_mlflow_models_serve_answers_over_loopback(store):
    home, run_id = store
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{run_id}/{serving.MODEL_NAME}",
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "--workers", "1"]
    env = subprocess_env(home)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # MLflow starts the venv's uvicorn
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).close()
                break
            except (urllib.error.URLError, OSError):
                if server.poll() is not None or time.monotonic() > deadline:
                    if server.poll() is None:
                        os.killpg(server.pid, signal.SIGKILL)
                    pytest.fail("the model server did not start:\n" + server.stdout.read()[-3000:])
                time.sleep(0.5)
        request = {"dataframe_records": [{"code": 2, "n": 3, "seed": 7}, {"code": 5, "n": 2, "seed": 1}]}
        first = np.asarray(_post(port, request)["predictions"], dtype=np.float32)
        again = np.asarray(_post(port, request)["predictions"], dtype=np.float32)
        assert first.shape == (5, 28, 28)
        assert 0.0 <= first.min() and first.max() <= 1.0
        np.testing.assert_array_equal(first, again)  # the same seed gives the same images
        png = _post(port, {"dataframe_records": [{"code": 2, "n": 4, "seed": 7}], "params": {"format": "png"}})
        import base64

        assert base64.b64decode(png["predictions"][0])[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server and its workers
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
