"""One stamp for every file kind: newer versions and other kinds are refused, old files load.

The table test writes each kind from its frozen file in ``tests/data`` (or a
minimal document), stamps it as asked and reads it back with the reader mmal
uses for that kind.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from mmal.cache.index import INDEX_TYPE, INDEX_VERSION, read_index
from mmal.cache.reader import open_cache
from mmal.cache.schema import CACHE_TYPE, SCHEMA_VERSION, CacheMeta
from mmal.encoded.store import read_store, write_store
from mmal.errors import DataError, WorkspaceError
from mmal.labels import read_labels_document
from mmal.loop.layout import RunLayout
from mmal.select.diagnostics import summarize_diagnostics
from mmal.stamp import (
    CACHE,
    DIAGNOSTICS,
    ENCODED,
    FILE_KINDS,
    INDEX,
    LABELS,
    METRICS,
    MODEL,
    RUN_PLAN,
    RUN_STATUS,
    STAMP_KEYS,
    check_stamp,
    stamp,
    stamped,
)

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
PLAN = {"strategies": ["bmmal", "random"], "seeds": [0, 1], "rounds": 2, "budget": 10,
        "initial_budget": 20, "mc_dropout": 0}
STATUS = {"completed": [{"strategy": "random", "seed": 0}], "failures": [], "rounds": 2}


def _json(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def _without(document: dict, *keys: str) -> dict:
    return {k: v for k, v in document.items() if k not in keys}


def read_labels(path):
    """labels.json as mmal reads it."""
    return read_labels_document(path)


# -- one writer and one reader per kind: write(path, header) makes a file stamped with header ----
def _cache(path, header):
    shutil.copy(DATA / "cache-v1.h5", path)
    with h5py.File(path, "r+") as f:
        f.attrs["fused_dim"] = CacheMeta.from_attrs(f.attrs).fused_dim  # schema 2 stores it
        f.attrs.update(header)


def _index(path, header):
    path.write_text(json.dumps({**_json("labeled-v1.json"), **header}))


def _model(path, header):
    import torch

    ckpt = torch.load(DATA / "model-v1.pt", weights_only=True)
    torch.save({**header, **_without(ckpt, "format", "version")}, path)


def _load_model(path):
    from mmal.models.checkpoint import load_checkpoint

    return load_checkpoint(path)


def _labels(path, header):
    path.write_text(json.dumps({**header, **_without(_json("labels-v1.json"), "type", "version")}))


def _metrics(path, header):
    path.write_text(json.dumps({**header, **_json("metrics-v1.json")}))


def _read_metrics(path):
    from mmal.loop.run import _round_info

    return _round_info(path.parents[2], 0)  # what `mmal run` reads after training a round


def _diagnostics(path, header):
    with np.load(DATA / "diagnostics-v1.npz") as archive:
        arrays = {name: archive[name] for name in archive.files}
    with open(path, "wb") as out:
        np.savez(out, **arrays, **header)


def _encoded(path, header):
    write_store(path, np.zeros((2, 3)), np.arange(2), modality="image", split="train",
                fingerprint="k")
    with h5py.File(path, "a") as f:
        for key in STAMP_KEYS:
            f.attrs.pop(key, None)
        f.attrs.update(header)


def _plan(path, header):
    path.write_text(json.dumps({**header, **PLAN}))


def _status(path, header):
    path.write_text(json.dumps({**header, **STATUS}))


KINDS = {  # kind: (file name, write, read, error)
    CACHE: ("cache.h5", _cache, open_cache, "CacheError"),
    INDEX: ("labeled.json", _index, read_index, "IndexFileError"),
    MODEL: ("model.pt", _model, _load_model, "WorkspaceError"),
    LABELS: ("labels.json", _labels, read_labels, "DataError"),
    METRICS: ("w/rounds/000/metrics.json", _metrics, _read_metrics, "WorkspaceError"),
    DIAGNOSTICS: ("s.diagnostics.npz", _diagnostics, summarize_diagnostics, "IndexFileError"),
    ENCODED: ("encoded/train/image.h5", _encoded, read_store, "CacheError"),
    RUN_PLAN: ("runs/plan.json", _plan, lambda p: RunLayout(p.parent.parent).read_plan(),
               "WorkspaceError"),
    RUN_STATUS: ("runs/status.json", _status, lambda p: RunLayout(p.parent.parent).read_status(),
                 "WorkspaceError"),
}


def _case(tmp_path, kind, header):
    name, write, read, error = KINDS[kind]
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, header)
    return path, read, error


def test_every_kind_mmal_writes_is_in_the_table_test():
    assert set(KINDS) == set(FILE_KINDS)


def test_the_cache_constants_agree_with_the_table():
    assert FILE_KINDS[CACHE_TYPE].version == SCHEMA_VERSION
    assert FILE_KINDS[INDEX_TYPE].version == INDEX_VERSION
    assert (CACHE, INDEX) == (CACHE_TYPE, INDEX_TYPE)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_current_stamp_reads_back(tmp_path, kind):
    path, read, _ = _case(tmp_path, kind, stamp(kind))
    result = read(path)
    if kind == CACHE:
        result.close()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_newer_version_is_refused_with_upgrade_mmal(tmp_path, kind):
    newer = FILE_KINDS[kind].version + 1
    path, read, error = _case(tmp_path, kind, stamp(kind, newer))
    with pytest.raises(Exception) as err:
        read(path)
    message = str(err.value)
    assert type(err.value).__name__ == error and "\n" not in message
    assert message.startswith(f"{path}: schema version {newer} is newer than this mmal")
    assert message.endswith("; upgrade mmal")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_another_kind_is_refused(tmp_path, kind):
    other = METRICS if kind != METRICS else MODEL
    path, read, error = _case(tmp_path, kind, stamp(other))
    with pytest.raises(Exception) as err:
        read(path)
    assert type(err.value).__name__ == error and "\n" not in str(err.value)
    assert re.match(rf"{re.escape(str(path))}: is not an .*\(type '{other}'\); ", str(err.value))


# -- files from before the stamp ------------------------------------------------------------------
def test_frozen_metrics_from_before_the_stamp_load(tmp_path):
    path, read, _ = _case(tmp_path, METRICS, {})
    assert read(path) == {
        "top1": {"mm": 0.125, "fac": 0.0575, "fou": 0.08}, "num_labeled": 20}


def test_frozen_diagnostics_from_before_the_stamp_load():
    summary = summarize_diagnostics(DATA / "diagnostics-v1.npz")
    assert summary["schema_version"] == 1 and summary["strategy"] == "random"
    assert summary["samples"] == 18 and summary["modalities"] == ["image", "text"]


@pytest.mark.parametrize("kind, content", [(RUN_PLAN, PLAN), (RUN_STATUS, STATUS)])
def test_run_files_from_before_the_stamp_load(tmp_path, kind, content):
    path, read, _ = _case(tmp_path, kind, {})
    assert read(path) == content


def test_unreadable_status_is_ignored_but_a_newer_one_is_refused(tmp_path):
    layout = RunLayout(tmp_path)
    layout.root.mkdir()
    layout.status.write_text("{not json")
    assert layout.read_status() is None
    layout.status.write_text(json.dumps(stamped(RUN_STATUS, {"schema_version": 2, **STATUS})))
    with pytest.raises(WorkspaceError, match="upgrade mmal"):
        layout.read_status()


# -- labels.json ------------------------------------------------------------------------------
def test_labels_v1_from_before_the_stamp_is_accepted():
    document = read_labels(DATA / "labels-v1.json")
    assert document["labels"] == {"29": "3", "74": "7"}
    assert check_stamp(document, expected_type=LABELS, path="x", error=DataError) == 1


def test_stamped_labels_round_trip(tmp_path):
    path = tmp_path / "labels.json"
    body = _without(_json("labels-v1.json"), "type", "version")
    path.write_text(json.dumps(stamped(LABELS, body)))
    document = read_labels(path)
    assert list(document)[:4] == list(STAMP_KEYS) and document["schema_version"] == 1
    assert _without(document, *STAMP_KEYS) == body


@pytest.mark.parametrize("header, message", [
    ({"type": "mmal-labels", "version": 2}, "schema version 2 is newer than this mmal .*; "
                                            "upgrade mmal$"),
    (stamp(LABELS, 2), "schema version 2 is newer than this mmal .*; upgrade mmal$"),
    ({"type": "something"}, r"is not an mmal-labels \(type 'something'\); move it away$"),
    (stamp("something", 1), r"is not an mmal-labels \(type 'something'\); move it away$"),
    ({}, r"is not an mmal-labels \(no mmal type stamp\); move it away$"),
    ({"type": "mmal-labels", "version": "x"}, "field 'version' is missing or not an integer$"),
    ({"mmal_type": "mmal-labels"}, "field 'schema_version' is missing or not an integer$"),
])
def test_bad_labels_are_refused(tmp_path, header, message):
    path = tmp_path / "labels.json"
    body = _without(_json("labels-v1.json"), "type", "version")
    path.write_text(json.dumps({**header, **body}))
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: {message}"):
        read_labels(path)


@pytest.mark.parametrize("text, message", [
    ("{oops", r"is not valid JSON \(.*\); move it away$"),
    ("[1, 2]", r"is not an mmal-labels \(top level is not an object\); move it away$"),
])
def test_labels_that_are_not_a_json_object_are_refused(tmp_path, text, message):
    path = tmp_path / "labels.json"
    path.write_text(text)
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: {message}"):
        read_labels(path)


# -- the prose spec --------------------------------------------------------------------------------
def test_docs_list_every_kind_with_its_version():
    text = (ROOT / "docs" / "files.md").read_text()
    for name, kind in FILE_KINDS.items():
        assert re.search(rf"^\| .* \| `{name}` \| {kind.version} \|", text, re.M), name


def test_the_stamp_module_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, mmal.stamp; "
            "print(sorted(m for m in ('numpy', 'torch', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    assert out.stdout.strip() == "[]"
