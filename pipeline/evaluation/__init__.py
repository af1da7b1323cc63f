"""Stage 4, evaluation: a bundle (and its held-out predictions) in, metrics, plots and a model card out.

``evaluate`` (the entry: score a training run's held-out predictions, or re-score a bundle on a catalog's frozen
test split), ``plots`` and ``model_card``. The numbers themselves come from :mod:`pipeline.metrics`, the one
metrics module, which training also uses for model selection.
"""
