"""Guards that keep a damaged or foreign HDF5 file from being read as a feature cache.

mmal's writer makes plain files: every object is reached through hard links
only, every dataset is stored inside the file, and (since the fletcher32
checksums) every chunk of every field carries a checksum. Two guards hold a
file to that:

- :func:`check_structure`, before anything reads data: soft links, external
  links, virtual datasets and datasets stored in external raw files are
  refused, since each makes a read fetch bytes from somewhere other than this
  file (``/etc/passwd``, a FIFO that blocks forever, another user's cache);
- :func:`read_dataset`, on every read: HDF5's read error, which is what a chunk
  failing its checksum raises, becomes a one-line :class:`CacheError` naming
  the file and the field.

Damage outside the data (object headers, heaps, B-trees) has no checksum in
the files h5py writes by default; h5py meets it with OSError, RuntimeError or
KeyError, which :func:`damaged_file` turns into the same kind of one line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import h5py
import numpy as np

from mmal.errors import CacheError

#: The fix for a cache that is damaged or was not written by mmal.
REEXTRACT = "re-extract it with `mmal extract --force`"

_LINK_KINDS = {h5py.h5l.TYPE_SOFT: "a soft link", h5py.h5l.TYPE_EXTERNAL: "an external link"}


def check_structure(f: h5py.File, path: str | os.PathLike) -> None:
    """Refuse links and outside storage anywhere in ``f``, reading no data.

    The walk (H5Lvisit) reports soft and external links without resolving
    them and enters each hard-linked group once, so it ends on cyclic files.
    Each dataset is then opened through hard links only, and only its creation
    properties are looked at: no byte of it, and no other file, is read.

    Raises
    ------
    CacheError
        Naming the HDF5 path of the first soft or external link, virtual
        dataset or dataset with external raw storage.
    """
    raw: list[tuple[bytes, int]] = []
    # the callback must not raise: h5py's C callback turns that into a SystemError
    f.id.links.visit(lambda name, info: raw.append((name, info.type)), info=True)
    links: list[tuple[str, int]] = []
    for name, kind in raw:
        try:
            links.append((name.decode(), kind))
        except UnicodeDecodeError:  # mmal names every object in ASCII
            raise _foreign(path, name.decode("utf-8", "backslashreplace"),
                           "a name that is not UTF-8 (a damaged or foreign file)") from None
    for name, kind in links:
        if kind != h5py.h5l.TYPE_HARD:
            raise _foreign(path, name, _LINK_KINDS.get(kind, f"a user-defined link (type {kind})"))
    for name, _ in links:
        obj = f.get(name)
        if not isinstance(obj, h5py.Dataset):
            continue
        if obj.is_virtual:
            raise _foreign(path, name, "a virtual dataset (its data lives in other files)")
        if obj.id.get_create_plist().get_external_count():
            raise _foreign(path, name, "a dataset stored in an external raw file")


def read_dataset(ds: h5py.Dataset, selection: Any, path: str | os.PathLike,
                 field: str) -> np.ndarray:
    """``ds[selection]``, with a read failure as a :class:`CacheError` naming ``field``."""
    try:
        return ds[selection]
    except OSError as exc:
        detail = _first_line(exc)
        # mmal writes no filter but fletcher32, so a filter failure is a checksum failure
        why = ("a chunk fails its checksum, the file changed after mmal wrote it"
               if ds.fletcher32 and "filter" in detail else f"the file is damaged ({detail})")
        raise CacheError(f"{path}: field '{field}' cannot be read: {why}; {REEXTRACT}") from None


@contextmanager
def damaged_file(path: str | os.PathLike) -> Iterator[None]:
    """Within the block, what h5py raises on a damaged file becomes a one-line CacheError."""
    try:
        yield
    except (OSError, RuntimeError, KeyError) as exc:
        raise CacheError(f"{path}: cannot be read, the file is damaged ({_first_line(exc)}); "
                         f"{REEXTRACT}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__


def _foreign(path: str | os.PathLike, name: str, what: str) -> CacheError:
    # repr: the name comes from the file, and must not bring line breaks or escapes along
    return CacheError(f"{path}: {'/' + name!r} is {what}; mmal writes none, so this is not an "
                      f"mmal cache; {REEXTRACT}")
