"""The split rule shared by validation and training: a hash of the normalised title, 80/10/10.

Why a hash and not a stratified split: a title's split must never change as the catalog grows, so that a model
trained on an older snapshot can be re-scored on a newer snapshot's test split without having seen any of it
(``tagger evaluate MODEL --source NEWER``), and a champion and its challenger share every old test title. Any
split that balances a stratum's shares depends on the other titles in it, and a new title would move old ones
between splits. The price, measured on all of Myntra: among the 74 head tags with 200+ rows the test share
ranges 5.5-15.3% (median 9.3%; titles cluster), and 14 of 181 head tags have no test row.

Its own module, with no database or settings imports, so that training (and a GPU machine that has only torch,
transformers and pandas) can import it without the snapshot store.
"""

from __future__ import annotations

import hashlib
import re

SPLITS = ("train", "val", "test")
_WS = re.compile(r"\s+")


def normalise_title(title: str) -> str:
    """Lower-case and collapse whitespace: titles equal after this land in the same split."""
    return _WS.sub(" ", str(title)).strip().lower()


def split_of(title: str, seed: int = 0) -> str:
    """Deterministic 80/10/10 split of a title: ``'train'``, ``'val'`` or ``'test'``.

    The split is a hash of the normalised title, so duplicate titles never straddle two splits; training
    imports this function so that train and validation agree.
    """
    return split_of_normalised(normalise_title(title), seed)


def split_of_normalised(normalised: str, seed: int = 0) -> str:
    """:func:`split_of` for a title already passed through :func:`normalise_title`."""
    key = f"{seed}\x1f{normalised}".encode("utf-8", errors="surrogatepass")
    bucket = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % 100
    return "train" if bucket < 80 else ("val" if bucket < 90 else "test")
