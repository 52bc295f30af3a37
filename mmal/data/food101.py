"""The UPMC Food-101 layout: ``train.json`` / ``test.json`` under ``dataset.root``.

Each file is a JSON list of objects (or JSON Lines) with ``id``, ``img_path``
(relative to the root), ``text_tokens`` (a list of words or one string) and
``label`` (a class name, or an integer index into the class list). An
``image`` modality reads ``img_path``; a ``text`` modality gets the tokens
joined by spaces. See ``docs/datasets.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmal.data.parsing import assign_ids, check_sources_exist, class_list, encode_labels
from mmal.data.pool import DatasetKind, Pool
from mmal.errors import DataError

if TYPE_CHECKING:
    from mmal.config import Config

FIELDS = ("id", "img_path", "text_tokens", "label")


def load_food101_pool(config: Config, split: str) -> Pool:
    """Pool of ``<root>/train.json`` or ``<root>/test.json``."""
    ds = config.dataset
    path = ds.root / (ds.train if split == "train" else ds.test)
    entries = read_entries(path)
    names = [str(e["id"]) for e in entries]
    ids = assign_ids(names, str(path))
    classes, origin = class_list(config, derive=lambda: _derived_classes(config))
    raw = [_label_name(e["label"], classes) for e in entries]
    where = [f"{path.name} entry {i}" for i in range(len(entries))]
    labels = encode_labels(raw, names, classes, multi_label=ds.multi_label,
                           classes_origin=origin, where=where)
    records: dict[str, Any] = {}
    for m in config.modalities:
        if m.kind == "image":
            paths = [ds.root / str(e["img_path"]) for e in entries]
            check_sources_exist(paths, names, folder=False, what="image",
                                where=f"img_path in {path.name}")
            records[m.name] = paths
        else:
            records[m.name] = [_text(e["text_tokens"]) for e in entries]
    return Pool(ids=ids, labels=labels, class_names=classes,
                multi_label=ds.multi_label, records=records, names=names, split=split,
                origin=str(path), root=ds.root)


KIND = DatasetKind("food101", load_food101_pool, files=("train.json", "test.json", ""),
                   modality_kinds=("image", "text"))


def read_entries(path: Path) -> list[dict[str, Any]]:
    """Entries of one split file (JSON list or JSON Lines), each checked for the four fields."""
    if not path.is_file():
        raise DataError(f"{path}: no such file; a food101 root holds train.json and test.json")
    try:
        text = path.read_text(encoding="utf-8-sig")
        entries = (json.loads(text) if text.lstrip().startswith("[")
                   else [json.loads(line) for line in text.splitlines() if line.strip()])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: is not a JSON list or JSON Lines ({exc})") from None
    if not entries:
        raise DataError(f"{path}: holds no entries")
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise DataError(f"{path}: entry {i} is not an object")
        missing = [f for f in FIELDS if f not in e]
        if missing:
            raise DataError(f"{path}: entry {i} lacks {', '.join(missing)}; each entry needs "
                            f"{', '.join(FIELDS)}")
    return entries


def _derived_classes(config: Config) -> list[str]:
    ds = config.dataset
    seen: set[str] = set()
    for name in (ds.train, ds.test):
        path = ds.root / name
        if path.is_file():
            for e in read_entries(path):
                if isinstance(e["label"], int):
                    raise DataError(f"{path}: labels are integers but there is no class list; "
                                    "write <root>/classes.txt or set dataset.classes")
                seen.update(e["label"] if isinstance(e["label"], list) else [str(e["label"])])
    return sorted(seen)


def _label_name(label: Any, classes: list[str]) -> Any:
    # An integer label indexes the class list; anything else names classes.
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(classes):
        return classes[label]
    return label


def _text(tokens: Any) -> str:
    if isinstance(tokens, list):
        return " ".join(str(t) for t in tokens)
    return str(tokens)
