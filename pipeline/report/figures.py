"""The report's figures, drawn with matplotlib/seaborn from collected runs. Each is sized for
the place it takes on an A4 page (full text width or half of it), so its text prints at about
the size of the document's captions."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .. import metrics, names
from .collect import RunData, read_png, variants

FULL, HALF = 6.7, 3.25  # inches: the text width of the document, and one column of two
SMOOTH_WINDOW = 9  # logged points (each already an average of train.log_every iterations)
LOSSES = ((names.LOSS_D, "D loss (BCE)"), (names.LOSS_G, "G adversarial loss"), (names.LOSS_INFO, "info loss (CE of Q)"))
EVAL_CURVES = ((names.GEN_ACCURACY, "generated accuracy"), (names.Q_ACCURACY, "Q accuracy, real digits"),
               (names.FLD, "FLD (classifier features)"))


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid")
    pyplot.rcParams.update({"figure.dpi": 100, "savefig.dpi": 200, "svg.hashsalt": "infogan",
                            "font.size": 7, "axes.titlesize": 8, "axes.labelsize": 7, "legend.fontsize": 6,
                            "xtick.labelsize": 6, "ytick.labelsize": 6, "lines.linewidth": 1.0})
    return pyplot


def palette(n: int):
    import seaborn as sns

    return sns.color_palette("tab10", max(n, 1))


def smoothed(curve: pd.DataFrame) -> pd.Series:
    """A centred moving average: no lag, so the smoothed curve sits on the raw one."""
    return curve.value.rolling(SMOOTH_WINDOW, center=True, min_periods=1).mean()


def _variant_colours(runs: Sequence[RunData]) -> dict[str, tuple]:
    names = list(variants(runs))
    return dict(zip(names, palette(len(names))))


def _legend_once(ax, runs: Sequence[RunData], colours: dict) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colours[name], label=f"{name} ({len(group)} seed{'s' * (len(group) > 1)})")
               for name, group in variants(runs).items()]
    ax.legend(handles=handles, loc="best")


def loss_figure(runs: Sequence[RunData]):
    """D, G and info losses against the step: one colour per experiment, one line per seed."""
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 3, figsize=(FULL, 2.2))
    colours = _variant_colours(runs)
    for run in runs:
        for ax, (key, name) in zip(axes, LOSSES):
            curve = run.curve(key)
            ax.plot(curve.step, curve.value, color=colours[run.variant], alpha=0.12, linewidth=0.5)
            ax.plot(curve.step, smoothed(curve), color=colours[run.variant], linewidth=0.9)
            ax.set_title(name)
            ax.set_xlabel("training step")
    axes[0].set_ylabel("loss (nats)")
    _legend_once(axes[0], runs, colours)
    fig.tight_layout()
    return fig


def probability_figure(runs: Sequence[RunData]):
    """D(x) and D(G(z,c)) before and after the G update: one panel per experiment, seeds overlaid."""
    pyplot = plt()
    groups = variants(runs)
    cols = min(3, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = pyplot.subplots(rows, cols, figsize=(FULL, 2.1 * rows), squeeze=False, sharey=True)
    lines = ((names.PROB_D_REAL, "D(x), real"), (names.PROB_D_FAKE_BEFORE_G, "D(G(z,c)) before G's update"),
             (names.PROB_D_FAKE_AFTER_G, "D(G(z,c)) in G's step"))
    colours = palette(3)
    for ax, (name, group) in zip(axes.flat, groups.items()):
        for run in group:
            for (key, label), colour in zip(lines, colours):
                curve = run.curve(key)
                ax.plot(curve.step, smoothed(curve), color=colour, linewidth=0.8,
                        label=label if run is group[0] else None)
        ax.set_ylim(0, 1)
        ax.set_title(name)
        ax.set_xlabel("training step")
    for ax in axes.flat[len(groups):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("mean D output (P(real))")
    axes[0, 0].legend(loc="best")
    fig.tight_layout()
    return fig


def g_loss_figure(runs: Sequence[RunData], last_step: int):
    """The two G losses side by side over the first ``last_step`` steps: D's verdict on the
    fakes, the G loss, and the norm of G's gradient (log scale), one line per seed."""
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 3, figsize=(FULL, 2.2))
    colours = dict(zip(("non_saturating", "saturating"), palette(4)[2:4]))
    panels = ((names.PROB_D_FAKE_BEFORE_G, "D(G(z,c))"), (names.LOSS_G, "G adversarial loss"),
              (names.GRAD_G_NORM, "norm of G's gradient"))
    for run in runs:
        for ax, (key, title) in zip(axes, panels):
            curve = run.curve(key)
            curve = curve[curve.step <= last_step]
            ax.plot(curve.step, curve.value, color=colours.get(run.g_loss, "gray"), linewidth=0.8,
                    label=f"{run.g_loss}" if run.seed == runs[0].seed or len(runs) == 2 else None)
            ax.set_title(title)
            ax.set_xlabel("training step")
    axes[2].set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axes[0].legend(unique.values(), unique.keys(), loc="best")
    fig.tight_layout()
    return fig


def eval_figure(runs: Sequence[RunData]):
    """Generated accuracy, Q accuracy and FLD per in-training evaluation, against the step; the
    evaluate stage's figure (full budget) as a star at the last step."""
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 3, figsize=(FULL, 2.2))
    colours = _variant_colours(runs)
    for run in runs:
        for ax, (key, name) in zip(axes, EVAL_CURVES):
            logged = run.curve(key)
            if logged.empty:
                continue
            curve = logged.drop_duplicates("step", keep="first")
            stage = logged[logged.duplicated("step", keep="first")].tail(1)
            ax.plot(curve.step, curve.value, marker="o", markersize=2, color=colours[run.variant], linewidth=0.8)
            if not stage.empty:
                ax.plot(stage.step, stage.value, marker="*", markersize=6, color=colours[run.variant], linestyle="none")
            ax.set_title(name)
            ax.set_xlabel("training step")
    floors = pd.concat([run.curve(names.FLD_FLOOR).value for run in runs])
    if not floors.empty:  # two real test splits: the FLD a perfect generator would score
        axes[2].axhline(floors.median(), color="gray", linestyle="--", linewidth=0.8, label="real vs real")
        axes[2].legend(loc="best")
        axes[2].set_yscale("log")
    for ax in axes[:2]:
        ax.set_ylim(0, 1.02)
    _legend_once(axes[0], runs, colours)
    fig.tight_layout()
    return fig


def image_panels(panels: Sequence[tuple[str, str]], columns: int, max_height: float = 7.5):
    """Logged PNGs in a grid, ``columns`` a row, each titled; cells shrink so the figure is at
    most ``max_height`` inches tall (then it is narrower than the page)."""
    pyplot = plt()
    rows = -(-len(panels) // columns)
    cell = min(FULL / columns, max_height / (rows * 1.1))
    fig, axes = pyplot.subplots(rows, columns, figsize=(cell * columns, cell * rows * 1.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, path) in zip(axes.flat, panels):
        ax.imshow(read_png(path), interpolation="nearest")
        ax.set_title(title)
    fig.tight_layout(pad=0.3)
    return fig


def checkerboard_figure(early: Sequence[RunData], step: int):
    """For each of ``early``: the grid it logged at ``step``, and one digit of it enlarged."""
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 2 * len(early), figsize=(FULL, FULL / (2 * len(early)) * 1.2), squeeze=False)
    for i, run in enumerate(early):
        image = read_png(run.images[f"step{step}"])
        whole, zoomed = axes[0, 2 * i], axes[0, 2 * i + 1]
        whole.imshow(image, interpolation="nearest")
        whole.set_title(f"{run.arch}, step {step}")
        zoomed.imshow(image[2:30, 2:30], interpolation="nearest")  # code 0, first noise vector
        zoomed.set_title("code 0, first z, enlarged")
        for ax in (whole, zoomed):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
    fig.tight_layout(pad=0.3)
    return fig


def spectrum_figure(spectra: dict[str, np.ndarray]):
    """Mean amplitude spectra (log scale) per image set, and their profile along the horizontal
    frequency: a checkerboard shows as a peak at 0.5 cycles/pixel (a 2-pixel period)."""
    pyplot = plt()
    n = len(spectra)
    fig, axes = pyplot.subplots(1, n + 1, figsize=(FULL, FULL / (n + 1) * 1.25))
    colours = palette(n)
    freqs = np.fft.fftshift(np.fft.fftfreq(28))
    for ax, (name, spectrum), colour in zip(axes, spectra.items(), colours):
        ax.imshow(np.log10(spectrum + 1e-3), cmap="magma", extent=(-0.5, 0.5, 0.5, -0.5))
        ax.set_title(f"{name}\n2-px share {metrics.period2_share(spectrum):.2%}")
        ax.set_xlabel("cycles/pixel")
        ax.grid(False)
        profile = spectrum.mean(axis=0)
        axes[-1].plot(freqs, profile, color=colour, label=name, linewidth=0.9)
    axes[-1].set_yscale("log")
    axes[-1].axvline(-0.5, color="gray", linestyle=":", linewidth=0.8)
    axes[-1].set_xlabel("horizontal frequency (cycles/pixel)")
    axes[-1].set_title("mean |FFT| over rows")
    axes[-1].legend(loc="best")
    fig.tight_layout(pad=0.3)
    return fig
