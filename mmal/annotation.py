"""Labels from people: export ids to annotate, import the labels they come back with.

:func:`export_ids` writes the ids of an index file (a selection, or a round's
labeled set) with each modality's source from the train pool, as CSV or JSON
Lines, with an empty ``label`` column for the annotator to fill in.
:func:`export_label_studio` writes them as a Label Studio task list instead,
with its labeling config and, for a selection, the round model's top class
as a pre-annotation of each task.

:func:`import_labels` reads such a file back (CSV with ``id,label`` columns,
extra columns ignored; JSON Lines objects with ``id`` and ``label``; or Label
Studio's JSON export of the project) into ``rounds/RRR/labels.json`` of the
round whose labeled set the ids belong to.
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

from mmal.cache import open_cache
from mmal.cache.index import IndexFile, read_index
from mmal.data.parsing import is_integer_text, list_frames
from mmal.data.pool import Pool
from mmal.errors import DataError, preview
from mmal.labels import (
    ID_KEY,
    LABEL_STUDIO,
    NAME_KEY,
    has_label,
    label_studio_config,
    label_studio_config_path,
    label_studio_objects,
    label_studio_prediction,
    local_files_url,
    parse_label,
    read_label_file,
    read_label_sources,
    read_labels_file,
    write_label_studio,
    write_labels_file,
    write_sheet,
)
from mmal.lock import hold, output_lock
from mmal.workspace import (
    NAMES_KEY,
    Round,
    cache_of_selection,
    check_labeled_names,
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
        Lines with an id but an empty label (Label Studio: tasks nobody labeled).
    overrode_dataset : list of int
        Ids whose imported label differs from the label the dataset itself gives.
    majority : list of int
        Label Studio tasks whose annotators disagreed, settled by majority vote.
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
    majority: list[int] = field(default_factory=list)
    show_ids: Any = field(default=lambda ids, limit=10: ", ".join(map(str, list(ids)[:limit])),
                          repr=False)


# ----------------------------------------------------------------------------- export

def export_ids(workspace: str | os.PathLike | Round, index_path: str | os.PathLike, *,
               fmt: str = "csv", out: str | os.PathLike | None = None,
               overwrite: bool = False, unlabeled_only: bool = False,
               local_files_root: str | os.PathLike | None = None) -> Path:
    """Write the ids of ``index_path`` with their sources, for an annotation tool.

    Parameters
    ----------
    workspace : path-like or Round
        The workspace whose train pool the ids belong to, or an opened round
        (default: the newest round with a labeled set; its labels decide what
        ``unlabeled_only`` leaves out).
    index_path : path-like
        A selection or labeled-set index file.
    fmt : {"csv", "jsonl", "label-studio"}
        ``label-studio``: see :func:`export_label_studio` (which also says
        where the labeling config went and whether tasks carry predictions).
    out : path-like, optional
        Default: next to the index file, ``<stem>.<fmt>``
        (``<stem>.label-studio.json`` for Label Studio).
    unlabeled_only : bool
        Leave out ids that already have a label (from the dataset, or imported
        with ``mmal label`` in any round).
    local_files_root : path-like, optional
        Label Studio only: the document root of its local files serving.

    Returns
    -------
    Path of the written file. Columns: ``id``, ``name`` (the id as written in
    the data), ``label`` (empty), then one per modality: the absolute file
    path, or the inline text; vectors held in memory (uci-mfeat) have no
    source and get no column.
    """
    if fmt == LABEL_STUDIO:
        return export_label_studio(workspace, index_path, out=out, overwrite=overwrite,
                                   unlabeled_only=unlabeled_only,
                                   local_files_root=local_files_root).tasks
    rnd = open_round(workspace, having="labeled.json")
    index_path = Path(index_path)
    _, ids, rows = _exported(rnd, index_path, unlabeled_only)
    pool = rnd.pool("train")
    sources = {m: v for m, v in pool.records.items() if not isinstance(v, np.ndarray)}
    records = []
    for i, row in zip(ids, rows, strict=True):
        record: dict[str, Any] = {"id": int(i), "name": pool.names[row], "label": ""}
        for m, values in sources.items():
            value = values[row]
            record[m] = str(Path(value).resolve()) if isinstance(value, Path) else str(value)
        records.append(record)
    out = Path(out) if out is not None else index_path.with_suffix(f".{fmt}")
    _refuse_to_replace(out, index_path, overwrite)  # the quick answer, before the lock
    with hold(output_lock(out), "mmal export"):  # a filled-in sheet is never replaced unasked
        _refuse_to_replace(out, index_path, overwrite)
        write_sheet(out, records, ["id", "name", "label", *sources], fmt)
    log.info("exported %d ids of %s to %s", len(records), index_path, out)
    return out


@dataclass(frozen=True)
class LabelStudioExport:
    """What :func:`export_label_studio` wrote.

    Attributes
    ----------
    tasks : Path
        The task list to import into the Label Studio project.
    config : Path
        The labeling config to paste into the project (``<tasks stem>.xml``).
    count : int
        Tasks written.
    predictions_from : Path or None
        The cache whose model pre-annotated the tasks; None when they carry no
        predictions, and then ``no_predictions`` says why.
    no_predictions : str
    local_files_root : Path or None
        The folder the task URLs are relative to, for Label Studio's
        ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``; None when tasks hold no file.
    """

    tasks: Path
    config: Path
    count: int
    predictions_from: Path | None = None
    no_predictions: str = ""
    local_files_root: Path | None = None


def export_label_studio(workspace: str | os.PathLike | Round, index_path: str | os.PathLike, *,
                        out: str | os.PathLike | None = None, overwrite: bool = False,
                        unlabeled_only: bool = False,
                        local_files_root: str | os.PathLike | None = None) -> LabelStudioExport:
    """Write the ids of ``index_path`` as Label Studio tasks, with their labeling config.

    One task per id. Its ``data`` holds ``mmal_id`` and ``mmal_name`` (which
    ``mmal label`` maps the annotations back by) and one field per modality a
    person can use: images and audio as local-files URLs
    (``/data/local-files/?d=<path relative to local_files_root>``), a frame
    folder as the URL of its middle frame, text inline; vectors are left out.
    For a selection whose round cache exists, each task carries a prediction:
    the round model's top class with its softmax probability (multi-label:
    every class with sigmoid >= 0.5, the top one at least, scored by the top
    sigmoid), ``model_version`` the model's fingerprint.

    Parameters
    ----------
    workspace, index_path, overwrite, unlabeled_only
        As for :func:`export_ids`.
    out : path-like, optional
        The task list; default ``<index stem>.label-studio.json`` beside the
        index file. The config goes beside it as ``<out stem>.xml``.
    local_files_root : path-like, optional
        The folder Label Studio serves local files from
        (``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``); default the dataset root.

    Example
    -------
    >>> done = export_label_studio(ws, "rounds/002/selections/bmmal-b50-s0.json")  # doctest: +SKIP
    >>> done.tasks, done.config  # doctest: +SKIP
    (.../bmmal-b50-s0.label-studio.json, .../bmmal-b50-s0.label-studio.xml)
    """
    rnd = open_round(workspace, having="labeled.json")
    index_path = Path(index_path)
    index, ids, rows = _exported(rnd, index_path, unlabeled_only)
    pool = rnd.pool("train")
    out = Path(out) if out is not None else index_path.with_name(
        f"{index_path.stem}.label-studio.json")
    config_path = label_studio_config_path(out)
    if config_path == out:
        raise DataError(f"--out {out}: the labeling config goes beside the tasks as "
                        "<stem>.xml; name the task list <stem>.json")
    _refuse_to_replace(out, index_path, overwrite)
    _refuse_to_replace(config_path, index_path, overwrite)
    kinds = {m.name: m.kind for m in rnd.config.modalities}
    objects = label_studio_objects(kinds)
    shown = [key for key, _ in objects if key in kinds]
    root = Path(local_files_root) if local_files_root is not None else pool.root
    tasks = []
    for i, row in zip(ids, rows, strict=True):
        name = pool.names[row]
        data: dict[str, Any] = {ID_KEY: int(i), NAME_KEY: name}
        for m in shown:
            data[m] = _task_value(pool.records[m][row], kinds[m], root, name)
        tasks.append({"data": data})
    predictions, cache, why = _predictions(rnd, index_path, index, ids, to_name=objects[0][0])
    if predictions is not None:
        for task, prediction in zip(tasks, predictions, strict=True):
            task["predictions"] = [prediction]
    config = label_studio_config(objects, pool.class_names, multi_label=pool.multi_label)
    with hold(output_lock(out), "mmal export"):  # the task list and its config, as a pair
        _refuse_to_replace(out, index_path, overwrite)
        _refuse_to_replace(config_path, index_path, overwrite)
        write_label_studio(out, tasks, config)
    log.info("exported %d ids of %s as Label Studio tasks to %s", len(tasks), index_path, out)
    served = root is not None and any(kinds[m] != "text" for m in shown)
    return LabelStudioExport(out, config_path, len(tasks), cache, why,
                             Path(os.path.abspath(root)) if served else None)


def _exported(rnd: Round, index_path: Path, unlabeled_only: bool
              ) -> tuple[IndexFile, np.ndarray, np.ndarray]:
    """(index file, ids, their train-pool rows) to export, checked against the pool."""
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
    return index, ids, rows


def _refuse_to_replace(out: Path, index_path: Path, overwrite: bool) -> None:
    """The export's overwrite rule; the index file itself is never replaced."""
    if out.resolve() == index_path.resolve():
        raise DataError(f"{out}: is the index file being exported; pass --out another file")
    refuse_overwrite(out, overwrite, "replace it or --out to write elsewhere", error=DataError,
                     why=" (it may hold labels filled in already)",
                     what="an exported annotation file")


def _task_value(source: Any, kind: str, root: Path | None, sample: str) -> str:
    """What a task shows of one sample's modality: inline text, or a local-files URL."""
    if kind == "text":
        return source if isinstance(source, str) else _read_text(Path(source), sample)
    if root is None:
        raise DataError(f"sample {sample}: the dataset has no root folder to serve {source} "
                        "from; pass --local-files-root")
    path = Path(source)
    if path.is_dir():  # a clip: the middle frame, the one evaluation reads as an image
        frames = list_frames(path, sample=sample)
        path = frames[len(frames) // 2]
    return local_files_url(path, root)


def _read_text(path: Path, sample: str) -> str:
    """A text file's content, inline in a task."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"sample {sample}: cannot read the text file {path} ({exc})") from None


def _predictions(rnd: Round, index_path: Path, index: IndexFile, ids: np.ndarray, *,
                 to_name: str) -> tuple[list[dict] | None, Path | None, str]:
    """(one prediction per id, the cache they come from, "") or (None, None, why not)."""
    if index.kind != "selection":
        return None, None, (f"{index_path.name} is not a selection (predictions come from the "
                            "cache a selection was made from)")
    path = cache_of_selection(rnd.workspace, index_path, index.provenance)
    if not path.is_file():
        return None, None, f"{path} does not exist"
    pool = rnd.pool("train")
    with open_cache(path) as cache:
        names = cache.meta.extra.get("class_names")
        if names is not None and list(names) != list(pool.class_names):
            return None, None, (f"{path} was extracted with another class list "
                                f"({preview(list(names))})")
        if names is None and cache.meta.num_classes != len(pool.class_names):
            return None, None, f"{path} has {cache.meta.num_classes} classes, not {pool.num_classes}"
        row_of = {int(i): r for r, i in enumerate(cache.ids)}
        absent = [int(i) for i in ids if int(i) not in row_of]
        if absent:
            return None, None, f"ids {preview(absent)} are not in {path}"
        rows = np.array([row_of[int(i)] for i in ids], dtype=np.int64)
        order = np.argsort(rows)  # the cache reads increasing rows
        logits = np.empty((len(rows), cache.meta.num_classes), dtype=np.float64)
        if len(rows):
            logits[order] = cache.logits("mm", rows[order])
        version = cache.meta.model_fingerprint
        multi_label = cache.meta.multi_label
    probs = _sigmoid(logits) if multi_label else _softmax(logits)
    predictions = []
    for p in probs:
        top = int(np.argmax(p))
        chosen = {top, *np.flatnonzero(p >= 0.5).tolist()} if multi_label else {top}
        predictions.append(label_studio_prediction(
            [pool.class_names[k] for k in sorted(chosen)], p[top], version, to_name))
    return predictions, path, ""


def _softmax(logits: np.ndarray) -> np.ndarray:
    """(n, K) probabilities of (n, K) logits, row by row."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """(n, K) per-class probabilities of (n, K) multi-label logits."""
    return np.exp(-np.logaddexp(0.0, -logits))  # 1 / (1 + e^-x) without overflow


def _check_names(rnd: Round, index_path: Path, index: IndexFile) -> None:
    """DataError when the ids no longer name the samples they named (row-numbered manifests).

    A labeled set carries its own fingerprint; a selection is checked through the
    labeled set of the round whose ``selections/`` holds it and through the cache
    it was made from.
    """
    pool = rnd.pool("train")
    if NAMES_KEY in index.provenance:
        check_labeled_names(pool, index, str(index_path))
        return
    number = round_of_selection(rnd.workspace, index_path)
    if number is not None and round_paths(rnd.workspace, number).labeled.is_file():
        read_labeled(rnd.workspace, number, pool=pool)  # reading it with the pool checks it
    if index.kind == "selection":
        check_selection_names(pool, index_path, index.provenance,
                              cache_of_selection(rnd.workspace, index_path, index.provenance))


# ----------------------------------------------------------------------------- import

def import_labels(workspace: str | os.PathLike | Round, round: int | None,
                  path: str | os.PathLike, *, resolve: str = "error") -> ImportResult:
    """Check the label file at ``path`` and merge it into ``rounds/RRR/labels.json``.

    Parameters
    ----------
    workspace : path-like or Round
        A workspace, or the opened round (then ``round`` is ignored).
    round : int
        The round whose labeled set the ids belong to (the round started by
        ``mmal next`` from the exported selection, or round 0).
    path : path-like
        CSV (header with ``id`` and ``label``), JSON Lines (``.jsonl``), or
        Label Studio's JSON export of a project made from
        :func:`export_label_studio`'s tasks (``.json``): each task's label is
        the choices of its latest non-cancelled annotation
        (:func:`mmal.labels.read_label_studio`).
    resolve : {"error", "majority"}
        Label Studio tasks whose annotators disagree: an error naming them, or
        the label most of them gave (an even split is still an error).

    Raises
    ------
    DataError
        Naming the file and line (Label Studio: task) of the first unknown id,
        unknown class, repeated id or malformed row, or the tasks annotators
        disagree on; nothing is written then.
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
    read = read_label_file(path, resolve=resolve)
    for line, raw_id, raw_label, raw_name in read.rows:
        where = f"{path}: {read.unit} {line}"
        sid = _parse_id(raw_id, where, by_name, pool, raw_name)
        if sid not in known_ids:
            if not pool.has_id(sid):
                raise DataError(f"{where}: id {sid} is not in the train pool; "
                                "label only the exported ids")
            raise DataError(f"{where}: id {pool.show_ids([sid])} is not in round "
                            f"{number:03d}'s labeled set; pass the round whose labeled set holds "
                            "it, or, for a selection's ids, start that round first with `mmal "
                            "next --selection FILE`")
        if sid in new:
            raise DataError(f"{where}: id {sid} is labeled twice in this file; keep one "
                            f"{'row' if read.unit == 'line' else 'task'} per id")
        parts = parse_label(raw_label, pool.class_names, multi_label=pool.multi_label,
                            where=where)
        if not parts:
            skipped.append(line)
            continue
        new[sid] = parts
    target = rnd.paths.labels
    with rnd.locked("mmal label"):  # read, merge, write: a concurrent import is not lost
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
    return ImportResult(target, len(new), replaced, missing, skipped, overrode, read.majority,
                        pool.show_ids)


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


def _parse_id(raw: Any, where: str, by_name: dict[str, int], pool: Pool,
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
        raise DataError(f"{where}: id {text!r} is ambiguous: mmal id "
                        f"{pool.show_ids([as_id])} or the sample named {text!r} "
                        f"({pool.show_ids([by_name[text]])}); keep the exported name column "
                        "next to it")
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{where}: id {raw!r} is neither an id nor a sample name of "
                        "the train split; keep the id (or name) column of the exported "
                        "file") from None
