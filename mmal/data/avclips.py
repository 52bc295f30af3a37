"""The KineticsSound and VGGSound layout: clips of frames plus a wav.

::

    <root>/train.csv, <root>/test.csv   header "id,label" (names from dataset.train/test)
    <root>/classes.txt                  optional class list (else the sorted labels)
    <root>/frames/<id>/*.jpg            the clip's frames (10 in the paper's data), in name order
    <root>/audio/<id>.wav               the clip's sound track

A ``video`` modality reads the frame folder as a clip, an ``image`` modality
one frame of it, an ``audio`` modality the wav. See ``docs/datasets.md``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from mmal.data.manifest import _cell, read_manifest
from mmal.data.parsing import (
    assign_ids,
    check_sources_exist,
    class_list,
    encode_labels,
    split_label,
)
from mmal.data.pool import DatasetKind, Pool
from mmal.errors import DataError

if TYPE_CHECKING:
    from mmal.config import Config

FRAMES_DIR = "frames"
AUDIO_DIR = "audio"


def load_avclips_pool(config: Config, split: str) -> Pool:
    """Pool of ``<root>/<split csv>`` with frames and wav files by id."""
    ds = config.dataset
    path = ds.root / (ds.train if split == "train" else ds.test)
    rows = read_manifest(path)
    for line, row in rows:
        missing = [k for k in ("id", "label") if k not in row]
        if missing:
            raise DataError(f"{path}: line {line} has no field {missing[0]!r}; the clip list "
                            "needs columns id,label")
    names = [_cell(row, "id", path, line, None) for line, row in rows]
    ids = assign_ids(names, str(path))
    classes, origin = class_list(config, derive=lambda: _derived_classes(config))
    labels = encode_labels([row["label"] for _, row in rows], names, classes,
                           multi_label=ds.multi_label, classes_origin=origin,
                           where=[f"{path.name} line {line}" for line, _ in rows])
    records: dict[str, Any] = {}
    for m in config.modalities:
        if m.kind == "audio":
            paths = [ds.root / AUDIO_DIR / f"{n}.wav" for n in names]
            check_sources_exist(paths, names, folder=False, what="audio", where=f"{ds.kind} layout")
        else:
            paths = [ds.root / FRAMES_DIR / n for n in names]
            check_sources_exist(paths, names, folder=True, what=m.kind, where=f"{ds.kind} layout")
        records[m.name] = paths
    return Pool(ids=ids, labels=labels, class_names=classes,
                multi_label=ds.multi_label, records=records, names=names, split=split,
                origin=str(path), root=ds.root)


KINETICS_SOUND = DatasetKind("kinetics-sound", load_avclips_pool,
                             files=("train.csv", "test.csv", ""),
                             modality_kinds=("image", "video", "audio"))
# The same layout under another name: the name tells the data sets apart in configs and messages.
VGGSOUND = dataclasses.replace(KINETICS_SOUND, name="vggsound")


def _derived_classes(config: Config) -> list[str]:
    ds = config.dataset
    seen: set[str] = set()
    for name in (ds.train, ds.test):
        path = ds.root / name
        if path.is_file():
            for _, row in read_manifest(path):
                seen.update(split_label(row.get("label", ""), multi_label=ds.multi_label))
    return sorted(seen)
