"""Labels from people: export ids to annotate, import the labels they come back with.

:func:`export_ids` writes the ids of an index file (a selection, or a round's
labeled set) with each modality's source from the train pool, as CSV or JSON
Lines, with an empty ``label`` column for the annotator to fill in.

:func:`import_labels` reads such a file back (CSV with ``id,label`` columns,
extra columns ignored; or JSON Lines objects with ``id`` and ``label``) into
``rounds/RRR/labels.json`` of the round whose labeled set the ids belong to.
Labels are class names (multi-label: ``a|b``). A row with an empty label is
skipped, so partial files are fine; the ids of the round still waiting for a
label are reported. An id outside the round's labeled set, or a class outside
the class list, rejects the whole file with an error naming the line.
Importing several files into one round merges them (a later file wins for an
id it labels again). :func:`human_labels` gathers the labels of every round up
to ``r``. Simulated runs (``mmal run``) never need this: their labels come
from the dataset.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmal.data.pool import is_integer_text
from mmal.errors import DataError

log = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl")
LABELS_NAME = "labels.json"
LABELS_TYPE = "mmal-labels"
LABELS_VERSION = 1


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_labels` did.

    Attributes
    ----------
    path : Path
        The round's ``labels.json``.
    imported : int
        Rows of the file that carried a label.
    replaced : list of int
        Ids whose earlier label in this round changed.
    missing : np.ndarray
        (n,) int64 ids of the round that still have no label: neither from the
        dataset nor imported (any round <= r).
    skipped_lines : list of int
        Lines with an id but an empty label.
    overrode_dataset : list of int
        Ids whose imported label differs from the label the dataset itself gives.
    show_ids : callable
        ``show_ids(ids, limit)``: the ids for a message, with their names from
        the data where those differ (:meth:`mmal.data.pool.Pool.show_ids`).
    """

    path: Path
    imported: int
    replaced: list[int] = field(default_factory=list)
    missing: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    skipped_lines: list[int] = field(default_factory=list)
    overrode_dataset: list[int] = field(default_factory=list)
    show_ids: Any = field(default=lambda ids, limit=10: ", ".join(map(str, list(ids)[:limit])),
                          repr=False)


# ----------------------------------------------------------------------------- export

def export_ids(workspace: str | os.PathLike, index_path: str | os.PathLike, *,
               fmt: str = "csv", out: str | os.PathLike | None = None,
               overwrite: bool = False, unlabeled_only: bool = False) -> Path:
    """Write the ids of ``index_path`` with their sources, for an annotation tool.

    Parameters
    ----------
    workspace : path-like
        The workspace whose train pool the ids belong to.
    index_path : path-like
        A selection or labeled-set index file.
    fmt : {"csv", "jsonl"}
    out : path-like, optional
        Default: next to the index file, ``<stem>.<fmt>``.
    unlabeled_only : bool
        Leave out ids that already have a label (from the dataset, or imported
        with ``mmal label`` in any round).

    Returns
    -------
    Path of the written file. Columns: ``id``, ``name`` (the id as written in
    the data), ``label`` (empty), then one per modality: the absolute file
    path, or the inline text; vectors held in memory (uci-mfeat) have no
    source and get no column.
    """
    from mmal.cache.index import read_index
    from mmal.data import load_pool
    from mmal.workspace import load_workspace_config

    if fmt not in FORMATS:
        raise DataError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    index_path = Path(index_path)
    index = read_index(index_path)
    pool = load_pool(load_workspace_config(workspace), "train")
    try:
        rows = pool.rows(index.ids)
    except DataError as exc:
        raise DataError(f"{index_path}: {exc}; the index file belongs to another workspace") \
            from None
    _check_names(pool, workspace, index_path, index)
    ids = index.ids
    if unlabeled_only:
        from mmal.workspace import list_rounds

        rounds = list_rounds(workspace)
        labels = resolve_labels(pool, workspace, rounds[-1] if rounds else 0)
        unknown = ~has_label(labels)[rows]
        ids, rows = ids[unknown], rows[unknown]
    sources = {m: v for m, v in pool.records.items() if not isinstance(v, np.ndarray)}
    records = []
    for i, row in zip(ids, rows, strict=True):
        record: dict[str, Any] = {"id": int(i), "name": pool.names[row], "label": ""}
        for m, values in sources.items():
            value = values[row]
            record[m] = str(Path(value).resolve()) if isinstance(value, Path) else str(value)
        records.append(record)
    out = Path(out) if out is not None else index_path.with_suffix(f".{fmt}")
    if out.exists() and not overwrite:  # it may hold labels someone already filled in
        raise DataError(f"{out}: already exists (it may hold labels filled in already); pass "
                        "--force to replace it or --out to write elsewhere")
    columns = ["id", "name", "label", *sources]
    if fmt == "csv":
        _write_atomic(out, lambda fh: _write_csv(fh, columns, records))
    else:
        _write_atomic(out, lambda fh: fh.writelines(
            json.dumps({**r, "label": None}) + "\n" for r in records))
    log.info("exported %d ids of %s to %s", len(records), index_path, out)
    return out


def _check_names(pool: Any, workspace: str | os.PathLike, index_path: Path, index: Any) -> None:
    """DataError when the ids no longer name the samples they named (row-numbered manifests).

    A labeled set carries its own fingerprint; a selection is checked through the
    labeled set of the round whose ``selections/`` holds it and through the cache
    it was made from.
    """
    from mmal.workspace import (
        NAMES_KEY,
        check_selection_names,
        read_labeled,
        round_of_selection,
        round_paths,
    )

    if NAMES_KEY in index.provenance:
        pool.check_names(index.ids, index.provenance[NAMES_KEY], str(index_path))
        return
    round = round_of_selection(Path(workspace), index_path)
    if round is not None and round_paths(workspace, round).labeled.is_file():
        read_labeled(workspace, round, pool=pool)
    if index.kind == "selection":
        check_selection_names(workspace, pool, index_path, index.provenance)


def _write_csv(fh, columns: list[str], records: list[dict[str, Any]]) -> None:
    writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)


# ----------------------------------------------------------------------------- import

def import_labels(workspace: str | os.PathLike, round: int, path: str | os.PathLike) -> ImportResult:
    """Check the label file at ``path`` and merge it into ``rounds/RRR/labels.json``.

    Parameters
    ----------
    workspace : path-like
    round : int
        The round whose labeled set the ids belong to (the round started by
        ``mmal next`` from the exported selection, or round 0).
    path : path-like
        CSV (header with ``id`` and ``label``) or JSON Lines (``.jsonl``).

    Raises
    ------
    DataError
        Naming the file and line of the first unknown id, unknown class,
        repeated id or malformed row; nothing is written then.
    """
    from mmal.data import load_pool
    from mmal.data.pool import split_label
    from mmal.workspace import load_workspace_config, read_labeled, round_paths

    path = Path(path)
    pool = load_pool(load_workspace_config(workspace), "train")
    labeled = read_labeled(workspace, round, pool=pool)  # the ids still name the same samples
    # The data's own ids (names) are accepted in the id column too, where they differ
    # from mmal's ids (row-numbered datasets); a text that is both is refused below.
    by_name = {n: int(i) for n, i in zip(pool.names, pool.ids, strict=True) if n != str(int(i))}
    known_ids = set(int(i) for i in labeled)
    classes = {c: k for k, c in enumerate(pool.class_names)}
    new: dict[int, list[str]] = {}
    skipped = []
    for line, raw_id, raw_label, raw_name in _read_rows(path):
        sid = _parse_id(raw_id, path, line, by_name, pool, raw_name)
        if sid not in known_ids:
            if not pool.has_id(sid):
                raise DataError(f"{path}: line {line}: id {sid} is not in the train pool; "
                                "label only the exported ids")
            raise DataError(f"{path}: line {line}: id {pool.show_ids([sid])} is not in round "
                            f"{round:03d}'s labeled set; pass the round whose labeled set holds "
                            "it, or, for a selection's ids, start that round first with `mmal "
                            "next --selection FILE`")
        if sid in new:
            raise DataError(f"{path}: line {line}: id {sid} is labeled twice in this file; "
                            "keep one row per id")
        parts = [] if raw_label is None else split_label(raw_label, multi_label=pool.multi_label)
        parts = [p for p in parts if p.strip()]
        if not parts:
            skipped.append(line)
            continue
        if not pool.multi_label and parts[0] not in classes:
            parts = [p for p in split_label(raw_label, multi_label=True) if p.strip()] or parts
        if not pool.multi_label and len(parts) != 1:
            raise DataError(f"{path}: line {line}: label {raw_label!r} names {len(parts)} "
                            "classes; this dataset is single-label")
        for part in parts:
            if part not in classes:
                raise DataError(f"{path}: line {line}: class {part!r} is not one of the "
                                f"{len(classes)} classes ({_preview(pool.class_names)}); fix "
                                "the label")
        new[sid] = parts
    target = round_paths(workspace, round).root / LABELS_NAME
    old = _read_labels_file(target) if target.exists() else {}
    replaced = sorted(i for i, v in new.items() if i in old and old[i] != v)
    merged = {**old, **new}
    document = {"type": LABELS_TYPE, "version": LABELS_VERSION, "round": round,
                "class_names": list(pool.class_names), "multi_label": bool(pool.multi_label),
                "sources": _sources(target) + [str(path.resolve())],
                "labels": {str(i): v if pool.multi_label else v[0]
                           for i, v in sorted(merged.items())}}
    _write_atomic(target, lambda fh: (json.dump(document, fh, indent=1), fh.write("\n")))
    have = set(human_labels(workspace, round))
    dataset_has = set(pool.ids[has_label(pool.labels)].tolist())
    missing = np.array([i for i in _new_ids(workspace, round)
                        if i not in have and i not in dataset_has], dtype=np.int64)
    overrode = sorted(i for i, names in new.items() if i in dataset_has
                      and sorted(names) != sorted(_dataset_names(pool, i)))
    log.info("round %03d: %d labels imported from %s, %d ids still unlabeled", round, len(new),
             path, len(missing))
    return ImportResult(target, len(new), replaced, missing, skipped, overrode, pool.show_ids)


def _dataset_names(pool: Any, sid: int) -> list[str]:
    """Class names the dataset itself gives sample ``sid``."""
    label = pool.labels[pool.rows([sid])[0]]
    if pool.multi_label:
        return [pool.class_names[k] for k in np.flatnonzero(label > 0)]
    return [pool.class_names[int(label)]]


def human_labels(workspace: str | os.PathLike, round: int) -> dict[int, list[str]]:
    """Id -> class names imported into rounds 0..``round`` (a later round wins)."""
    from mmal.workspace import list_rounds, round_paths

    out: dict[int, list[str]] = {}
    for r in list_rounds(workspace):
        target = round_paths(workspace, r).root / LABELS_NAME
        if r <= round and target.exists():
            out.update(_read_labels_file(target))
    return out


def unlabeled_ids(workspace: str | os.PathLike, round: int) -> tuple[np.ndarray, Any]:
    """Ids of round ``round``'s labeled set that nobody labeled yet, and the train pool.

    Returns
    -------
    ids : (n,) int64, in labeled-set order: neither the dataset nor ``mmal label``
        gave them a label.
    pool : the train pool (for :meth:`~mmal.data.pool.Pool.show_ids`).
    """
    from mmal.data import load_pool
    from mmal.workspace import load_workspace_config, read_labeled

    pool = load_pool(load_workspace_config(workspace), "train")
    ids = read_labeled(workspace, round)
    labels = resolve_labels(pool, workspace, round)
    return np.asarray(ids)[~has_label(labels)[pool.rows(ids)]], pool


def has_label(labels: np.ndarray) -> np.ndarray:
    """(N,) bool: which rows of (N,) or (N, K) ``labels`` are known (no -1 in them)."""
    return (labels.reshape(len(labels), -1) >= 0).all(axis=1)


def resolve_labels(pool: Any, workspace: str | os.PathLike, round: int,
                   ids: np.ndarray | None = None) -> np.ndarray:
    """Labels the learner knows in round ``round``: the dataset's, overridden by people's.

    Parameters
    ----------
    pool : mmal.data.Pool
        The train pool; its ``labels`` are -1 (rows of -1 for multi-label) where
        the dataset has none.
    workspace : path-like
    round : int
        Labels imported with ``mmal label`` into rounds 0..``round`` apply.
    ids : (n,) int64, optional
        The ids that must all have a label (e.g. the round's labeled set).

    Returns
    -------
    (N,) int64 or (N, K) int8 labels aligned with ``pool.ids``.

    Raises
    ------
    DataError
        Naming the ids in ``ids`` that still have no label and how to add them.
    """
    labels = np.array(pool.labels, copy=True)
    people = human_labels(workspace, round)
    classes = {c: k for k, c in enumerate(pool.class_names)}
    for sid, names in people.items():
        gone = [n for n in names if n not in classes]
        if gone:
            raise DataError(f"{_labels_file_of(workspace, round, sid)}: sample "
                            f"{pool.show_ids([sid])} is labeled {gone[0]!r}, which is not in "
                            f"the class list ({_preview(pool.class_names)}); restore the class "
                            "or import a corrected label with `mmal label`")
    for row, names in zip(pool.rows(people), people.values(), strict=True):
        if pool.multi_label:
            labels[row] = 0
            labels[row, [classes[n] for n in names]] = 1
        else:
            labels[row] = classes[names[0]]
    if ids is not None:
        unknown = np.asarray(ids)[~has_label(labels)[pool.rows(ids)]]
        if unknown.size:
            raise DataError(
                f"round {round:03d}: labeled ids {pool.show_ids(unknown)} have no label; export "
                "them with "
                f"`mmal export rounds/{round:03d}/labeled.json --unlabeled-only`, annotate, and "
                "import with "
                f"`mmal label --round {round} FILE`"
            )
    return labels


def _new_ids(workspace, round: int) -> list[int]:
    """Ids of round ``round``'s labeled set that were not labeled in round ``round - 1``."""
    from mmal.workspace import read_labeled, round_paths

    ids = read_labeled(workspace, round)
    if round > 0 and round_paths(workspace, round - 1).labeled.exists():
        ids = ids[~np.isin(ids, read_labeled(workspace, round - 1))]
    return [int(i) for i in ids]


def read_exported(path: str | os.PathLike) -> list[tuple[int, Any, Any, Any]]:
    """(line, id, label, name or None) rows of an exported (or filled-in) CSV or JSONL file."""
    return _read_rows(Path(path))


def _read_rows(path: Path):
    """(line, id, label, name or None) rows of a CSV or JSON Lines label file."""
    if not path.is_file():
        raise DataError(f"{path}: no such label file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: is not UTF-8 text ({exc})") from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return list(_jsonl_rows(path, text))
    return list(_csv_rows(path, text))


def _csv_rows(path: Path, text: str):
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


def _jsonl_rows(path: Path, text: str):
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


def _parse_id(raw: Any, path: Path, line: int, by_name: dict[str, int], pool: Any,
              name: Any = None) -> int:
    """The sample id in a label file's id column: mmal's integer id, or the id as
    written in the data (``by_name``: name -> id, where the two differ).

    A text that reads both ways and means two samples (row-numbered data with a
    sample named "1" next to mmal id 1) is settled by the row's ``name`` column
    (what ``mmal export`` writes); without one it is refused, naming both.
    """
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    text = str(raw).strip()
    if text in by_name:
        as_id = int(text) if is_integer_text(text) else None
        if as_id is None or as_id == by_name[text] or not pool.has_id(as_id):
            return by_name[text]
        named = None if name is None else str(name).strip()
        if named is not None and named == pool.names[pool.rows([as_id])[0]]:
            return as_id
        if named == text:
            return by_name[text]
        raise DataError(f"{path}: line {line}: id {text!r} is ambiguous: mmal id "
                        f"{pool.show_ids([as_id])} or the sample named {text!r} "
                        f"({pool.show_ids([by_name[text]])}); keep the exported name column "
                        "next to it")
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{path}: line {line}: id {raw!r} is neither an id nor a sample name of "
                        "the train split; keep the id (or name) column of the exported "
                        "file") from None


def _read_labels_file(path: Path) -> dict[int, list[str]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("type") != LABELS_TYPE:
            raise ValueError("not an mmal labels file")
        return {int(k): v if isinstance(v, list) else [v]
                for k, v in document["labels"].items()}
    except (ValueError, KeyError, AttributeError) as exc:
        raise DataError(f"{path}: is not a labels file written by `mmal label` ({exc}); move "
                        "it away") from None


def _sources(path: Path) -> list[str]:
    if not path.exists():
        return []
    return list(json.loads(path.read_text(encoding="utf-8")).get("sources", []))


def _labels_file_of(workspace: str | os.PathLike, round: int, sid: int) -> Path:
    """The labels.json (of rounds <= ``round``, the latest wins) that labels ``sid``."""
    from mmal.workspace import list_rounds, round_paths

    for r in reversed([r for r in list_rounds(workspace) if r <= round]):
        target = round_paths(workspace, r).root / LABELS_NAME
        if target.exists() and sid in _read_labels_file(target):
            return target
    return round_paths(workspace, round).root / LABELS_NAME


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (", ..." if len(names) > limit else "")


def _write_atomic(path: Path, write) -> None:
    from mmal.atomic import atomic_open

    with atomic_open(path) as fh:
        write(fh)
