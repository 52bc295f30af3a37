"""Human labels: export ids with their files, import labels back, reject bad lines by number."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mmal.annotation import export_ids, import_labels
from mmal.cache.index import write_index
from mmal.cli import cli
from mmal.config import load_config
from mmal.data import load_pool
from mmal.errors import DataError
from mmal.workspace import (
    init_workspace,
    load_workspace_config,
    next_round,
    open_round,
    round_paths,
)
from tests.fixtures_data import CLASSES, blank_train_labels, make_tiny_dataset, rename_train_ids


@pytest.fixture
def ws(tmp_path):
    config = make_tiny_dataset(tmp_path / "src", "manifest", modalities=["image", "vector"],
                               n_train=12, overrides={"al": {"initial_budget": 4}})
    return init_workspace(tmp_path / "ws", config)


@pytest.fixture
def blank_ws(tmp_path):
    """(workspace, truth): a pool whose train split has no labels, and the labels it hides."""
    config = make_tiny_dataset(tmp_path / "src", "manifest", modalities=["image", "vector"],
                               n_train=12, overrides={"al": {"initial_budget": 4}})
    truth = load_pool(load_config(config), "train")
    blank_train_labels(config)
    return init_workspace(tmp_path / "ws", config), truth


def _pool(ws):
    return load_pool(load_workspace_config(ws), "train")


def _records(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV sheet, cells as written."""
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _fill(path: Path, pool, *, skip=(), rows=None) -> Path:
    """Fill the label column of an exported CSV with the dataset's labels."""
    records = _records(path)
    for rec in records:
        i = int(rec["id"])
        if i not in skip:
            rec["label"] = pool.class_names[pool.labels[pool.rows([i])[0]]]
    records = records if rows is None else rows(records)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return path


def _selection(ws, r, ids):
    path = round_paths(ws, r).selections / "random-b2.json"
    write_index(path, ids, kind="selection", provenance={
        "strategy": "random", "params": {}, "seed": 0, "budget": len(ids), "cache": "c.h5",
        "cache_fingerprint": "x", "backend": "numpy", "wall_time_s": 0.0})
    return path


def test_export_lists_ids_with_absolute_files_and_empty_labels(ws):
    out = export_ids(ws, round_paths(ws, 0).labeled)
    pool = _pool(ws)
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert out == round_paths(ws, 0).root / "labeled.csv"
    assert list(rows[0]) == ["id", "name", "label", "image", "vector"]
    labeled = json.loads(round_paths(ws, 0).labeled.read_text())["ids"]
    assert [int(r["id"]) for r in rows] == labeled
    for r in rows:
        row = pool.rows([int(r["id"])])[0]
        assert r["label"] == "" and r["name"] == pool.names[row]
        assert Path(r["image"]) == pool.records["image"][row].resolve()
        assert Path(r["image"]).is_absolute() and Path(r["image"]).is_file()


def test_export_then_label_round_trip_csv(ws):
    pool = _pool(ws)
    out = _fill(export_ids(ws, round_paths(ws, 0).labeled), pool)
    result = import_labels(ws, 0, out)
    ids = json.loads(round_paths(ws, 0).labeled.read_text())["ids"]
    expected = {i: [pool.class_names[pool.labels[pool.rows([i])[0]]]] for i in ids}
    assert result.imported == len(ids) and result.missing.size == 0
    assert open_round(ws, 0).human_labels() == expected
    stored = json.loads((round_paths(ws, 0).root / "labels.json").read_text())
    assert stored["labels"] == {str(i): v[0] for i, v in sorted(expected.items())}
    assert stored["class_names"] == list(CLASSES)


def test_jsonl_round_trip_and_partial_file_reports_missing_ids(blank_ws):
    ws, pool = blank_ws
    ids = json.loads(round_paths(ws, 0).labeled.read_text())["ids"]
    out = export_ids(ws, round_paths(ws, 0).labeled, fmt="jsonl", out=ws / "todo.jsonl")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == ids and all(x["label"] is None for x in lines)
    for x in lines[1:]:
        x["label"] = pool.class_names[pool.labels[pool.rows([x["id"]])[0]]]
    out.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = import_labels(ws, 0, out)
    assert result.imported == len(ids) - 1 and result.skipped_lines == [1]
    assert result.missing.tolist() == [ids[0]]
    # A second, partial file completes the round.
    fix = ws / "fix.csv"
    fix.write_text(f"id,label\n{ids[0]},{CLASSES[1]}\n")
    again = import_labels(ws, 0, fix)
    assert again.missing.size == 0 and open_round(ws, 0).human_labels()[ids[0]] == [CLASSES[1]]


def test_labels_of_a_later_round_cover_only_its_new_ids(blank_ws):
    ws, pool = blank_ws
    labeled0 = json.loads(round_paths(ws, 0).labeled.read_text())["ids"]
    new = [int(i) for i in pool.ids if int(i) not in labeled0][:2]
    selection = _selection(ws, 0, new)
    next_round(ws, selection)
    out = _fill(export_ids(ws, selection, out=ws / "r1.csv"), pool, skip={new[1]})
    result = import_labels(ws, 1, out)
    assert result.imported == 1 and result.missing.tolist() == [new[1]]
    assert result.path == round_paths(ws, 1).root / "labels.json"


@pytest.mark.parametrize("body, message", [
    ("id,label\n{a},cat\n999,dog\n", "line 3: id 999 is not in the train pool"),
    ("id,label\n{a},cat\n{b},dog\n{c},cat\n", "line 4: id {c} is not in round 000's labeled set"),
    ("id,label\n{a},cat\n{b},zebra\n", "line 3: class 'zebra' is not one of the 3 classes"),
    ("id,label\n{a},cat\n{a},dog\n", "line 3: id {a} is labeled twice in this file"),
    ("id,label\n{a},cat|dog\n", "line 2: label 'cat|dog' names 2 classes"),
    ("id,label\nseven,cat\n", "line 2: id 'seven' is neither an id nor a sample name"),
    ("ident,label\n{a},cat\n", "line 1: the header needs columns 'id' and 'label'"),
])
def test_bad_label_file_is_rejected_naming_the_line(ws, body, message):
    ids = json.loads(round_paths(ws, 0).labeled.read_text())["ids"]
    outside = [int(i) for i in _pool(ws).ids if int(i) not in ids][0]
    fmt = {"a": ids[0], "b": ids[1], "c": outside}
    path = ws / "bad.csv"
    path.write_text(body.format(**fmt))
    with pytest.raises(DataError) as err:
        import_labels(ws, 0, path)
    assert str(err.value).startswith(f"{path}: {message.format(**fmt)}")
    assert not (round_paths(ws, 0).root / "labels.json").exists()  # nothing half-written


def test_cli_export_and_label(blank_ws):
    ws, pool = blank_ws
    runner = CliRunner()
    labeled = str(round_paths(ws, 0).labeled)
    res = runner.invoke(cli, ["export", labeled, "--workspace", str(ws), "--out",
                              str(ws / "t.csv")])
    assert res.exit_code == 0, res.output
    assert res.output == f"wrote 4 ids to {ws / 't.csv'}\n"
    ids = json.loads(round_paths(ws, 0).labeled.read_text())["ids"]
    _fill(ws / "t.csv", pool, skip={ids[2]})
    res = runner.invoke(cli, ["label", "--round", "0", str(ws / "t.csv"), "--workspace", str(ws)])
    assert res.exit_code == 0, res.output
    assert f"still without a label in round 000: 1 ids: {ids[2]}" in res.output
    (ws / "bad.csv").write_text(f"id,label\n{ids[0]},cat\n{ids[1]},unicorn\n")
    res = runner.invoke(cli, ["label", "--round", "0", str(ws / "bad.csv"), "--workspace",
                              str(ws)])
    assert res.exit_code == 1
    assert res.output.startswith(f"Error: {ws / 'bad.csv'}: line 3: class 'unicorn'")


def test_export_refuses_ids_of_another_dataset(ws, tmp_path):
    path = write_index(tmp_path / "x.json", np.array([424242]), kind="labeled", provenance={})
    with pytest.raises(DataError, match="belongs to another workspace"):
        export_ids(ws, path)


# ----------------------------------------------------------------- labels the learner uses

def test_unlabeled_pool_needs_people_labels_then_uses_them(tmp_path):
    config = make_tiny_dataset(tmp_path / "src", "manifest", modalities=["vector"], n_train=12,
                               overrides={"al": {"initial_budget": 4}})
    truth = load_pool(load_workspace_config(init_workspace(tmp_path / "truth", config)), "train")
    blank_train_labels(config)
    ws = init_workspace(tmp_path / "ws", config)
    pool = _pool(ws)
    assert (pool.labels == -1).all()
    labeled = np.asarray(json.loads(round_paths(ws, 0).labeled.read_text())["ids"])
    with pytest.raises(DataError, match=r"round 000: labeled ids .* have no label; export them "
                                        r"with `mmal export rounds/000/labeled.json "
                                        r"--unlabeled-only`"):
        open_round(ws, 0).labels()

    exported = export_ids(ws, round_paths(ws, 0).labeled)
    import_labels(ws, 0, _fill(exported, truth))
    labels = open_round(ws, 0).labels()
    rows = pool.rows(labeled)
    np.testing.assert_array_equal(labels[rows], truth.labels[truth.rows(labeled)])
    assert (np.delete(labels, rows) == -1).all()  # nobody labeled the rest


def test_test_split_still_needs_every_label(tmp_path):
    config = make_tiny_dataset(tmp_path / "src", "manifest", modalities=["vector"])
    manifest = config.parent / "data" / "test.csv"
    text = manifest.read_text().splitlines()
    header = text[0].split(",")
    cells = text[1].split(",")
    cells[header.index("label")] = ""
    manifest.write_text("\n".join([text[0], ",".join(cells), *text[2:]]) + "\n")
    from mmal.config import load_config

    with pytest.raises(DataError, match=r"has no label \(test.csv line 2\); the test split"):
        load_pool(load_config(config), "test")


@pytest.mark.slow
def test_people_labels_reach_training_and_the_cache(tmp_path):
    """New pool without labels: train refuses, then export -> label -> train -> extract."""
    from mmal.cache import open_cache
    from mmal.extract import extract_round
    from mmal.train import train_round

    config = make_tiny_dataset(tmp_path / "src", "manifest", modalities=["vector"], n_train=12,
                               overrides={"al": {"initial_budget": 4}})
    truth = load_pool(load_workspace_config(init_workspace(tmp_path / "truth", config)), "train")
    blank_train_labels(config)
    ws = init_workspace(tmp_path / "ws", config)
    with pytest.raises(DataError, match="have no label; export them"):
        train_round(ws, 0, device="cpu", progress=False)
    assert not round_paths(ws, 0).model.exists()

    import_labels(ws, 0, _fill(export_ids(ws, round_paths(ws, 0).labeled), truth))
    train_round(ws, 0, device="cpu", progress=False)
    extract_round(ws, 0, device="cpu", progress=False)
    with open_cache(round_paths(ws, 0).cache) as cache:
        rows = truth.rows(cache.ids)
        np.testing.assert_array_equal(cache.labels[cache.labeled], truth.labels[rows][cache.labeled])
        assert (cache.labels[~cache.labeled] == -1).all()


def test_export_never_replaces_a_file_silently(ws):
    target = round_paths(ws, 0).labeled
    exported = export_ids(ws, target)
    exported.write_text("id,name,label\n1,1,cat\n")  # labels someone filled in
    with pytest.raises(DataError, match="already exists .* pass --force"):
        export_ids(ws, target)
    assert exported.read_text() == "id,name,label\n1,1,cat\n"
    result = CliRunner().invoke(cli, ["export", str(target), "--workspace", str(ws), "--force"])
    assert result.exit_code == 0, result.output
    assert exported.read_text().startswith("id,name,label")
    assert "cat" not in exported.read_text().splitlines()[1]


def test_train_and_extract_name_labeled_json_when_its_ids_are_not_in_the_pool(ws):
    from mmal.extract import extract_round
    from mmal.train import train_round

    train_round(ws, 0, device="cpu", progress=False)
    labeled = round_paths(ws, 0).labeled
    write_index(labeled, np.array([0, 1, 987654], dtype=np.int64), kind="labeled",
                provenance={"round": 0}, overwrite=True)
    for stage in (lambda: train_round(ws, 0, device="cpu", progress=False, force=True),
                  lambda: extract_round(ws, 0, device="cpu", progress=False)):
        with pytest.raises(DataError, match=f"^{labeled}: ids 987654 are not in the train split .*"
                                            "restore this round's labeled.json"):
            stage()
    assert round_paths(ws, 0).model.exists() and not round_paths(ws, 0).cache.exists()


def test_labels_that_replace_the_datasets_own_are_reported(ws):
    pool = _pool(ws)
    ids = json.loads(round_paths(ws, 0).labeled.read_text())["ids"]
    own = pool.class_names[pool.labels[pool.rows([ids[0]])[0]]]
    other = next(c for c in CLASSES if c != own)
    (ws / "fix.csv").write_text(f"id,label\n{ids[0]},{other}\n{ids[1]},"
                                f"{pool.class_names[pool.labels[pool.rows([ids[1]])[0]]]}\n")
    res = CliRunner().invoke(cli, ["label", "--round", "0", str(ws / "fix.csv"), "--workspace",
                                   str(ws)])
    assert res.exit_code == 0, res.output
    assert f"these labels replace the dataset's own for 1 ids: {ids[0]}" in res.output
    assert "every id added in round 000 has a label" in res.output  # the dataset labels the rest


def test_label_files_may_name_samples_by_their_own_ids(tmp_path):
    """With string ids in the data, people label by those names as well as by mmal's ids."""
    config = make_tiny_dataset(tmp_path / "src", "manifest", modalities=["vector"], n_train=10,
                               overrides={"al": {"initial_budget": 3}})
    rename_train_ids(config, lambda k, old: f"clip{old}")
    blank_train_labels(config)
    ws = init_workspace(tmp_path / "ws", config)
    pool = _pool(ws)
    ids = json.loads(round_paths(ws, 0).labeled.read_text())["ids"]
    names = [pool.names[pool.rows([i])[0]] for i in ids]
    assert all(n.startswith("clip") for n in names)
    (tmp_path / "l.csv").write_text(f"id,label\n{names[0]},{CLASSES[0]}\n{ids[1]},{CLASSES[1]}\n")
    result = import_labels(ws, 0, tmp_path / "l.csv")
    assert open_round(ws, 0).human_labels() == {ids[0]: [CLASSES[0]], ids[1]: [CLASSES[1]]}
    assert result.missing.tolist() == [ids[2]]
    assert result.show_ids(result.missing) == f"{ids[2]} ({names[2]})"  # messages show names too


def test_export_unlabeled_only_leaves_out_ids_that_have_a_label(blank_ws):
    ws, truth = blank_ws
    labeled = round_paths(ws, 0).labeled
    ids = json.loads(labeled.read_text())["ids"]
    (ws / "first.csv").write_text(f"id,label\n{ids[0]},{CLASSES[0]}\n")
    import_labels(ws, 0, ws / "first.csv")
    res = CliRunner().invoke(cli, ["export", str(labeled), "--workspace", str(ws),
                                   "--unlabeled-only", "--out", str(ws / "rest.csv")])
    assert res.exit_code == 0, res.output
    assert res.output == f"wrote {len(ids) - 1} ids to {ws / 'rest.csv'}\n"
    with (ws / "rest.csv").open(newline="") as fh:
        assert [int(r["id"]) for r in csv.DictReader(fh)] == ids[1:]


def test_label_csv_cells_may_hold_characters_splitlines_would_break_on(tmp_path):
    from mmal.labels import read_sheet

    path = tmp_path / "filled.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "name", "label", "text"])
        writer.writerow([3, "s3", "cat", "page\x0cbreak and\u2028more\x85"])
        writer.writerow([4, "s4", "dog", "two\nlines"])
    assert [(int(i), label, name) for _, i, label, name in read_sheet(path)] == [
        (3, "cat", "s3"), (4, "dog", "s4")]


def test_a_name_that_reads_as_another_samples_id_is_refused(tmp_path):
    config = make_tiny_dataset(tmp_path / "src", "manifest", modalities=["vector"], n_train=10,
                               overrides={"al": {"initial_budget": 10}})
    rename_train_ids(config, lambda k, old: "0005" if k == 0 else f"clip{k}")  # 0005 is id 0
    blank_train_labels(config)
    ws = init_workspace(tmp_path / "ws", config)
    (tmp_path / "l.csv").write_text(f"id,label\n0005,{CLASSES[0]}\n")
    with pytest.raises(DataError) as info:
        import_labels(ws, 0, tmp_path / "l.csv")
    assert str(info.value) == (f"{tmp_path / 'l.csv'}: line 2: id '0005' is ambiguous: mmal id "
                               "5 (clip5) or the sample named '0005' (0 (0005)); keep the "
                               "exported name column next to it")
    assert open_round(ws, 0).human_labels() == {}
    (tmp_path / "l.csv").write_text(f"id,label\n0,{CLASSES[0]}\nclip5,{CLASSES[1]}\n")
    import_labels(ws, 0, tmp_path / "l.csv")
    assert open_round(ws, 0).human_labels() == {0: [CLASSES[0]], 5: [CLASSES[1]]}
    # The exported file carries the name column, which settles either reading.
    (tmp_path / "n.csv").write_text(f"id,name,label\n0005,0005,{CLASSES[2]}\n5,clip5,"
                                    f"{CLASSES[2]}\n")
    import_labels(ws, 0, tmp_path / "n.csv")
    assert open_round(ws, 0).human_labels() == {0: [CLASSES[2]], 5: [CLASSES[2]]}


def test_init_force_keeps_people_labels_and_a_dropped_class_is_named(blank_ws, tmp_path):
    from mmal.errors import WorkspaceError

    ws, truth = blank_ws
    ids = json.loads(round_paths(ws, 0).labeled.read_text())["ids"]
    (tmp_path / "l.csv").write_text(f"id,label\n{ids[0]},{CLASSES[0]}\n")
    import_labels(ws, 0, tmp_path / "l.csv")
    config = ws / "mmal.toml"
    before = config.read_text()
    with pytest.raises(WorkspaceError, match="labels.json"):  # nothing lost to a re-init
        init_workspace(ws, config, force=True)
    assert config.read_text() == before
    classes = load_config(config).dataset.root / "classes.txt"
    classes.write_text("\n".join(CLASSES[1:]) + "\n")  # the class people used is gone
    with pytest.raises(DataError) as info:
        open_round(ws, 0).labels(require_labeled=False)
    assert str(info.value).startswith(
        f"{round_paths(ws, 0).root / 'labels.json'}: sample {ids[0]} is labeled {CLASSES[0]!r}, "
        "which is not in the class list")


def test_cli_next_says_how_many_new_ids_need_labels(blank_ws):
    ws, truth = blank_ws
    labeled0 = json.loads(round_paths(ws, 0).labeled.read_text())["ids"]
    out = _fill(export_ids(ws, round_paths(ws, 0).labeled), truth)
    import_labels(ws, 0, out)  # round 0 fully labeled
    new = [int(i) for i in truth.ids if int(i) not in labeled0][:2]
    res = CliRunner().invoke(cli, ["next", "--selection", str(_selection(ws, 0, new)),
                                   "--workspace", str(ws)])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[1].startswith(
        f"2 of them have no label yet ({new[0]}, {new[1]}): `mmal export "
        f"{round_paths(ws, 1).labeled} --unlabeled-only`")


def test_an_exported_file_imports_even_when_a_sample_is_named_like_another_id(tmp_path):
    config = make_tiny_dataset(tmp_path / "src", "manifest", modalities=["vector"], n_train=10,
                               overrides={"al": {"initial_budget": 10}})
    truth = load_pool(load_config(config), "train")
    rename_train_ids(config, lambda k, old: "1" if k == 9 else f"clip{k}")  # "1" is id 9
    blank_train_labels(config)
    ws = init_workspace(tmp_path / "ws", config)
    out = _fill(export_ids(ws, round_paths(ws, 0).labeled), truth)
    import_labels(ws, 0, out)
    got = open_round(ws, 0).human_labels()
    assert got == {int(r["id"]): [r["label"]] for r in _records(out)}


def test_an_import_succeeds_and_reports_while_another_label_names_a_dropped_class(blank_ws,
                                                                                   tmp_path):
    ws, _ = blank_ws
    ids = json.loads(round_paths(ws, 0).labeled.read_text())["ids"]
    (tmp_path / "a.csv").write_text(f"id,label\n{ids[0]},{CLASSES[0]}\n")
    import_labels(ws, 0, tmp_path / "a.csv")
    classes = load_config(ws / "mmal.toml").dataset.root / "classes.txt"
    classes.write_text("\n".join(CLASSES[1:]) + "\n")  # the class of ids[0]'s label is gone
    (tmp_path / "b.csv").write_text(f"id,label\n{ids[1]},{CLASSES[1]}\n")
    result = import_labels(ws, 0, tmp_path / "b.csv")  # b.csv itself is fine: no error
    assert result.imported == 1 and result.missing.tolist() == ids[2:]
    assert open_round(ws, 0).human_labels() == {ids[0]: [CLASSES[0]], ids[1]: [CLASSES[1]]}
    with pytest.raises(DataError, match=f"sample {ids[0]} is labeled {CLASSES[0]!r}"):
        open_round(ws, 0).labels()  # training names the stale label instead


HOSTILE_NAMES = ['=HYPERLINK("http://evil.example/","click")', "+SUM(1;2)", "@cmd", "-3",
                 "'=quoted", "'plain", "-1.5", "a=b"]  # (the manifest strips tabs)


def test_csv_export_neutralises_formula_cells_and_label_reads_them_back(tmp_path):
    """Names a spreadsheet would run as formulas get a leading ' (OWASP); import undoes it."""
    config = make_tiny_dataset(tmp_path / "src", "manifest", modalities=["text"], n_train=10,
                               overrides={"al": {"initial_budget": 10}})
    truth = load_pool(load_config(config), "train")
    rename_train_ids(config, lambda k, old: HOSTILE_NAMES[k] if k < len(HOSTILE_NAMES)
                     else f"clip{k}")
    blank_train_labels(config)
    ws = init_workspace(tmp_path / "ws", config)
    pool = _pool(ws)
    assert set(HOSTILE_NAMES) <= set(pool.names)  # the data itself keeps them as they are
    out = export_ids(ws, round_paths(ws, 0).labeled)
    records = _records(out)
    names = {int(r["id"]): r["name"] for r in records}
    for k, name in enumerate(HOSTILE_NAMES):
        guarded = "'" + name if name.lstrip("'")[:1] in ("=", "+", "-", "@", "\t") else name
        assert names[k] == guarded, name
    assert names[len(HOSTILE_NAMES)] == f"clip{len(HOSTILE_NAMES)}"
    assert all(not r[c].startswith(("=", "+", "-", "@", "\t", "\r"))
               for r in records for c in r)  # no cell a spreadsheet would evaluate
    records = _records(_fill(out, truth))
    from mmal.labels import read_sheet

    assert {int(i): name for _, i, _, name in read_sheet(out)} == {
        int(i): pool.names[pool.rows([int(i)])[0]] for i in names}  # names back unchanged
    import_labels(ws, 0, out)
    assert open_round(ws, 0).human_labels() == {int(r["id"]): [r["label"]] for r in records}
    # A sheet that names samples by their (guarded) names in the id column reads them too.
    (tmp_path / "by-name.csv").write_text(f"id,label\n'+SUM(1;2),{CLASSES[2]}\n"
                                          f"''=quoted,{CLASSES[2]}\n'-3,{CLASSES[2]}\n")
    import_labels(ws, 0, tmp_path / "by-name.csv")
    got = open_round(ws, 0).human_labels()
    assert [got[HOSTILE_NAMES.index(n)] for n in ("+SUM(1;2)", "'=quoted", "-3")] == [
        [CLASSES[2]]] * 3


@pytest.mark.parametrize("cell,guarded", [
    ("=1+2", "'=1+2"), ("+1", "'+1"), ("-3", "'-3"), ("@x", "'@x"), ("\tx", "'\tx"),
    ("\rx", "'\rx"), ("'=x", "''=x"), ("''-x", "'''-x"), ("'a", "'a"), ("'", "'"), ("", ""),
    ("a=b", "a=b"), ("cat", "cat"), (7, 7), (-3, -3), (None, None)])
def test_guard_cell_is_undone_by_unguard_cell(cell, guarded):
    from mmal.labels import guard_cell, unguard_cell

    assert guard_cell(cell) == guarded and unguard_cell(guarded) == cell
