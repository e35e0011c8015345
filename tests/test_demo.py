"""`infogan demo`: the page's API against a trained, evaluated, promoted smoke run with two
continuous codes (the digit's images, the sliders, the lab demo graded as evaluate grades it, Q
reading a drawing), one clear line for what cannot start, and the page itself driven in a real
browser (headless Chromium)."""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cli_process
from conftest import SMOKE, free_port, own_store, subprocess_env
from pipeline import cli, demo, evaluate, measure, names, runs, tracking, train
from pipeline.config import load_config
from pipeline.data import as_tensors, prepare
from pipeline.images import mnist_style
from pipeline.reference import get_classifier
from pipeline.tracking import classifier_serving


@pytest.fixture(scope="module")
def promoted(tmp_path_factory, mnist_cache, store_template):
    """(home, evaluated run id promoted to champion, a run never evaluated, config, test digits)."""
    with own_store(tmp_path_factory.mktemp("demo"), store_template) as home:
        overrides = [f"data.cache_dir={mnist_cache}", "model.continuous_codes=2", "train.d_augment=false"]
        cfg = load_config([SMOKE], [*overrides, "tracking.log_model=true"])
        run_id = train.stage(cfg, log=lambda m: None)
        evaluate.stage(run_id, log=lambda m: None)
        evaluate.promote(run_id, log=lambda m: None)
        unevaluated = train.stage(load_config([SMOKE], [*overrides, "seed=1"]), log=lambda m: None)
        arrays, _ = prepare(cfg.data, log=lambda m: None)
        yield home, run_id, unevaluated, cfg, arrays["test_images"][:8]


@pytest.fixture
def store(promoted, monkeypatch):
    home = promoted[0]
    monkeypatch.setenv("INFOGAN_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    tracking.configure()
    return promoted


@pytest.fixture(scope="module")
def server(promoted):
    """`infogan demo` with no source (the champion) on a free port; its base URL."""
    home = promoted[0]
    port = free_port()
    process = cli_process.start(["demo", "--port", str(port)], subprocess_env(home))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"the demo stopped: {process.output()[0]}")
            try:
                get(url + "/api/info")
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail(f"the demo did not answer in 180 s: {process.output()[0]}")
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def get(url: str, data: dict | None = None) -> tuple[int, dict]:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def pixels(png: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(png))) as image:
        return np.asarray(image.convert("L"))


def png_text(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def as_drawing(digit: np.ndarray, corner: tuple[int, int] = (30, 160)) -> np.ndarray:
    """An MNIST digit drawn 7x larger, off-centre, on a 360 x 360 black canvas."""
    big = np.asarray(Image.fromarray(digit).resize((196, 196), Image.Resampling.BILINEAR))
    canvas = np.zeros((360, 360), dtype=np.uint8)
    canvas[corner[0]:corner[0] + 196, corner[1]:corner[1] + 196] = big
    return canvas


def test_page_shows_the_champion_and_its_run(server, store):
    _, run_id, *_ = store
    status, info = get(server + "/api/info")
    assert status == 200
    assert info["source"] == demo.DEFAULT_MODEL and info["run"]["id"] == run_id
    assert info["digits"] == list(range(10)) and info["continuous_codes"] == 2
    assert info["lab_demo"] and info["reader"] and info["notes"] == {}
    run = tracking.get_run(run_id)
    assert info["run"]["name"] == run.info.run_name
    assert info["run"]["url"] == (f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run_id}"
                                  "?workflowType=machine_learning")  # MLflow 3.17 opens GenAI otherwise
    assert info["run"]["figures"]["generated accuracy"] == run.data.metrics[names.GEN_ACCURACY]
    # Everything the page loads comes from the demo itself: no address of another server.
    for path in ("/", "/static/demo.js", "/static/demo.css"):
        with urllib.request.urlopen(server + path, timeout=30) as response:
            assert response.status == 200 and "http" not in response.read().decode(), path


def test_styles_are_the_chosen_digits_code_with_the_sliders_values(server, store):
    _, run_id, *_ = store
    trained = runs.load_run(run_id, log=lambda m: None)
    code_of_digit = runs.read_mapping(run_id).code_of_digit
    g = trained.g
    for digit, values in ((3, [0.0, 0.0]), (7, [1.5, -0.5])):
        status, answer = get(server + f"/api/styles?digit={digit}&n=5&seed=4&codes={values[0]},{values[1]}")
        assert status == 200 and len(answer["images"]) == 5
        z = torch.randn(5, g.noise_dim, generator=torch.Generator().manual_seed(4))
        c = torch.full((5,), code_of_digit[digit], dtype=torch.long)
        expected = measure.generate(g, z, c, torch.tensor(values).expand(5, 2))
        shown = np.stack([pixels(png) for png in answer["images"]])
        np.testing.assert_array_equal(shown, (expected[:, 0].clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    _, moved = get(server + "/api/styles?digit=7&n=5&seed=4&codes=-1.5,-0.5")
    assert not np.array_equal(pixels(moved["images"][0]), shown[0])  # the slider changes the image
    # A smoke run's mapping is close to the identity, so the digit -> code step is checked with
    # a mapping that moves every digit.
    backwards = demo.Demo(g, {d: 9 - d for d in range(10)}, "test", {})
    z = torch.randn(3, g.noise_dim, generator=torch.Generator().manual_seed(0))
    expected = measure.generate(g, z, torch.full((3,), 6), torch.zeros(3, 2))
    np.testing.assert_array_equal(np.stack([pixels(png) for png in backwards.styles(3, 3, 0, [])]),
                                  (expected[:, 0].clamp(0, 1).numpy() * 255).round().astype(np.uint8))


def test_lab_demo_is_graded_as_the_evaluate_stage_grades_it(server, store):
    _, run_id, _, cfg, _ = store
    status, answer = get(server + "/api/lab-demo?seed=9")
    assert status == 200
    arrays, info = prepare(cfg.data, log=lambda m: None)
    classifier, _, _ = get_classifier(cfg, as_tensors(arrays, torch.device("cpu")), info.sha256, lambda m: None)
    _, predicted = evaluate.demo(runs.load_run(run_id, log=lambda m: None).g, classifier,
                                 runs.read_mapping(run_id).code_of_digit, seed=9)
    assert answer["predicted"] == predicted.tolist()
    right = (predicted == np.arange(10)[:, None]).sum(axis=0)
    assert answer["right"] == right.tolist() and answer["passes"] == (right >= 7).tolist()
    assert answer["grade"] == int((right >= 7).sum())
    assert len(answer["images"]) == 10 and all(len(row) == 10 for row in answer["images"])


def test_a_drawing_is_centred_as_mnist_and_read_by_q(server, store):
    _, run_id, *_, digits = store
    status, answer = get(server + "/api/read", {"png": "data:image/png;base64," + png_text(as_drawing(digits[0]))})
    assert status == 200
    seen = pixels(answer["seen"]).astype(np.float64) / 255
    assert np.corrcoef(seen.ravel(), digits[0].ravel())[0, 1] > 0.9  # the digit, back in MNIST's place
    model = classifier_serving.load(f"runs:/{run_id}/classifier_pyfunc")
    read = classifier_serving.classify_images(model, seen[None]).iloc[0]
    assert (answer["digit"], answer["code"]) == (read["digit"], read["code"])
    assert answer["probability"] == pytest.approx(read["probability"], abs=1e-6)


def test_mnist_style_puts_the_ink_in_a_20_pixel_box_centred_by_mass(store):
    digit = store[-1][1]
    image = mnist_style(as_drawing(digit, corner=(150, 5)).astype(np.float64) / 255)
    rows, cols = np.nonzero(image > 0.1)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 in (19, 20, 21)
    centre = np.array([(image.sum(axis=1) * np.arange(28)).sum(), (image.sum(axis=0) * np.arange(28)).sum()]) / image.sum()
    assert np.abs(centre - 14.0).max() <= 0.5
    with pytest.raises(ValueError, match="empty"):
        mnist_style(np.zeros((100, 100)))


@pytest.mark.parametrize("path, data, message", [
    ("/api/styles?digit=11", None, "digit must be one of [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], not 11"),
    ("/api/styles?digit=two", None, "digit: Input should be a valid integer"),
    ("/api/styles?digit=2&n=0", None, "the number of styles must be between 1 and 100, not 0"),
    ("/api/styles?digit=2&codes=0.5", None, "this generator has 2 continuous code(s); 1 value(s) were sent"),
    ("/api/styles?digit=2&codes=0,9", None, "continuous code values must lie in [-2, 2]"),
    ("/api/read", {"png": png_text(np.zeros((50, 50)))}, "the drawing is empty"),
    ("/api/read", {"png": base64.b64encode(b"not an image").decode()}, "does not hold a PNG image"),
    ("/api/read", {}, "png: Field required"),
])
def test_a_request_the_page_cannot_serve_gets_one_line_and_the_server_goes_on(server, path, data, message):
    status, answer = get(server + path, data)
    assert status == 400 and message in answer["error"] and "\n" not in answer["error"]
    assert get(server + "/api/info")[0] == 200


def test_what_cannot_be_shown_is_one_line_at_start(store, capsys):
    _, run_id, unevaluated, *_ = store
    port = free_port()
    cases = [
        (["--run-id", unevaluated], f"run {unevaluated} has no code -> digit mapping yet"),
        (["--model", "models:/infogan-generator@nobody"], "cannot load the generator models:/infogan-generator@nobody"),
        (["--model", f"runs:/{run_id}/classifier_pyfunc"], "is not a generator logged by this project"),
        (["--run-id", "no-such-run"], "no run 'no-such-run'"),
    ]
    for args, message in cases:
        assert cli.main(["demo", "--port", str(port), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        started = time.time()
        assert cli.main(["demo", "--port", str(port), "--run-id", run_id]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
        assert time.time() - started < 5  # refused before any model loads


def test_without_q_exported_the_page_says_why_and_the_rest_works(store):
    _, run_id, *_ = store
    shown = demo.open_demo(run_id=run_id, classifier="models:/infogan-classifier/999", log=lambda m: None)
    assert shown.reader is None and "models:/infogan-classifier/999" in shown.notes["reader"]
    with pytest.raises(demo.DemoError, match="Q is not exported as a model here"):
        shown.read(png_text(np.zeros((28, 28))))
    assert len(shown.styles(5, 3, 0, [])) == 3


def _browser():
    """A headless Chromium driven by Selenium, or the reason there is none."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        return None, "Debian's chromium and chromium-driver are not installed (`make test` installs them as root)"
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium is not installed (pip install -e '.[dev]')"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,1900"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options), None


def test_the_page_in_a_real_browser(server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, why = _browser()
    if browser is None:
        pytest.skip(why)
    shots = Path(os.environ.get("INFOGAN_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    try:
        browser.get(server + "/")
        wait = WebDriverWait(browser, 120)
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        count = browser.find_element(By.ID, "count")
        count.clear()
        count.send_keys("12")
        browser.find_element(By.ID, "digit-4").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#styles img")) == 12)
        images = browser.find_elements(By.CSS_SELECTOR, "#styles img")
        assert all(img.get_attribute("alt").startswith("digit 4,") for img in images)
        first = images[0].get_attribute("src")
        slider = browser.find_element(By.ID, "code-1")
        ActionChains(browser).click_and_hold(slider).move_by_offset(60, 0).release().perform()
        wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#styles img").get_attribute("src") != first)

        browser.find_element(By.ID, "lab-run").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#lab .grade")) == 10)
        passes = len(browser.find_elements(By.CSS_SELECTOR, "#lab .grade.pass"))
        assert len(browser.find_elements(By.CSS_SELECTOR, "#lab img")) == 100
        assert browser.find_element(By.ID, "lab-grade").text.startswith(f"demo grade {passes}/10")

        pad = browser.find_element(By.ID, "pad")
        stroke = ActionChains(browser).move_to_element_with_offset(pad, -40, -90).click_and_hold()
        for dx, dy in ((60, 0), (10, 20), (-20, 40), (-40, 100)):
            stroke = stroke.move_by_offset(dx, dy)
        stroke.release().perform()
        wait.until(lambda b: b.find_element(By.ID, "reading").text.startswith("digit "))
        browser.save_screenshot(str(shots / "demo-page.png"))

        count.clear()
        count.send_keys("0")
        browser.find_element(By.ID, "digit-4").click()
        wait.until(lambda b: b.find_element(By.ID, "message").is_displayed())
        assert "between 1 and 100" in browser.find_element(By.ID, "message").text
        browser.save_screenshot(str(shots / "demo-page-error.png"))
    finally:
        browser.quit()
