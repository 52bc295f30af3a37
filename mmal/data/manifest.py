"""The generic manifest layout: a CSV or JSON Lines file per split.

Each row has ``id``, ``label`` and one column per modality (the column name
is the modality's ``column`` option, default its name) holding a path,
relative to the manifest file, to an image, a text file, a wav file, a folder
of frames or a ``.npy`` vector. See ``docs/datasets.md``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmal.data.parsing import assign_ids, check_sources_exist, class_list, encode_labels
from mmal.data.pool import DatasetKind, Pool
from mmal.errors import DataError

if TYPE_CHECKING:
    from mmal.config import Config

CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


def load_manifest_pool(config: Config, split: str) -> Pool:
    """Pool of the manifest named by ``dataset.train`` or ``dataset.test``."""
    ds = config.dataset
    path = ds.root / (ds.train if split == "train" else ds.test)
    rows = read_manifest(path)
    columns = {m.name: m.options["column"] for m in config.modalities}
    # The pool may come without labels at all (people label it round by round).
    needed = ("id", *(("label",) if split == "test" else ()), *columns.values())
    wanted = (f"id, label{' (may be left out or empty here)' if split == 'train' else ''} and "
              + ", ".join(repr(c) for c in columns.values()))
    csv_file = path.suffix.lower() in CSV_SUFFIXES
    for key in needed:
        for line, row in rows:
            if key not in row:
                where = "the header (line 1) has" if csv_file else f"line {line} has"
                raise DataError(f"{path}: {where} no field {key!r} (names are case-sensitive); "
                                f"it needs {wanted}")
    names = [_cell(row, "id", path, line, None) for line, row in rows]
    where = [f"{path.name} line {line}" for line, _ in rows]
    ids = assign_ids(names, str(path), where)
    classes, classes_origin = class_list(config)
    labels = encode_labels([row.get("label", "") for _, row in rows], names, classes,
                           multi_label=ds.multi_label, classes_origin=classes_origin,
                           where=where, allow_unknown=split == "train")
    records = {}
    for m in config.modalities:
        col = columns[m.name]
        paths = [path.parent / _cell(row, col, path, line, names[i])
                 for i, (line, row) in enumerate(rows)]
        check_sources_exist(paths, names, folder=m.kind == "video", what=m.kind,
                            where=f"column {col!r} of {path.name}")
        records[m.name] = paths
    return Pool(ids=ids, labels=labels, class_names=classes,
                multi_label=ds.multi_label, records=records, names=names, split=split,
                origin=str(path), root=ds.root)


KIND = DatasetKind("manifest", load_manifest_pool, files=("train.csv", "test.csv", "classes.txt"),
                   columns=True)


def read_manifest(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs of a CSV or JSON Lines manifest."""
    if not path.is_file():
        raise DataError(f"{path}: no such manifest file; check dataset.root and dataset.train/test")
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        rows = _read_csv(path)
    elif suffix in JSONL_SUFFIXES:
        rows = _read_jsonl(path)
    else:
        raise DataError(f"{path}: unknown manifest format {suffix!r}; use .csv or .jsonl")
    if not rows:
        raise DataError(f"{path}: manifest has no samples")
    return rows


def _read_csv(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is not None:
                reader.fieldnames = [f.strip() for f in reader.fieldnames]
            rows = []
            for row in reader:
                if None in row:
                    raise DataError(f"{path}: line {reader.line_num} has more fields than the "
                                    "header")
                rows.append((reader.line_num, row))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot parse CSV ({exc})") from None
    return rows


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: is not UTF-8 text ({exc})") from None
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number} is not valid JSON ({exc.msg}); write one "
                            "object per line") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {number} is not a JSON object")
        rows.append((number, row))
    return rows


def _cell(row: dict[str, Any], key: str, path: Path, line: int, sample: str | None) -> str:
    value = row[key]
    if value is None or (isinstance(value, str) and not value.strip()):
        who = f"sample {sample}: " if sample is not None else ""
        raise DataError(f"{path}: line {line}: {who}field {key!r} is empty; fill it in or "
                        "remove the row")
    return str(value).strip()
