"""The reference MNIST classifier that judges every generator (not part of InfoGAN): the
network, its training, reading images with it, and the one logged copy every run reuses."""
from __future__ import annotations

import ast
import copy
import hashlib
import inspect
import math
import os
import tempfile
import textwrap
import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from . import augment, hardware, names, tracking

MIN_CLASSIFIER_ACCURACY = 0.99
CLASSIFIER_SEED = 0  # one classifier judges every run, whatever the run's own seed
BATCH_SIZE = 128
CACHE_FORMAT = 1  # what a cached classifier file holds (see _cache_entry)
# Images per forward pass wherever a network reads many images without gradients (the
# evaluation's samples, demos and features): chunks of 256 keep the activations in the CPU's
# caches and ran the classifier 1.4x and G 1.15x faster than chunks of 1,000, same outputs.
CHUNK = 256


def classifier_key(cfg: DictConfig, data_sha256: str) -> str:
    """What the classifier depends on: its training settings, the precision it trains in here,
    the code that defines and trains it, and the data it learned from."""
    e = cfg.eval
    body = repr((e.classifier_epochs, e.classifier_lr, e.classifier_train_subset, CLASSIFIER_SEED,
                 _precision(cfg), BATCH_SIZE, code_fingerprint(), data_sha256))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def code_fingerprint(objects: Optional[tuple] = None) -> str:
    """A hash of the code the classifier's weights come from (``objects``; by default its network,
    its training and the augmentation it trains with), without comments and docstrings: a change
    there is a new classifier, in every store and in the user cache."""
    parts = []
    for obj in objects or CODE:
        tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        parts.append(ast.dump(tree))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """The user's cache folder for what every clone of the project on this machine can share:
    ``$INFOGAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/infogan-pipeline``, else
    ``~/.cache/infogan-pipeline`` (as torch hub and Hugging Face keep their downloads)."""
    if os.environ.get("INFOGAN_CACHE_DIR"):
        return Path(os.environ["INFOGAN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "infogan-pipeline"


def cached_path(key: str) -> Path:
    return cache_dir() / "classifier" / f"{key}.pt"


def get_classifier(cfg: DictConfig, tensors: dict, data_sha256: str,
                   log: Callable[[str], None] = print) -> tuple[Classifier, str, float]:
    """The reference classifier: the one logged in this store with the same key; else the user
    cache's copy (``eval.classifier_cache``), logged to this store; else trained now, logged as
    its own run in ``eval.classifier_experiment`` and cached. Returns (model, run id, test
    accuracy)."""
    device = tensors["test_x"].device
    key = classifier_key(cfg, data_sha256)
    found = tracking.find_finished_run(cfg.eval.classifier_experiment, {names.CLASSIFIER_KEY: key})
    if found is not None:
        model = tracking.load_state_dict_model(Classifier(), found.info.run_id, names.CLASSIFIER_WEIGHTS)
        accuracy = found.data.metrics.get(names.CLASSIFIER_ACCURACY, float("nan"))
        log(f"reference classifier: run {found.info.run_id} (test accuracy {accuracy:.4f})")
        return model.to(device).eval(), found.info.run_id, accuracy

    e = cfg.eval
    cached = _read_cache(key, log) if e.classifier_cache else None
    if cached is not None:
        model, curve = cached
        log(f"reference classifier: the cached copy {cached_path(key)} (test accuracy {curve[-1]:.4f}), "
            f"logged to this store")
    else:
        train_tensors = dict(tensors)
        if e.classifier_train_subset is not None:
            train_tensors["train_x"] = tensors["train_x"][:e.classifier_train_subset]
            train_tensors["train_y"] = tensors["train_y"][:e.classifier_train_subset]
        log(f"training the reference MNIST classifier ({e.classifier_epochs} epochs in {_precision(cfg)}; "
            f"once, then reused)")
        curve = []

        def progress(epoch: int, accuracy: float) -> None:
            curve.append(accuracy)
            log(f"  classifier epoch {epoch}/{e.classifier_epochs}: test accuracy {accuracy:.4f}")

        model, _ = train_classifier(train_tensors, e.classifier_epochs, BATCH_SIZE, e.classifier_lr,
                                    CLASSIFIER_SEED, progress, precision=_precision(cfg))
        if e.classifier_cache:
            _write_cache(key, model, curve, log)
    run_id = _log_classifier(cfg, key, data_sha256, model, curve, cached=cached is not None)
    accuracy = curve[-1]
    if accuracy < MIN_CLASSIFIER_ACCURACY and e.classifier_train_subset is None:
        warnings.warn(f"the reference classifier reached only {accuracy:.4f} test accuracy "
                      f"(< {MIN_CLASSIFIER_ACCURACY}); eval/ figures are less trustworthy", stacklevel=2)
    return model.to(device).eval(), run_id, accuracy


def _precision(cfg: DictConfig) -> str:
    return hardware.resolve_precision(cfg.eval.classifier_precision, hardware.pick_device(cfg.train.device))


def _log_classifier(cfg: DictConfig, key: str, data_sha256: str, model: Classifier, curve: list[float],
                    cached: bool) -> str:
    """The classifier as its own finished run: settings, test accuracy per epoch, weights, model."""
    e = cfg.eval
    tags = {names.CLASSIFIER_KEY: key, names.STAGE: "classifier", names.DATA_SHA256: data_sha256}
    if cached:
        tags[names.CLASSIFIER_CACHED_FROM] = str(cached_path(key))
    run_id = tracking.new_run(e.classifier_experiment, "reference-classifier", tags)
    tracker = tracking.MlflowTracker(run_id)
    try:
        tracker.log_params({"classifier.epochs": e.classifier_epochs, "classifier.lr": e.classifier_lr,
                            "classifier.train_subset": e.classifier_train_subset, "seed": CLASSIFIER_SEED,
                            "classifier.precision": _precision(cfg), "classifier.batch_size": BATCH_SIZE,
                            "classifier.code": code_fingerprint()})
        for epoch, accuracy in enumerate(curve, start=1):
            tracker.log_metrics({names.CLASSIFIER_ACCURACY: accuracy}, step=epoch)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / names.CLASSIFIER_WEIGHTS
            torch.save(model.state_dict(), path)
            tracker.log_artifact(path)
        if e.classifier_train_subset is None:
            tracker.log_model(copy.deepcopy(model).cpu().eval(), "classifier")
        tracker.flush()
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    tracking.end_run(run_id, "FINISHED")
    return run_id


def _read_cache(key: str, log: Callable[[str], None]) -> Optional[tuple[Classifier, list[float]]]:
    """The cached classifier with this key and its test accuracy per epoch, or None when there is
    none or it cannot be read (then it is trained again and the file replaced)."""
    path = cached_path(key)
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        if entry.get("format") != CACHE_FORMAT or entry.get("key") != key or not entry.get("curve"):
            raise ValueError("not a cached classifier of this version")
        model = Classifier()
        model.load_state_dict(entry["state_dict"])
        return model, list(entry["curve"])
    except Exception as exc:  # a cache must never stop a run: anything unreadable is retrained
        log(f"ignoring the cached classifier {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return None


def _write_cache(key: str, model: Classifier, curve: list[float], log: Callable[[str], None]) -> None:
    """Write the cache file whole or not at all (a temporary file renamed into place); a folder
    that cannot be written costs the cache, not the run."""
    path = cached_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".partial", delete=False) as tmp:
            torch.save({"format": CACHE_FORMAT, "key": key, "curve": [float(a) for a in curve],
                        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}},
                       tmp)
        os.replace(tmp.name, path)
    except OSError as exc:
        log(f"could not keep the classifier in the user cache ({exc}); eval.classifier_cache=false stops trying")


class Classifier(nn.Module):
    """The reference MNIST classifier used to judge generators (not part of InfoGAN).

    ``features`` (128-D, after the last hidden layer) is the space of the Frechet distance.
    """

    FEATURES = 128

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 14 -> 7
            nn.Flatten(), nn.Linear(64 * 7 * 7, self.FEATURES), nn.ReLU(inplace=True),
        )
        self.out = nn.Sequential(nn.Dropout(0.3), nn.Linear(self.FEATURES, 10))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small random rotations, scalings and shifts, so the classifier is not fooled by a
    generated digit that sits a pixel off centre."""
    return augment.random_affine(x, generator, max_degrees=8.6, max_scale=0.1, max_shift_px=2.1)


@torch.no_grad()
def in_chunks(model: torch.nn.Module, read: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
               batch_size: int) -> torch.Tensor:
    """``read(images)`` over uint8 or [0, 1] float images in chunks, with ``model`` in eval mode
    (restored afterwards); the chunks' outputs concatenated."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size]
        out.append(read(xb.float().div(255.0) if xb.dtype == torch.uint8 else xb))
    model.train(was_training)
    return torch.cat(out)


def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = CHUNK) -> torch.Tensor:
    """Argmax classes of uint8 or [0, 1] float images, in eval mode."""
    return in_chunks(model, lambda xb: model(xb).argmax(1), x, batch_size)


def features(model: Classifier, x: torch.Tensor, batch_size: int = CHUNK) -> np.ndarray:
    """The classifier's features (the FLD's space) as float64 numpy."""
    return in_chunks(model, lambda xb: model.features(xb).cpu(), x, batch_size).double().numpy()


def train_classifier(tensors: dict, epochs: int, batch_size: int, lr: float, seed: int,
                     progress: Callable[[int, float], None] = lambda epoch, acc: None,
                     precision: str = "fp32") -> tuple[Classifier, float]:
    """Train the reference classifier on MNIST's training set; returns it and its test accuracy.

    One-cycle learning-rate schedule and light augmentation: about 99.4% after 5 epochs
    (20 s each on a 2-core CPU).
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    # channels_last: the convolutions' fast layout on CPUs (measured 1.6-1.9x a step,
    # benchmarks/classifier_speed.py); the weights it saves load into any layout.
    model = Classifier().to(tensors["train_x"].device, memory_format=torch.channels_last)
    x_all, y_all = tensors["train_x"], tensors["train_y"].long()
    n = x_all.shape[0]
    steps = epochs * math.ceil(n / batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr / 3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    accuracy = 0.0
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=generator).to(x_all.device)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            x = _augment(x_all[idx].float().div_(255.0), generator).contiguous(memory_format=torch.channels_last)
            with hardware.autocast(precision, x.device):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
        accuracy = test_accuracy(model, tensors)
        progress(epoch + 1, accuracy)
    model.eval()
    return model, accuracy


def test_accuracy(model: Classifier, tensors: dict) -> float:
    predicted = predict(model, tensors["test_x"])
    return float((predicted == tensors["test_y"].long()).float().mean())


# What the classifier's weights come from, fingerprinted into its key (code_fingerprint).
CODE = (Classifier, train_classifier, _augment, augment.random_affine)
