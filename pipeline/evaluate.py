"""The evaluate stage and what reads a trained generator: ``evaluate`` (which code is which digit,
the lab's graded demo grid, quality metrics, logged to the training run under ``eval/`` at its
step), ``generate`` (images of a chosen digit), and ``promote`` (the registry alias to demo with).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from . import latents, measure, metrics, models, names, runs, tracking
from .config import UsageError, load_config
from .data import as_tensors, prepare
from .figures import confusion_figure, demo_figure, pyplot
from .images import grid_array
from .reference import get_classifier, predict

CHAMPION = "champion"  # the registry alias `infogan promote` sets: the generator to demo with


def stage(run_id: str, nested: bool = False, log: Callable[[str], None] = print) -> str:
    """``infogan evaluate`` as a run of its own (a child of the pipeline's parent, or the run that
    ``mlflow run -e evaluate`` opened): the results go to the training run, and this run records
    which run it evaluated and the same metrics. Returns this run's id."""
    tracking.configure()
    trained = tracking.get_training_run(run_id)  # checked before this stage's own run exists
    experiment = tracking.experiment_name(trained.info.experiment_id)
    with tracking.start_run(experiment, f"evaluate {trained.info.run_name}", nested=nested) as active:
        tracker = tracking.MlflowTracker(active.info.run_id)
        tracker.set_tags({names.STAGE: "evaluate", names.EVALUATED_RUN_ID: run_id})
        values = evaluate_run(run_id, log=log)
        tracker.log_metrics(values, step=0)
        tracker.flush()
        return active.info.run_id


def evaluate_run(run_id: str, cfg: Optional[DictConfig] = None, log: Callable[[str], None] = print) -> dict[str, float]:
    """Evaluate a finished training run with the full budget and log the metrics, the mapping, the
    confusion matrix and the graded demo grid to that run. Returns the metrics."""
    trained = runs.load_run(run_id, log)
    cfg = trained.cfg if cfg is None else cfg
    arrays, info = prepare(cfg.data, log=log)
    tensors = as_tensors(arrays, torch.device("cpu"))
    classifier, classifier_run, accuracy = get_classifier(cfg, tensors, info.sha256, log)
    measurement = measure.Evaluator(cfg, classifier, tensors)(trained.g, trained.d, full=True)
    values, mapping = measurement.as_metrics(), measurement.mapping

    tracker = tracking.MlflowTracker(run_id)
    # Evaluating the same checkpoint again measures the same figures (the seeds are fixed): they
    # replace nothing and are not logged a second time at the same step. Metrics the run has never
    # had (added to the evaluation since it ran) are logged.
    run = tracking.get_run(run_id)
    again = run.data.tags.get(names.EVALUATED_STEP) == str(trained.step)
    if again:
        lacking = {key: value for key, value in values.items() if key not in run.data.metrics}
        log(f"run {run_id} was already evaluated at step {trained.step}; its figures and files are "
            f"rewritten, not added again" + (f"; metrics it lacked are added: {', '.join(lacking)}" if lacking else ""))
        if lacking:
            tracker.log_metrics(lacking, step=trained.step)
            tracker.flush()
    else:
        tracker.log_metrics(values, step=trained.step)
        tracker.flush()
    tracker.set_tags({names.CLASSIFIER_RUN_ID: classifier_run, names.EVALUATED_STEP: trained.step})
    tracker.log_text(json.dumps(mapping.to_dict(), indent=2), names.MAPPING_FILE)
    _log_figures(tracker, trained.g, classifier, mapping, seed=cfg.seed + 11)
    name = cfg.tracking.registered_model
    if cfg.tracking.log_model and not (again and name and tracking.registered_version(name, run_id)):
        _log_generator(trained, mapping, values, name, log)
    name = cfg.tracking.registered_classifier
    if cfg.tracking.log_model and not (again and name and tracking.registered_version(name, run_id)):
        _log_classifier(trained, mapping, values, name, tensors["test_x"][0, 0].float().div(255).numpy(), log)
    log(f"evaluated run {run_id} at step {trained.step} (classifier run {classifier_run}, "
        f"test accuracy {accuracy:.4f}):")
    for key, value in values.items():
        log(f"  {key:24s} {value:.4f}")
    log("  code -> digit: " + ", ".join(f"{k}->{d} ({p:.2f})" for k, (d, p) in
                                        enumerate(zip(mapping.digit_of_code, mapping.purity()))))
    for note in mapping.warnings():
        log(f"  warning: {note}")
    return values


def _log_figures(tracker, g: models.Generator, classifier, mapping: metrics.CodeMapping, seed: int) -> None:
    plt = pyplot()
    images, predicted = demo(g, classifier, mapping.code_of_digit, seed=seed)
    right = metrics.column_right(predicted)
    for name, fig in ((names.DEMO_FIGURE, demo_figure(images, metrics.column_passes(predicted), right)),
                      (names.CONFUSION_FIGURE, confusion_figure(mapping))):
        tracker.log_figure(fig, name)
        plt.close(fig)


def _log_generator(trained: runs.TrainedRun, mapping: metrics.CodeMapping, values: dict,
                   name: Optional[str], log) -> None:
    """The servable generator, now drawing digits through the mapping; registered under ``name``."""
    from .tracking import serving

    model = serving.log_generator(trained.g, trained.run_id, mapping=mapping.to_dict())
    if name:
        version = tracking.register(model.model_uri, name, trained.run_id,
                                    {**values, names.EVALUATED_STEP: trained.step})
        log(f"registered the generator as {name} version {version} "
            f"(`infogan promote {trained.run_id}` makes it @{CHAMPION})")


def _log_classifier(trained: runs.TrainedRun, mapping: metrics.CodeMapping, values: dict,
                    name: Optional[str], example: np.ndarray, log) -> None:
    """Q as a servable digit classifier through the mapping; registered under ``name``."""
    from .tracking import classifier_serving, registry

    model = classifier_serving.log_classifier(trained.d, trained.run_id, mapping.to_dict(), example)
    if name:
        version = tracking.register(model.model_uri, name, trained.run_id,
                                    {**values, names.EVALUATED_STEP: trained.step}, registry.CLASSIFIER)
        log(f"registered Q as the digit classifier {name} version {version} "
            f"(`infogan classify --model models:/{name}/{version} IMAGE.png` reads a digit)")


@torch.no_grad()
def demo(g: models.Generator, classifier, code_of_digit: dict[int, int],
         seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """One demo with fresh noise: images [100, 1, 28, 28] digit-major, and predicted [10, 10]."""
    generator = torch.Generator().manual_seed(seed)
    device = next(g.parameters()).device
    z, c = measure.demo_inputs(1, g.noise_dim, code_of_digit, generator, device)
    images = measure.generate(g, z, c, measure.uniform_codes(g, c.shape[0], generator, device))
    predicted = predict(classifier, images).cpu().numpy().reshape(10, 10)
    return images, predicted


# --- generate ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Drawing:
    """What ``infogan generate`` draws: ``n`` images of ``digit`` (through the run's mapping), a
    traversal of that digit along continuous code ``vary`` (0-based) for ``styles`` noise vectors,
    a graded demo grid (``demo_grid``), or the raw [raw_styles, code, 28, 28] array indexed by
    code value. ``seed`` fixes the noise (and continuous codes, drawn from U(-1, 1) as in training)."""
    digit: Optional[int] = None
    n: int = 64
    demo_grid: bool = False
    raw_styles: Optional[int] = None
    seed: int = 0
    vary: Optional[int] = None
    styles: int = 10


def generate(run_id: str, out: Path, drawing: Drawing = Drawing(), log: Callable[[str], None] = print) -> Path:
    """``infogan generate``: what ``drawing`` says, from run ``run_id``, written to ``out``."""
    trained = runs.load_run(run_id, log)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    digit, n, seed = drawing.digit, drawing.n, drawing.seed
    generator = torch.Generator().manual_seed(seed)
    if drawing.raw_styles is not None:
        return _raw(trained, out, drawing.raw_styles, generator, seed, log)
    mapping = runs.read_mapping(run_id)
    if mapping is None:
        raise UsageError(f"run {run_id} has no code -> digit mapping yet ({names.MAPPING_FILE}); "
                         f"run `infogan evaluate --run-id {run_id}` first (or use --raw)")
    if drawing.demo_grid:
        return _demo_grid(trained, mapping, out, seed, log)
    if digit not in mapping.code_of_digit:
        raise UsageError(f"--digit must be one of 0-9 that a code draws; the mapping of run {run_id} "
                         f"covers {sorted(mapping.code_of_digit)}")
    code = mapping.code_of_digit[digit]
    if drawing.vary is not None:
        return _traversal(trained, out, drawing, code, generator, log)
    g = trained.g
    z = torch.randn(n, g.noise_dim, generator=generator)
    c = torch.full((n,), code, dtype=torch.long)
    images = measure.generate(g, z, c, measure.uniform_codes(g, n, generator, torch.device("cpu")))
    _save_png(grid_array(images, nrow=int(np.ceil(np.sqrt(n)))), out)
    log(f"wrote {out}: {n} images of digit {digit} (code {code}, seed {seed})")
    return out


def _raw(trained: runs.TrainedRun, out: Path, styles: int, generator: torch.Generator, seed: int, log) -> Path:
    g = trained.g
    z = torch.randn(styles, g.noise_dim, generator=generator)
    zz, c = latents.grid_inputs(z, g.code_dim)  # code-major
    u = measure.uniform_codes(g, c.shape[0], generator, c.device)
    images = measure.generate(g, zz, c, u).reshape(g.code_dim, styles, 28, 28).transpose(0, 1)
    np.savez_compressed(out, images=images.numpy().astype(np.float32),
                        code=np.arange(g.code_dim), run_id=trained.run_id, seed=seed)
    log(f"wrote {out}: images [{styles}, {g.code_dim}, 28, 28] indexed by code value")
    return out


def _demo_grid(trained: runs.TrainedRun, mapping: metrics.CodeMapping, out: Path, seed: int, log) -> Path:
    plt = pyplot()
    arrays, info = prepare(trained.cfg.data, log=log)
    tensors = as_tensors(arrays, torch.device("cpu"))
    classifier, _, _ = get_classifier(trained.cfg, tensors, info.sha256, log)
    images, predicted = demo(trained.g, classifier, mapping.code_of_digit, seed)
    passes = metrics.column_passes(predicted)
    fig = demo_figure(images, passes, metrics.column_right(predicted))
    fig.savefig(out, dpi=120)
    plt.close(fig)
    log(f"wrote {out}: demo grade {int(passes.sum())}/10 (seed {seed})")
    return out


def _traversal(trained: runs.TrainedRun, out: Path, drawing: Drawing, code: int, generator: torch.Generator,
               log) -> Path:
    g, digit, vary, styles, seed = trained.g, drawing.digit, drawing.vary, drawing.styles, drawing.seed
    if not vary < g.continuous_codes:
        raise UsageError(f"--vary c{vary + 1}: run {trained.run_id} has {g.continuous_codes} continuous code(s)"
                         + ("" if g.continuous_codes else "; train with model.continuous_codes=2 "
                            "(configs/paper_latent.yaml) for the paper's rotation and width codes"))
    z = torch.randn(styles, g.noise_dim, generator=generator)
    values = latents.TRAVERSAL_VALUES
    images = torch.cat([measure.traversal(g, vary, z[i], torch.tensor([code])) for i in range(styles)])
    _save_png(grid_array(images, nrow=values.shape[0]), out)
    log(f"wrote {out}: digit {digit} (code {code}), c{vary + 1} from {values[0]:g} to {values[-1]:g} "
        f"in {values.shape[0]} columns, {styles} noise vectors as rows (seed {seed})")
    return out


def _save_png(grid: np.ndarray, out: Path) -> None:
    from PIL import Image

    Image.fromarray(grid).save(out)


def generate_from_model(model_uri: str, out: Path, digit: int, n: int = 64, seed: int = 0,
                        log: Callable[[str], None] = print) -> Path:
    """``infogan generate --model URI``: ``n`` images of ``digit`` from a logged or registered
    generator (e.g. ``models:/infogan-generator@champion``), as one PNG grid."""
    import pandas as pd

    model = runs.load_model(model_uri)
    try:
        images = model.predict(pd.DataFrame([{"digit": digit, "n": n, "seed": seed}]))
    except (tracking.TrackingError, ValueError) as e:
        raise UsageError(f"{model_uri}: {str(e).splitlines()[0]}") from None
    _save_png(grid_array(torch.from_numpy(images).unsqueeze(1), nrow=int(np.ceil(np.sqrt(n)))), out)
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
    classifier = run.data.params.get("tracking.registered_classifier", load_config().tracking.registered_classifier)
    classifier_version = None if classifier in (None, "null") else tracking.registered_version(classifier, run_id)
    if classifier_version is not None:
        tracking.set_alias(classifier, alias, classifier_version)
        log(f"{classifier}@{alias} is now version {classifier_version} (run {run_id}); "
            f"read a digit with: infogan classify --model models:/{classifier}@{alias} IMAGE.png")
    return version
