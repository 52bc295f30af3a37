"""Label files: a round's ``labels.json`` and the annotation sheets people fill in.

Two formats live here, and nothing about workspaces or rounds:

- ``labels.json``, the labels people gave to the ids of one round's labeled
  set (:func:`read_labels_file`, :func:`write_labels_file`): class names per
  id (multi-label: a list), the class list they were checked against, and the
  files they came from.
- Annotation sheets, CSV or JSON Lines with ``id``, ``name``, ``label`` and
  one column per modality (:func:`write_sheet`, :func:`read_sheet`).
- Label Studio's files: the task list to import (one task per sample, with
  ``mmal_id`` and ``mmal_name`` in its ``data``), the labeling config (XML)
  and the project's JSON export (:func:`label_studio_config`,
  :func:`write_label_studio`, :func:`read_label_studio`).

:func:`read_label_file` reads any of them back into one kind of row.

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
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import numpy as np

from mmal.atomic import atomic_open
from mmal.data.parsing import split_label
from mmal.errors import DataError, preview
from mmal.stamp import LABELS, read_stamped_json, stamped

SHEET_FORMATS = ("csv", "jsonl")
LABEL_STUDIO = "label-studio"
#: What ``mmal export --format`` writes.
FORMATS = (*SHEET_FORMATS, LABEL_STUDIO)
#: How ``mmal label`` settles annotators who disagree on a Label Studio task.
RESOLVE = ("error", "majority")

#: One row of a label file: (line, id cell, label cell, name cell or None). For a
#: Label Studio export the "line" is the task's id and the label a list of choices.
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
        labels = {int(k): v if isinstance(v, list) else [v]
                  for k, v in document["labels"].items()}
    except (ValueError, KeyError, AttributeError) as exc:
        raise DataError(f"{path}: field 'labels' is not a table of id -> class names ({exc}); "
                        f"{_NOT_LABELS}") from None
    info = np.iinfo(np.int64)
    wide = [k for k in labels if not info.min <= k <= info.max]
    if wide:
        raise DataError(f"{path}: field 'labels' holds ids {preview(wide)}, outside the range "
                        "of sample ids (64-bit integers); the file was edited: restore it, or "
                        f"{_NOT_LABELS}")
    return labels


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

    In JSON Lines an empty ``label`` is written as null. CSV text cells that a
    spreadsheet would run as a formula get a leading ``'`` (:func:`guard_cell`),
    which :func:`read_sheet` takes off again.
    """
    if fmt not in SHEET_FORMATS:
        raise DataError(f"--format {fmt!r}: a sheet is one of {', '.join(SHEET_FORMATS)}")
    write: Callable[[IO[str]], Any]
    if fmt == "csv":
        def write(fh):
            writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: guard_cell(v) for k, v in r.items()} for r in records)
    else:
        def write(fh):
            fh.writelines(json.dumps({**r, "label": r.get("label") or None}) + "\n"
                          for r in records)
    with atomic_open(path) as fh:
        write(fh)
    return Path(path)


#: First characters that make a spreadsheet read a CSV cell as a formula (OWASP's list).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def guard_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will show as text: ``'`` before a formula-like text.

    Text that starts with one of :data:`FORMULA_START`, after any number of
    ``'``, gets one more ``'`` in front (``=HYPERLINK(..)`` -> ``'=HYPERLINK(..)``,
    ``'=x`` -> ``''=x``), so :func:`unguard_cell` can tell a guard from a name
    that starts with a quote. Numbers and other values stay as they are.

    Example
    -------
    >>> guard_cell("=1+2"), guard_cell("-3"), guard_cell("'=x"), guard_cell("'a"), guard_cell(-3)
    ("'=1+2", "'-3", "''=x", "'a", -3)
    """
    if isinstance(value, str) and value.lstrip("'").startswith(FORMULA_START):
        return "'" + value
    return value


def unguard_cell(value: Any) -> Any:
    """The text :func:`guard_cell` was given: one ``'`` off a guarded cell, others unchanged."""
    if isinstance(value, str) and value.startswith("'") and guard_cell(value[1:]) == value:
        return value[1:]
    return value


def read_sheet(path: str | os.PathLike) -> list[SheetRow]:
    """(line, id, label, name or None) rows of a CSV or JSON Lines (``.jsonl``) label file."""
    path = Path(path)
    return _sheet_rows(path, _read_text(path))


def _sheet_rows(path: Path, text: str) -> list[SheetRow]:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return list(_jsonl_rows(path, text))
    return list(_csv_rows(path, text))


def _read_text(path: Path) -> str:
    """The text of a label file (DataError when it is missing or not UTF-8)."""
    if not path.is_file():
        raise DataError(f"{path}: no such label file")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: is not UTF-8 text ({exc})") from None


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
            yield (reader.line_num, unguard_cell(row["id"]), unguard_cell(row["label"]),
                   unguard_cell(row.get("name")))
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


# ----------------------------------------------------------------------------- any label file

@dataclass(frozen=True)
class LabelFile:
    """The rows of a label file, whatever its format (:func:`read_label_file`).

    Attributes
    ----------
    rows : list of SheetRow
        (line or task id, id, label, name or None), in file order.
    unit : {"line", "task"}
        What the first field of a row counts, for messages ("line 3", "task 17").
    majority : list of int
        Label Studio tasks whose annotators disagreed, settled by majority vote.
    """

    rows: list[SheetRow]
    unit: str = "line"
    majority: list[int] = field(default_factory=list)


def read_label_file(path: str | os.PathLike, *, resolve: str = "error") -> LabelFile:
    """Rows of a label file: CSV, JSON Lines (``.jsonl``), or Label Studio's JSON export.

    A ``.json`` file (or any whose text starts with ``[``) is read as Label
    Studio's export (:func:`read_label_studio`, which ``resolve`` is for).
    """
    path = Path(path)
    text = _read_text(path)
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        rows, majority = _label_studio_rows(path, text, resolve)
        return LabelFile(rows, "task", majority)
    return LabelFile(_sheet_rows(path, text))


# ----------------------------------------------------------------------------- Label Studio

#: Keys of a task's ``data`` that map a Label Studio task back to its sample.
ID_KEY = "mmal_id"
NAME_KEY = "mmal_name"
#: The ``Choices`` control of the labeling config (``from_name`` of every result).
CHOICES_NAME = "label"
#: Label Studio's object tag per modality kind that a person can look at or listen to
#: (a frame folder shows one frame; vectors show nothing).
OBJECT_TAGS = {"image": "Image", "video": "Image", "audio": "Audio", "text": "Text"}
#: Local files serving: the file at ``<document root>/<d>``.
LOCAL_FILES_URL = "/data/local-files/?d="

_EXPORT_FIX = "export the project from Label Studio as JSON (not JSON-MIN or CSV)"


def label_studio_objects(kinds: Mapping[str, str]) -> list[tuple[str, str]]:
    """(data key, object tag) pairs the labeling config shows, in modality order.

    ``kinds`` maps modality name -> kind. Modalities of kinds outside
    :data:`OBJECT_TAGS` are left out; when none is left the sample name is
    shown as text, since the ``Choices`` need an object to refer to.
    """
    reserved = {ID_KEY, NAME_KEY, CHOICES_NAME}
    clash = sorted(reserved & set(kinds))
    if clash:
        raise DataError(f"modality {clash[0]!r}: Label Studio tasks use that name for mmal's own "
                        f"field ({', '.join(sorted(reserved))}); rename the modality in mmal.toml")
    objects = [(name, OBJECT_TAGS[kind]) for name, kind in kinds.items() if kind in OBJECT_TAGS]
    return objects or [(NAME_KEY, "Text")]


def label_studio_config(objects: Sequence[tuple[str, str]], class_names: Sequence[str], *,
                        multi_label: bool) -> str:
    """The labeling config (XML) to paste into a Label Studio project.

    Each ``(key, tag)`` of ``objects`` (:func:`label_studio_objects`) becomes
    ``<Tag name="key" value="$key"/>``, under a header with the sample's name;
    one ``Choices`` control named
    :data:`CHOICES_NAME` lists ``class_names`` (``choice="multiple"`` when
    ``multi_label``) and refers to the first object.

    Example
    -------
    >>> print(label_studio_config([("text", "Text")], ["cat", "dog"], multi_label=False))
    <View>
      <Header value="$mmal_name" />
      <Text name="text" value="$text" />
      <Choices name="label" toName="text" choice="single" showInline="true">
        <Choice value="cat" />
        <Choice value="dog" />
      </Choices>
    </View>
    <BLANKLINE>
    """
    view = ET.Element("View")
    if objects[0][0] != NAME_KEY:  # which sample this is, above its files
        ET.SubElement(view, "Header", value=f"${NAME_KEY}")
    for key, tag in objects:
        ET.SubElement(view, tag, name=key, value=f"${key}")
    choices = ET.SubElement(view, "Choices", name=CHOICES_NAME, toName=objects[0][0],
                            choice="multiple" if multi_label else "single", showInline="true")
    for name in class_names:
        ET.SubElement(choices, "Choice", value=str(name))
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def local_files_url(path: str | os.PathLike, document_root: str | os.PathLike) -> str:
    """The URL Label Studio's local files serving shows ``path`` under.

    ``/data/local-files/?d=<path relative to document_root>``, percent-encoded.
    DataError when ``path`` is not inside ``document_root``.
    """
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(document_root))
    try:
        relative = path.relative_to(root)
    except ValueError:
        raise DataError(f"{path}: is outside the local files root {root}; pass "
                        "--local-files-root a folder that holds every file of the dataset") from None
    return LOCAL_FILES_URL + quote(relative.as_posix(), safe="/")


def label_studio_prediction(choices: Sequence[str], score: float, model_version: str,
                            to_name: str) -> dict[str, Any]:
    """A pre-annotation of one task: ``choices`` with the model's ``score`` (a probability)."""
    return {"model_version": model_version, "score": float(score),
            "result": [{"from_name": CHOICES_NAME, "to_name": to_name, "type": "choices",
                        "value": {"choices": list(choices)}}]}


def label_studio_config_path(tasks_path: str | os.PathLike) -> Path:
    """Where the labeling config of the task list ``tasks_path`` goes: ``<stem>.xml`` beside it."""
    return Path(tasks_path).with_suffix(".xml")


def write_label_studio(tasks_path: str | os.PathLike, tasks: Sequence[Mapping[str, Any]],
                       config: str) -> tuple[Path, Path]:
    """Write the task list and, beside it, its labeling config, each atomically.

    Returns (tasks path, config path).
    """
    tasks_path = Path(tasks_path)
    config_path = label_studio_config_path(tasks_path)
    with atomic_open(tasks_path) as fh:
        json.dump(list(tasks), fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    with atomic_open(config_path) as fh:
        fh.write(config)
    return tasks_path, config_path


def read_label_studio(path: str | os.PathLike, *, resolve: str = "error") -> list[SheetRow]:
    """(task id, id, choices or None, name) rows of Label Studio's JSON export.

    Each task's label is the choices of its annotators' latest non-cancelled
    annotations (one per annotator, by ``updated_at``, else ``created_at``,
    else order in the file). A task nobody labeled (no annotation, only
    cancelled ones, or an empty result) gets None. Annotators who disagree
    are an error naming the tasks, unless ``resolve="majority"``: the label
    most of them gave wins, and an even split is still an error.
    Predictions are never taken for labels.
    """
    path = Path(path)
    return _label_studio_rows(path, _read_text(path), resolve)[0]


def _label_studio_rows(path: Path, text: str, resolve: str) -> tuple[list[SheetRow], list[int]]:
    """(rows, tasks settled by majority) of the export ``text`` read from ``path``."""
    if resolve not in RESOLVE:
        raise DataError(f"--resolve {resolve!r}: choose one of {', '.join(RESOLVE)}")
    tasks = _tasks(path, text)
    rows: list[SheetRow] = []
    split: list[Any] = []
    tied: list[Any] = []
    majority: list[Any] = []
    for position, task in enumerate(tasks, start=1):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise DataError(f"{path}: task #{position} is not a task (an object with 'data'); "
                            f"{_EXPORT_FIX}")
        tid = task.get("id", position)
        if ID_KEY not in task["data"]:
            raise DataError(f"{path}: task {tid}: its data has no {ID_KEY!r}; import into Label "
                            "Studio the tasks `mmal export --format label-studio` wrote")
        votes = Counter(_votes(path, tid, task.get("annotations") or []).values())
        label = None
        if len(votes) == 1:
            label = list(next(iter(votes)))
        elif votes:
            (top, count), (_, second) = votes.most_common(2)
            if resolve != "majority":
                split.append(tid)
            elif count == second:
                tied.append(tid)
            else:
                label = list(top)
                majority.append(tid)
        rows.append((tid, task["data"][ID_KEY], label, task["data"].get(NAME_KEY)))
    if split:
        raise DataError(f"{path}: annotators disagree on tasks {preview(split, 10)}; settle "
                        "them in Label Studio, or pass --resolve majority to take the label "
                        "most annotators gave")
    if tied:
        raise DataError(f"{path}: no majority on tasks {preview(tied, 10)} (the annotators are "
                        "split evenly); settle them in Label Studio or ask one more annotator")
    return rows, majority


def _tasks(path: Path, text: str) -> list[Any]:
    """The top-level list of tasks of an export (DataError otherwise)."""
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (JSON Lines go in a .jsonl file)" if exc.msg == "Extra data" else ""
        raise DataError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg}){hint}") from None
    if not isinstance(tasks, list):
        raise DataError(f"{path}: is not a Label Studio export: its top level is a "
                        f"{type(tasks).__name__}, not a list of tasks; {_EXPORT_FIX}")
    return tasks


def _votes(path: Path, tid: Any, annotations: Any) -> dict[Any, tuple[str, ...]]:
    """Annotator -> the choices of their latest non-cancelled annotation, if not empty."""
    if not isinstance(annotations, list):
        raise DataError(f"{path}: task {tid}: 'annotations' is not a list; {_EXPORT_FIX}")
    latest: dict[Any, tuple[tuple[datetime, int], dict]] = {}
    for k, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            raise DataError(f"{path}: task {tid}: annotation #{k + 1} is not an object; "
                            f"{_EXPORT_FIX}")
        if annotation.get("was_cancelled"):
            continue  # skipped by the annotator
        who = _annotator(annotation.get("completed_by"))
        when = (_when(annotation), k)
        if who not in latest or when > latest[who][0]:
            latest[who] = (when, annotation)
    votes = {}
    for who, (_, annotation) in latest.items():
        choices = _choices(path, tid, annotation)
        if choices:
            votes[who] = tuple(sorted(set(choices)))  # multi-label: a set, in any order
    return votes


def _choices(path: Path, tid: Any, annotation: dict) -> list[str]:
    """The choices of one annotation: of its only Choices control, else of :data:`CHOICES_NAME`."""
    result = annotation.get("result") or []
    if not isinstance(result, list):
        raise DataError(f"{path}: task {tid}: an annotation's 'result' is not a list; "
                        f"{_EXPORT_FIX}")
    picked = [r for r in result if isinstance(r, dict) and r.get("type") == "choices"]
    controls = {str(r.get("from_name")) for r in picked}
    if len(controls) > 1:
        picked = [r for r in picked if r.get("from_name") == CHOICES_NAME]
        if not picked:
            raise DataError(f"{path}: task {tid}: choices come from several controls "
                            f"({', '.join(sorted(controls))}) and none is named "
                            f"{CHOICES_NAME!r}; keep the labeling config `mmal export` wrote")
    choices: list[str] = []
    for r in picked:
        value = r.get("value")
        names = value.get("choices") if isinstance(value, dict) else None
        if not isinstance(names, list):
            raise DataError(f"{path}: task {tid}: a choices result has no list "
                            f"value.choices; {_EXPORT_FIX}")
        choices += [str(n) for n in names]
    return choices


def _annotator(completed_by: Any) -> Any:
    """A hashable key for ``completed_by`` (a user id, or an object with one)."""
    if isinstance(completed_by, dict):
        return completed_by.get("id", completed_by.get("email"))
    return completed_by if isinstance(completed_by, (int, str)) else None


_NEVER = datetime.min.replace(tzinfo=UTC)


def _when(annotation: dict) -> datetime:
    """When an annotation was last changed (aware; naive times are taken as UTC)."""
    for key in ("updated_at", "created_at"):
        text = annotation.get(key)
        if not isinstance(text, str):
            continue
        try:
            when = datetime.fromisoformat(text.strip())  # "...Z" too (Python >= 3.11)
        except ValueError:
            continue
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return _NEVER
