"""Label Studio through its files: export tasks and a labeling config, import the JSON export.

The exports below are written by hand after Label Studio's documented JSON
export format: a list of tasks, each with ``id``, ``data``, ``annotations``
(``result`` of ``choices`` results, ``was_cancelled``, ``completed_by``,
``created_at``/``updated_at``) and maybe ``predictions``.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from click.testing import CliRunner

from mmal.annotation import export_ids, export_label_studio, import_labels
from mmal.cache import open_cache
from mmal.cache.index import write_index
from mmal.cache.schema import CacheMeta, field_specs
from mmal.cache.writer import CacheWriter
from mmal.cli import cli
from mmal.data.parsing import list_frames
from mmal.errors import DataError
from mmal.labels import LOCAL_FILES_URL, read_label_studio
from mmal.workspace import init_workspace, next_round, open_round, round_paths
from tests.fixtures_data import CLASSES, blank_train_labels, make_tiny_dataset

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace whose round 0 is trained and extracted (image, text, audio, vector)."""
    from mmal.extract import extract_round
    from mmal.train import train_round

    tmp = tmp_path_factory.mktemp("trained")
    config = make_tiny_dataset(tmp / "src", "manifest", n_train=12,
                               modalities=["image", "text", "audio", "vector"],
                               overrides={"al": {"initial_budget": 4}})
    ws = init_workspace(tmp / "ws", config)
    train_round(ws, 0, device="cpu", progress=False)
    extract_round(ws, 0, device="cpu", progress=False)
    return ws


@pytest.fixture
def ws(trained, tmp_path):
    """A copy of the trained workspace that a test may change (the data stays shared)."""
    return Path(shutil.copytree(trained, tmp_path / "ws"))


def _blank(tmp_path, *, multi_label=False, modalities=("image", "vector"), n_train=12,
           initial_budget=8):
    """A workspace whose train split has no labels (people label it)."""
    config = make_tiny_dataset(tmp_path / "src", "manifest", modalities=list(modalities),
                               n_train=n_train, multi_label=multi_label,
                               overrides={"al": {"initial_budget": initial_budget}})
    blank_train_labels(config)
    ws = init_workspace(tmp_path / "ws", config)
    return ws, json.loads(round_paths(ws, 0).labeled.read_text())["ids"]


def _selection(ws, r, ids, name="random-b3.json"):
    path = round_paths(ws, r).selections / name
    with open_cache(round_paths(ws, r).cache) as cache:
        fingerprint = cache.fingerprint
    write_index(path, np.asarray(ids), kind="selection", provenance={
        "strategy": "random", "params": {}, "seed": 0, "budget": len(ids),
        "cache": str(round_paths(ws, r).cache), "cache_fingerprint": fingerprint,
        "backend": "numpy", "wall_time_s": 0.0})
    return path


def _unlabeled(ws, r=0, k=3):
    labeled = set(json.loads(round_paths(ws, r).labeled.read_text())["ids"])
    return [int(i) for i in open_round(ws, r).pool("train").ids if int(i) not in labeled][:k]


# Label Studio's JSON export, by hand -----------------------------------------------------

def _annotation(choices, *, who=1, at="2024-05-02T09:15:00.000000Z", cancelled=False, aid=1):
    """One annotation as Label Studio exports it; ``choices=None``: an empty result."""
    result = [] if choices is None else [{
        "id": f"r{aid}", "from_name": "label", "to_name": "image", "type": "choices",
        "origin": "manual", "value": {"choices": list(choices)}}]
    return {"id": aid, "completed_by": who, "result": result, "was_cancelled": cancelled,
            "ground_truth": False, "created_at": at, "updated_at": at, "lead_time": 4.2,
            "prediction": {}, "result_count": 0, "unique_id": f"u{aid}", "last_action": None,
            "task": None, "project": 3, "updated_by": who, "parent_prediction": None,
            "parent_annotation": None, "last_created_by": None}


def _task(tid, sid, *annotations, predicted=None):
    """One exported task of a project made from `mmal export --format label-studio`."""
    task = {"id": tid, "data": {"mmal_id": sid, "mmal_name": str(sid),
                                "image": f"/data/local-files/?d=files/{sid}.jpg"},
            "annotations": list(annotations), "drafts": [], "meta": {},
            "created_at": "2024-05-01T08:00:00.000000Z",
            "updated_at": "2024-05-02T09:15:00.000000Z", "inner_id": tid,
            "total_annotations": len(annotations),
            "cancelled_annotations": sum(a["was_cancelled"] for a in annotations),
            "total_predictions": 0, "comment_count": 0, "unresolved_comment_count": 0,
            "last_comment_updated_at": None, "project": 3, "updated_by": 1, "file_upload": None,
            "comment_authors": [], "predictions": []}
    for a in task["annotations"]:
        a["task"] = tid
    if predicted is not None:
        task["predictions"] = [{"id": 90 + tid, "model_version": "abc", "score": 0.9,
                                "result": [{"from_name": "label", "to_name": "image",
                                            "type": "choices",
                                            "value": {"choices": [predicted]}}]}]
        task["total_predictions"] = 1
    return task


def _write(path, tasks):
    path.write_text(json.dumps(tasks, indent=1))
    return path


# ----------------------------------------------------------------------------- export

def test_exported_tasks_carry_every_modality_and_the_models_top_class(ws):
    ids = _unlabeled(ws)
    selection = _selection(ws, 0, ids)
    done = export_label_studio(ws, selection)
    assert done.tasks == selection.with_name("random-b3.label-studio.json")
    assert done.config == selection.with_name("random-b3.label-studio.xml")
    assert done.predictions_from == round_paths(ws, 0).cache and done.no_predictions == ""
    tasks = json.loads(done.tasks.read_text())
    pool = open_round(ws, 0).pool("train")
    with open_cache(round_paths(ws, 0).cache) as cache:
        rows = np.searchsorted(cache.ids, ids)
        logits = cache.logits("mm", rows).astype(np.float64)
        version = cache.meta.model_fingerprint
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert [t["data"]["mmal_id"] for t in tasks] == ids and done.count == 3
    for task, sid, p in zip(tasks, ids, probs, strict=True):
        row = pool.rows([sid])[0]
        data = task["data"]
        assert set(data) == {"mmal_id", "mmal_name", "image", "text", "audio"}  # no vector
        assert data["mmal_name"] == pool.names[row]
        for m in ("image", "audio"):
            assert data[m].startswith(LOCAL_FILES_URL)
            served = pool.root / unquote(data[m].removeprefix(LOCAL_FILES_URL))
            assert served == pool.records[m][row] and served.is_file()
        assert data["text"] == pool.records["text"][row].read_text(encoding="utf-8")
        (prediction,) = task["predictions"]
        (result,) = prediction["result"]
        assert result["type"] == "choices" and result["from_name"] == "label"
        assert result["to_name"] == "image"
        assert result["value"]["choices"] == [CLASSES[int(np.argmax(p))]]
        assert prediction["score"] == pytest.approx(p.max(), abs=1e-6)
        assert prediction["model_version"] == version


def test_labeling_config_lists_the_classes_and_one_tag_per_shown_modality(ws):
    done = export_label_studio(ws, _selection(ws, 0, _unlabeled(ws)))
    view = ET.fromstring(done.config.read_text())
    assert view.tag == "View"
    tags = {el.get("name"): el.tag for el in view if el.get("name")}
    assert tags == {"image": "Image", "text": "Text", "audio": "Audio", "label": "Choices"}
    assert all(el.get("value") == f"${name}" for el in view
               if (name := el.get("name")) and el.tag != "Choices")
    choices = view.find("Choices")
    assert choices.get("toName") == "image" and choices.get("choice") == "single"
    assert [c.get("value") for c in choices.findall("Choice")] == list(CLASSES)


def test_cli_export_label_studio_prints_both_paths(ws):
    selection = _selection(ws, 0, _unlabeled(ws))
    res = CliRunner().invoke(cli, ["export", str(selection), "--format", "label-studio",
                                   "--workspace", str(ws)])
    assert res.exit_code == 0, res.output
    tasks, config = (selection.with_name(f"random-b3.label-studio.{x}") for x in ("json", "xml"))
    assert res.output.splitlines() == [
        f"wrote 3 Label Studio tasks to {tasks}",
        f"labeling config (paste into the project's Labeling Interface): {config}",
        "serve the files: LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
        f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={open_round(ws, 0).pool('train').root}",
        f"predictions: the top class of the model of {round_paths(ws, 0).cache}"]
    again = CliRunner().invoke(cli, ["export", str(selection), "--format", "label-studio",
                                     "--workspace", str(ws)])
    assert again.exit_code == 1 and f"Error: {tasks}: already exists" in again.output


def test_labeled_set_exports_without_predictions_and_says_so(ws, tmp_path):
    labeled = round_paths(ws, 0).labeled
    res = CliRunner().invoke(cli, ["export", str(labeled), "--format", "label-studio",
                                   "--workspace", str(ws), "--out", str(tmp_path / "t.json")])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1] == ("no predictions: labeled.json is not a selection "
                                           "(predictions come from the cache a selection was "
                                           "made from)")
    tasks = json.loads((tmp_path / "t.json").read_text())
    assert len(tasks) == 4 and all("predictions" not in t for t in tasks)
    assert (tmp_path / "t.xml").is_file()


def test_a_selection_without_its_cache_exports_without_predictions(ws):
    selection = _selection(ws, 0, _unlabeled(ws))
    round_paths(ws, 0).cache.unlink()
    done = export_label_studio(ws, selection)
    assert done.predictions_from is None
    assert done.no_predictions == f"{round_paths(ws, 0).cache} does not exist"
    assert all("predictions" not in t for t in json.loads(done.tasks.read_text()))


def test_local_files_root_sets_what_urls_are_relative_to(ws, tmp_path):
    pool = open_round(ws, 0).pool("train")
    above = pool.root.parent
    out = export_ids(ws, round_paths(ws, 0).labeled, fmt="label-studio", out=tmp_path / "t.json",
                     local_files_root=above)
    data = json.loads(out.read_text())[0]["data"]
    row = pool.rows([data["mmal_id"]])[0]
    assert data["image"] == LOCAL_FILES_URL + pool.records["image"][row].relative_to(
        above).as_posix()
    with pytest.raises(DataError, match=r"is outside the local files root .*; pass "
                                        "--local-files-root a folder that holds every file"):
        export_label_studio(ws, round_paths(ws, 0).labeled, out=tmp_path / "u.json",
                            local_files_root=tmp_path / "elsewhere")
    with pytest.raises(DataError, match="the labeling config goes beside the tasks as"):
        export_label_studio(ws, round_paths(ws, 0).labeled, out=tmp_path / "t.xml")
    res = CliRunner().invoke(cli, ["export", str(round_paths(ws, 0).labeled), "--workspace",
                                   str(ws), "--local-files-root", str(above)])
    assert res.exit_code == 2 and "--local-files-root is for --format label-studio" in res.output


def test_a_frame_folder_shows_its_middle_frame_and_vectors_alone_show_the_name(tmp_path):
    ws, ids = _blank(tmp_path / "v", modalities=("video", "vector"), initial_budget=3)
    done = export_label_studio(ws, round_paths(ws, 0).labeled)
    pool = open_round(ws, 0).pool("train")
    for task in json.loads(done.tasks.read_text()):
        clip = pool.records["video"][pool.rows([task["data"]["mmal_id"]])[0]]
        frames = list_frames(clip, sample="x")
        assert task["data"]["video"] == LOCAL_FILES_URL + frames[len(frames) // 2].relative_to(
            pool.root).as_posix()
    assert ET.fromstring(done.config.read_text()).find("Image").get("value") == "$video"

    only, _ = _blank(tmp_path / "o", modalities=("vector",), initial_budget=3)
    done = export_label_studio(only, round_paths(only, 0).labeled)
    view = ET.fromstring(done.config.read_text())
    assert view.find("Text").attrib == {"name": "mmal_name", "value": "$mmal_name"}
    assert view.find("Choices").get("toName") == "mmal_name"
    assert set(json.loads(done.tasks.read_text())[0]["data"]) == {"mmal_id", "mmal_name"}
    assert done.local_files_root is None  # nothing to serve


def _write_cache(path, ids, logits, *, multi_label, class_names=CLASSES):
    """A small valid cache of one vector modality whose multimodal logits are ``logits``."""
    n, k = logits.shape
    meta = CacheMeta(modalities=("vector",), feature_dims=(2,), fusion="concat", num_classes=k,
                     multi_label=multi_label, model_fingerprint="model-sha",
                     extra={"class_names": list(class_names)})
    batch = {}
    for spec in field_specs(meta):
        batch[spec.path] = np.zeros((n, *spec.row_shape), dtype=spec.dtype)
    batch["ids"] = np.asarray(ids, dtype=np.int64)
    batch["logits/mm"] = logits.astype(np.float32)
    if not multi_label:
        batch["labels"] -= 1
    else:
        batch["labels"] = np.full((n, k), -1, dtype=np.int8)
    with CacheWriter(path, meta, n, overwrite=True, resume=False) as writer:
        writer.append(batch)
        writer.write_head(np.zeros((k, 2), np.float32), np.zeros(k, np.float32))


def test_multi_label_predictions_take_every_class_above_one_half(tmp_path):
    ws, labeled = _blank(tmp_path, multi_label=True, modalities=("vector",), initial_budget=3)
    pool = open_round(ws, 0).pool("train")
    logit = np.log(np.array([0.9, 0.7, 0.1]) / (1 - np.array([0.9, 0.7, 0.1])))
    logits = np.tile([-3.0, -2.0, -1.0], (len(pool), 1))  # nothing above 1/2: the top one
    new = [int(i) for i in pool.ids if int(i) not in labeled][:2]
    logits[pool.rows([new[0]])[0]] = logit
    _write_cache(round_paths(ws, 0).cache, pool.ids, logits, multi_label=True)
    done = export_label_studio(ws, _selection(ws, 0, new))
    first, second = (t["predictions"][0] for t in json.loads(done.tasks.read_text()))
    assert first["result"][0]["value"]["choices"] == ["cat", "dog"]
    assert first["score"] == pytest.approx(0.9, abs=1e-6)
    assert second["result"][0]["value"]["choices"] == ["owl"]
    assert second["score"] == pytest.approx(1 / (1 + np.exp(1.0)), abs=1e-6)
    assert first["model_version"] == "model-sha"
    choices = ET.fromstring(done.config.read_text()).find("Choices")
    assert choices.get("choice") == "multiple"


def test_a_cache_that_does_not_fit_gives_tasks_without_predictions(tmp_path):
    ws, labeled = _blank(tmp_path, modalities=("vector",), initial_budget=3)
    pool = open_round(ws, 0).pool("train")
    new = [int(i) for i in pool.ids if int(i) not in labeled][:2]
    cache = round_paths(ws, 0).cache
    _write_cache(cache, pool.ids, np.zeros((len(pool), 3)), multi_label=False,
                 class_names=["a", "b", "c"])
    selection = _selection(ws, 0, new)
    done = export_label_studio(ws, selection)
    assert done.no_predictions == f"{cache} was extracted with another class list (a, b, c)"
    keep = ~np.isin(pool.ids, new[1:])
    _write_cache(cache, pool.ids[keep], np.zeros((keep.sum(), 3)), multi_label=False)
    done = export_label_studio(ws, selection, overwrite=True)
    assert done.no_predictions == f"ids {new[1]} are not in {cache}"
    assert all("predictions" not in t for t in json.loads(done.tasks.read_text()))


# ----------------------------------------------------------------------------- import

def test_import_takes_the_latest_accepted_annotation_and_leaves_skipped_tasks(tmp_path):
    ws, ids = _blank(tmp_path)
    export = _write(tmp_path / "project-3-at-2024-05-02.json", [
        _task(1, ids[0], _annotation(["cat"])),                                   # normal
        _task(2, ids[1], predicted="dog"),                                        # skipped
        _task(3, ids[2], _annotation(None, cancelled=True)),                      # cancelled
        _task(4, ids[3], _annotation(None, cancelled=True, aid=2),                # cancelled,
              _annotation(["owl"], who=2, aid=3)),                                # then accepted
        _task(5, ids[4], _annotation(["dog"], aid=4), _annotation(["dog"], who=2, aid=5)),
        _task(6, ids[5], _annotation(None, aid=6)),                               # empty result
        _task(7, ids[6], _annotation(["cat"], at="2024-05-02T09:00:00Z", aid=8),  # changed
              _annotation(["owl"], at="2024-05-02T10:00:00Z", aid=7)),            # mind later
        _task(8, ids[7], _annotation(["dog"], cancelled=True, aid=9)),            # cancelled
    ])
    result = import_labels(ws, 0, export)
    assert open_round(ws, 0).human_labels() == {
        ids[0]: ["cat"], ids[3]: ["owl"], ids[4]: ["dog"], ids[6]: ["owl"]}
    assert result.imported == 4 and result.skipped_lines == [2, 3, 6, 8]
    assert result.missing.tolist() == [ids[1], ids[2], ids[5], ids[7]]
    assert result.majority == []
    stored = json.loads(round_paths(ws, 0).labels.read_text())
    assert stored["sources"] == [str(export.resolve())]


def test_annotators_who_disagree_are_an_error_naming_the_tasks(tmp_path):
    ws, ids = _blank(tmp_path)
    export = _write(tmp_path / "export.json", [
        _task(11, ids[0], _annotation(["cat"], aid=1), _annotation(["dog"], who=2, aid=2)),
        _task(12, ids[1], _annotation(["owl"], aid=3), _annotation(["cat"], who=2, aid=4)),
        _task(13, ids[2], _annotation(["owl"], aid=5), _annotation(["owl"], who=2, aid=6)),
    ])
    with pytest.raises(DataError) as info:
        import_labels(ws, 0, export)
    assert str(info.value) == (f"{export}: annotators disagree on tasks 11, 12; settle them in "
                               "Label Studio, or pass --resolve majority to take the label most "
                               "annotators gave")
    assert not round_paths(ws, 0).labels.exists()  # nothing written


def test_majority_vote_settles_three_annotators_and_refuses_a_tie(tmp_path):
    ws, ids = _blank(tmp_path)
    three = [_task(21, ids[0], _annotation(["cat"], aid=1), _annotation(["dog"], who=2, aid=2),
                   _annotation(["dog"], who=3, aid=3)),
             _task(22, ids[1], _annotation(["owl"], aid=4))]
    res = CliRunner().invoke(cli, ["label", "--round", "0", str(_write(tmp_path / "e.json", three)),
                                   "--workspace", str(ws), "--resolve", "majority"])
    assert res.exit_code == 0, res.output
    assert "settled by majority vote: 1 tasks: 21" in res.output
    assert open_round(ws, 0).human_labels() == {ids[0]: ["dog"], ids[1]: ["owl"]}

    tie = _write(tmp_path / "tie.json", [
        _task(31, ids[2], _annotation(["cat"], aid=1), _annotation(["dog"], who=2, aid=2))])
    with pytest.raises(DataError, match=r"tie.json: no majority on tasks 31 \(the annotators "
                                        r"are split evenly\)"):
        import_labels(ws, 0, tie, resolve="majority")
    res = CliRunner().invoke(cli, ["label", "--round", "0", str(tie), "--workspace", str(ws)])
    assert res.exit_code == 1
    assert res.output.startswith(f"Error: {tie}: annotators disagree on tasks 31;")


def test_an_unknown_class_is_an_error_naming_the_task(tmp_path):
    ws, ids = _blank(tmp_path)
    export = _write(tmp_path / "export.json", [
        _task(41, ids[0], _annotation(["cat"])), _task(42, ids[1], _annotation(["zebra"]))])
    res = CliRunner().invoke(cli, ["label", "--round", "0", str(export), "--workspace", str(ws)])
    assert res.exit_code == 1
    assert res.output.startswith(f"Error: {export}: task 42: class 'zebra' is not one of the "
                                 "3 classes (cat, dog, owl); fix the label")
    assert not round_paths(ws, 0).labels.exists()


def test_multi_label_choices_and_agreement_in_any_order(tmp_path):
    ws, ids = _blank(tmp_path, multi_label=True, modalities=("vector",))
    export = _write(tmp_path / "export.json", [
        _task(51, ids[0], _annotation(["owl", "cat"])),
        _task(52, ids[1], _annotation(["dog", "cat"], aid=2),
              _annotation(["cat", "dog"], who=2, aid=3)),
        _task(53, ids[2], _annotation(["dog"], aid=4))])
    import_labels(ws, 0, export)
    assert open_round(ws, 0).human_labels() == {
        ids[0]: ["cat", "owl"], ids[1]: ["cat", "dog"], ids[2]: ["dog"]}
    labels = open_round(ws, 0).labels(require_labeled=False)
    pool = open_round(ws, 0).pool("train")
    assert labels[pool.rows([ids[0]])[0]].tolist() == [1, 0, 1]


def test_single_label_data_refuses_two_choices(tmp_path):
    ws, ids = _blank(tmp_path)
    export = _write(tmp_path / "export.json", [_task(61, ids[0], _annotation(["cat", "dog"]))])
    with pytest.raises(DataError, match=r"task 61: label \['cat', 'dog'\] names 2 classes; this "
                                        "dataset is single-label"):
        import_labels(ws, 0, export)


def test_export_then_import_round_trip_through_label_studio(ws, tmp_path):
    """Tasks written by `mmal export`, annotated as Label Studio would, come back into round 1."""
    ids = _unlabeled(ws)
    selection = _selection(ws, 0, ids)
    done = export_label_studio(ws, selection)
    next_round(ws, selection)
    exported = []
    for k, task in enumerate(json.loads(done.tasks.read_text()), start=1):
        predicted = task["predictions"][0]["result"][0]["value"]["choices"]
        answer = CLASSES[(CLASSES.index(predicted[0]) + k) % 3]  # the annotator corrects some
        exported.append({"id": 100 + k, "data": task["data"], "predictions": task["predictions"],
                         "annotations": [_annotation([answer], aid=k)]})
    result = import_labels(ws, 1, _write(tmp_path / "project.json", exported))
    assert result.imported == 3
    assert open_round(ws, 1).human_labels() == {
        t["data"]["mmal_id"]: t["annotations"][0]["result"][0]["value"]["choices"]
        for t in exported}


@pytest.mark.parametrize("content, message", [
    ({"tasks": []}, "is not a Label Studio export: its top level is a dict, not a list of "
                    "tasks; export the project from Label Studio as JSON"),
    ([{"mmal_id": 1, "label": "cat"}], "task #1 is not a task (an object with 'data'); export "
                                       "the project from Label Studio as JSON (not JSON-MIN"),
    ([{"id": 9, "data": {"image": "x.jpg"}, "annotations": []}],
     "task 9: its data has no 'mmal_id'; import into Label Studio the tasks `mmal export "
     "--format label-studio` wrote"),
    ([{"id": 9, "data": {"mmal_id": 1}, "annotations": [{"result": [
        {"type": "choices", "from_name": "label", "value": {"choices": ["cat"]}},
        {"type": "choices", "from_name": "mood", "value": {"choices": ["calm"]}}]}]}], None),
    ([{"id": 9, "data": {"mmal_id": 1}, "annotations": [{"result": [
        {"type": "choices", "from_name": "kind", "value": {"choices": ["cat"]}},
        {"type": "choices", "from_name": "mood", "value": {"choices": ["calm"]}}]}]}],
     "task 9: choices come from several controls (kind, mood) and none is named 'label'"),
])
def test_what_is_not_a_label_studio_export_is_refused(tmp_path, content, message):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(content))
    if message is None:  # the exported config's control wins over others people added
        assert read_label_studio(path) == [(9, 1, ["cat"], None)]
        return
    with pytest.raises(DataError) as info:
        read_label_studio(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_json_lines_in_a_json_file_are_named(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text('{"id": 1, "label": "cat"}\n{"id": 2, "label": "dog"}\n')
    with pytest.raises(DataError, match=r"line 2: not valid JSON \(Extra data\) \(JSON Lines go "
                                        r"in a \.jsonl file\)"):
        read_label_studio(path)
