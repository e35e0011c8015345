"""The reference classifier's user cache: a new store logs the cached copy instead of training,
an unreadable cache file is trained again, and the key follows the classifier's code."""
from __future__ import annotations

import pytest
import torch

from conftest import SMOKE
from pipeline import reference, tracking
from pipeline.config import load_config
from pipeline.data import as_tensors, prepare

TINY = ["eval.classifier_train_subset=512", "eval.classifier_epochs=1", "eval.classifier_precision=fp32"]


@pytest.fixture
def tiny(mnist_cache, tmp_path, monkeypatch):
    """The smoke config's data, a classifier that trains in a second, and an empty cache folder."""
    monkeypatch.setenv("INFOGAN_CACHE_DIR", str(tmp_path / "user-cache"))
    cfg = load_config([SMOKE], [f"data.cache_dir={mnist_cache}", *TINY])
    arrays, info = prepare(cfg.data, log=lambda m: None)
    return cfg, as_tensors(arrays, torch.device("cpu")), info.sha256


def new_store(folder, monkeypatch) -> None:
    folder.mkdir()
    monkeypatch.setenv("INFOGAN_HOME", str(folder))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    tracking.configure()


def weights(model) -> dict:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def test_a_new_store_logs_the_cached_classifier_without_training(tiny, tmp_path, monkeypatch):
    cfg, tensors, sha = tiny
    new_store(tmp_path / "first", monkeypatch)
    lines: list[str] = []
    trained, first_run, accuracy = reference.get_classifier(cfg, tensors, sha, log=lines.append)
    assert any(line.startswith("training the reference") for line in lines)
    key = reference.classifier_key(cfg, sha)
    assert reference.cached_path(key).is_file()

    new_store(tmp_path / "second", monkeypatch)
    monkeypatch.setattr(reference, "train_classifier", lambda *a, **k: pytest.fail("trained despite the cache"))
    lines.clear()
    cached, second_run, cached_accuracy = reference.get_classifier(cfg, tensors, sha, log=lines.append)
    assert any("cached copy" in line for line in lines), lines
    assert second_run != first_run and cached_accuracy == accuracy
    for name, value in weights(trained).items():
        assert torch.equal(weights(cached)[name], value), name
    run = tracking.get_run(second_run)
    assert run.info.status == "FINISHED"
    assert run.data.tags[reference.names.CLASSIFIER_CACHED_FROM] == str(reference.cached_path(key))
    assert run.data.metrics[reference.names.CLASSIFIER_ACCURACY] == pytest.approx(accuracy)
    assert torch.equal(reference.predict(cached, tensors["test_x"][:200]),
                       reference.predict(trained, tensors["test_x"][:200]))

    # The same store again: its own run, neither the cache nor training.
    lines.clear()
    assert reference.get_classifier(cfg, tensors, sha, log=lines.append)[1] == second_run
    assert lines == [f"reference classifier: run {second_run} (test accuracy {accuracy:.4f})"]


def test_an_unreadable_cache_file_is_trained_again_and_replaced(tiny, tmp_path, monkeypatch):
    cfg, tensors, sha = tiny
    path = reference.cached_path(reference.classifier_key(cfg, sha))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a file")
    new_store(tmp_path / "store", monkeypatch)
    lines: list[str] = []
    reference.get_classifier(cfg, tensors, sha, log=lines.append)
    assert any(line.startswith(f"ignoring the cached classifier {path}") for line in lines), lines
    assert any(line.startswith("training the reference") for line in lines)
    assert torch.load(path, weights_only=True)["format"] == reference.CACHE_FORMAT
    assert not list(path.parent.glob("*.partial"))


def test_the_cache_off_neither_reads_nor_writes(tiny, mnist_cache, tmp_path, monkeypatch):
    _, tensors, sha = tiny
    cfg = load_config([SMOKE], [f"data.cache_dir={mnist_cache}", *TINY, "eval.classifier_cache=false"])
    new_store(tmp_path / "store", monkeypatch)
    reference.get_classifier(cfg, tensors, sha, log=lambda m: None)
    assert not reference.cache_dir().exists()


def test_the_key_follows_the_code_and_the_precision_not_the_docstrings(tiny, mnist_cache):
    cfg, _, sha = tiny

    def first():
        def one(x):
            """First words."""
            return x + 1
        return one

    def reworded():
        def one(x):
            """Other words."""
            # a comment
            return x + 1
        return one

    def changed():
        def one(x):
            """First words."""
            return x + 2
        return one

    one, same_code, other_code = first(), reworded(), changed()
    assert reference.code_fingerprint((one,)) == reference.code_fingerprint((same_code,))
    assert reference.code_fingerprint((one,)) != reference.code_fingerprint((other_code,))
    bf16 = load_config([SMOKE], [f"data.cache_dir={mnist_cache}", *TINY, "eval.classifier_precision=bf16"])
    assert reference.classifier_key(bf16, sha) != reference.classifier_key(cfg, sha)
    assert reference.classifier_key(cfg, "another data hash") != reference.classifier_key(cfg, sha)
