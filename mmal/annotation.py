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
id it labels again). :meth:`mmal.workspace.Round.labels` lays every round's
imported labels up to ``r`` over the dataset's. Simulated runs (``mmal run``)
never need this: their labels come from the dataset.

The file formats are :mod:`mmal.labels`'s; the round comes from
:func:`mmal.workspace.open_round`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmal.cache.index import IndexFile, read_index
from mmal.data.parsing import is_integer_text
from mmal.data.pool import Pool
from mmal.errors import DataError
from mmal.labels import (
    has_label,
    parse_label,
    read_label_sources,
    read_labels_file,
    read_sheet,
    write_labels_file,
    write_sheet,
)
from mmal.workspace import (
    NAMES_KEY,
    Round,
    cache_of_selection,
    check_selection_names,
    open_round,
    read_labeled,
    refuse_overwrite,
    round_of_selection,
    round_paths,
)

log = logging.getLogger(__name__)


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

def export_ids(workspace: str | os.PathLike | Round, index_path: str | os.PathLike, *,
               fmt: str = "csv", out: str | os.PathLike | None = None,
               overwrite: bool = False, unlabeled_only: bool = False) -> Path:
    """Write the ids of ``index_path`` with their sources, for an annotation tool.

    Parameters
    ----------
    workspace : path-like or Round
        The workspace whose train pool the ids belong to, or an opened round
        (default: the newest round with a labeled set; its labels decide what
        ``unlabeled_only`` leaves out).
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
    rnd = open_round(workspace, having="labeled.json")
    index_path = Path(index_path)
    index = read_index(index_path)
    pool = rnd.pool("train")
    try:
        rows = pool.rows(index.ids)
    except DataError as exc:
        raise DataError(f"{index_path}: {exc}; the index file belongs to another workspace") \
            from None
    _check_names(rnd, index_path, index)
    ids = index.ids
    if unlabeled_only:
        unknown = ~has_label(rnd.labels(require_labeled=False))[rows]
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
    refuse_overwrite(out, overwrite, "replace it or --out to write elsewhere", error=DataError,
                     why=" (it may hold labels filled in already)")
    write_sheet(out, records, ["id", "name", "label", *sources], fmt)
    log.info("exported %d ids of %s to %s", len(records), index_path, out)
    return out


def _check_names(rnd: Round, index_path: Path, index: IndexFile) -> None:
    """DataError when the ids no longer name the samples they named (row-numbered manifests).

    A labeled set carries its own fingerprint; a selection is checked through the
    labeled set of the round whose ``selections/`` holds it and through the cache
    it was made from.
    """
    pool = rnd.pool("train")
    if NAMES_KEY in index.provenance:
        pool.check_names(index.ids, index.provenance[NAMES_KEY], str(index_path))
        return
    number = round_of_selection(rnd.workspace, index_path)
    if number is not None and round_paths(rnd.workspace, number).labeled.is_file():
        read_labeled(rnd.workspace, number, pool=pool)  # reading it with the pool checks it
    if index.kind == "selection":
        check_selection_names(pool, index_path, index.provenance,
                              cache_of_selection(rnd.workspace, index_path, index.provenance))


# ----------------------------------------------------------------------------- import

def import_labels(workspace: str | os.PathLike | Round, round: int | None,
                  path: str | os.PathLike) -> ImportResult:
    """Check the label file at ``path`` and merge it into ``rounds/RRR/labels.json``.

    Parameters
    ----------
    workspace : path-like or Round
        A workspace, or the opened round (then ``round`` is ignored).
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
    rnd = open_round(workspace, round)
    path = Path(path)
    pool = rnd.pool("train")
    number = rnd.number
    known_ids = set(int(i) for i in rnd.labeled)  # the ids still name the same samples
    # The data's own ids (names) are accepted in the id column too, where they differ
    # from mmal's ids (row-numbered datasets); a text that is both is refused below.
    by_name = {n: int(i) for n, i in zip(pool.names, pool.ids, strict=True) if n != str(int(i))}
    new: dict[int, list[str]] = {}
    skipped = []
    for line, raw_id, raw_label, raw_name in read_sheet(path):
        sid = _parse_id(raw_id, path, line, by_name, pool, raw_name)
        if sid not in known_ids:
            if not pool.has_id(sid):
                raise DataError(f"{path}: line {line}: id {sid} is not in the train pool; "
                                "label only the exported ids")
            raise DataError(f"{path}: line {line}: id {pool.show_ids([sid])} is not in round "
                            f"{number:03d}'s labeled set; pass the round whose labeled set holds "
                            "it, or, for a selection's ids, start that round first with `mmal "
                            "next --selection FILE`")
        if sid in new:
            raise DataError(f"{path}: line {line}: id {sid} is labeled twice in this file; "
                            "keep one row per id")
        parts = parse_label(raw_label, pool.class_names, multi_label=pool.multi_label,
                            where=f"{path}: line {line}")
        if not parts:
            skipped.append(line)
            continue
        new[sid] = parts
    target = rnd.paths.labels
    old = read_labels_file(target) if target.exists() else {}
    replaced = sorted(i for i, v in new.items() if i in old and old[i] != v)
    write_labels_file(target, {**old, **new}, round=number, class_names=pool.class_names,
                      multi_label=pool.multi_label,
                      sources=read_label_sources(target) + [str(path.resolve())])
    # from the files as they are: a stale class elsewhere must not fail an import already written
    have = set(rnd.human_labels())
    dataset_has = set(pool.ids[has_label(pool.labels)].tolist())
    missing = np.array([i for i in _added_ids(rnd).tolist()
                        if i not in have and i not in dataset_has], dtype=np.int64)
    overrode = sorted(i for i, names in new.items() if i in dataset_has
                      and sorted(names) != sorted(_dataset_names(pool, i)))
    log.info("round %03d: %d labels imported from %s, %d ids still unlabeled", number, len(new),
             path, len(missing))
    return ImportResult(target, len(new), replaced, missing, skipped, overrode, pool.show_ids)


def _dataset_names(pool: Pool, sid: int) -> list[str]:
    """Class names the dataset itself gives sample ``sid``."""
    label = pool.labels[pool.rows([sid])[0]]
    if pool.multi_label:
        return [pool.class_names[k] for k in np.flatnonzero(label > 0)]
    return [pool.class_names[int(label)]]


def _added_ids(rnd: Round) -> np.ndarray:
    """(n,) int64 ids of the round's labeled set that round r-1's did not have, in order."""
    ids = rnd.labeled
    if rnd.number > 0 and round_paths(rnd.workspace, rnd.number - 1).labeled.exists():
        ids = ids[~np.isin(ids, read_labeled(rnd.workspace, rnd.number - 1))]
    return np.asarray(ids, dtype=np.int64)


def _parse_id(raw: Any, path: Path, line: int, by_name: dict[str, int], pool: Pool,
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
