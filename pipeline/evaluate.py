"""The evaluate stage: the reference classifier (trained once, reused), which code is which digit,
the lab's graded demo grid, quality metrics; and the model loading that ``generate`` shares.

Everything is logged to the training run under ``eval/`` (metrics with ``step=`` the training
step; the mapping, confusion matrix and demo grid as artifacts).
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from . import judge, latents, metrics, models, tracking
from .config import UsageError, from_yaml, load_config
from .data import as_tensors, prepare
from .images import grid_array

CLASSIFIER_TAG = "infogan.classifier_key"
MAPPING_FILE = "eval/mapping.json"
CHAMPION = "champion"  # the registry alias `infogan promote` sets: the generator to demo with
MIN_CLASSIFIER_ACCURACY = 0.99
CLASSIFIER_SEED = 0  # one classifier judges every run, whatever the run's own seed


def classifier_key(cfg: DictConfig, data_sha256: str) -> str:
    """What the classifier depends on: its training settings and the data it learned from."""
    e = cfg.eval
    body = repr((e.classifier_epochs, e.classifier_lr, e.classifier_train_subset, CLASSIFIER_SEED, data_sha256))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def get_classifier(cfg: DictConfig, tensors: dict, data_sha256: str,
                   log: Callable[[str], None] = print) -> tuple[models.Classifier, str, float]:
    """The reference classifier: the logged one with the same key, else trained now and logged
    as its own run in ``eval.classifier_experiment``. Returns (model, run id, test accuracy)."""
    key = classifier_key(cfg, data_sha256)
    found = tracking.find_finished_run(cfg.eval.classifier_experiment, {CLASSIFIER_TAG: key})
    if found is not None:
        model = tracking.load_state_dict_model(models.Classifier(), found.info.run_id, "classifier.pt")
        accuracy = found.data.metrics.get("test_accuracy", float("nan"))
        log(f"reference classifier: run {found.info.run_id} (test accuracy {accuracy:.4f})")
        return model.to(tensors["test_x"].device).eval(), found.info.run_id, accuracy

    e = cfg.eval
    train_tensors = dict(tensors)
    if e.classifier_train_subset is not None:
        train_tensors["train_x"] = tensors["train_x"][:e.classifier_train_subset]
        train_tensors["train_y"] = tensors["train_y"][:e.classifier_train_subset]
    log(f"training the reference MNIST classifier ({e.classifier_epochs} epochs; once, then reused)")
    run_id = tracking.new_run(cfg.eval.classifier_experiment, "reference-classifier",
                              {CLASSIFIER_TAG: key, "infogan.stage": "classifier", "infogan.data_sha256": data_sha256})
    tracker = tracking.MlflowTracker(run_id)
    try:
        tracker.log_params({"classifier.epochs": e.classifier_epochs, "classifier.lr": e.classifier_lr,
                            "classifier.train_subset": e.classifier_train_subset, "seed": CLASSIFIER_SEED})

        def progress(epoch: int, accuracy: float) -> None:
            tracker.log_metrics({"test_accuracy": accuracy}, step=epoch)
            log(f"  classifier epoch {epoch}/{e.classifier_epochs}: test accuracy {accuracy:.4f}")

        model, accuracy = judge.train_classifier(train_tensors, e.classifier_epochs, 128, e.classifier_lr,
                                                 CLASSIFIER_SEED, progress)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "classifier.pt"
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


class Evaluator:
    """Measures a generator (and its Q) against the classifier; used by the training loop
    (small budget) and by the evaluate stage (full budget)."""

    def __init__(self, cfg: DictConfig, classifier: models.Classifier, tensors: dict):
        self.cfg, self.classifier, self.tensors = cfg, classifier, tensors
        e = cfg.eval
        self.reference = judge.RealReference(classifier, tensors["test_x"], e.fld_samples) if e.fld_samples else None

    def __call__(self, g: models.Generator, d: models.Discriminator, full: bool = False,
                 seed: Optional[int] = None) -> judge.Measurement:
        e = self.cfg.eval
        return judge.measure(g, d, self.classifier, self.tensors,
                             samples_per_code=e.samples_per_code if full else e.train_samples_per_code,
                             n_demos=e.demos, fld_samples=e.fld_samples,
                             seed=self.cfg.seed + 7 if seed is None else seed,
                             reference=self.reference, q_test_images=e.q_test_images)


# --- loading a trained run ---------------------------------------------------------------------

@dataclass
class TrainedRun:
    run_id: str
    cfg: DictConfig
    g: models.Generator
    d: Optional[models.Discriminator]
    step: int


def load_run(run_id: str, log: Callable[[str], None] = print) -> TrainedRun:
    """A training run's generator and discriminator/Q, from its checkpoint (local or logged)."""
    from . import train

    tracking.configure()
    run = tracking.get_training_run(run_id)
    # Only the checkpoint folder is needed before the checkpoint (which holds the whole config):
    # the run's logged param, so no artifact (config.yaml may be gone) is downloaded for it.
    folder = run.data.params.get("tracking.checkpoint_dir")
    cfg = load_config([], [f"tracking.checkpoint_dir={folder}"] if folder else [])
    state = train.load_checkpoint(cfg, run_id)
    if state is None:
        raise UsageError(f"run {run_id} has no checkpoint (local or logged); it never finished an epoch")
    cfg = from_yaml(state["config"])
    g, d = models.build(cfg.model)
    # G's moving average when the run kept one (train.ema_decay): the generator it evaluated.
    g.load_state_dict(state["g"] if state.get("g_ema") is None else state["g_ema"])
    d.load_state_dict(state["d"])
    return TrainedRun(run_id, cfg, g.eval(), d.eval(), state["step"])


def read_mapping(run_id: str) -> Optional[metrics.CodeMapping]:
    text = tracking.read_text(run_id, MAPPING_FILE)
    return None if text is None else metrics.CodeMapping.from_dict(json.loads(text))


# --- figures -----------------------------------------------------------------------------------

def demo_figure(images: torch.Tensor, passes: np.ndarray, digits_right: np.ndarray):
    """The graded demo: rows = digits 0-9, columns = styles, each column marked pass/fail."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


@torch.no_grad()
def demo(g: models.Generator, classifier: models.Classifier, mapping: metrics.CodeMapping,
         seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """One demo with fresh noise: images [100, 1, 28, 28] digit-major, and predicted [10, 10]."""
    generator = torch.Generator().manual_seed(seed)
    device = next(g.parameters()).device
    z, c = judge.demo_inputs(1, g.noise_dim, mapping.code_of_digit, generator, device)
    images = judge.generate(g, z, c, judge.uniform_codes(g, c.shape[0], generator, device))
    predicted = judge.predict(classifier, images).cpu().numpy().reshape(10, 10)
    return images, predicted


# --- the stage ---------------------------------------------------------------------------------

def run(run_id: str, cfg: Optional[DictConfig] = None, log: Callable[[str], None] = print) -> dict[str, float]:
    """The ``evaluate`` stage for a finished training run: full-budget metrics, the mapping, the
    confusion matrix and the graded demo grid, all logged to that run. Returns the metrics."""
    import matplotlib.pyplot as plt

    trained = load_run(run_id, log)
    cfg = trained.cfg if cfg is None else cfg
    arrays, info = prepare(cfg.data, log=log)
    tensors = as_tensors(arrays, torch.device("cpu"))
    classifier, classifier_run, accuracy = get_classifier(cfg, tensors, info.sha256, log)
    measurement = Evaluator(cfg, classifier, tensors)(trained.g, trained.d, full=True)
    values = measurement.as_metrics()
    mapping = measurement.mapping

    tracker = tracking.MlflowTracker(run_id)
    # Evaluating the same checkpoint again measures the same figures (the seeds are fixed): they
    # replace nothing and are not logged a second time at the same step.
    again = tracking.get_run(run_id).data.tags.get("infogan.evaluated_step") == str(trained.step)
    if again:
        log(f"run {run_id} was already evaluated at step {trained.step}; its figures and files are "
            f"rewritten, not added again")
    else:
        tracker.log_metrics(values, step=trained.step)
        tracker.flush()
    tracker.set_tags({"infogan.classifier_run_id": classifier_run, "infogan.evaluated_step": trained.step})
    tracker.log_text(json.dumps(mapping.to_dict(), indent=2), MAPPING_FILE)
    images, predicted = demo(trained.g, classifier, mapping, seed=cfg.seed + 11)
    right = (predicted == np.arange(10)[:, None]).sum(axis=0)
    for name, fig in (("eval/demo.png", demo_figure(images, metrics.column_passes(predicted), right)),
                      ("eval/confusion.png", confusion_figure(mapping))):
        tracker.log_figure(fig, name)
        plt.close(fig)

    name = cfg.tracking.registered_model
    if cfg.tracking.log_model and not (again and name and tracking.registered_version(name, run_id)):
        from . import serving

        model = serving.log_generator(trained.g, run_id, mapping=mapping.to_dict())
        if name:
            version = tracking.register(model.model_uri, name, run_id,
                                        {**values, "infogan.evaluated_step": trained.step})
            log(f"registered the generator as {name} version {version} "
                f"(`infogan promote {run_id}` makes it @{CHAMPION})")
    log(f"evaluated run {run_id} at step {trained.step} (classifier run {classifier_run}, "
        f"test accuracy {accuracy:.4f}):")
    for key, value in values.items():
        log(f"  {key:24s} {value:.4f}")
    log("  code -> digit: " + ", ".join(f"{k}->{d} ({p:.2f})" for k, (d, p) in
                                        enumerate(zip(mapping.digit_of_code, mapping.purity()))))
    for note in mapping.warnings():
        log(f"  warning: {note}")
    return values


# --- generate ----------------------------------------------------------------------------------

def generate(run_id: str, out: Path, digit: Optional[int] = None, n: int = 64, demo_grid: bool = False,
             raw_styles: Optional[int] = None, seed: int = 0, vary: Optional[int] = None, styles: int = 10,
             log: Callable[[str], None] = print) -> Path:
    """``infogan generate``: images of one digit (through the run's mapping), a traversal of one
    digit along continuous code ``vary`` (0-based) for ``styles`` noise vectors, a graded demo
    grid, or the raw [styles, code, 28, 28] array indexed by code value. ``seed`` fixes the
    noise (and continuous codes, drawn from U(-1, 1) as in training)."""
    from PIL import Image

    trained = load_run(run_id, log)
    g = trained.g
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    if raw_styles is not None:
        z = torch.randn(raw_styles, g.noise_dim, generator=generator)
        zz, c = latents.grid_inputs(z, g.code_dim)  # code-major
        u = judge.uniform_codes(g, c.shape[0], generator, c.device)
        images = judge.generate(g, zz, c, u).reshape(g.code_dim, raw_styles, 28, 28).transpose(0, 1)
        np.savez_compressed(out, images=images.numpy().astype(np.float32),
                            code=np.arange(g.code_dim), run_id=run_id, seed=seed)
        log(f"wrote {out}: images [{raw_styles}, {g.code_dim}, 28, 28] indexed by code value")
        return out

    mapping = read_mapping(run_id)
    if mapping is None:
        raise UsageError(f"run {run_id} has no code -> digit mapping yet ({MAPPING_FILE}); "
                          f"run `infogan evaluate --run-id {run_id}` first (or use --raw)")
    if demo_grid:
        import matplotlib.pyplot as plt

        arrays, info = prepare(trained.cfg.data, log=log)
        tensors = as_tensors(arrays, torch.device("cpu"))
        classifier, _, _ = get_classifier(trained.cfg, tensors, info.sha256, log)
        images, predicted = demo(g, classifier, mapping, seed)
        passes = metrics.column_passes(predicted)
        fig = demo_figure(images, passes, (predicted == np.arange(10)[:, None]).sum(axis=0))
        fig.savefig(out, dpi=120)
        plt.close(fig)
        log(f"wrote {out}: demo grade {int(passes.sum())}/10 (seed {seed})")
        return out

    if digit not in mapping.code_of_digit:
        raise UsageError(f"--digit must be one of 0-9 that a code draws; the mapping of run {run_id} "
                          f"covers {sorted(mapping.code_of_digit)}")
    code = mapping.code_of_digit[digit]
    if vary is not None:
        if not vary < g.continuous_codes:
            raise UsageError(f"--vary c{vary + 1}: run {run_id} has {g.continuous_codes} continuous code(s)"
                             + ("" if g.continuous_codes else "; train with model.continuous_codes=2 "
                                "(configs/paper_latent.yaml) for the paper's rotation and width codes"))
        z = torch.randn(styles, g.noise_dim, generator=generator)
        values = latents.TRAVERSAL_VALUES
        images = torch.cat([judge.traversal(g, vary, z[i], torch.tensor([code])) for i in range(styles)])
        Image.fromarray(grid_array(images, nrow=values.shape[0])).save(out)
        log(f"wrote {out}: digit {digit} (code {code}), c{vary + 1} from {values[0]:g} to {values[-1]:g} "
            f"in {values.shape[0]} columns, {styles} noise vectors as rows (seed {seed})")
        return out
    z = torch.randn(n, g.noise_dim, generator=generator)
    c = torch.full((n,), code, dtype=torch.long)
    images = judge.generate(g, z, c, judge.uniform_codes(g, n, generator, torch.device("cpu")))
    Image.fromarray(grid_array(images, nrow=int(np.ceil(np.sqrt(n))))).save(out)
    log(f"wrote {out}: {n} images of digit {digit} (code {code}, seed {seed})")
    return out


def stage(run_id: str, nested: bool = False, log: Callable[[str], None] = print) -> str:
    """``infogan evaluate`` as a run of its own (a child of the pipeline's parent, or the run that
    ``mlflow run -e evaluate`` opened): the results go to the training run, and this run records
    which run it evaluated and the same metrics. Returns this run's id."""
    tracking.configure()
    trained = tracking.get_training_run(run_id)  # checked before this stage's own run exists
    experiment = tracking.experiment_name(trained.info.experiment_id)
    with tracking.start_run(experiment, f"evaluate {trained.info.run_name}", nested=nested) as active:
        tracker = tracking.MlflowTracker(active.info.run_id)
        tracker.set_tags({"infogan.stage": "evaluate", "infogan.evaluated_run_id": run_id})
        values = run(run_id, log=log)
        tracker.log_metrics(values, step=0)
        tracker.flush()
        return active.info.run_id


def generate_from_model(model_uri: str, out: Path, digit: int, n: int = 64, seed: int = 0,
                        log: Callable[[str], None] = print) -> Path:
    """``infogan generate --model URI``: ``n`` images of ``digit`` from a logged or registered
    generator (e.g. ``models:/infogan-generator@champion``), as one PNG grid."""
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from PIL import Image

    from . import serving

    tracking.configure()
    try:
        model = serving.load(model_uri)
    except (MlflowException, OSError) as e:
        raise UsageError(f"cannot load the model {model_uri}: {str(e).splitlines()[0]}") from None
    try:
        images = model.predict(pd.DataFrame([{"digit": digit, "n": n, "seed": seed}]))
    except (MlflowException, ValueError) as e:
        raise UsageError(f"{model_uri}: {str(e).splitlines()[0]}") from None
    Image.fromarray(grid_array(torch.from_numpy(images).unsqueeze(1), nrow=int(np.ceil(np.sqrt(n))))).save(out)
    log(f"wrote {out}: {n} images of digit {digit} from {model_uri} (seed {seed})")
    return out


def promote(run_id: str, alias: str = CHAMPION, log: Callable[[str], None] = print) -> int:
    """``infogan promote``: point the registry alias ``alias`` at the newest registered version of
    training run ``run_id``'s generator. Returns the version."""
    tracking.configure()
    run = tracking.get_training_run(run_id)
    name = run.data.params.get("tracking.registered_model")
    if name in (None, "null"):
        name = load_config().tracking.registered_model
    version = tracking.registered_version(name, run_id)
    if version is None:
        raise UsageError(f"run {run_id} has no generator registered as {name!r}; "
                         f"run `infogan evaluate --run-id {run_id}` first")
    tracking.set_alias(name, alias, version)
    log(f"{name}@{alias} is now version {version} (run {run_id}); "
        f"draw from it with: infogan generate --model models:/{name}@{alias} --digit 7 --out seven.png")
    return version
