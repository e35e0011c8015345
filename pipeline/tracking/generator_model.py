"""The file MLflow loads a logged generator from (models from code): it names the model class.
See pipeline/tracking/serving.py."""
from mlflow.models import set_model

from pipeline.tracking.serving import GeneratorModel

set_model(GeneratorModel())
