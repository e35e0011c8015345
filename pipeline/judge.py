"""Judging generators with the reference classifier: train it, and measure a generator with it.

Tensor work only (no MLflow, no files): the evaluate stage (evaluate.py) decides where the
classifier is stored and what gets logged; the training loop calls ``measure`` for its
in-training evaluation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import augment, latents, metrics
from .models import Classifier, Discriminator, Generator


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small random rotations, scalings and shifts, so the classifier is not fooled by a
    generated digit that sits a pixel off centre."""
    return augment.random_affine(x, generator, max_degrees=8.6, max_scale=0.1, max_shift_px=2.1)


@torch.no_grad()
def _in_chunks(model: torch.nn.Module, read: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
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
    return _in_chunks(model, lambda xb: model(xb).argmax(1), x, batch_size)


def features(model: Classifier, x: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """The classifier's features (the FLD's space) as float64 numpy."""
    return _in_chunks(model, lambda xb: model.features(xb).cpu(), x, batch_size).double().numpy()


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


@dataclass
class Measurement:
    mapping: metrics.CodeMapping
    gen_accuracy: float
    q_accuracy: float
    demo_scores: np.ndarray  # one grade (0-10) per random demo
    fld: Optional[float]
    fld_floor: Optional[float] = None  # the same distance between two disjoint real test splits

    def as_metrics(self) -> dict[str, float]:
        out = {
            "eval/gen_accuracy": self.gen_accuracy,
            "eval/q_accuracy": self.q_accuracy,
            "eval/demo_score_mean": float(self.demo_scores.mean()),
            "eval/demo_score_min": float(self.demo_scores.min()),
            "eval/demo_perfect_frac": float((self.demo_scores == 10).mean()),
            "eval/min_code_purity": float(self.mapping.purity().min()),
        }
        if self.fld is not None:
            out["eval/fld"] = self.fld
        if self.fld_floor is not None:
            out["eval/fld_floor"] = self.fld_floor
        return out


class RealReference:
    """Classifier features of the first ``n`` real test images (what FLD compares generated
    images with) and the floor: the distance from them to the next ``n`` real test images, what
    a perfect generator would score with this many samples (FLD is biased upwards for small n).
    The floor is None when the test set has fewer than ``2 n`` images."""

    def __init__(self, classifier: Classifier, test_x: torch.Tensor, n: int):
        self.features = features(classifier, test_x[:n])
        held_out = test_x[n:2 * n]
        self.floor = (metrics.frechet_distance(features(classifier, held_out), self.features)
                      if held_out.shape[0] == n else None)


@torch.no_grad()
def generate(g: Generator, z: torch.Tensor, c: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """G(z, c) in eval mode (batch-norm running statistics), in chunks."""
    was_training = g.training
    g.eval()
    out = [g(z[i:i + batch_size], latents.one_hot(c[i:i + batch_size], g.code_dim))
           for i in range(0, z.shape[0], batch_size)]
    g.train(was_training)
    return torch.cat(out)


def q_codes(d: Discriminator, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Q's most likely code for each image (uint8 or [0, 1] float)."""
    return _in_chunks(d, lambda xb: d(xb)[1].argmax(1), x, batch_size)


def demo_inputs(n_demos: int, noise_dim: int, code_of_digit: dict[int, int], generator: torch.Generator,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents of ``n_demos`` demos, each 10 digits x 10 fresh noise vectors, digit-major:
    z, c of shape [n_demos * 100, ...]; image (n, digit, style) is at n*100 + digit*10 + style."""
    noise = torch.randn(n_demos, 1, 10, noise_dim, generator=generator).expand(n_demos, 10, 10, noise_dim)
    codes = torch.tensor([code_of_digit[d] for d in range(10)])
    c = codes[None, :, None].expand(n_demos, 10, 10)
    return noise.reshape(-1, noise_dim).to(device), c.reshape(-1).to(device)


def measure(g: Generator, d: Optional[Discriminator], classifier: Classifier, tensors: dict,
            samples_per_code: int = 1000, n_demos: int = 100, fld_samples: int = 0,
            seed: int = 0, reference: Optional[RealReference] = None) -> Measurement:
    """Everything the evaluate stage reports about a generator (and Q when ``d`` is given).

    ``tensors`` are the MNIST tensors (test_x/test_y used). The mapping comes from
    ``samples_per_code`` samples of every code value; demos use fresh noise through the mapping;
    FLD compares ``fld_samples`` generated images with as many real test images
    (``reference`` may pass them precomputed; see RealReference for the floor).
    """
    device = next(g.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    code_dim = g.code_dim
    c = torch.arange(code_dim).repeat_interleave(samples_per_code)
    z = torch.randn(c.shape[0], g.noise_dim, generator=generator)
    images = generate(g, z.to(device), c.to(device))
    predicted = predict(classifier, images).cpu().numpy()
    mapping = metrics.map_codes(c.numpy(), predicted, code_dim)

    q_accuracy = float("nan")
    if d is not None:
        codes = q_codes(d, tensors["test_x"]).cpu().numpy()
        q_accuracy = metrics.mapped_accuracy(codes, tensors["test_y"].cpu().numpy(), mapping)

    if code_dim >= 10 and len(set(mapping.digit_of_code[:code_dim].tolist())) >= 10:
        z_demo, c_demo = demo_inputs(n_demos, g.noise_dim, mapping.code_of_digit, generator, device)
        demo_pred = predict(classifier, generate(g, z_demo, c_demo)).cpu().numpy()
        scores = metrics.demo_scores(demo_pred.reshape(n_demos, 10, 10))
    else:
        scores = np.zeros(n_demos, dtype=int)

    fld = floor = None
    if fld_samples:
        if reference is None:
            reference = RealReference(classifier, tensors["test_x"], fld_samples)
        pick = torch.randperm(images.shape[0], generator=generator)[:fld_samples]
        fld = metrics.frechet_distance(features(classifier, images[pick.to(images.device)]), reference.features)
        floor = reference.floor
    return Measurement(mapping, mapping.accuracy(), q_accuracy, scores, fld, floor)
