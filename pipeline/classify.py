"""``infogan classify``: real digits read by a trained Q (the served classifier model), one line
per image."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from . import runs
from .config import UsageError

DEFAULT_MODEL = "models:/infogan-classifier@champion"


def classify(model_uri: str, paths: Sequence[Path], log: Callable[[str], None] = print) -> list[dict]:
    """Each PNG of ``paths`` (28x28, a white digit on black, as MNIST) read by the classifier model
    ``model_uri``; prints ``PATH: digit D (code K, probability P)`` per image and returns the rows."""
    import pandas as pd

    from .tracking import classifier_serving

    rows = []
    for path in paths:
        if not Path(path).is_file():
            raise UsageError(f"{path}: no such file")
        rows.append({"png": classifier_serving.png_base64(path)})
        try:
            classifier_serving.png_pixels(rows[-1]["png"], str(path))  # the model's own check, named by path
        except ValueError as e:
            raise UsageError(str(e)) from None
    model = runs.load_model(model_uri)
    out = model.predict(pd.DataFrame(rows)).to_dict("records")
    for path, read in zip(paths, out):
        log(f"{path}: digit {read['digit']} (code {read['code']}, probability {read['probability']:.3f})")
    return out
