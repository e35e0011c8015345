"""Measuring a generator (and its Q) with the reference classifier: which code is which digit,
the demo grades, Q's accuracy on real digits, the Frechet distance, how much the images vary with z
(style spread), the continuous codes' effects.

Tensor work only (no MLflow, no files): the evaluate stage decides what gets logged; the training
loop calls :func:`measure` (through :class:`Evaluator`) for its in-training evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from . import latents, metrics, names
from .models import Discriminator, Generator
from .reference import CHUNK, Classifier, features, in_chunks, predict


@dataclass
class Measurement:
    mapping: metrics.CodeMapping
    gen_accuracy: float
    q_accuracy: float
    demo_scores: np.ndarray  # one grade (0-10) per random demo
    fld: Optional[float]
    fld_floor: Optional[float] = None  # the same distance between two disjoint real test splits
    continuous: Optional[dict] = None  # continuous_effects(): eval/cont_c<k>_slant, _width
    style_spread: float = float("nan")  # names.STYLE_SPREAD

    def as_metrics(self) -> dict[str, float]:
        out = {
            names.GEN_ACCURACY: self.gen_accuracy,
            names.Q_ACCURACY: self.q_accuracy,
            names.DEMO_SCORE_MEAN: float(self.demo_scores.mean()),
            names.DEMO_SCORE_MIN: float(self.demo_scores.min()),
            names.DEMO_PERFECT_FRAC: float((self.demo_scores == 10).mean()),
            names.MIN_CODE_PURITY: float(self.mapping.purity().min()),
            names.STYLE_SPREAD: self.style_spread,
        }
        if self.fld is not None:
            out[names.FLD] = self.fld
        if self.fld_floor is not None:
            out[names.FLD_FLOOR] = self.fld_floor
        out.update(self.continuous or {})
        return out

    def codes_by_digit(self) -> Optional[list[int]]:
        """The code value of each digit 0-9 when the mapping gives every digit a code, else None."""
        of_digit = self.mapping.code_of_digit
        return [of_digit[d] for d in range(10)] if all(d in of_digit for d in range(10)) else None


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
def generate(g: Generator, z: torch.Tensor, c: torch.Tensor, u: Optional[torch.Tensor] = None,
             batch_size: int = CHUNK) -> torch.Tensor:
    """G(z, c, u) in eval mode (batch-norm running statistics), in chunks; ``u`` None = every
    continuous code at 0."""
    was_training = g.training
    g.eval()
    out = [g(z[i:i + batch_size], latents.one_hot(c[i:i + batch_size], g.code_dim),
             None if u is None else u[i:i + batch_size])
           for i in range(0, z.shape[0], batch_size)]
    g.train(was_training)
    return torch.cat(out)


def uniform_codes(g: Generator, n: int, generator: torch.Generator, device: torch.device) -> Optional[torch.Tensor]:
    """Continuous codes for ``n`` samples drawn as in training (None for a G without them, with
    nothing drawn from ``generator``, so such a G is measured exactly as before they existed)."""
    u = latents.continuous(n, g.continuous_codes, generator, torch.device("cpu"))
    return None if u is None else u.to(device)


CONTINUOUS_SAMPLES = 1000  # images behind each continuous code's correlations
CONTINUOUS_STEPS = 10  # values of the code per set of other inputs


def continuous_effects(g: Generator, seed: int, n: int = CONTINUOUS_SAMPLES) -> dict[str, float]:
    """What each continuous code does to G's images, as Spearman rank correlations of its value
    with their slant and with their stroke width (``metrics.slant_degrees``,
    ``metrics.stroke_width``): ``eval/cont_c1_slant``, ``eval/cont_c1_width``, ... Empty for a G
    without continuous codes.

    ``n`` images per code: ``n / CONTINUOUS_STEPS`` sets of the other inputs (z, c and the other
    codes, drawn as in training), each drawn with the code at ``CONTINUOUS_STEPS`` evenly spaced
    values over its training range [-1, 1]. Each property is taken relative to its set's mean,
    so ρ says how consistently moving the code moves the property with everything else held,
    not how much of the digits' natural variety of slant it explains."""
    if not g.continuous_codes:
        return {}
    from scipy.stats import spearmanr

    device = next(g.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    sets, steps = max(n // CONTINUOUS_STEPS, 2), CONTINUOUS_STEPS
    values = torch.linspace(-1.0, 1.0, steps).repeat(sets)
    out = {}
    for k in range(g.continuous_codes):
        z = torch.randn(sets, g.noise_dim, generator=generator).repeat_interleave(steps, 0)
        c = torch.randint(g.code_dim, (sets,), generator=generator).repeat_interleave(steps)
        u = latents.continuous(sets, g.continuous_codes, generator, torch.device("cpu")).repeat_interleave(steps, 0)
        u[:, k] = values
        images = generate(g, z.to(device), c.to(device), u.to(device)).squeeze(1).float().cpu().numpy()
        for name, measure_of in (("slant", metrics.slant_degrees), ("width", metrics.stroke_width)):
            measured = measure_of(images).reshape(sets, steps)
            rho = spearmanr(values.numpy(), (measured - measured.mean(axis=1, keepdims=True)).ravel()).statistic
            out[names.continuous_effect(k + 1, name)] = float(rho) if np.isfinite(rho) else 0.0
    return out


def traversal(g: Generator, index: int, noise: torch.Tensor, codes: torch.Tensor,
              values: torch.Tensor = latents.TRAVERSAL_VALUES) -> torch.Tensor:
    """Continuous code ``index`` swept over ``values`` (columns) for each categorical code value
    in ``codes`` (rows), the same noise vector everywhere: images [rows * columns, 1, 28, 28]."""
    device = next(g.parameters()).device
    z, c, u = latents.traversal_inputs(noise.to(device), codes.to(device), g.continuous_codes, index, values)
    return generate(g, z, c, u)


def q_codes(d: Discriminator, x: torch.Tensor, batch_size: int = CHUNK) -> torch.Tensor:
    """Q's most likely code for each image (uint8 or [0, 1] float)."""
    return in_chunks(d, lambda xb: d(xb)[1].argmax(1), x, batch_size)


def demo_inputs(n_demos: int, noise_dim: int, code_of_digit: dict[int, int], generator: torch.Generator,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents of ``n_demos`` demos, each 10 digits x 10 fresh noise vectors, digit-major:
    z, c of shape [n_demos * 100, ...]; image (n, digit, style) is at n*100 + digit*10 + style."""
    noise = torch.randn(n_demos, 1, 10, noise_dim, generator=generator).expand(n_demos, 10, 10, noise_dim)
    codes = torch.tensor([code_of_digit[d] for d in range(10)])
    c = codes[None, :, None].expand(n_demos, 10, 10)
    return noise.reshape(-1, noise_dim).to(device), c.reshape(-1).to(device)


@dataclass(frozen=True)
class Budget:
    """How much a measurement looks at: ``samples_per_code`` samples of every code value for the
    mapping, ``demos`` graded demos, ``fld_samples`` images per side of the FLD (0 = none), Q on
    the first ``q_test_images`` real test digits (None: all)."""
    samples_per_code: int = 1000
    demos: int = 100
    fld_samples: int = 0
    q_test_images: Optional[int] = None


def measure(g: Generator, d: Optional[Discriminator], classifier: Classifier, tensors: dict,
            budget: Budget = Budget(), seed: int = 0, reference: Optional[RealReference] = None,
            real_spread: Optional[float] = None) -> Measurement:
    """Everything the evaluate stage reports about a generator (and Q when ``d`` is given).

    ``tensors`` are the MNIST tensors (test_x/test_y used). The mapping comes from the budget's
    samples of every code value; demos use fresh noise through the mapping; FLD compares
    generated images with as many real test images (``reference`` may pass them precomputed;
    see RealReference for the floor); ``real_spread`` is ``real_style_spread(tensors)``, passed
    when it was computed once for many calls.
    """
    samples_per_code, n_demos, fld_samples, q_test_images = (budget.samples_per_code, budget.demos,
                                                              budget.fld_samples, budget.q_test_images)
    device = next(g.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    code_dim = g.code_dim
    c = torch.arange(code_dim).repeat_interleave(samples_per_code)
    z = torch.randn(c.shape[0], g.noise_dim, generator=generator)
    u = uniform_codes(g, c.shape[0], generator, device)
    images = generate(g, z.to(device), c.to(device), u)
    predicted = predict(classifier, images).cpu().numpy()
    mapping = metrics.map_codes(c.numpy(), predicted, code_dim)
    spread = style_spread(images, c, real_style_spread(tensors) if real_spread is None else real_spread)

    q_accuracy = float("nan")
    if d is not None:
        codes = q_codes(d, tensors["test_x"][:q_test_images]).cpu().numpy()
        q_accuracy = metrics.mapped_accuracy(codes, tensors["test_y"][:q_test_images].cpu().numpy(), mapping)

    if code_dim >= 10 and len(set(mapping.digit_of_code[:code_dim].tolist())) >= 10:
        z_demo, c_demo = demo_inputs(n_demos, g.noise_dim, mapping.code_of_digit, generator, device)
        u_demo = uniform_codes(g, c_demo.shape[0], generator, device)
        demo_pred = predict(classifier, generate(g, z_demo, c_demo, u_demo)).cpu().numpy()
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
    return Measurement(mapping, mapping.accuracy(), q_accuracy, scores, fld, floor,
                       continuous_effects(g, seed + 1), spread)


def real_style_spread(tensors: dict) -> float:
    """The pixel spread of the real test digits within each class: what ``style_spread`` divides by."""
    return metrics.within_group_spread(tensors["test_x"].float().div(255.0).cpu().numpy(),
                                       tensors["test_y"].cpu().numpy())


def style_spread(images: torch.Tensor, c: torch.Tensor, real_spread: float) -> float:
    """names.STYLE_SPREAD: the pixel spread of ``images`` within each code value ``c``, over
    ``real_spread`` (``real_style_spread``)."""
    return metrics.within_group_spread(images.float().cpu().numpy(), c.cpu().numpy()) / real_spread


class Evaluator:
    """Measures a generator (and its Q) against the classifier with the run's ``eval`` settings;
    used by the training loop (small budget) and by the evaluate stage (full budget)."""

    def __init__(self, cfg, classifier: Classifier, tensors: dict):
        self.cfg, self.classifier, self.tensors = cfg, classifier, tensors
        e = cfg.eval
        self.reference = RealReference(classifier, tensors["test_x"], e.fld_samples) if e.fld_samples else None
        self.real_spread = real_style_spread(tensors)

    def __call__(self, g: Generator, d: Discriminator, full: bool = False,
                 seed: Optional[int] = None) -> Measurement:
        e = self.cfg.eval
        budget = Budget(e.samples_per_code if full else e.train_samples_per_code, e.demos, e.fld_samples,
                        e.q_test_images)
        return measure(g, d, self.classifier, self.tensors, budget, seed=self.cfg.seed + 7 if seed is None else seed,
                       reference=self.reference, real_spread=self.real_spread)


def evaluation_line(epoch: int, measured: dict[str, float], continuous_codes: int) -> str:
    """The one line an epoch's evaluation prints."""
    return (f"epoch {epoch} evaluation: generated accuracy {measured[names.GEN_ACCURACY]:.3f}, "
            f"Q accuracy {measured[names.Q_ACCURACY]:.3f}, demo min {measured[names.DEMO_SCORE_MIN]:.0f}/10, "
            f"min code purity {measured[names.MIN_CODE_PURITY]:.2f}"
            + (f", FLD {measured[names.FLD]:.1f}" if names.FLD in measured else "")
            + "".join(f", c{k} ~ slant {measured[names.continuous_effect(k, 'slant')]:+.2f} / width "
                      f"{measured[names.continuous_effect(k, 'width')]:+.2f}" for k in range(1, continuous_codes + 1)))
