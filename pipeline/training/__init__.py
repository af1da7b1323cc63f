"""Stage 3, training: an accepted snapshot in, a self-describing tagger bundle and an MLflow run out.

``options`` (the one training options model), ``dataset`` (texts, targets, splits), ``labels`` (label map and
post-processing, shipped to Triton), ``loop`` (the resumable fit loop), ``baseline`` + ``tfidf`` (the TF-IDF
model and its NumPy scorer), ``hybrid`` (fusion fitted on validation), ``bundle`` (the bundle folder),
``train`` (the entry). Training also leaves its predictions on the frozen test split in the bundle
(``heldout.npz``) for the evaluation stage.
"""
