"""The models-from-code script MLflow runs when it loads a registered version (``registry.register_bundle`` logs
it with the ``pipeline`` package as code path). Never imported by the package: naming the model for MLflow is
its one side effect."""

import mlflow.models

from pipeline.registry.pyfunc_model import TaggerPyfunc

mlflow.models.set_model(TaggerPyfunc())
