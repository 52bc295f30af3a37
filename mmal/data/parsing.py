"""Parsing helpers the dataset adapters share: ids, class lists, labels, file checks.

The lowest layer of :mod:`mmal.data`: it imports no adapter and no pool, so
every adapter (``manifest``, ``food101``, ``avclips``, ``uci``) can import it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from mmal.errors import DataError

if TYPE_CHECKING:
    from mmal.config import Config
    from mmal.data.pool import EncodedSource

#: The files of a frame folder (a video clip) that are frames.
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


def is_integer_text(text: str) -> bool:
    """Whether ``text`` reads as an integer (as ``int()`` takes it: "7", " 007", "1_000")."""
    try:
        int(text)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def assign_ids(names: Sequence[str], origin: str,
               where: Sequence[str] | None = None) -> np.ndarray:
    """(N,) int64 ids: the names themselves when all are integers, else row numbers.

    ``where`` optionally gives each row's place in the file (e.g. "train.csv
    line 5") for the messages.

    Raises
    ------
    DataError
        Naming the first id written twice, or two ids that are the same integer
        (e.g. "1" and "01").
    """
    seen: dict[str, int] = {}
    for k, n in enumerate(names):
        if n in seen:
            lines = f" ({where[seen[n]]} and {where[k]})" if where is not None else ""
            raise DataError(f"{origin}: sample id {n!r} occurs more than once{lines}; ids must "
                            "be unique")
        seen[n] = k
    try:
        ids = np.asarray([int(n) for n in names], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        return np.arange(len(names), dtype=np.int64)
    first: dict[int, str] = {}
    for n, i in zip(names, ids.tolist(), strict=True):
        if i in first:
            raise DataError(f"{origin}: sample ids {first[i]!r} and {n!r} are the same integer "
                            f"{i}; ids must be unique, write each once")
        first[i] = n
    return ids


def read_class_list(path: Path) -> list[str]:
    """Class names, one per non-blank line of ``path``."""
    if not path.is_file():
        raise DataError(f"{path}: no such class list file; write one class name per line "
                        "or set dataset.classes")
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: class list is not UTF-8 text ({exc})") from None
    names = [n for n in names if n]
    if not names:
        raise DataError(f"{path}: class list is empty; write one class name per line")
    if len(set(names)) != len(names):
        dup = next(n for i, n in enumerate(names) if n in names[:i])
        raise DataError(f"{path}: class {dup!r} is listed twice")
    return names


def encode_labels(raw: Sequence[Any], names: Sequence[str], class_names: Sequence[str], *,
                  multi_label: bool, classes_origin: str, where: Sequence[str],
                  allow_unknown: bool = False) -> np.ndarray:
    """Labels as class indices ((N,) int64) or multi-hot ((N, K) int8).

    ``raw[i]`` is a class name (str or int), or for multi-label a list of names
    or a string ``"a|b"`` / JSON list. ``where[i]`` says where sample i was read
    (e.g. "train.csv line 7"); ``classes_origin`` where the class list came from.
    With ``allow_unknown``, an empty cell means "not known yet" and encodes as
    -1 (multi-label: a row of -1); people supply those labels with ``mmal label``.
    """
    index = {c: k for k, c in enumerate(class_names)}
    out = (np.zeros((len(raw), len(class_names)), dtype=np.int8) if multi_label
           else np.empty(len(raw), dtype=np.int64))
    for i, value in enumerate(raw):
        if is_unknown_label(value):
            if not allow_unknown:
                raise DataError(f"sample {names[i]}: has no label ({where[i]}); the test split "
                                "needs every label")
            out[i] = -1
            continue
        parts = split_label(value, multi_label=multi_label)
        if not multi_label and parts[0] not in index:
            parts = split_label(value, multi_label=True) or parts  # for the hint below
        if not multi_label and len(parts) != 1:
            raise DataError(f"sample {names[i]}: label {value!r} names {len(parts)} classes "
                            f"({where[i]}); set dataset.multi_label = true for multi-label data")
        for part in parts:
            if part not in index:
                raise DataError(f"sample {names[i]}: label {part!r} is not in the class list "
                                f"{classes_origin} ({where[i]}); fix the label or add the class")
            if multi_label:
                out[i, index[part]] = 1
            else:
                out[i] = index[part]
    return out


def is_unknown_label(value: Any) -> bool:
    """True for an empty label cell (None, "", whitespace, or an empty list)."""
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


def split_label(value: Any, *, multi_label: bool) -> list[str]:
    """Class names in one label cell: ``"a"``, ``"a|b"``, ``'["a", "b"]'``, a list, or an int."""
    if isinstance(value, bool) or value is None:
        return [str(value)]
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value).strip()
    if multi_label and text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return [str(v) for v in parsed]
    if multi_label:
        return [p.strip() for p in text.split("|") if p.strip()]
    return [text]


def list_frames(folder: Path, *, sample: str) -> list[Path]:
    """Frame files (jpg/png) of a clip folder, in name order (DataError naming the sample)."""
    if not folder.is_dir():
        raise DataError(f"sample {sample}: frame folder {folder} does not exist")
    frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not frames:
        raise DataError(f"sample {sample}: frame folder {folder} holds no .jpg or .png frames")
    return frames


def check_sources_exist(paths: Sequence[Path], names: Sequence[str], *, folder: bool,
                        what: str, where: str) -> None:
    """DataError naming the first sample whose file (or frame folder) is missing."""
    for name, p in zip(names, paths, strict=True):
        ok = p.is_dir() if folder else p.is_file()
        if not ok:
            thing = "frame folder" if folder else "file"
            raise DataError(f"sample {name}: {what} {thing} {p} does not exist ({where}); "
                            "fix the path or remove the sample")


def class_list(config: Config, *, derive: Callable[[], Sequence[str]] | None = None,
               ) -> tuple[list[str], str]:
    """The class names and where they came from (for messages).

    From ``dataset.classes`` (a list, or a file relative to ``dataset.root``);
    when that is empty, from ``<root>/classes.txt`` if present, else from
    ``derive()`` (the labels seen in the data, sorted here).
    """
    ds = config.dataset
    if isinstance(ds.classes, tuple):
        return list(ds.classes), f"dataset.classes of {config.path or 'the config'}"
    if ds.classes:
        path = ds.root / ds.classes
        return read_class_list(path), str(path)
    default = ds.root / "classes.txt" if ds.root is not None else None
    if default is not None and default.is_file():
        return read_class_list(default), str(default)
    if derive is None:
        raise DataError(f"{config.path}: no class list; set dataset.classes")
    return sorted(derive()), "derived from the labels in the data"


def open_source(source: Path | EncodedSource, *, sample: str) -> Path | BinaryIO:
    """A file path as is, or an encoded source's bytes as an in-memory file."""
    if isinstance(source, Path):
        return source
    try:
        return io.BytesIO(source.read_bytes())
    except DataError as exc:
        raise DataError(f"sample {sample}: {exc}") from None
