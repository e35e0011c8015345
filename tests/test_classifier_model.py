"""Q as an unsupervised digit classifier: logged and registered by evaluate, loaded by URI, read
through the mapping exactly as the evaluation reads it, `infogan classify` on PNG files, one clear
line for bad input, and both served models answering a bad request with MLflow's
invalid-parameter error over HTTP."""
from __future__ import annotations

import base64
import io
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
import torch
from mlflow import MlflowClient
from PIL import Image

from conftest import SMOKE, free_port, own_store, subprocess_env
from pipeline import cli, evaluate, measure, names, runs, tracking, train
from pipeline.config import load_config
from pipeline.data import prepare
from pipeline.tracking import classifier_serving, serving


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, mnist_cache, store_template):
    """A smoke run, evaluated (so Q's model is logged and registered): (home, run id, test images)."""
    with own_store(tmp_path_factory.mktemp("q-served"), store_template) as home:
        cfg = load_config([SMOKE], [f"data.cache_dir={mnist_cache}", "tracking.log_model=true"])
        run_id = train.stage(cfg, log=lambda m: None)
        evaluate.stage(run_id, log=lambda m: None)
        arrays, _ = prepare(cfg.data, log=lambda m: None)
        yield home, run_id, arrays["test_images"][:64]


@pytest.fixture
def store(evaluated, monkeypatch):
    home, run_id, images = evaluated
    monkeypatch.setenv("INFOGAN_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    tracking.configure()
    return evaluated


def write_png(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image.astype(np.uint8)).save(path)
    return path


def test_the_registered_classifier_reads_real_digits_as_the_evaluation_does(store):
    home, run_id, images = store
    (version,) = MlflowClient().search_model_versions(f"name = 'infogan-classifier' and run_id = '{run_id}'")
    model = classifier_serving.load(f"models:/infogan-classifier/{version.version}")
    out = classifier_serving.classify_images(model, images / 255.0)
    assert list(out.columns) == ["digit", "code", "probability"] and len(out) == len(images)

    trained = runs.load_run(run_id, log=lambda m: None)
    mapping = runs.read_mapping(run_id)
    codes = measure.q_codes(trained.d, torch.from_numpy(images).unsqueeze(1)).numpy()
    np.testing.assert_array_equal(out["code"].to_numpy(), codes)
    np.testing.assert_array_equal(out["digit"].to_numpy(), mapping.digit_of_code[codes])
    assert ((0.1 <= out["probability"]) & (out["probability"] <= 1.0)).all()
    assert float(version.tags["eval/q_accuracy"]) == pytest.approx(
        MlflowClient().get_run(run_id).data.metrics["eval/q_accuracy"])

    pngs = [base64.b64encode(_png_bytes(image)).decode() for image in images[:5]]
    by_png = model.predict(pd.DataFrame({"png": pngs}))
    pd.testing.assert_frame_equal(by_png, out.iloc[:5].reset_index(drop=True))
    weights = Path(model._model_impl.context.artifacts["weights"]).name
    assert weights == "discriminator_state.pt"  # a state dict, read with weights_only: nothing unpickled


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("row, message", [
    ({"pixels": np.zeros((27, 28)).tolist()}, "row 0: the image must be 28x28 pixels, not 27x28"),
    ({"pixels": np.full((28, 28), 255.0).tolist()}, "must lie in [0, 1], not [255, 255] (divide 8-bit pixels by 255)"),
    ({"pixels": [[0.0] * 28] * 27 + [[0.0] * 5]}, "row 0: 'pixels' must be 28 rows of 28 numbers"),
    ({"png": "not base64!"}, "row 0: 'png' is not base64 text"),
    ({"png": base64.b64encode(b"plain text, not an image").decode()}, "row 0: 'png' does not hold a PNG image"),
    ({}, "row 0: give exactly one of 'pixels'"),
])
def test_a_bad_image_gets_one_line_naming_what_is_wrong(store, row, message):
    home, run_id, _ = store
    model = classifier_serving.load(f"runs:/{run_id}/{classifier_serving.MODEL_NAME}")
    with pytest.raises(ValueError) as caught:
        model.predict(pd.DataFrame([row]) if row else pd.DataFrame({"pixels": [None]}))
    assert message in str(caught.value)


def test_classify_prints_a_line_per_image_and_promote_names_the_champion(store, tmp_path, capsys):
    home, run_id, images = store
    paths = [write_png(tmp_path / f"digit{i}.png", images[i]) for i in range(3)]
    assert cli.main(["promote", run_id]) == 0
    assert "infogan-classifier@champion is now version" in capsys.readouterr().out
    assert cli.main(["classify", *map(str, paths)]) == 0  # the champion by default
    lines = capsys.readouterr().out.strip().splitlines()
    model = classifier_serving.load("models:/infogan-classifier@champion")
    expected = classifier_serving.classify_images(model, images[:3] / 255.0)
    assert lines == [f"{path}: digit {row.digit} (code {row.code}, probability {row.probability:.3f})"
                     for path, row in zip(paths, expected.itertuples())]

    notes = tmp_path / "notes.png"
    notes.write_text("a shopping list")
    assert cli.main(["classify", "--run-id", run_id, str(paths[0]), str(notes)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"infogan classify: error: {notes}: 'png' does not hold a PNG image", err
    assert cli.main(["classify", "--model", "models:/no-such-classifier@champion", str(paths[0])]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def _serve(home: Path, model_uri: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port), "--workers", "1"]
    env = subprocess_env(home)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).close()
            return server, port
        except (urllib.error.URLError, OSError):
            if server.poll() is not None or time.monotonic() > deadline:
                _stop(server)
                pytest.fail("the model server did not start:\n" + server.stdout.read()[-3000:])
            time.sleep(0.5)


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def _post(port: int, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("model, good, bad, said", [
    ("generator", {"dataframe_records": [{"digit": 7, "n": 2, "seed": 0}]},
     {"dataframe_records": [{"digit": 11, "n": 2, "seed": 0}]}, "row 0: digit must be one of [0, 1, 2"),
    ("classifier", None, {"dataframe_records": [{"pixels": np.full((28, 28), 2.0).tolist()}]},
     "row 0: the pixels must lie in [0, 1], not [2, 2]"),
])
def test_served_models_answer_a_bad_request_with_the_invalid_parameter_error(store, model, good, bad, said):
    home, run_id, images = store
    uri = {"generator": "models:/infogan-generator@champion", "classifier": "models:/infogan-classifier@champion"}
    assert cli.main(["promote", run_id]) == 0
    server, port = _serve(home, uri[model])
    try:
        if good is None:  # the classifier: two real digits as [0, 1] pixels, then the same as PNGs
            good = {"dataframe_records": [{"pixels": (image / 255.0).tolist()} for image in images[:2]]}
            status, answer = _post(port, {"dataframe_records": [{"png": base64.b64encode(_png_bytes(image)).decode()}
                                                                for image in images[:2]]})
            assert status == 200, answer
            by_png = answer["predictions"]
        status, answer = _post(port, good)
        assert status == 200 and len(answer["predictions"]) == 2, answer
        if model == "classifier":
            assert answer["predictions"] == by_png
        status, answer = _post(port, bad)
        assert status == 400, answer
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE" and said in answer["message"], answer
        assert "stack_trace" not in answer and str(Path(__file__).parents[1]) not in json.dumps(answer)
    finally:
        _stop(server)
