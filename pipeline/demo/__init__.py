"""``infogan demo``: a local page to look at a trained generator, run the lab's graded demo and
let Q read a digit drawn with the mouse.

:func:`open_demo` loads what the page shows (a registered or logged generator, or a run's
checkpoint; Q's classifier model of the same run; the reference classifier that grades the lab
demo) and says in one line what is missing; :class:`Demo` answers the page's questions and knows
nothing of HTTP; ``app.py`` puts it behind FastAPI, :func:`serve` starts it.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from .. import metrics, names, runs, tracking
from ..config import UsageError, from_yaml, load_config
from ..images import mnist_style
from ..tracking.classifier_serving import classify_images, png_grey
from ..tracking.serving import encode_png

DEFAULT_MODEL = "models:/infogan-generator@champion"
DEFAULT_UI = "http://127.0.0.1:5000"  # where `make ui` / `mlflow ui` serve the store
MAX_STYLES = 100
CODE_RANGE = 2.0  # the sliders' reach: continuous codes are drawn from U(-1, 1) in training
SHOWN_METRICS = {names.GEN_ACCURACY: "generated accuracy", names.DEMO_PERFECT_FRAC: "demos 10/10",
                 names.MIN_CODE_PURITY: "worst code's purity", names.Q_ACCURACY: "Q on real test digits",
                 names.FLD: "FLD"}


class DemoError(ValueError):
    """A request the page cannot serve, in one line the page shows."""


@dataclass
class Demo:
    """What the page shows: G with its code -> digit mapping, the run it comes from, and (each
    None with the reason in ``notes`` where missing) the reference classifier that grades the lab
    demo and Q's classifier model that reads drawings."""
    g: torch.nn.Module
    code_of_digit: dict[int, int]
    source: str
    run: dict
    grader: Optional[torch.nn.Module] = None
    reader: Optional[object] = None  # a pyfunc model: rows of {pixels} -> {digit, code, probability}
    reader_source: Optional[str] = None
    notes: dict[str, str] = field(default_factory=dict)

    def info(self) -> dict:
        return {"source": self.source, "run": self.run, "digits": sorted(self.code_of_digit),
                "continuous_codes": self.g.continuous_codes, "code_range": CODE_RANGE, "max_styles": MAX_STYLES,
                "lab_demo": self.grader is not None, "reader": self.reader is not None,
                "reader_source": self.reader_source, "notes": self.notes}

    @torch.no_grad()
    def styles(self, digit: int, n: int, seed: int, codes: list[float]) -> list[str]:
        """``n`` images of ``digit`` from noise seeded by ``seed``, the continuous codes at
        ``codes`` (every one at 0 when empty), as base64 PNGs."""
        from .. import measure

        if digit not in self.code_of_digit:
            raise DemoError(f"digit must be one of {sorted(self.code_of_digit)}, not {digit}")
        if not 1 <= n <= MAX_STYLES:
            raise DemoError(f"the number of styles must be between 1 and {MAX_STYLES}, not {n}")
        k = self.g.continuous_codes
        if codes and len(codes) != k:
            raise DemoError(f"this generator has {k} continuous code(s); {len(codes)} value(s) were sent")
        if any(not -CODE_RANGE <= v <= CODE_RANGE for v in codes):
            raise DemoError(f"continuous code values must lie in [-{CODE_RANGE:g}, {CODE_RANGE:g}]")
        z = torch.randn(n, self.g.noise_dim, generator=torch.Generator().manual_seed(seed))
        c = torch.full((n,), self.code_of_digit[digit], dtype=torch.long)
        u = torch.tensor(codes or [0.0] * k, dtype=torch.float32).expand(n, k) if k else None
        return [encode_png(_pixels(image)) for image in measure.generate(self.g, z, c, u)]

    def lab_demo(self, seed: int) -> dict:
        """A fresh 10 digits x 10 styles demo graded as the evaluate stage grades it: a style
        column passes when the reference classifier reads at least 7 of its 10 digits right."""
        from ..evaluate import demo

        if self.grader is None:
            raise DemoError(self.notes.get("lab_demo", "no reference classifier to grade the demo"))
        images, predicted = demo(self.g, self.grader, self.code_of_digit, seed)
        passes = metrics.column_passes(predicted)
        return {"images": [[encode_png(_pixels(images[d * 10 + s])) for s in range(10)] for d in range(10)],
                "predicted": predicted.tolist(), "right": metrics.column_right(predicted).tolist(),
                "passes": passes.tolist(), "grade": int(passes.sum()), "pass_mark": metrics.PASS_MARK}

    def read(self, png: str) -> dict:
        """Q's reading of a drawing (a base64 PNG, or a data URL of one: a white digit on black,
        any size), after it is made the size and place of an MNIST digit."""
        if self.reader is None:
            raise DemoError(self.notes.get("reader", "Q is not exported as a model for this run"))
        try:
            image = mnist_style(png_grey(png.split(",", 1)[-1], "the drawing"))
        except ValueError as e:  # the model's own BadInput is one
            raise DemoError(str(e)) from None
        row = classify_images(self.reader, image[None]).iloc[0]
        return {"digit": int(row["digit"]), "code": int(row["code"]), "probability": float(row["probability"]),
                "seen": encode_png((image * 255).round().astype(np.uint8))}


def _pixels(image: torch.Tensor) -> np.ndarray:
    return (image.float().clamp(0, 1)[0].numpy() * 255).round().astype(np.uint8)


# --- loading -----------------------------------------------------------------------------------

def open_demo(model: Optional[str] = None, run_id: Optional[str] = None, classifier: Optional[str] = None,
              ui_url: Optional[str] = None, log: Callable[[str], None] = print) -> Demo:
    """The demo of a logged or registered generator ``model`` (default: the champion) or of the
    checkpoint of training run ``run_id``; Q from ``classifier`` or else the same run's
    classifier model. A generator that cannot be shown raises UsageError in one line; a missing
    grader or reader only turns that part of the page off, with the reason."""
    tracking.configure()
    if run_id:
        trained = runs.load_run(run_id, log)
        mapping = runs.read_mapping(run_id)
        if mapping is None:
            raise UsageError(f"run {run_id} has no code -> digit mapping yet ({names.MAPPING_FILE}); "
                             f"run `infogan evaluate --run-id {run_id}` first")
        g, code_of_digit, cfg, source = trained.g, mapping.code_of_digit, trained.cfg, f"run {run_id}"
    else:
        source = model or DEFAULT_MODEL
        g, code_of_digit, run_id = _generator_model(source)
        cfg = _run_config(run_id)
    demo = Demo(g, code_of_digit, source, _run_info(run_id, ui_url))
    demo.grader = _grader(cfg, demo.notes, log)
    if classifier or run_id:
        demo.reader_source = classifier or f"runs:/{run_id}/classifier_pyfunc"
        demo.reader = _reader(demo.reader_source, demo.notes)
    else:
        demo.notes["reader"] = "no classifier model: the generator names no run (give --classifier URI)"
    return demo


def _generator_model(uri: str) -> tuple[torch.nn.Module, dict[int, int], Optional[str]]:
    hint = (" (`infogan promote RUN_ID` names an evaluated run's generator the champion; or give --run-id or --model)"
            if uri == DEFAULT_MODEL else "")
    inner = runs.load_model(uri, "generator", hint).unwrap_python_model()
    if not hasattr(inner, "g") or not hasattr(inner, "code_of_digit"):
        raise UsageError(f"{uri} is not a generator logged by this project (a {type(inner).__name__})")
    if inner.code_of_digit is None:
        where = f"`infogan evaluate --run-id {inner.run_id}`" if inner.run_id else "`infogan evaluate`"
        raise UsageError(f"{uri} was logged before its codes were mapped to digits; use the generator that "
                         f"{where} logs and registers, or --run-id")
    return inner.g, inner.code_of_digit, inner.run_id


def _run_config(run_id: Optional[str]):
    """The run's logged config (its data and reference classifier settings), else the defaults."""
    try:
        text = tracking.read_text(run_id, names.CONFIG_FILE) if run_id else None
    except tracking.TrackingError:
        text = None
    return from_yaml(text) if text else load_config()


def _run_info(run_id: Optional[str], ui_url: Optional[str]) -> dict:
    if not run_id:
        return {"id": None}
    try:
        run = tracking.get_run(run_id)
    except tracking.TrackingError:
        return {"id": run_id, "note": "not in this tracking store"}
    uri = tracking.tracking_uri()
    ui = (ui_url or (uri if uri.startswith(("http://", "https://")) else DEFAULT_UI)).rstrip("/")
    experiment = run.info.experiment_id
    figures = {label: run.data.metrics[key] for key, label in SHOWN_METRICS.items() if key in run.data.metrics}
    # MLflow 3.17's UI opens its GenAI view unless the address asks for the model-training one.
    return {"id": run_id, "name": run.info.run_name, "experiment": tracking.experiment_name(experiment),
            "url": f"{ui}/#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning",
            "figures": figures}


def _grader(cfg, notes: dict, log: Callable[[str], None]):
    from ..data import DataError, as_tensors, prepare
    from ..reference import get_classifier

    try:
        arrays, info = prepare(cfg.data, log=log)
        classifier, _, _ = get_classifier(cfg, as_tensors(arrays, torch.device("cpu")), info.sha256, log)
        return classifier
    except (DataError, OSError) as e:
        notes["lab_demo"] = f"the lab demo needs the reference classifier, which needs MNIST: {str(e).splitlines()[0]}"
        return None


def _reader(uri: str, notes: dict):
    try:
        return runs.load_model(uri, "classifier")
    except UsageError as e:
        notes["reader"] = f"Q is not exported as a model here ({e}); `infogan evaluate` logs it"
        return None


# --- serving -----------------------------------------------------------------------------------

def check_port(host: str, port: int) -> None:
    """UsageError in one line when ``host:port`` cannot be listened on (checked before anything loads)."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e}); another server has it? "
                             f"choose a port with --port") from None


def serve(demo: Demo, host: str = "127.0.0.1", port: int = 8765, log: Callable[[str], None] = print) -> None:
    """Serve the page until Ctrl-C (which ends in KeyboardInterrupt, as for every command)."""
    import uvicorn

    from .app import build_app

    where = demo.run.get("name") or demo.source
    log(f"demo of {where} ({demo.source}) at http://{host}:{port}  (Ctrl-C stops it)")
    for note in demo.notes.values():
        log(f"  {note}")
    # No lifespan events: the app has none, and uvicorn's handler would print a traceback on Ctrl-C.
    uvicorn.run(build_app(demo), host=host, port=port, log_level="warning", lifespan="off")
