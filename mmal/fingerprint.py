"""File fingerprints that tie a feature cache to the model checkpoint it came from.

``mmal extract`` stores ``file_fingerprint(model.pt)`` as the cache's
``model_fingerprint``; selection calls :func:`check_model_fingerprint` to refuse
a cache whose model has since been retrained. Standard library only (no torch),
so ``select`` can use it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mmal.errors import CacheError

_BLOCK = 1 << 20


def file_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 (64 hex digits) of the bytes of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def check_model_fingerprint(cache_path: str | os.PathLike, cache_fingerprint: str,
                            model_path: str | os.PathLike) -> None:
    """Raise CacheError unless ``cache_fingerprint`` is the fingerprint of ``model_path``.

    Parameters
    ----------
    cache_path : path-like
        The cache (named in the message only).
    cache_fingerprint : str
        The cache's ``meta.model_fingerprint``.
    model_path : path-like
        The round's ``model.pt``.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise CacheError(f"{cache_path}: its model {model_path} does not exist; run `mmal train` "
                         "and `mmal extract --force` for this round")
    actual = file_fingerprint(model_path)
    if actual != cache_fingerprint:
        raise CacheError(f"{cache_path} and {model_path} disagree: the cache was extracted from "
                         f"model {cache_fingerprint[:12] or '(none)'}..., the checkpoint is now "
                         f"{actual[:12]}...; rerun `mmal extract --force` for this round")
