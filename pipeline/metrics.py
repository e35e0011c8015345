"""Pure metrics: the code -> digit mapping, accuracies, the lab's demo grade, Frechet distance,
and the image moments that measure what a continuous code does (slant, stroke width).

Nothing here knows about models, configs or MLflow; everything takes arrays and returns numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.optimize import linear_sum_assignment

PASS_MARK = 7  # a demo column (one style, ten digits) passes with at least this many right
MIXED_BELOW = 0.8  # a code whose assigned digit is rarer than this among its samples draws a mix


@dataclass
class CodeMapping:
    """Which digit each code value draws, learned without labels.

    ``digit_of_code[k]`` is the digit assigned to code k (one-to-one, Hungarian);
    ``counts[k, d]`` how many samples of code k the classifier called d.
    """
    digit_of_code: np.ndarray  # [code_dim] int
    counts: np.ndarray  # [code_dim, n_classes] int

    @property
    def code_of_digit(self) -> dict[int, int]:
        return {int(d): k for k, d in enumerate(self.digit_of_code)}

    def purity(self) -> np.ndarray:
        """Per code: the share of its samples classified as its assigned digit."""
        rows = self.counts.sum(axis=1).clip(min=1)
        return self.counts[np.arange(len(self.digit_of_code)), self.digit_of_code] / rows

    def accuracy(self) -> float:
        """Share of all samples classified as the digit their code is mapped to."""
        hits = self.counts[np.arange(len(self.digit_of_code)), self.digit_of_code].sum()
        return float(hits / max(self.counts.sum(), 1))

    def warnings(self) -> list[str]:
        """The classic failures: two codes drawing one digit, so another digit has no code; and a
        code drawing two digits (which z decides), so asking for its digit often gives the other.
        Two codes can share a pair of digits that way and still map one-to-one, and the lab's
        demo grade (a column passes with 7 of its 10 digits right) does not see it."""
        majority = self.counts.argmax(axis=1)
        notes = []
        for digit in range(self.counts.shape[1]):
            codes = [k for k in range(len(majority)) if majority[k] == digit]
            if len(codes) > 1:
                notes.append(f"codes {codes} all mostly draw digit {digit}")
        missing = sorted(set(range(self.counts.shape[1])) - set(majority.tolist()))
        if missing:
            notes.append(f"no code mostly draws digit(s) {missing}")
        rows = self.counts.sum(axis=1).clip(min=1)
        for k, (digit, purity) in enumerate(zip(self.digit_of_code, self.purity())):
            if majority[k] != digit or purity >= MIXED_BELOW:
                continue  # mostly another digit: the checks above are about that
            share = self.counts[k] / rows[k]
            other = max((d for d in range(len(share)) if d != digit), key=lambda d: share[d])
            notes.append(f"code {k} draws its digit {digit} in only {purity:.0%} of samples and {other} "
                         f"in {share[other]:.0%}")
        return notes

    def to_dict(self) -> dict:
        purity = self.purity()
        return {
            "digit_of_code": [int(d) for d in self.digit_of_code],
            "code_of_digit": {str(d): k for d, k in sorted(self.code_of_digit.items())},
            "purity": {str(k): round(float(p), 4) for k, p in enumerate(purity)},
            "accuracy": round(self.accuracy(), 4),
            "counts": self.counts.tolist(),
            "warnings": self.warnings(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "CodeMapping":
        return cls(np.asarray(data["digit_of_code"], dtype=int), np.asarray(data["counts"], dtype=int))


def confusion(codes: np.ndarray, predicted: np.ndarray, code_dim: int, n_classes: int = 10) -> np.ndarray:
    """counts[k, d]: samples of code k that the classifier calls digit d."""
    counts = np.zeros((code_dim, n_classes), dtype=int)
    np.add.at(counts, (np.asarray(codes, dtype=int), np.asarray(predicted, dtype=int)), 1)
    return counts


def map_codes(codes: np.ndarray, predicted: np.ndarray, code_dim: int, n_classes: int = 10) -> CodeMapping:
    """One-to-one code -> digit assignment maximising agreement (Hungarian algorithm).

    With more codes than digits, the surplus codes get the digit they agree with most.
    """
    counts = confusion(codes, predicted, code_dim, n_classes)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    digit_of_code = counts.argmax(axis=1)
    digit_of_code[rows] = cols
    return CodeMapping(digit_of_code.astype(int), counts)


def mapped_accuracy(predicted_code: np.ndarray, labels: np.ndarray, mapping: CodeMapping) -> float:
    """Accuracy of a code predictor (Q on real images) read through the mapping."""
    return float(np.mean(mapping.digit_of_code[np.asarray(predicted_code, dtype=int)] == np.asarray(labels)))


def demo_scores(predicted: np.ndarray) -> np.ndarray:
    """The lab's grade of demos: ``predicted[n, digit, style]`` is the class the classifier gives
    the image drawn for ``digit`` (through the mapping) in style column ``style``. A column passes
    when at least PASS_MARK of its digits are right; a demo scores its passing columns (0-10)."""
    predicted = np.asarray(predicted)
    right = predicted == np.arange(predicted.shape[1])[None, :, None]
    return (right.sum(axis=1) >= PASS_MARK).sum(axis=1)


def column_right(predicted: np.ndarray) -> np.ndarray:
    """For one demo ``predicted[digit, style]``: how many digits each style column has right."""
    predicted = np.asarray(predicted)
    return (predicted == np.arange(predicted.shape[0])[:, None]).sum(axis=0)


def column_passes(predicted: np.ndarray) -> np.ndarray:
    """For one demo ``predicted[digit, style]``: which style columns pass."""
    return column_right(predicted) >= PASS_MARK


def within_group_spread(images: np.ndarray, groups: np.ndarray) -> float:
    """Mean per-pixel standard deviation of ``images`` [N, ...] within each group of ``groups``
    [N] (a code value, or a digit label), averaged over the groups with two or more images."""
    flat = np.asarray(images, dtype=np.float64).reshape(len(groups), -1)
    spreads = [flat[groups == k].std(axis=0).mean() for k in np.unique(groups) if (groups == k).sum() > 1]
    return float(np.mean(spreads))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets ``a`` [N, F] and ``b`` [M, F]:
    |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^1/2).

    The trace of the matrix square root is taken from the eigenvalues of the symmetric
    S_a^1/2 S_b S_a^1/2 (same spectrum as S_a S_b), which stays exact when a covariance is
    singular (ReLU features that never fire), where a general ``sqrtm`` would warn and drift.
    """
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(w.clip(min=0))) @ v.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = np.sqrt(linalg.eigvalsh((middle + middle.T) / 2).clip(min=0)).sum()
    value = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt
    return float(max(value, 0.0))


def grid_cells(grid: np.ndarray, rows: int, cols: int, size: int = 28, padding: int = 2) -> np.ndarray:
    """The images of a logged sample grid (an HxW or HxWx3 uint8 array as ``images.grid_array``
    draws it: ``padding`` pixels around every ``size``-pixel cell) as floats in [0, 1], [N, size, size]."""
    gray = np.asarray(grid, dtype=np.float64)
    gray = gray[..., 0] if gray.ndim == 3 else gray
    step = size + padding
    cells = [gray[padding + r * step:padding + r * step + size, padding + c * step:padding + c * step + size]
             for r in range(rows) for c in range(cols)]
    return np.stack(cells) / 255.0


def amplitude_spectrum(images: np.ndarray) -> np.ndarray:
    """Mean |FFT| of images [N, H, W] (each minus its own mean, so brightness does not count),
    zero frequency in the centre: entry [H//2 + v, W//2 + u] is u cycles across, v down."""
    x = np.asarray(images, dtype=np.float64)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    return np.fft.fftshift(np.abs(np.fft.fft2(x)).mean(axis=0))


def period2_share(spectrum: np.ndarray) -> float:
    """Share of the spectrum's energy (squared amplitude) at the 2-pixel period: the Nyquist row
    and column, where a pattern that alternates from one pixel to the next puts all of its
    energy. Smooth strokes (real digits) leave little there; a stride-2 transposed convolution's
    uneven overlap (the checkerboard) puts more."""
    power = np.asarray(spectrum, dtype=np.float64) ** 2
    h, w = power.shape
    at_nyquist = np.zeros_like(power, dtype=bool)
    at_nyquist[0, :] = at_nyquist[:, 0] = True  # after fftshift, frequency -N/2 sits at index 0
    return float(power[at_nyquist].sum() / power.sum())


# --- image moments: what a continuous code changes --------------------------------------------

INK_THRESHOLD = 0.5  # a pixel in [0, 1] is ink at or above this


def slant_degrees(images: np.ndarray) -> np.ndarray:
    """The slant of each image's ink, in degrees from the vertical (0 upright, positive when the
    top leans right): the angle of the shear that would make it upright, atan(cov(x, y) /
    var(y)) from the intensity-weighted second moments. For a single stroke this is the angle of
    its principal axis; unlike that axis it stays defined for round digits (an italic "0").
    ``images`` [N, H, W] in [0, 1] (row 0 at the top); returns [N]."""
    w = np.asarray(images, dtype=np.float64)
    rows, cols = np.mgrid[0:w.shape[1], 0:w.shape[2]]
    mass = w.sum(axis=(1, 2)).clip(min=1e-9)
    cx = (w * cols).sum(axis=(1, 2)) / mass
    cy = (w * rows).sum(axis=(1, 2)) / mass
    dx = cols[None] - cx[:, None, None]
    dy = cy[:, None, None] - rows[None]  # upwards
    vyy = (w * dy * dy).sum(axis=(1, 2)) / mass
    vxy = (w * dx * dy).sum(axis=(1, 2)) / mass
    return np.degrees(np.arctan(vxy / vyy.clip(min=1e-9)))


def stroke_width(images: np.ndarray) -> np.ndarray:
    """Mean stroke width in pixels: the ink area A over the stroke's length, taken from its
    skeleton (the one-pixel centre line, scikit-image's ``skeletonize``), so a larger digit drawn
    with the same pen scores the same. The skeleton of a stroke of width w stops about w/2 short
    of each end, so the width solves A = w (s + w) for skeleton length s. ``images`` [N, H, W]
    in [0, 1]; 0 for an image without ink."""
    from skimage.morphology import skeletonize

    ink = np.asarray(images) >= INK_THRESHOLD
    out = np.zeros(ink.shape[0])
    for i, mask in enumerate(ink):
        area, length = float(mask.sum()), float(skeletonize(mask).sum())
        out[i] = (np.sqrt(length ** 2 + 4.0 * area) - length) / 2.0
    return out
