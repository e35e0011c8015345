"""The import path that generators logged by earlier versions of the package name for their model
class (their ``generator_model.py`` says ``from pipeline.serving import GeneratorModel``). A
process that has already imported this package, such as ``infogan generate --model``, loads those
models through here; the class itself is ``pipeline.tracking.serving.GeneratorModel``."""
from .tracking.serving import GeneratorModel  # noqa: F401
