"""A trained generator as an MLflow pyfunc model: a table of requests in, images out.

Each input row asks for ``n`` images of one ``digit`` (through the run's code -> digit mapping,
which ``infogan evaluate`` writes) or of one raw ``code`` value, drawn from noise seeded by
``seed``: the same row always gives the same images. The output is float32 ``[sum of n, 28, 28]``
in [0, 1], rows in order; the param ``format="png"`` returns one base64 PNG grid per row instead.
A generator with continuous codes (``model.continuous_codes``) draws them from U(-1, 1) with the
same seed, as in training.

The model is logged from code (``generator_model.py`` names the class) with G's weights as a
state dict read with ``weights_only=True`` and the package's source beside it: loading it
unpickles nothing and needs only torch, not this package installed.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

MAX_IMAGES_PER_ROW = 1000
MODEL_CODE = Path(__file__).with_name("generator_model.py")
MODEL_NAME = "generator_pyfunc"  # the logged model's name in its training run


class BadInput(MlflowException, ValueError):
    """A request a served model cannot answer, in one line saying why. An MlflowException with
    the invalid-parameter code, so the scoring server answers HTTP 400 with this message instead of
    "an unexpected error" and a stack trace; a ValueError, so callers in Python catch it as one."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """MLflow's logger ``name`` at WARNING for the block (log_model announces its input example check)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """G behind MLflow's pyfunc interface (see the module's docstring for rows and output)."""

    # The rows are checked against the logged signature; MLflow's switch for checking them
    # against predict's type hints instead (and warning that there are none) stays off.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from ..models import Generator

        self.g, spec = load_module(context, lambda spec: Generator(
            spec["noise_dim"], spec["code_dim"], spec["arch"], continuous_codes=spec.get("continuous_codes", 0)))
        self.run_id = spec.get("run_id")
        mapping = context.artifacts.get("mapping")
        self.code_of_digit: Optional[dict[int, int]] = None
        if mapping:
            self.code_of_digit = {int(d): int(k) for d, k in json.loads(Path(mapping).read_text())["code_of_digit"].items()}

    def predict(self, context, model_input, params: Optional[dict] = None):
        import torch

        from .. import latents
        from ..images import grid_array

        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        out_format = (params or {}).get("format", "array")
        if out_format not in ("array", "png"):
            raise BadInput(f"format must be 'array' or 'png', not {out_format!r}")
        batches = []
        for number, row in enumerate(rows):
            code = self._code(row, number)
            n = _whole(row.get("n"), "n", number)
            if not 1 <= n <= MAX_IMAGES_PER_ROW:
                raise BadInput(f"row {number}: n must be between 1 and {MAX_IMAGES_PER_ROW}, not {n}")
            seed = _whole(row.get("seed", 0), "seed", number, default=0)
            generator = torch.Generator().manual_seed(seed)
            z = torch.randn(n, self.g.noise_dim, generator=generator)
            c = torch.nn.functional.one_hot(torch.full((n,), code), self.g.code_dim).float()
            u = latents.continuous(n, self.g.continuous_codes, generator, torch.device("cpu"))
            with torch.no_grad():
                batches.append(self.g(z, c, u))
        if out_format == "png":
            return [encode_png(grid_array(images, nrow=math.ceil(math.sqrt(images.shape[0])))) for images in batches]
        return torch.cat(batches).squeeze(1).numpy().astype(np.float32)

    def _code(self, row: dict, number: int) -> int:
        digit, code = row.get("digit"), row.get("code")
        if _given(digit) == _given(code):
            raise BadInput(f"row {number}: give exactly one of 'digit' (0-9) and 'code' "
                             f"(a raw code value, 0-{self.g.code_dim - 1})")
        if _given(code):
            code = _whole(code, "code", number)
            if not 0 <= code < self.g.code_dim:
                raise BadInput(f"row {number}: code must be 0-{self.g.code_dim - 1}, not {code}")
            return code
        digit = _whole(digit, "digit", number)
        if self.code_of_digit is None:
            raise BadInput("this generator was logged before `infogan evaluate` mapped its codes to digits"
                             + (f" (run `infogan evaluate --run-id {self.run_id}`)" if self.run_id else "")
                             + "; ask for a 'code' instead, or use the model evaluate logs and registers")
        if digit not in self.code_of_digit:
            raise BadInput(f"row {number}: digit must be one of {sorted(self.code_of_digit)}, not {digit}")
        return self.code_of_digit[digit]


def _given(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _whole(value, name: str, number: int, default: Optional[int] = None) -> int:
    if not _given(value):
        if default is not None:
            return default
        raise BadInput(f"row {number}: '{name}' is missing")
    if isinstance(value, bool) or float(value) != int(float(value)):
        raise BadInput(f"row {number}: '{name}' must be a whole number, not {value!r}")
    return int(float(value))


def encode_png(pixels: np.ndarray) -> str:
    """uint8 pixels (grey [H, W] or RGB [H, W, 3]) as a base64 PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def signature():
    """Rows of {digit | code, n, seed} in; float32 [N, 28, 28] out; the ``format`` param."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    inputs = Schema([ColSpec("long", "digit", required=False), ColSpec("long", "code", required=False),
                     ColSpec("long", "n"), ColSpec("long", "seed", required=False)])
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28))])
    return ModelSignature(inputs, outputs, params=ParamSchema([ParamSpec("format", "string", "array")]))


def log_generator(g, run_id: str, mapping: Optional[dict] = None, name: str = MODEL_NAME):
    """Log ``g`` into run ``run_id`` as a pyfunc model ``name``; with ``mapping`` (the evaluate
    stage's code -> digit mapping) rows may ask for digits. Returns MLflow's ModelInfo."""
    import pandas as pd

    example = pd.DataFrame([{"digit": 7, "n": 4, "seed": 0}] if mapping else [{"code": 0, "n": 4, "seed": 0}])
    spec = {"noise_dim": g.noise_dim, "code_dim": g.code_dim, "continuous_codes": g.continuous_codes, "arch": g.arch}
    return log_module(g, "generator_state.pt", spec, mapping, run_id, name, Pyfunc(MODEL_CODE, signature(), example))


class Pyfunc(NamedTuple):
    """A pyfunc model from code: the file that defines it, its signature and its input example."""
    code: Path
    signature: object
    example: object


def log_module(module, weights_file: str, spec: dict, mapping: Optional[dict], run_id: str, name: str,
               pyfunc: Pyfunc):
    """Log ``module`` into run ``run_id`` as the pyfunc model ``name`` that ``pyfunc.code`` names
    (models from code): its state dict as ``weights_file``, ``spec`` (what rebuilds it, with the
    run id) and ``mapping`` when given, as artifacts, with the package's source beside them.
    Returns MLflow's ModelInfo. :func:`load_module` reads them back."""
    import torch

    from .tracker import as_active

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, folder / weights_file)
        (folder / "spec.json").write_text(json.dumps({**spec, "run_id": run_id}))
        artifacts = {"weights": str(folder / weights_file), "spec": str(folder / "spec.json")}
        if mapping:
            (folder / "mapping.json").write_text(json.dumps(mapping))
            artifacts["mapping"] = str(folder / "mapping.json")
        with quiet_logger("mlflow.pyfunc"), as_active(run_id):
            return mlflow.pyfunc.log_model(
                name=name, python_model=str(pyfunc.code), artifacts=artifacts,
                code_paths=[str(Path(__file__).parents[1])], signature=pyfunc.signature, input_example=pyfunc.example,
                pip_requirements=["torch", "numpy", "pandas", "pillow", f"mlflow=={mlflow.__version__}"])


def load_module(context, build):
    """The module a model logged by :func:`log_module` holds, in eval mode, and its spec:
    ``build(spec)`` makes it, its weights are read with ``weights_only``."""
    import torch

    spec = json.loads(Path(context.artifacts["spec"]).read_text())
    module = build(spec)
    module.load_state_dict(torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True))
    return module.eval(), spec


def load(model_uri: str):
    """A logged model of the project (``runs:/<id>/generator_pyfunc``,
    ``models:/infogan-generator@champion``, ``models:/infogan-classifier@champion``, ...) as a
    pyfunc model."""
    return mlflow.pyfunc.load_model(model_uri)
