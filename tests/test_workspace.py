"""Workspaces: init (config + round 0), next (labeled(r+1) = labeled(r) + selection), no overwrite."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mmal.cache.index import read_index, write_index
from mmal.cli import cli
from mmal.config import load_config
from mmal.data import load_pool
from mmal.errors import ConfigError, IndexFileError, WorkspaceError
from mmal.workspace import (
    init_workspace,
    latest_round,
    load_workspace_config,
    next_round,
    read_labeled,
    round_paths,
)
from tests.fixtures_data import CLASSES, blank_train_labels, make_tiny_dataset, rename_train_ids


def _selection(path, ids, cache="cache.h5"):
    provenance = {"strategy": "random", "params": {}, "seed": 0, "budget": len(ids),
                  "cache": str(cache), "cache_fingerprint": "x", "backend": "numpy",
                  "wall_time_s": 0.0}
    return write_index(path, ids, kind="selection", provenance=provenance)


@pytest.fixture
def uci(tmp_path):
    return make_tiny_dataset(tmp_path, "uci", overrides={"al": {"initial_budget": 20, "seed": 4}})


def test_init_writes_explicit_config_and_random_round_zero(tmp_path, uci):
    ws = init_workspace(tmp_path / "ws", uci)
    config = load_workspace_config(ws)
    assert config.to_dict() == load_config(uci).to_dict()
    assert (ws / "mmal.toml").read_text().startswith("# Written by `mmal init` from ")
    index = read_index(round_paths(ws, 0).labeled)
    pool = load_pool(config, "train")
    assert index.kind == "labeled" and len(index) == 20 and np.isin(index.ids, pool.ids).all()
    assert index.provenance["pool_fingerprint"] == pool.fingerprint()
    again = init_workspace(tmp_path / "ws2", uci)
    assert np.array_equal(read_labeled(again, 0), index.ids)  # same seed, same draw
    other = make_tiny_dataset(tmp_path / "o", "uci", overrides={"al": {"initial_budget": 20}})
    assert not np.array_equal(read_labeled(init_workspace(tmp_path / "ws3", other), 0), index.ids)


@pytest.mark.parametrize("layout,absent,present", [
    ("manifest", ("views", "standardize", "test_fraction", "hf_name", "label_column"),
     ("classes", "multi_label", "column")),
    ("uci", ("train =", "test =", "classes", "multi_label", "column", "hf_name"),
     ("views", "standardize", "test_fraction")),
])
def test_init_writes_only_the_keys_of_the_dataset_kind(tmp_path, layout, absent, present):
    """A manifest workspace got views = ["fac", "fou"] and standardize = true, never used."""
    ws = init_workspace(tmp_path / "ws", make_tiny_dataset(tmp_path, layout,
                                                           modalities=["vector"]))
    text = (ws / "mmal.toml").read_text()
    assert [k for k in absent if k in text] == [] and all(k in text for k in present)


def test_workspace_config_works_from_anywhere(tmp_path):
    path = make_tiny_dataset(tmp_path / "src", "manifest", modalities=["vector"])
    ws = init_workspace(tmp_path / "ws", path)
    (tmp_path / "src" / "manifest.toml").unlink()
    assert len(load_pool(load_workspace_config(ws), "train")) == 9


def test_init_refuses_existing_workspace_unless_force(tmp_path, uci):
    ws = init_workspace(tmp_path / "ws", uci)
    before = (ws / "mmal.toml").read_text()
    with pytest.raises(WorkspaceError) as info:
        init_workspace(ws, uci)
    assert str(info.value) == (f"{ws}: is already a workspace (mmal.toml or rounds/000/labeled.json "
                               "exists); pass --force to start it over or choose a new DIR")
    assert (ws / "mmal.toml").read_text() == before
    init_workspace(ws, uci, force=True)
    round_paths(ws, 0).model.write_bytes(b"model")
    with pytest.raises(WorkspaceError) as info:
        init_workspace(ws, uci, force=True)
    assert str(info.value) == (f"{ws}: holds results built on what would be replaced "
                               "(rounds/000/model.pt); --force only replaces mmal.toml and "
                               "rounds/000/labeled.json, so move those away first or use a new "
                               "workspace")


def test_init_force_is_not_stopped_by_lock_or_dead_temp_files(tmp_path, uci):
    ws = init_workspace(tmp_path / "ws", uci)
    later = round_paths(ws, 1).root
    later.mkdir(parents=True)
    (later / ".lock").touch()
    (later / ".labeled.json.5bce98f7-999999.abcdefgh.tmp").write_text("{")  # a killed write
    assert init_workspace(ws, uci, force=True) == ws
    (later / "model.pt").write_bytes(b"x")  # a result is still protected
    with pytest.raises(WorkspaceError, match="holds results built on what would be replaced"):
        init_workspace(ws, uci, force=True)


def test_init_with_bad_input_writes_nothing(tmp_path, uci):
    bad = tmp_path / "bad.toml"
    bad.write_text(uci.read_text().replace('encoder = "mlp"', 'encoder = "transformer"', 1))
    with pytest.raises(ConfigError, match="modalities.fac.encoder"):
        init_workspace(tmp_path / "ws", bad)
    big = make_tiny_dataset(tmp_path / "b", "uci", overrides={"al": {"initial_budget": 1601}})
    with pytest.raises(ConfigError) as info:
        init_workspace(tmp_path / "ws", big)
    assert str(info.value) == (f"{big}: key 'al.initial_budget' is 1601 but the train split "
                               "holds 1600 samples; lower it")
    one = make_tiny_dataset(tmp_path / "o", "uci", overrides={"al": {"initial_budget": 1}})
    load_config(one)  # loads (workspaces made before the rule keep working) ...
    with pytest.raises(ConfigError) as info:  # ... but no new workspace starts from one sample
        init_workspace(tmp_path / "ws", one)
    assert str(info.value) == (f"{one}: key 'al.initial_budget' is 1; round 0 needs at least 2 "
                               "labeled samples to train on")
    assert not (tmp_path / "ws" / "mmal.toml").exists()
    assert not round_paths(tmp_path / "ws", 0).labeled.exists()


def test_next_round_appends_the_selection(tmp_path, uci):
    ws = init_workspace(tmp_path / "ws", uci)
    labeled = read_labeled(ws, 0)
    pool_ids = load_pool(load_workspace_config(ws), "train").ids
    pick = np.setdiff1d(pool_ids, labeled)[[5, 1, 9]]
    sel = _selection(round_paths(ws, 0).selections / "random-3.json", pick)
    assert next_round(ws, sel) == 1
    assert read_labeled(ws, 1).tolist() == labeled.tolist() + pick.tolist()
    assert latest_round(ws) == 1 and read_labeled(ws).tolist() == read_labeled(ws, 1).tolist()
    provenance = read_index(round_paths(ws, 1).labeled).provenance
    assert provenance["added"] == 3 and provenance["strategy"] == "random"
    # a selection outside any round folder builds on the round whose cache it was made from
    pick2 = np.setdiff1d(pool_ids, read_labeled(ws, 1))[:2]
    with pytest.raises(IndexFileError, match="was not made from any round's cache"):
        next_round(ws, _selection(tmp_path / "stray.json", pick2))
    assert not round_paths(ws, 2).labeled.exists()
    mine = _selection(tmp_path / "mine.json", pick2, cache=round_paths(ws, 1).cache)
    assert next_round(ws, mine) == 2
    assert len(read_labeled(ws, 2)) == 25


def test_next_round_refusals(tmp_path, uci):
    ws = init_workspace(tmp_path / "ws", uci)
    labeled = read_labeled(ws, 0)
    pool_ids = load_pool(load_workspace_config(ws), "train").ids
    sel_dir = round_paths(ws, 0).selections
    overlap = _selection(sel_dir / "overlap.json", [int(labeled[0]), int(labeled[3])])
    with pytest.raises(IndexFileError) as info:
        next_round(ws, overlap)
    shown = ", ".join(str(i) for i in sorted([int(labeled[0]), int(labeled[3])]))
    assert str(info.value) == (f"{overlap}: ids {shown} are already labeled in round 000; "
                               "the selection was made for another round")
    test_id = int(np.setdiff1d(np.arange(2000), pool_ids)[0])
    foreign = _selection(sel_dir / "foreign.json", [test_id])
    with pytest.raises(IndexFileError) as info:
        next_round(ws, foreign)
    assert str(info.value) == (f"{foreign}: ids {test_id} are not in the train pool of this "
                               "workspace; the selection belongs to another dataset")
    with pytest.raises(IndexFileError, match="is a labeled index file; pass a selection"):
        next_round(ws, round_paths(ws, 0).labeled)
    good = _selection(sel_dir / "good.json", np.setdiff1d(pool_ids, labeled)[:4])
    next_round(ws, good)
    first = read_labeled(ws, 1)
    other = _selection(sel_dir / "other.json", np.setdiff1d(pool_ids, labeled)[4:6])
    with pytest.raises(WorkspaceError) as info:
        next_round(ws, other)
    assert str(info.value) == (f"{round_paths(ws, 1).labeled}: already exists (round 001 is "
                               "started); pass "
                               "--force to replace its labeled set")
    assert np.array_equal(read_labeled(ws, 1), first)
    assert next_round(ws, other, force=True) == 1 and len(read_labeled(ws, 1)) == 22
    round_paths(ws, 1).cache.write_bytes(b"cache")
    with pytest.raises(WorkspaceError, match=r"\(rounds/001/cache.h5\); --force only replaces "):
        next_round(ws, good, force=True)


def test_read_labeled_of_a_missing_round(tmp_path, uci):
    ws = init_workspace(tmp_path / "ws", uci)
    with pytest.raises(WorkspaceError) as info:
        read_labeled(ws, 4)
    assert str(info.value) == (f"{round_paths(ws, 4).labeled}: no labeled set for round 4; start "
                               "the round with `mmal next --selection FILE`")


def test_cli_init_and_next(tmp_path, uci):
    runner = CliRunner()
    ws = tmp_path / "ws"
    result = runner.invoke(cli, ["init", str(ws), "--config", str(uci)])
    assert result.exit_code == 0, result.output
    assert result.output == (f"created workspace {ws}: round 0's labeled set of 20 ids in "
                             f"{ws}/rounds/000/labeled.json\n")
    result = runner.invoke(cli, ["init", str(ws), "--config", str(uci)])
    assert result.exit_code == 1
    assert result.output == (f"Error: {ws}: is already a workspace (mmal.toml or "
                             "rounds/000/labeled.json exists); pass --force to start it over or "
                             "choose a new DIR\n")
    pool_ids = load_pool(load_workspace_config(ws), "train").ids
    sel = _selection(tmp_path / "s.json", np.setdiff1d(pool_ids, read_labeled(ws, 0))[:5],
                     cache=round_paths(ws, 0).cache)
    result = runner.invoke(cli, ["next", "--selection", str(sel), "--workspace", str(ws)])
    assert result.exit_code == 0, result.output
    assert result.output == f"started round 001: 25 labeled ids in {ws}/rounds/001/labeled.json\n"
    result = runner.invoke(cli, ["next", "--selection", str(sel), "--workspace", str(tmp_path)])
    assert result.exit_code == 1 and result.output.startswith(f"Error: {tmp_path}: not inside")
    doc = json.loads(round_paths(ws, 1).labeled.read_text())
    assert doc["count"] == 25 and doc["kind"] == "labeled"


def test_rows_inserted_into_a_row_numbered_manifest_are_caught(tmp_path):
    """String ids are row numbers: a row inserted later must not silently relabel the sample set."""
    from mmal.errors import DataError

    config = make_tiny_dataset(tmp_path / "src", "manifest", modalities=["vector"],
                               overrides={"al": {"initial_budget": 3}})
    manifest = rename_train_ids(config, lambda k, old: f"clip{old}")
    header, *rows = manifest.read_text().splitlines()
    ws = init_workspace(tmp_path / "ws", config)
    pool = load_pool(load_workspace_config(ws), "train")
    labeled = read_labeled(ws, 0)
    assert read_labeled(ws, 0, pool=pool).tolist() == labeled.tolist()
    assert "names_fingerprint" in read_index(round_paths(ws, 0).labeled).provenance

    # Appending a sample at the end keeps every id's name: fine.
    manifest.write_text(manifest.read_text() + f"clip99,{rows[0].split(',', 2)[1]},"
                        f"{rows[0].split(',', 2)[2]}\n")
    read_labeled(ws, 0, pool=load_pool(load_workspace_config(ws), "train"))
    # Inserting one at the top shifts every row number.
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0], "clipnew" + lines[1][lines[1].index(","):]]
                                  + lines[1:]) + "\n")
    moved = load_pool(load_workspace_config(ws), "train")
    message = (f"{round_paths(ws, 0).labeled}: its ids no longer name the same samples of "
               f"{manifest} (its ids are row numbers, and rows were inserted, removed or "
               "reordered); restore that file, or start a new workspace with `mmal init`")
    with pytest.raises(DataError) as info:
        read_labeled(ws, 0, pool=moved)
    assert str(info.value) == message
    selection = _selection(round_paths(ws, 0).selections / "random-1.json",
                           np.setdiff1d(moved.ids, labeled)[:1])
    with pytest.raises(DataError, match="its ids no longer name the same samples"):
        next_round(ws, selection)
    assert not round_paths(ws, 1).labeled.exists()
    # An annotator must not get (or return labels for) shifted samples either.
    from mmal.annotation import export_ids, import_labels

    for index in (round_paths(ws, 0).labeled, selection):
        with pytest.raises(DataError, match="its ids no longer name the same samples"):
            export_ids(ws, index, out=tmp_path / "todo.csv")
    assert not (tmp_path / "todo.csv").exists()
    (tmp_path / "labels.csv").write_text(f"id,label\n{labeled[0]},{CLASSES[0]}\n")
    with pytest.raises(DataError, match="its ids no longer name the same samples"):
        import_labels(ws, 0, tmp_path / "labels.csv")


@pytest.mark.parametrize("having,todo", [("model.pt", "run `mmal train` first"),
                                         ("cache.h5", "run `mmal train`, then `mmal extract`")])
def test_missing_stage_output_says_which_command_makes_it(tmp_path, uci, having, todo):
    ws = init_workspace(tmp_path / "ws", uci)
    with pytest.raises(WorkspaceError) as info:
        latest_round(ws, having=having)
    assert str(info.value) == f"{ws}: no round with {having} yet; {todo}"


def test_next_warns_when_the_round_was_extracted_again_after_the_selection(tmp_path, uci, caplog):
    from mmal.cache import open_cache
    from mmal.cache.synthetic import make_synthetic_cache

    ws = init_workspace(tmp_path / "ws", uci)
    cache = make_synthetic_cache(round_paths(ws, 0).cache, num_samples=30, seed=1)
    with open_cache(cache) as opened:
        current = opened.fingerprint
    pool_ids = load_pool(load_workspace_config(ws), "train").ids
    pick = np.setdiff1d(pool_ids, read_labeled(ws, 0))[:2]
    made_from_now = _selection(round_paths(ws, 0).selections / "a.json", pick)
    doc = json.loads(made_from_now.read_text())
    doc["provenance"]["cache_fingerprint"] = current
    made_from_now.write_text(json.dumps(doc))
    with caplog.at_level("WARNING", logger="mmal.workspace"):
        next_round(ws, made_from_now)
    assert caplog.text == ""
    stale = _selection(round_paths(ws, 0).selections / "b.json", pick)  # fingerprint "x"
    with caplog.at_level("WARNING", logger="mmal.workspace"):
        next_round(ws, stale, force=True)
    assert "b.json was made from an earlier" in caplog.text
    assert "rerun `mmal select` to pick from the current cache" in caplog.text


def test_cli_init_on_an_unlabeled_pool_says_to_label_round_0_first(tmp_path):
    config = make_tiny_dataset(tmp_path / "src", "manifest", modalities=["vector"],
                               overrides={"al": {"initial_budget": 3}})
    blank_train_labels(config)
    ws = tmp_path / "ws"
    result = CliRunner().invoke(cli, ["init", str(ws), "--config", str(config)])
    assert result.exit_code == 0, result.output
    ids = read_labeled(ws, 0)
    assert result.output.splitlines()[1] == (
        f"3 of them have no label yet ({', '.join(map(str, ids))}): `mmal export "
        f"{round_paths(ws, 0).labeled} --unlabeled-only`, fill in the label column, then `mmal "
        f"label --round 0 FILE --workspace {ws}` before `mmal train`")  # run from outside ws
    hinted = CliRunner().invoke(cli, ["export", str(round_paths(ws, 0).labeled),
                                      "--unlabeled-only"])  # works as printed, from here
    assert hinted.exit_code == 0 and hinted.output.startswith("wrote 3 ids to ")


def test_init_checks_the_test_split_too(tmp_path):
    from mmal.errors import DataError

    config = make_tiny_dataset(tmp_path / "src", "manifest", modalities=["vector"],
                               overrides={"al": {"initial_budget": 3}})
    test = load_config(config).dataset.root / "test.csv"
    header, first, *rest = test.read_text().splitlines()
    test.write_text("\n".join([header, first.replace(first.split(",")[1], "zebra", 1), *rest])
                    + "\n")
    with pytest.raises(DataError, match=r"label 'zebra' is not in the class list .*test.csv"):
        init_workspace(tmp_path / "ws", config)
    assert not (tmp_path / "ws" / "mmal.toml").exists()


def test_a_selections_ids_are_checked_against_the_cache_it_came_from(tmp_path):
    """Rows inserted after the labeled ids but before the selected ones must not go unnoticed."""
    from mmal.annotation import export_ids
    from mmal.errors import DataError
    from mmal.extract import extract_round
    from mmal.select import select
    from mmal.train import train_round

    config = make_tiny_dataset(tmp_path / "src", "manifest", modalities=["vector"], n_train=12,
                               overrides={"al": {"initial_budget": 3}, "train": {"epochs": 1}})
    manifest = rename_train_ids(config, lambda k, old: f"clip{old}")
    ws = init_workspace(tmp_path / "ws", config)
    train_round(ws, 0, device="cpu", progress=False)
    extract_round(ws, 0, device="cpu", progress=False)
    index = select(round_paths(ws, 0).cache, "random", budget=3, seed=0)
    export_ids(ws, index.path, out=tmp_path / "before.csv")  # nothing moved yet: fine
    lines = manifest.read_text().splitlines()
    last_labeled = int(max(read_labeled(ws, 0)))
    at = 1 + last_labeled + 1  # header, then rows 0..last_labeled stay where they were
    lines.insert(at, "clipnew" + lines[at][lines[at].index(","):])
    manifest.write_text("\n".join(lines) + "\n")
    assert any(i > last_labeled for i in index.ids)  # a selected id now names another sample
    read_labeled(ws, 0, pool=load_pool(load_workspace_config(ws), "train"))  # unaffected
    for call in (lambda: export_ids(ws, index.path, out=tmp_path / "x.csv"),
                 lambda: next_round(ws, index.path)):
        with pytest.raises(DataError, match=r"cache.h5: its ids no longer name the same"):
            call()
    assert not round_paths(ws, 1).labeled.exists() and not (tmp_path / "x.csv").exists()
    assert index.provenance["cache_names_fingerprint"]  # select copied it from the cache

    # A copy outside the round folders, naming its cache relative to the workspace, is
    # checked the same way wherever the command runs from.
    doc = json.loads(index.path.read_text())
    doc["provenance"]["cache"] = "rounds/000/cache.h5"
    stray = tmp_path / "stray.json"
    stray.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"cache.h5: its ids no longer name the same"):
        export_ids(ws, stray, out=tmp_path / "x.csv")


def test_removed_rows_are_named_with_the_file_that_recorded_the_ids(tmp_path):
    from mmal.errors import DataError

    config = make_tiny_dataset(tmp_path / "src", "manifest", modalities=["vector"], n_train=12,
                               overrides={"al": {"initial_budget": 3}})
    ws = init_workspace(tmp_path / "ws", config)
    manifest = load_config(config).dataset.root / "train.csv"
    labeled = read_labeled(ws, 0)
    lines = manifest.read_text().splitlines()
    gone = int(labeled[-1])
    manifest.write_text("\n".join(line for line in lines if not line.startswith(f"{gone},"))
                        + "\n")
    pool = load_pool(load_workspace_config(ws), "train")
    with pytest.raises(DataError) as info:
        pool.check_names(labeled, "recorded", "labeled.json")
    assert str(info.value) == (f"labeled.json: ids {gone} are no longer in {manifest} (rows were "
                               "removed); restore that file, or start a new workspace with "
                               "`mmal init`")


def test_ids_outside_int64_are_refused_naming_the_file(tmp_path, uci):
    """An id of 10**20 in a selection or labeled set was an OverflowError traceback."""
    ws = init_workspace(tmp_path / "ws", uci)
    big = 10**20
    rule = (f"holds {big}, outside the range of sample ids (64-bit integers, "
            "-9223372036854775808 to 9223372036854775807); the file was edited or made by "
            "another tool: restore it, or write it again with mmal")
    sel = _selection(tmp_path / "s.json", [1], cache=round_paths(ws, 0).cache)
    doc = json.loads(sel.read_text())
    sel.write_text(json.dumps({**doc, "ids": [big]}))
    runner = CliRunner()
    result = runner.invoke(cli, ["next", "--selection", str(sel), "--workspace", str(ws)])
    assert result.exit_code == 1
    assert result.output == f"Error: {sel}: field 'ids' {rule}\n"
    labeled = round_paths(ws, 0).labeled
    doc = json.loads(labeled.read_text())
    labeled.write_text(json.dumps({**doc, "ids": [*doc["ids"][:-1], big]}))
    result = runner.invoke(cli, ["train", "--workspace", str(ws), "--device", "cpu"])
    assert result.exit_code == 1
    assert result.output == f"Error: {labeled}: field 'ids' {rule}\n"
    with pytest.raises(IndexFileError, match=r"ids holds -9223372036854775809, outside"):
        write_index(tmp_path / "w.json", [-(2**63) - 1], kind="labeled", provenance={})
    from mmal.labels import write_labels_file

    labeled.write_text(json.dumps(doc))
    labels = write_labels_file(round_paths(ws, 0).labels, {big: ["cat"]}, round=0,
                               class_names=["cat"], multi_label=False, sources=[])
    result = runner.invoke(cli, ["train", "--workspace", str(ws), "--device", "cpu"])
    assert result.exit_code == 1
    assert result.output == (f"Error: {labels}: field 'labels' holds ids {big}, outside the "
                             "range of sample ids (64-bit integers); the file was edited: "
                             "restore it, or move it away\n")


def test_a_hand_edited_labeled_set_is_told_from_renamed_samples(tmp_path, uci):
    """Edited ids in labeled.json were reported as "samples were renamed"."""
    ws = init_workspace(tmp_path / "ws", uci)
    labeled = round_paths(ws, 0).labeled
    doc = json.loads(labeled.read_text())
    assert "ids_fingerprint" in doc["provenance"]
    pool = load_pool(load_workspace_config(ws), "train")
    spare = int(np.setdiff1d(pool.ids, doc["ids"])[0])
    edits = {"replaced": [*doc["ids"][:-1], spare], "reordered": doc["ids"][::-1],
             "added": [*doc["ids"], spare]}
    runner = CliRunner()
    for what, ids in edits.items():
        labeled.write_text(json.dumps({**doc, "ids": ids, "count": len(ids)}))
        result = runner.invoke(cli, ["train", "--workspace", str(ws), "--device", "cpu"])
        assert result.exit_code == 1, what
        assert result.output == (
            f"Error: {labeled}: its ids were edited (they differ from the ids recorded when mmal "
            "wrote it); restore the file as mmal wrote it: labeled sets change only through "
            "`mmal init` and `mmal next`\n"), what
    # A file from before ids were recorded cannot tell the two apart, and says so.
    del doc["provenance"]["ids_fingerprint"]
    labeled.write_text(json.dumps({**doc, "ids": edits["replaced"]}))
    result = runner.invoke(cli, ["train", "--workspace", str(ws), "--device", "cpu"])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {labeled}: its ids no longer name the same samples of {pool.origin} (this "
        "file's ids were edited, or samples were renamed); restore the data or this file as "
        "mmal wrote it, or start a new workspace with `mmal init`\n")
    labeled.write_text(json.dumps(doc))  # restored: fine again
    assert read_labeled(ws, 0, pool=pool).tolist() == doc["ids"]


def test_next_refuses_an_empty_selection(tmp_path, uci):
    """A selection of 0 ids started a round identical to the one before."""
    ws = init_workspace(tmp_path / "ws", uci)
    empty = _selection(round_paths(ws, 0).selections / "empty.json", [])
    result = CliRunner().invoke(cli, ["next", "--selection", str(empty), "--workspace", str(ws)])
    assert result.exit_code == 1
    assert result.output == (f"Error: {empty}: field 'ids' is empty, and a round with nothing "
                             "added would repeat the one before; pass a selection of at least "
                             "one id (`mmal select --budget N`)\n")
    assert not round_paths(ws, 1).labeled.exists()
    # and `mmal select` never writes one: a budget of 0 is refused
    from mmal.cache.synthetic import make_synthetic_cache

    cache = make_synthetic_cache(tmp_path / "pool.h5", num_samples=30, seed=1)
    result = CliRunner().invoke(cli, ["select", "-s", "random", "-b", "0", "--cache", str(cache),
                                      "--out", str(tmp_path / "none.json")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "budget must be at least 1, got 0" in result.output
    assert not (tmp_path / "none.json").exists()
