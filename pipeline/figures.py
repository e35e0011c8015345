"""Figures shared by the stages: the fixed-noise sample grid, continuous-code traversals, the
graded demo grid and the code -> digit confusion matrix."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from . import latents, measure, metrics, models
from .images import grid_array


@torch.no_grad()
def sample_grid(g: models.Generator, noise: torch.Tensor) -> torch.Tensor:
    """The fixed-noise grid in eval mode (batch-norm running statistics stay untouched):
    [code_dim * n_styles, 1, 28, 28], row k = code value k."""
    was_training = g.training
    g.eval()
    z, c = latents.grid_inputs(noise, g.code_dim)
    images = g(z, latents.one_hot(c, g.code_dim))
    g.train(was_training)
    return images


def traversal_grid(g: models.Generator, index: int, noise: torch.Tensor,
                   codes: Optional[list[int]] = None) -> np.ndarray:
    """Continuous code ``index`` from -2 to 2 (columns) for each code value in ``codes`` (rows;
    default: every code value in order) with one noise vector, as a grid image."""
    rows = torch.arange(g.code_dim) if codes is None else torch.tensor(codes)
    images = measure.traversal(g, index, noise, rows)
    return grid_array(images, nrow=latents.TRAVERSAL_VALUES.shape[0])


def pyplot():
    """matplotlib's pyplot on the file-only backend (no display is needed or used)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def demo_figure(images: torch.Tensor, passes: np.ndarray, digits_right: np.ndarray):
    """The graded demo: rows = digits 0-9, columns = styles, each column marked pass/fail."""
    plt = pyplot()
    grid = grid_array(images, nrow=10)
    fig, ax = plt.subplots(figsize=(6.4, 7.0))
    ax.imshow(grid)
    cell = grid.shape[1] / 10
    ax.set_xticks([(i + 0.5) * cell for i in range(10)],
                  [f"{'pass' if p else 'FAIL'}\n{r}/10" for p, r in zip(passes, digits_right)], fontsize=8)
    for label, p in zip(ax.get_xticklabels(), passes):
        label.set_color("tab:green" if p else "tab:red")
    ax.set_yticks([(i + 0.5) * cell for i in range(10)], [str(d) for d in range(10)])
    ax.set_ylabel("digit (code through the mapping)")
    ax.set_xlabel("style column (fresh noise vector): right digits; pass with >= 7")
    ax.set_title(f"demo grade {int(passes.sum())}/10")
    fig.tight_layout()
    return fig


def confusion_figure(mapping: metrics.CodeMapping):
    plt = pyplot()
    counts = mapping.counts
    share = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = ax.imshow(share, cmap="viridis", vmin=0, vmax=1)
    for k in range(share.shape[0]):
        for digit in range(share.shape[1]):
            if share[k, digit] >= 0.005:
                ax.text(digit, k, f"{share[k, digit]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if share[k, digit] > 0.6 else "white")
    ax.set_xticks(range(share.shape[1]))
    ax.set_yticks(range(share.shape[0]), [f"{k} -> {d}" for k, d in enumerate(mapping.digit_of_code)])
    ax.set_xlabel("digit predicted by the reference classifier")
    ax.set_ylabel("code value -> mapped digit")
    ax.set_title(f"code purity: generated accuracy {mapping.accuracy():.3f}")
    fig.colorbar(im, ax=ax, label="share of the code's samples")
    fig.tight_layout()
    return fig


