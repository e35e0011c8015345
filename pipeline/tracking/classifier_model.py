"""The file MLflow loads a logged classifier (Q) from (models from code): it names the model class.
See pipeline/tracking/classifier_serving.py."""
from mlflow.models import set_model

from pipeline.tracking.classifier_serving import ClassifierModel

set_model(ClassifierModel())
