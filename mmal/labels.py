"""Label files: a round's ``labels.json`` and the annotation sheets people fill in.

Two formats live here, and nothing about workspaces or rounds:

- ``labels.json``, the labels people gave to the ids of one round's labeled
  set (:func:`read_labels_file`, :func:`write_labels_file`): class names per
  id (multi-label: a list), the class list they were checked against, and the
  files they came from.
- Annotation sheets, CSV or JSON Lines with ``id``, ``name``, ``label`` and
  one column per modality (:func:`write_sheet`, :func:`read_sheet`).

:func:`parse_label` checks one label cell against a class list and
:func:`apply_labels` lays people's labels over a dataset's.
:mod:`mmal.annotation` builds ``mmal export`` and ``mmal label`` on them;
:class:`mmal.workspace.Round` gathers a round's labels with them.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from mmal.atomic import atomic_open
from mmal.data.parsing import split_label
from mmal.errors import DataError, preview
from mmal.stamp import LABELS, read_stamped_json, stamped

FORMATS = ("csv", "jsonl")

#: One row of an annotation sheet: (line, id cell, label cell, name cell or None).
SheetRow = tuple[int, Any, Any, Any]


# ----------------------------------------------------------------------------- labels.json

_NOT_LABELS = "move it away"


def read_labels_document(path: str | os.PathLike) -> dict[str, Any]:
    """The whole ``labels.json`` document, its stamp checked (DataError naming the file)."""
    return read_stamped_json(path, LABELS, error=DataError, fix=_NOT_LABELS)


def read_labels_file(path: str | os.PathLike) -> dict[int, list[str]]:
    """Id -> class names of a ``labels.json`` (DataError naming the file if it is not one).

    Files from before the common stamp (``"type": "mmal-labels"``) load too.
    """
    path = Path(path)
    document = read_labels_document(path)
    try:
        return {int(k): v if isinstance(v, list) else [v]
                for k, v in document["labels"].items()}
    except (ValueError, KeyError, AttributeError) as exc:
        raise DataError(f"{path}: field 'labels' is not a table of id -> class names ({exc}); "
                        f"{_NOT_LABELS}") from None


def read_label_sources(path: str | os.PathLike) -> list[str]:
    """The files a ``labels.json`` was imported from, oldest first ([] when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return list(read_labels_document(path).get("sources", []))


def write_labels_file(path: str | os.PathLike, labels: Mapping[int, list[str]], *, round: int,
                      class_names: Sequence[str], multi_label: bool,
                      sources: Sequence[str]) -> Path:
    """Replace ``path`` atomically with a ``labels.json`` of ``labels`` (id -> class names)."""
    document = stamped(LABELS, {
        "round": int(round), "class_names": list(class_names), "multi_label": bool(multi_label),
        "sources": list(sources),
        "labels": {str(i): v if multi_label else v[0] for i, v in sorted(labels.items())}})
    with atomic_open(path) as fh:
        json.dump(document, fh, indent=1)
        fh.write("\n")
    return Path(path)


# ----------------------------------------------------------------------------- labels

def has_label(labels: np.ndarray) -> np.ndarray:
    """(N,) bool: which rows of (N,) or (N, K) ``labels`` are known (no -1 in them)."""
    return (labels.reshape(len(labels), -1) >= 0).all(axis=1)


def parse_label(raw: Any, class_names: Sequence[str], *, multi_label: bool,
                where: str) -> list[str]:
    """Class names in one label cell ([] when empty); DataError naming ``where`` otherwise.

    A single-label cell that is not a class name but splits on ``|`` into one
    class name is taken as that name.
    """
    classes = set(class_names)
    parts = [] if raw is None else split_label(raw, multi_label=multi_label)
    parts = [p for p in parts if p.strip()]
    if not parts:
        return []
    if not multi_label and parts[0] not in classes:
        parts = [p for p in split_label(raw, multi_label=True) if p.strip()] or parts
    if not multi_label and len(parts) != 1:
        raise DataError(f"{where}: label {raw!r} names {len(parts)} classes; this dataset is "
                        "single-label")
    for part in parts:
        if part not in classes:
            raise DataError(f"{where}: class {part!r} is not one of the {len(classes)} classes "
                            f"({preview(list(class_names))}); fix the label")
    return parts


def apply_labels(labels: np.ndarray, rows: np.ndarray, people: Sequence[list[str]],
                 class_names: Sequence[str]) -> np.ndarray:
    """A copy of ``labels`` with rows ``rows`` set to ``people``'s class names.

    Parameters
    ----------
    labels : (N,) int64 class indices, or (N, K) int8 multi-hot; -1 = unknown.
    rows : (n,) int64 rows to set.
    people : n lists of class names, all in ``class_names``.
    """
    out = np.array(labels, copy=True)
    index = {c: k for k, c in enumerate(class_names)}
    multi_label = out.ndim == 2
    for row, names in zip(rows, people, strict=True):
        if multi_label:
            out[row] = 0
            out[row, [index[n] for n in names]] = 1
        else:
            out[row] = index[names[0]]
    return out


# ----------------------------------------------------------------------------- sheets

def write_sheet(path: str | os.PathLike, records: Sequence[Mapping[str, Any]],
                columns: Sequence[str], fmt: str = "csv") -> Path:
    """Write an annotation sheet atomically: CSV with ``columns``, or JSON Lines.

    In JSON Lines an empty ``label`` is written as null.
    """
    if fmt not in FORMATS:
        raise DataError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    write: Callable[[IO[str]], Any]
    if fmt == "csv":
        def write(fh):
            writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
            writer.writeheader()
            writer.writerows(records)
    else:
        def write(fh):
            fh.writelines(json.dumps({**r, "label": r.get("label") or None}) + "\n"
                          for r in records)
    with atomic_open(path) as fh:
        write(fh)
    return Path(path)


def read_sheet(path: str | os.PathLike) -> list[SheetRow]:
    """(line, id, label, name or None) rows of a CSV or JSON Lines (``.jsonl``) label file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such label file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: is not UTF-8 text ({exc})") from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return list(_jsonl_rows(path, text))
    return list(_csv_rows(path, text))


def _csv_rows(path: Path, text: str) -> Iterator[SheetRow]:
    # newline="": line breaks inside quoted cells (and characters str.splitlines would
    # split on, such as form feeds in inline text) stay in their cell
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [f.strip() for f in reader.fieldnames or []]
    if "id" not in header or "label" not in header:
        raise DataError(f"{path}: line 1: the header needs columns 'id' and 'label' (found "
                        f"{', '.join(header) or 'none'})")
    reader.fieldnames = header
    try:
        for row in reader:
            if not any((v or "").strip() for k, v in row.items() if k is not None):
                continue
            yield reader.line_num, row["id"], row["label"], row.get("name")
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: cannot parse CSV ({exc})") from None


def _jsonl_rows(path: Path, text: str) -> Iterator[SheetRow]:
    # JSON Lines break at \n only: U+2028 and the like are valid inside JSON strings
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {line}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or "id" not in row:
            raise DataError(f"{path}: line {line}: expected an object with 'id' and 'label'")
        yield line, row["id"], row.get("label"), row.get("name")
