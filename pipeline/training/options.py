"""The training options, defined once: defaults and help here; the CLI flags of ``tagger train``, the
``train`` parameter of the ``tagger_retrain`` DAG and every run's MLflow params are derived from this class.

Standard library only, so a DAG file can build its parameter schema at parse time without importing torch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


def _opt(default: Any, help: str, *, cli: bool = True) -> Any:  # noqa: A002 (help text, not the builtin)
    return field(default=default, metadata={"help": help, "cli": cli})


@dataclass(frozen=True)
class TrainOptions:
    """How a tagger is trained. ``cli=False`` fields are for tests and benchmarks, not the command line."""

    encoder: str | None = _opt(
        None,
        "Encoder: minilm-l6, e5-small (see `tagger encoders list`) or a local transformers folder. Default: "
        "TAGGER_ENCODER, else the spec's encoder:, else by the catalog's locale (zh/mixed: e5-small, else minilm-l6).",
    )
    max_length: int = _opt(48, "Token cap per text (Myntra titles are ~10-20 tokens).")
    batch_size: int = _opt(32, "Rows per micro-batch.")
    grad_accum: int = _opt(1, "Micro-batches per optimizer step.")
    lr: float = _opt(1e-4, "Encoder learning rate.")
    head_lr: float = _opt(2e-3, "Learning rate of the freshly initialised head (it learns faster).")
    weight_decay: float = _opt(0.01, "AdamW weight decay (not on biases and LayerNorm).")
    warmup_ratio: float = _opt(0.06, "Share of the optimizer steps spent warming the learning rate up.")
    epochs: int = _opt(5, "Epochs (early stopping on validation micro-F1 may end sooner).")
    max_steps: int | None = _opt(None, "Cap on optimizer steps (the schedule decays over it).")
    min_steps: int = _opt(
        600,
        "Floor of optimizer steps: a small catalog trains more epochs until it has this many (early stopping may "
        "end sooner). Myntra with 800 training rows: encoder alone 0.846 instead of 0.836 (README).",
    )
    max_rows: int | None = _opt(None, "Sample this many catalog rows first (demo slices; the test split shrinks).")
    max_train_rows: int | None = _opt(None, "Cap the training split only (validation and test stay whole).")
    patience: int = _opt(2, "Validations without a better micro-F1 before stopping.")
    eval_every: int | None = _opt(None, "Optimizer steps between validations (default: once per epoch).")
    min_tag_count: int = _opt(5, "Tags with fewer training examples are left out of the head.")
    dropout: float = _opt(0.1, "Dropout before the tag head.")
    standardize: bool = _opt(
        True,
        "Standardise the pooled features the head reads with the pretrained encoder's statistics on the training "
        "texts (folded into the head when saved). e5-small on a 792-row Chinese catalog: encoder alone 0.21 without.",
    )
    trim_vocab: bool = _opt(
        True,
        "Trim a multilingual encoder's vocabulary (e5-small: 250k pieces, 96M of its 118M weights) to the pieces the "
        "catalog uses plus every single character of its scripts.",
    )
    seed: int = _opt(13, "Seed of initialisation, batch order and catalog sampling.")
    split_seed: int = _opt(0, "Seed of the title-hash split (changing it changes the frozen test split).")
    precision: str = _opt("auto", "auto | bf16 | fp32 (auto: bf16 on CUDA and on CPUs where a probe finds it faster).")
    device: str = _opt("auto", "auto | cpu | cuda")
    checkpoint_every: int = _opt(200, "Optimizer steps between checkpoints.")
    resume: bool = _opt(True, "Resume an interrupted run with the same data and options.")
    baseline: bool = _opt(True, "Also train and report the TF-IDF baseline.")
    hybrid: bool = _opt(True, "Fuse the TF-IDF model into the served scores (weights per facet, chosen on validation).")
    progress: bool = _opt(True, "Progress bar while fitting.", cli=False)
    stop_after_steps: int | None = _opt(None, "Simulate an interruption: checkpoint, then fail.", cli=False)

    def __post_init__(self) -> None:
        if self.hybrid and not self.baseline:  # the TF-IDF half is the baseline: no baseline, no hybrid
            object.__setattr__(self, "hybrid", False)

    def with_defaults(self, defaults: dict) -> TrainOptions:
        """These options with ``defaults`` (an encoder's own) in place of every option still at its class default;
        an option a user set to something else is kept."""
        base = {f.name: f.default for f in fields(self)}
        changes = {k: v for k, v in defaults.items() if getattr(self, k) == base[k]}
        return dataclasses.replace(self, **changes) if changes else self

    def key_fields(self) -> dict:
        """Options that define the run (a checkpoint is resumed only when these match)."""
        skip = {"resume", "progress", "stop_after_steps", "baseline", "hybrid", "checkpoint_every"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


def cli_fields() -> list:
    """The dataclass fields ``tagger train`` offers as flags, in declaration order."""
    return [f for f in fields(TrainOptions) if f.metadata.get("cli", True)]


def field_type(f) -> type:
    """The plain type of a field (``int`` for ``int | None``)."""
    hint = typing.get_type_hints(TrainOptions)[f.name]
    if isinstance(hint, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def json_schema() -> dict:
    """JSON schema of an overrides object (what the DAG's ``train`` parameter accepts): the CLI fields plus
    ``progress`` (off in Airflow logs); unknown keys rejected."""
    names = {int: "integer", float: "number", bool: "boolean", str: "string"}
    props = {}
    for f in [*cli_fields(), *(f for f in fields(TrainOptions) if f.name == "progress")]:
        kind = names[field_type(f)]
        nullable = f.default is None or f.default is MISSING
        props[f.name] = {"type": [kind, "null"] if nullable else kind, "description": f.metadata["help"]}
        if f.default is not MISSING:
            props[f.name]["default"] = f.default
    return {"type": "object", "properties": props, "additionalProperties": False}
