"""The file MLflow loads a logged generator from (models from code): it names the model class.
See pipeline/serving.py."""
from mlflow.models import set_model

from pipeline.serving import GeneratorModel

set_model(GeneratorModel())
