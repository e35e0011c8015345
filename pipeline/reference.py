"""The reference MNIST classifier that judges every generator (not part of InfoGAN): the
network, its training, reading images with it, and the one logged copy every run reuses."""
from __future__ import annotations

import hashlib
import math
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from . import augment, names, tracking

MIN_CLASSIFIER_ACCURACY = 0.99
CLASSIFIER_SEED = 0  # one classifier judges every run, whatever the run's own seed


def classifier_key(cfg: DictConfig, data_sha256: str) -> str:
    """What the classifier depends on: its training settings and the data it learned from."""
    e = cfg.eval
    body = repr((e.classifier_epochs, e.classifier_lr, e.classifier_train_subset, CLASSIFIER_SEED, data_sha256))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def get_classifier(cfg: DictConfig, tensors: dict, data_sha256: str,
                   log: Callable[[str], None] = print) -> tuple[Classifier, str, float]:
    """The reference classifier: the logged one with the same key, else trained now and logged
    as its own run in ``eval.classifier_experiment``. Returns (model, run id, test accuracy)."""
    key = classifier_key(cfg, data_sha256)
    found = tracking.find_finished_run(cfg.eval.classifier_experiment, {names.CLASSIFIER_KEY: key})
    if found is not None:
        model = tracking.load_state_dict_model(Classifier(), found.info.run_id, names.CLASSIFIER_WEIGHTS)
        accuracy = found.data.metrics.get(names.CLASSIFIER_ACCURACY, float("nan"))
        log(f"reference classifier: run {found.info.run_id} (test accuracy {accuracy:.4f})")
        return model.to(tensors["test_x"].device).eval(), found.info.run_id, accuracy

    e = cfg.eval
    train_tensors = dict(tensors)
    if e.classifier_train_subset is not None:
        train_tensors["train_x"] = tensors["train_x"][:e.classifier_train_subset]
        train_tensors["train_y"] = tensors["train_y"][:e.classifier_train_subset]
    log(f"training the reference MNIST classifier ({e.classifier_epochs} epochs; once, then reused)")
    run_id = tracking.new_run(cfg.eval.classifier_experiment, "reference-classifier",
                              {names.CLASSIFIER_KEY: key, names.STAGE: "classifier", names.DATA_SHA256: data_sha256})
    tracker = tracking.MlflowTracker(run_id)
    try:
        tracker.log_params({"classifier.epochs": e.classifier_epochs, "classifier.lr": e.classifier_lr,
                            "classifier.train_subset": e.classifier_train_subset, "seed": CLASSIFIER_SEED})

        def progress(epoch: int, accuracy: float) -> None:
            tracker.log_metrics({names.CLASSIFIER_ACCURACY: accuracy}, step=epoch)
            log(f"  classifier epoch {epoch}/{e.classifier_epochs}: test accuracy {accuracy:.4f}")

        model, accuracy = train_classifier(train_tensors, e.classifier_epochs, 128, e.classifier_lr,
                                                 CLASSIFIER_SEED, progress)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / names.CLASSIFIER_WEIGHTS
            torch.save(model.state_dict(), path)
            tracker.log_artifact(path)
        if cfg.eval.classifier_train_subset is None:
            tracker.log_model(model.cpu().eval(), "classifier")
            model.to(tensors["test_x"].device)
        tracker.flush()
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    tracking.end_run(run_id, "FINISHED")
    if accuracy < MIN_CLASSIFIER_ACCURACY and e.classifier_train_subset is None:
        warnings.warn(f"the reference classifier reached only {accuracy:.4f} test accuracy "
                      f"(< {MIN_CLASSIFIER_ACCURACY}); eval/ figures are less trustworthy", stacklevel=2)
    return model.eval(), run_id, accuracy


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


def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Argmax classes of uint8 or [0, 1] float images, in eval mode."""
    return in_chunks(model, lambda xb: model(xb).argmax(1), x, batch_size)


def features(model: Classifier, x: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """The classifier's features (the FLD's space) as float64 numpy."""
    return in_chunks(model, lambda xb: model.features(xb).cpu(), x, batch_size).double().numpy()


def train_classifier(tensors: dict, epochs: int, batch_size: int, lr: float, seed: int,
                     progress: Callable[[int, float], None] = lambda epoch, acc: None
                     ) -> tuple[Classifier, float]:
    """Train the reference classifier on MNIST's training set; returns it and its test accuracy.

    One-cycle learning-rate schedule and light augmentation: about 99.4% after 5 epochs
    (20 s each on a 2-core CPU).
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Classifier().to(tensors["train_x"].device)
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
            x = _augment(x_all[idx].float().div_(255.0), generator)
            loss = F.cross_entropy(model(x), y_all[idx])
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
