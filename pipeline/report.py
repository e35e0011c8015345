"""The report stage: the lab report's figures, tables and document, rebuilt from what MLflow
holds (metric histories, params, logged images and evaluation artifacts) and nothing else.

Everything is built in a temporary folder and moved to ``reports/<name>/`` only when complete, so
a failure (an experiment with no runs, a run missing metrics) leaves nothing partial behind.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from .config import UsageError, resolve_path

# What every training run logs; a run without one of these cannot be reported on.
TRAIN_METRICS = ("loss/d", "loss/g", "loss/info", "prob/d_real", "prob/d_fake_before_g", "prob/d_fake_after_g")
EVAL_CURVES = (("eval/gen_accuracy", "generated accuracy"), ("eval/q_accuracy", "Q accuracy on real digits"),
               ("eval/fld", "FLD (classifier features)"))
FINAL_METRICS = ("eval/gen_accuracy", "eval/q_accuracy", "eval/demo_score_min", "eval/fld",
                 "prob/d_real", "prob/d_fake_after_g")
ARCH_NAMES = {"paper": "paper (InfoGAN paper's network)", "tconv": "tconv (transposed conv + BN)",
              "upsample_sn": "upsample_sn (upsample+conv G, spectral-norm D)"}
IMAGE_NAME = re.compile(r"^samples\+step\+(\d+)\+")
SMOOTH_WINDOW = 9  # logged points (each already an average of train.log_every iterations)
PAGE = (8.27, 11.69)  # A4 portrait, inches


class ReportError(UsageError):
    """The report cannot be built from what is logged; the message names what is missing."""


@dataclass
class RunData:
    run_id: str
    name: str
    params: dict
    history: pd.DataFrame  # columns: key, step, value, timestamp
    images: dict = field(default_factory=dict)  # "first"/"final"/"demo"/"confusion" -> local PNG path
    first_step: Optional[int] = None

    @property
    def arch(self) -> str:
        return self.params.get("model.arch", "?")

    @property
    def label(self) -> str:
        loss = {"non_saturating": "NS", "saturating": "sat"}.get(self.params.get("train.g_loss"), "?")
        return f"{self.arch}, {loss} G loss, λ={_num(self.params.get('train.code_weight'))} ({self.name})"

    def curve(self, key: str) -> pd.DataFrame:
        return self.history[self.history.key == key].sort_values(["step", "timestamp"], kind="stable")


def _num(text) -> str:
    try:
        return f"{float(text):g}"
    except (TypeError, ValueError):
        return str(text)


# --- reading MLflow ----------------------------------------------------------------------------

def collect(experiment: str, run_ids: Sequence[str] = (), folder: Optional[Path] = None,
            log: Callable[[str], None] = print) -> tuple[list[RunData], dict]:
    """The training runs (``run_ids``, or every finished training run of ``experiment``) with
    their metric histories and images, and the experiment's sweeps (trials tables and figures)."""
    from mlflow import MlflowClient

    from . import tracking

    tracking.configure()
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ReportError(f"experiment '{experiment}' does not exist in {tracking.tracking_uri()}; "
                          f"train runs into it first (tracking.experiment={experiment})")
    if run_ids:
        runs = [tracking.get_training_run(run_id) for run_id in run_ids]
    else:
        runs = client.search_runs([exp.experiment_id], max_results=500, order_by=["attributes.start_time ASC"],
                                  filter_string="tags.`infogan.stage` = 'train' and attributes.status = 'FINISHED'")
        if not runs:
            raise ReportError(f"experiment '{experiment}' has no finished training runs to report on")

    missing = []
    for run in runs:
        lacking = [k for k in TRAIN_METRICS if k not in run.data.metrics]
        if lacking:
            missing.append(f"run {run.info.run_id} ({run.info.run_name}) lacks {', '.join(lacking)}")
    if missing:
        raise ReportError("cannot report on runs missing training metrics:\n  " + "\n  ".join(missing))

    folder = Path(folder or tempfile.mkdtemp())
    out = []
    names = [r.info.run_name or r.info.run_id[:8] for r in runs]
    for run, name in zip(runs, names):
        if names.count(name) > 1:
            name = f"{name}-{run.info.run_id[:6]}"
        rows = []
        for key in sorted(run.data.metrics):
            for m in client.get_metric_history(run.info.run_id, key):
                rows.append((key, m.step, m.value, m.timestamp))
        history = pd.DataFrame(rows, columns=["key", "step", "value", "timestamp"])
        data = RunData(run.info.run_id, name, dict(run.data.params), history)
        _fetch_images(client, data, folder / run.info.run_id)
        out.append(data)
        log(f"read run {run.info.run_id} ({name}): {len(history)} metric points")
    sweeps = _collect_sweeps(client, exp.experiment_id, folder / "sweeps")
    return out, sweeps


def _fetch_images(client, data: RunData, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    steps = {}
    for item in client.list_artifacts(data.run_id, "images"):
        match = IMAGE_NAME.match(Path(item.path).name)
        if match and item.path.endswith(".png"):
            steps[int(match.group(1))] = item.path
    if steps:
        data.first_step = min(steps)
        data.images["first"] = client.download_artifacts(data.run_id, steps[min(steps)], str(folder))
        data.images["final"] = client.download_artifacts(data.run_id, steps[max(steps)], str(folder))
    for name, path in (("demo", "eval/demo.png"), ("confusion", "eval/confusion.png")):
        if any(a.path == path for a in client.list_artifacts(data.run_id, "eval")):
            data.images[name] = client.download_artifacts(data.run_id, path, str(folder))


def _collect_sweeps(client, experiment_id: str, folder: Path) -> dict:
    sweeps = {}
    for run in client.search_runs([experiment_id], filter_string="tags.`infogan.stage` = 'sweep'",
                                  order_by=["attributes.start_time ASC"]):
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        if "trials.csv" not in names:
            continue
        target = folder / run.info.run_id
        target.mkdir(parents=True, exist_ok=True)
        trials = pd.read_csv(client.download_artifacts(run.info.run_id, "trials.csv", str(target)))
        figures = [client.download_artifacts(run.info.run_id, a.path, str(target))
                   for a in client.list_artifacts(run.info.run_id, "optuna") if a.path.endswith(".png")]
        sweeps[run.data.tags.get("optuna.study", run.info.run_id)] = {"trials": trials, "figures": sorted(figures)}
    return sweeps


# --- figures -----------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120, "svg.hashsalt": "infogan",
                         "legend.fontsize": 7, "axes.titlesize": 10})
    return plt


def _colors(n: int):
    import seaborn as sns

    return sns.color_palette("tab10", max(n, 1))


def _smoothed(curve: pd.DataFrame) -> pd.Series:
    """A centred moving average: no lag, so the smoothed curve sits on the raw one."""
    return curve.value.rolling(SMOOTH_WINDOW, center=True, min_periods=1).mean()


def loss_figure(runs: list[RunData], title: str, color_by_arch: bool = False):
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    archs = sorted({r.arch for r in runs})
    palette = _colors(len(archs) if color_by_arch else len(runs))
    for i, run in enumerate(runs):
        color = palette[archs.index(run.arch)] if color_by_arch else palette[i]
        for ax, (key, name) in zip(axes, (("loss/d", "D loss (BCE)"), ("loss/g", "G adversarial loss"),
                                          ("loss/info", "info loss (cross-entropy of Q)"))):
            curve = run.curve(key)
            ax.plot(curve.step, curve.value, color=color, alpha=0.2, linewidth=0.8)
            ax.plot(curve.step, _smoothed(curve), color=color, linewidth=1.5, label=run.label)
            ax.set_title(name)
            ax.set_xlabel("training step (iteration)")
            ax.set_ylabel("loss (nats)")
    axes[0].legend(loc="best")
    fig.suptitle(title + f" (faint: raw, each point a mean over the logging interval; solid: centred mean of {SMOOTH_WINDOW} points)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def probability_figure(runs: list[RunData]):
    plt = _plt()
    cols = min(3, len(runs))
    rows = -(-len(runs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    lines = (("prob/d_real", "D(x), real"), ("prob/d_fake_before_g", "D(G(z,c)) before the G update"),
             ("prob/d_fake_after_g", "D(G(z,c)) after D's update, in the G step"))
    palette = _colors(3)
    for ax, run in zip(axes.flat, runs):
        for (key, name), color in zip(lines, palette):
            curve = run.curve(key)
            ax.plot(curve.step, curve.value, color=color, alpha=0.2, linewidth=0.8)
            ax.plot(curve.step, _smoothed(curve), color=color, linewidth=1.5, label=name)
        ax.set_ylim(0, 1)
        ax.set_title(run.label, fontsize=8)
        ax.set_xlabel("training step (iteration)")
        ax.set_ylabel("mean probability D assigns 'real'")
    for ax in axes.flat[len(runs):]:
        ax.axis("off")
    axes.flat[0].legend(loc="best")
    fig.suptitle("D's real-probability on real and generated batches", fontsize=10)
    fig.tight_layout()
    return fig


def eval_figure(runs: list[RunData]):
    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.8))
    palette = _colors(len(runs))
    for i, run in enumerate(runs):
        seconds = run.curve("perf/train_seconds").set_index("step").value
        for col, (key, name) in enumerate(EVAL_CURVES):
            logged = run.curve(key)
            if logged.empty:
                continue
            # In training, one evaluation per epoch; the evaluate stage (full budget) logs again at
            # the last step: drawn as a star, not as part of the curve.
            curve = logged.drop_duplicates("step", keep="first")
            stage = logged[logged.duplicated("step", keep="first")].tail(1)
            wall = curve.step.map(seconds)
            axes[0, col].plot(curve.step, curve.value, marker="o", markersize=3, color=palette[i], label=run.label)
            axes[1, col].plot(wall, curve.value, marker="o", markersize=3, color=palette[i], label=run.label)
            if not stage.empty:
                star = dict(marker="*", markersize=10, color=palette[i], linestyle="none",
                            label="evaluate stage (full budget)" if i == 0 else None)
                axes[0, col].plot(stage.step, stage.value, **star)
                axes[1, col].plot(stage.step.map(seconds), stage.value, **star)
            for row, xlabel in ((0, "training step (iteration)"), (1, "training time (seconds, evaluation excluded)")):
                axes[row, col].set_xlabel(xlabel)
                axes[row, col].set_ylabel(name)
                axes[row, col].set_title(name)
    floors = pd.concat([run.curve("eval/fld_floor").value for run in runs])
    if not floors.empty:  # two real test splits: the FLD a perfect generator would score
        for row in range(2):
            axes[row, 2].axhline(floors.median(), color="gray", linestyle="--", label="real vs real (floor)")
        axes[0, 2].legend(loc="best")
    for col in range(2):
        axes[0, col].set_ylim(0, 1.02)
        axes[1, col].set_ylim(0, 1.02)
    axes[0, 0].legend(loc="best")
    fig.suptitle("Evaluation during training (reference classifier, per-epoch budget)", fontsize=10)
    fig.tight_layout()
    return fig


def images_figure(panels: list[tuple[str, str]], title: str, zoom: bool = False):
    """PNG panels side by side; with ``zoom``, a second row enlarges each grid's top-left digit."""
    from PIL import Image

    plt = _plt()
    cols = len(panels) if zoom else min(len(panels), 3)
    rows = 2 if zoom else -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 4.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (name, path) in enumerate(panels):
        image = np.asarray(Image.open(path).convert("RGB"))
        ax = axes[0, i] if zoom else axes.flat[i]
        ax.axis("on")
        ax.imshow(image, interpolation="nearest")
        ax.grid(False)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if zoom:
            ax.set_xlabel("columns: fixed noise vectors z")
            ax.set_ylabel("rows: code values c = 0..9")
            below = axes[1, i]
            below.axis("on")
            below.imshow(image[2:30, 2:30], interpolation="nearest")  # inside the 2-pixel padding
            below.grid(False)
            below.set_title("enlarged: code 0, first noise vector", fontsize=8)
            below.set_xlabel("x (pixel)")
            below.set_ylabel("y (pixel)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def comparison_table(runs: list[RunData]) -> pd.DataFrame:
    rows = []
    for run in runs:
        final = {}
        for key in FINAL_METRICS:
            curve = run.curve(key)
            final[key] = float(curve.value.iloc[-1]) if not curve.empty else float("nan")
        p = run.params
        rows.append({"run": run.name, "arch": run.arch, "G loss": p.get("train.g_loss"),
                     "λ": _num(p.get("train.code_weight")), "lr_d": _num(p.get("train.lr_d")),
                     "lr_g": _num(p.get("train.lr_g")), "lr_q": _num(p.get("train.lr_q")),
                     "epochs": p.get("train.epochs"), "steps": int(run.history.step.max()),
                     "gen acc": final["eval/gen_accuracy"], "Q acc": final["eval/q_accuracy"],
                     "demo min": final["eval/demo_score_min"], "FLD": final["eval/fld"],
                     "D(x)": final["prob/d_real"], "D(G(z))": final["prob/d_fake_after_g"],
                     "run id": run.run_id})
    return pd.DataFrame(rows)


def _compact(table: pd.DataFrame) -> pd.DataFrame:
    """The runs table narrow enough for a portrait page: learning rates in one column."""
    out = table.drop(columns=["run id", "lr_d", "lr_g", "lr_q", "epochs"])
    out.insert(4, "lr D/G/Q", table.lr_d + "/" + table.lr_g + "/" + table.lr_q)
    return out


def table_figure(table: pd.DataFrame, title: str):
    plt = _plt()
    shown = table.copy()
    for col in shown.columns:
        if shown[col].dtype.kind == "f":
            shown[col] = shown[col].map(lambda v: "–" if pd.isna(v) else f"{v:.3g}")
    if "run id" in shown:
        shown["run id"] = shown["run id"].str[:8]
    fig, ax = plt.subplots(figsize=(PAGE[0] - 1.0, 0.3 * len(shown) + 1.0))
    ax.axis("off")
    cell = ax.table(cellText=shown.astype(str).values, colLabels=list(shown.columns), loc="center")
    cell.auto_set_font_size(False)
    cell.set_fontsize(7)
    cell.auto_set_column_width(list(range(len(shown.columns))))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- the document ------------------------------------------------------------------------------

def _markdown_table(table: pd.DataFrame) -> str:
    shown = table.copy()
    for col in shown.columns:
        if shown[col].dtype.kind == "f":
            shown[col] = shown[col].map(lambda v: "–" if pd.isna(v) else f"{v:.4g}")
    head = "| " + " | ".join(map(str, shown.columns)) + " |"
    rule = "|" + "---|" * len(shown.columns)
    body = ["| " + " | ".join(map(str, row)) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def _setup_text(runs: list[RunData]) -> list[str]:
    """The set-up facts, filled from the runs' params."""
    def values(key: str, absent: Optional[str] = None) -> str:
        """The runs' values of ``key``; ``absent`` stands for runs logged before the key existed."""
        return ", ".join(sorted({_num(r.params.get(key, absent)) for r in runs}))

    g_losses = sorted({r.params.get("train.g_loss") for r in runs})
    return [
        "### Adversarial loss",
        "D outputs a logit; D(x) is its sigmoid. D minimises the binary cross-entropy "
        "L_D = −E_x[log D(x)] − E_{z,c}[log(1 − D(G(z,c)))] (real → 1, generated → 0).",
        "",
        "### Generator loss (used here: " + ", ".join(g_losses) + ")",
        "Non-saturating: L_G = −E[log D(G(z,c))]. Saturating (the original minimax form): "
        "L_G = E[log(1 − D(G(z,c)))]. Early in training D rejects generated images "
        "(D(G(z,c)) ≈ 0); the saturating loss's gradient then vanishes, the non-saturating one's "
        "does not. Compare the G-loss and real-probability curves of the runs with each loss below.",
        "",
        "### Mutual-information term",
        "Q shares D's convolutional trunk and predicts the 10-way code from G(z,c). The info loss "
        "L_I = E[−log Q(c | G(z,c))] (cross-entropy against the sampled code) is added with weight "
        f"λ (here {values('train.code_weight')}) to G's loss and to D/Q's loss; H(c) − L_I is the "
        "variational lower bound on I(c; G(z,c)) that InfoGAN maximises. "
        f"The info term trains D's trunk too: {values('train.info_trains_d_trunk')}. "
        "With train.info_augment, Q learns in D's step to read c from a randomly rotated (±15°), "
        "scaled (±15%) and shifted (±2 px) copy of each generated image, so codes that differ only "
        "in slant, size or position earn G nothing; otherwise from the images as they are "
        f"(train.info_augment here: {values('train.info_augment', 'False')}).",
        "",
        "### Latent codes, fixed noise and images",
        f"z ~ N(0, I) with {values('model.noise_dim')} dimensions; c uniform over "
        f"{values('model.code_dim')} values, one-hot. The sample grids use 10 noise vectors drawn "
        "once per run from its seed (logged as fixed_noise.npy): row k = code value k, column j = "
        "noise vector j, so a row should be one digit in ten styles. G ends in a sigmoid: pixels in "
        "[0, 1], 28×28, as the MNIST images scaled by 1/255. With train.ema_decay > 0 the grids, the "
        "evaluations and the logged generator are an exponential moving average of G's weights "
        "(the live G still trains against D); train.ema_decay here: "
        f"{values('train.ema_decay', '0')}.",
        "",
        "### Hyper-parameters",
        f"Adam (β₁ {values('train.beta1')}, β₂ {values('train.beta2')}); learning rates D "
        f"{values('train.lr_d')}, G {values('train.lr_g')}, Q {values('train.lr_q')}, falling "
        f"linearly towards 0 over the last {values('train.lr_decay_fraction', '0')} of the run "
        "(0: constant); batch "
        f"{values('train.batch_size')}; epochs {values('train.epochs')}; seeds {values('seed')}; "
        f"D's batch norm on real/fake batches: {values('train.real_fake_batch')}.",
    ]


def build(experiment: str, run_ids: Sequence[str] = (), out: Optional[Path] = None,
          report_run: Optional[str] = None, log: Callable[[str], None] = print) -> Path:
    """Build the report of ``experiment`` into ``out`` (default ``reports/<experiment>``) and
    log it as artifacts (``report/``) of ``report_run``, or of a new run named "report" in the
    experiment; returns the folder."""
    from matplotlib.backends.backend_pdf import PdfPages

    out = Path(out) if out is not None else resolve_path(f"reports/{experiment}")
    with tempfile.TemporaryDirectory() as downloads:
        runs, sweeps = collect(experiment, run_ids, Path(downloads), log)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            _write(staging, experiment, runs, sweeps, PdfPages, log)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    log(f"report written to {out} ({len(runs)} runs): report.md, report.pdf, figures/, tables/")
    _log_report_run(experiment, runs, out, report_run, log)
    return out


def _write(folder: Path, experiment: str, runs: list[RunData], sweeps: dict, PdfPages, log) -> None:
    plt = _plt()
    figures_dir, tables_dir = folder / "figures", folder / "tables"
    figures_dir.mkdir()
    tables_dir.mkdir()
    pages: list[tuple[str, str, str]] = []  # (section, figure file, caption) in report order
    md: list[str] = [f"# InfoGAN on MNIST: lab report (experiment `{experiment}`)", ""]

    def add(name: str, fig, caption: str) -> None:
        """A figure: drawn here (a matplotlib figure) or logged by a run (a PNG path, copied)."""
        path = figures_dir / f"{name}.png"
        if isinstance(fig, (str, Path)):
            shutil.copyfile(fig, path)
        else:
            fig.savefig(path, metadata={"Software": None})
            plt.close(fig)
        section = next((line.lstrip("# ") for line in reversed(md) if line.startswith("#")), "")
        pages.append((section, str(path), caption))
        md.extend([f"![{caption}](figures/{name}.png)", "", f"*Figure {len(pages)}: {caption}*", ""])

    table = comparison_table(runs)
    table.to_csv(tables_dir / "runs.csv", index=False)
    archs = sorted({r.arch for r in runs})
    md += ["## 1 Introduction", "",
           f"This report compares {len(runs)} training run(s) of InfoGAN on MNIST "
           f"({', '.join(ARCH_NAMES.get(a, a) for a in archs)}): a generator G(z, c) with a 10-way "
           "categorical code c that should come to stand for the ten digits without labels, and "
           "the discriminator D with the auxiliary network Q. Every figure and table was rebuilt from "
           "the MLflow store by `infogan report`.", "",
           "> *Your introduction: what InfoGAN adds to a GAN, and what you set out to show.*", "",
           "## 2 Experiment set-up", "", *_setup_text(runs), "",
           _markdown_table(table.drop(columns=["run id"])), "",
           "## 3 Results", "", "### Training losses", ""]
    for arch in archs:
        subset = [r for r in runs if r.arch == arch]
        add(f"loss_{arch}", loss_figure(subset, f"Losses: {ARCH_NAMES.get(arch, arch)}"),
            f"D, G and info losses of the {arch} run(s) against the training step")
    if len(archs) > 1:
        add("loss_architectures", loss_figure(runs, "Losses, architectures overlaid", color_by_arch=True),
            "losses of every run, coloured by architecture")
    md += ["### D's real-probability", ""]
    add("real_probability", probability_figure(runs),
        "D(x) on real batches and D(G(z,c)) before and after the G update, per run")
    if any(not r.curve("eval/gen_accuracy").empty for r in runs):
        md += ["### Evaluation curves", ""]
        add("eval_curves", eval_figure(runs),
            "generated accuracy, Q accuracy and FLD against the training step and training time")
    finals = [(r.label, r.images["final"]) for r in runs if "final" in r.images]
    if finals:
        md += ["### Samples", ""]
        add("samples_final", images_figure(finals, "Final fixed-noise sample grid of each run"),
            "the last logged fixed-noise grid of each run (rows: code values, columns: noise vectors)")
    for r in runs:
        for kind, what in (("demo", "the graded 10 digits x 10 styles demo"), ("confusion", "code -> digit confusion")):
            if kind in r.images:
                add(f"{kind}_{r.name}", r.images[kind], f"{what} from the evaluate stage: {r.label}")
    not_evaluated = [r.name for r in runs if "demo" not in r.images]
    if not_evaluated:
        md += [f"Not evaluated yet (run `infogan evaluate --run-id ID` for the graded demo and "
               f"confusion matrix): {', '.join(not_evaluated)}.", ""]

    md += ["## 4 Discussion", "", "### Checkerboard artefacts: transposed convolution vs upsample+conv", ""]
    early = {}
    for arch in ("tconv", "upsample_sn"):
        found = [r for r in runs if r.arch == arch and "first" in r.images]
        if found:
            early[arch] = found[0]
    if len(early) == 2:
        add("checkerboard_early", images_figure(
            [(f"{r.label}, step {r.first_step}", r.images["first"]) for r in early.values()],
            "Early training: transposed convolutions vs upsample+conv (first logged grid)", zoom=True),
            "the first logged sample grid of a tconv and an upsample_sn run, with one digit enlarged")
    else:
        md += [f"(Needs a finished run of both tconv and upsample_sn; this experiment has "
               f"{', '.join(archs)}. See configs/experiments/.)", ""]
    md += ["> *Your discussion: where the checkerboard comes from (overlapping strides of the "
           "transposed convolution) and whether upsample+conv removes it.*", "",
           "### Architecture comparison", ""]
    add("comparison_table", table_figure(_compact(table), "Runs compared (final logged values)"),
        "the runs compared: set-up and final metrics")
    md += ["> *Your discussion: which variant learned the digits, how fast, and why.*", ""]

    for study, sweep in sweeps.items():
        md += [f"### Sweep `{study}`", ""]
        sweep["trials"].to_csv(tables_dir / f"sweep_{study}.csv", index=False)
        shown = sweep["trials"][[c for c in sweep["trials"].columns
                                 if c in ("number", "state", "value") or c.startswith("params_")]]
        md += [_markdown_table(shown), ""]
        for path in sweep["figures"]:
            name = Path(path).stem
            add(f"sweep_{study}_{name}", path, f"Optuna's {name.replace('_', ' ')} figure for sweep {study}")

    (folder / "report.md").write_text("\n".join(md) + "\n")
    end = md.index("## 3 Results") if "## 3 Results" in md else len(md)
    with PdfPages(folder / "report.pdf", metadata={"CreationDate": None, "ModDate": None,
                                                   "Producer": None, "Creator": "infogan report"}) as pdf:
        for page in _text_pages(md[:end]):
            pdf.savefig(page)
        for number, (section, path, caption) in enumerate(pages, start=1):
            pdf.savefig(_figure_page(section, path, f"Figure {number}: {caption}"))
            plt.close("all")
    log(f"{len(pages)} figures in report.md and report.pdf")


def _text_pages(lines: list[str]) -> list:
    """The PDF's first page(s): title, introduction and set-up (the Markdown above the results)."""
    import textwrap

    plt = _plt()
    pages = [plt.figure(figsize=PAGE)]
    y = 0.95
    styles = {"# ": (14, "bold", "normal", 70), "## ": (11, "bold", "normal", 90),
              "### ": (9, "bold", "normal", 105), "> ": (8, "normal", "italic", 115)}
    for line in lines:
        if line.startswith("|"):
            continue  # the runs table has its own page
        size, weight, style, width = next((v for k, v in styles.items() if line.startswith(k)),
                                          (8, "normal", "normal", 115))
        text = line.split(" ", 1)[1] if any(line.startswith(k) for k in styles) else line
        if size > 8:
            y -= 0.006
        for part in textwrap.wrap(text.replace("`", "").replace("*", ""), width) or [""]:
            if y < 0.05:
                pages.append(plt.figure(figsize=PAGE))
                y = 0.95
            pages[-1].text(0.07, y, part, fontsize=size, fontweight=weight, fontstyle=style, va="top")
            y -= 0.0019 * size
    return pages


def _figure_page(section: str, path: str, caption: str):
    """An A4 page: the section title, the figure's PNG scaled to the page width, its caption."""
    import textwrap

    from PIL import Image

    plt = _plt()
    image = np.asarray(Image.open(path).convert("RGB"))
    fig = plt.figure(figsize=PAGE)
    fig.text(0.07, 0.96, section, fontsize=11, fontweight="bold", va="top")
    width = 0.86
    height = min(0.8, width * PAGE[0] / PAGE[1] * image.shape[0] / image.shape[1])
    ax = fig.add_axes([0.07, 0.93 - height, width, height])
    ax.imshow(image, interpolation="antialiased")
    ax.axis("off")
    fig.text(0.07, 0.91 - height, "\n".join(textwrap.wrap(caption, 110)), fontsize=8, fontstyle="italic", va="top")
    return fig


def _log_report_run(experiment: str, runs: list[RunData], out: Path, report_run: Optional[str], log) -> str:
    from mlflow import MlflowClient

    from . import tracking

    tags = {"infogan.stage": "report", "infogan.report_runs": ",".join(r.run_id for r in runs)}
    if report_run is not None:
        tracking.MlflowTracker(report_run).set_tags(tags)
        MlflowClient().log_artifacts(report_run, str(out), "report")
        return report_run
    run_id = tracking.new_run(experiment, "report", tags)
    try:
        MlflowClient().log_artifacts(run_id, str(out), "report")
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    tracking.end_run(run_id, "FINISHED")
    log(f"report logged to run {run_id} (artifacts: report/)")
    return run_id
