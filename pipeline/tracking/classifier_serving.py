"""Q as an unsupervised digit classifier, served as an MLflow pyfunc model: images in, digits out.

Each input row holds one image, as ``pixels`` (28 x 28 numbers in [0, 1], white digit on black,
as MNIST) or as ``png`` (a base64 PNG of 28 x 28 pixels, read as 8-bit grey). The output has a row
per image: ``digit`` (Q's most likely code read through the run's code -> digit mapping, which
``infogan evaluate`` makes, without a label), ``code`` (that raw code value) and ``probability``
(Q's probability of that code).

Logged from code (``classifier_model.py`` names the class) with D's trunk and Q as a state dict
read with ``weights_only=True`` and the package's source beside it, like the generator
(``serving.py``); a request it cannot read is answered with MLflow's invalid-parameter error.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
from pathlib import Path
from typing import Optional

import mlflow
import numpy as np

from .serving import BadInput, Pyfunc, load, load_module, log_module  # noqa: F401  (load: this model's loader too)

MODEL_CODE = Path(__file__).with_name("classifier_model.py")
MODEL_NAME = "classifier_pyfunc"  # the logged model's name in its training run
SIZE = 28


class ClassifierModel(mlflow.pyfunc.PythonModel):
    """Q behind MLflow's pyfunc interface (see the module's docstring for rows and output)."""

    _skip_type_hint_validation = True  # rows are checked against the logged signature

    def load_context(self, context) -> None:
        from ..models import Discriminator

        self.d, _ = load_module(context, lambda spec: Discriminator(
            spec["code_dim"], spec["arch"], spec["q_hidden"], continuous_codes=spec.get("continuous_codes", 0)))
        mapping = json.loads(Path(context.artifacts["mapping"]).read_text())
        self.digit_of_code = np.asarray(mapping["digit_of_code"], dtype=np.int64)

    def predict(self, context, model_input, params: Optional[dict] = None):
        import pandas as pd
        import torch

        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        if not rows:
            raise BadInput("no images: send one row per image, each with 'pixels' or 'png'")
        images = torch.from_numpy(np.stack([image_of(row, number) for number, row in enumerate(rows)]))
        with torch.no_grad():
            probabilities = torch.softmax(self.d(images.unsqueeze(1))[1].float(), dim=1)
        probability, code = probabilities.max(dim=1)
        return pd.DataFrame({"digit": self.digit_of_code[code.numpy()], "code": code.numpy().astype(np.int64),
                             "probability": probability.numpy().astype(np.float64)})


def image_of(row: dict, number: int) -> np.ndarray:
    """Row ``number``'s image as float32 [28, 28] in [0, 1]; BadInput says what is wrong with it."""
    pixels, png = row.get("pixels"), row.get("png")
    has_pixels = pixels is not None and not (isinstance(pixels, float) and math.isnan(pixels))
    has_png = isinstance(png, str) and png != ""
    if has_pixels == has_png:
        raise BadInput(f"row {number}: give exactly one of 'pixels' (28x28 numbers in [0, 1]) and 'png' "
                       f"(a base64 PNG of 28x28 pixels)")
    if has_png:
        return png_pixels(png, f"row {number}")
    try:
        image = np.asarray([np.asarray(line, dtype=np.float64) for line in pixels], dtype=np.float64)
    except (TypeError, ValueError):
        raise BadInput(f"row {number}: 'pixels' must be 28 rows of 28 numbers") from None
    return checked(image, f"row {number}")


def png_pixels(text: str, where: str) -> np.ndarray:
    """A base64 PNG as float32 [28, 28] in [0, 1]."""
    return checked(png_grey(text, where), where)


def png_grey(text: str, where: str, max_side: int = 2048) -> np.ndarray:
    """A base64 PNG of any size up to ``max_side`` pixels a side as grey float64 pixels in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"{where}: 'png' is not base64 text") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) > max_side:
                raise BadInput(f"{where}: the image is {image.size[0]}x{image.size[1]} pixels; at most "
                               f"{max_side} a side")
            return np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    except (UnidentifiedImageError, OSError):
        raise BadInput(f"{where}: 'png' does not hold a PNG image") from None


def checked(image: np.ndarray, where: str) -> np.ndarray:
    if image.shape != (SIZE, SIZE):
        shape = "x".join(str(n) for n in image.shape) or "a single number"
        raise BadInput(f"{where}: the image must be {SIZE}x{SIZE} pixels, not {shape}")
    if not np.isfinite(image).all():
        raise BadInput(f"{where}: the pixels must be finite numbers")
    if image.min() < 0.0 or image.max() > 1.0:
        hint = " (divide 8-bit pixels by 255)" if image.max() <= 255 and image.min() >= 0 else ""
        raise BadInput(f"{where}: the pixels must lie in [0, 1], not [{image.min():g}, {image.max():g}]{hint}")
    return image.astype(np.float32)


def signature():
    """Rows of {pixels | png} in; rows of {digit, code, probability} out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array

    inputs = Schema([ColSpec(Array(Array(DataType.double)), "pixels", required=False),
                     ColSpec(DataType.string, "png", required=False)])
    outputs = Schema([ColSpec(DataType.long, "digit"), ColSpec(DataType.long, "code"),
                      ColSpec(DataType.double, "probability")])
    return ModelSignature(inputs, outputs)


def log_classifier(d, run_id: str, mapping: dict, example: np.ndarray, name: str = MODEL_NAME):
    """Log Q (with D's trunk) of training run ``run_id`` as a pyfunc model ``name`` reading codes
    through ``mapping`` (the evaluate stage's); ``example`` is one real test digit [28, 28] in
    [0, 1], the input example. Returns MLflow's ModelInfo."""
    import pandas as pd

    spec = {"code_dim": d.code_dim, "arch": d.arch, "q_hidden": d.q_hidden, "continuous_codes": d.continuous_codes}
    rows = pd.DataFrame({"pixels": [np.round(example.astype(np.float64), 4).tolist()]})
    return log_module(d, "discriminator_state.pt", spec, mapping, run_id, name, Pyfunc(MODEL_CODE, signature(), rows))


def classify_images(model, images: np.ndarray):
    """``images`` [N, 28, 28] in [0, 1] through a loaded classifier model: its output table."""
    import pandas as pd

    return model.predict(pd.DataFrame({"pixels": [image.astype(np.float64).tolist() for image in images]}))


def png_base64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")

