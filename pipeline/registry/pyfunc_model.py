"""The tagger bundle as an MLflow ``pyfunc``: ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` work on it.

The model's only artifact is the bundle folder (``artifacts["bundle"]``); ``load_context`` loads it with
:func:`pipeline.training.bundle.load_bundle`, so the pyfunc tags texts exactly as the bundle does. Input: a DataFrame
with a string column ``text`` (or a list of strings); output: one row per text with ``tags`` (JSON list of
``{"slug", "facet", "score"}``), ``slugs`` and ``scores``. Optional param ``top_k`` (0 = no cap).

Logged as a model from code (MLflow 3, ``pipeline/registry/pyfunc_script.py``): the registry stores source, not a
CloudPickle of the object, so loading a registered version never unpickles code.
"""

from __future__ import annotations

import json

import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

INPUT_COLUMN = "text"
OUTPUT_COLUMNS = ("tags", "slugs", "scores")
INPUT_EXAMPLE = ["Men Navy Blue Cotton Slim Fit Casual Shirt", "Women Black Leather Handbag"]


def signature():
    """Input ``text`` (string), outputs ``tags`` (JSON string), ``slugs``, ``scores`` (arrays); param top_k."""
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string)]),
        outputs=Schema(
            [
                ColSpec(DataType.string, "tags"),
                ColSpec(Array(DataType.string), "slugs"),
                ColSpec(Array(DataType.double), "scores"),
            ]
        ),
        params=ParamSchema([ParamSpec("top_k", DataType.long, 0)]),
    )


def _texts(model_input) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        col = INPUT_COLUMN if INPUT_COLUMN in model_input.columns else model_input.columns[0]
        return ["" if v is None else str(v) for v in model_input[col].tolist()]
    if isinstance(model_input, pd.Series):
        return [str(v) for v in model_input.tolist()]
    if isinstance(model_input, str):
        return [model_input]
    return [str(v) for v in model_input]


class TaggerPyfunc(mlflow.pyfunc.PythonModel):
    """Product texts in, tags out; holds no state until ``load_context`` loads the bundle."""

    def load_context(self, context) -> None:
        # Deferred: the bundle loader pulls in torch, which only a loaded model needs; registering a version
        # imports this module for its signature and input example and should not pay for torch.
        from pipeline.training.bundle import load_bundle

        self.bundle = load_bundle(context.artifacts["bundle"])

    # The hint is informational (MLflow infers no schema from DataFrame); the logged signature is the contract.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        top_k = int((params or {}).get("top_k") or 0) or None
        predictions = self.bundle.predict(_texts(model_input), top_k=top_k)
        return pd.DataFrame(
            {
                "tags": [json.dumps(items, ensure_ascii=False) for items in predictions],
                "slugs": [[t["slug"] for t in items] for items in predictions],
                "scores": [[float(t["score"]) for t in items] for items in predictions],
            },
            columns=list(OUTPUT_COLUMNS),
        )
