"""The Round handle: which round open_round picks, what it keeps, the overwrite rule, stages fed a Round."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from mmal.annotation import import_labels
from mmal.cli import cli
from mmal.errors import CacheError, WorkspaceError
from mmal.models.checkpoint import is_checkpoint
from mmal.workspace import CONFIG_NAME, Round, next_round, open_round, read_labeled, round_paths
from tests.fixtures_data import CLASSES, blank_train_labels, make_tiny_dataset
from tests.models.tiny import selected_workspace


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory):
    """A UCI workspace: round 0 trained, extracted and selected from; round 1 started."""
    ws, selection = selected_workspace(tmp_path_factory.mktemp("round"))
    r0 = open_round(ws, 0)
    assert next_round(r0, selection) == 1
    return ws


def test_open_round_picks_the_newest_round_having_the_file(two_rounds):
    assert open_round(two_rounds).number == 1  # labeled.json
    assert open_round(two_rounds, having="model.pt").number == 0
    assert open_round(two_rounds, having="cache.h5").number == 0
    assert open_round(two_rounds, 1).paths == round_paths(two_rounds, 1)
    with pytest.raises(WorkspaceError, match="no round with model.pt yet; run `mmal train`"):
        open_round(two_rounds.parent / "empty-ws", having="model.pt")


def test_a_round_is_passed_through_and_a_clashing_number_refused(two_rounds):
    r1 = open_round(two_rounds, 1)
    assert open_round(r1) is r1 and open_round(r1, 1) is r1
    with pytest.raises(WorkspaceError, match="is round 001, not round 000"):
        open_round(r1, 0)


def test_a_round_loads_its_pools_once_and_checks_its_labeled_set(two_rounds, monkeypatch):
    import mmal.workspace as workspace

    calls = []
    real = workspace.load_pool
    monkeypatch.setattr(workspace, "load_pool", lambda c, s: calls.append(s) or real(c, s))
    r1 = open_round(two_rounds, 1)
    np.testing.assert_array_equal(r1.labeled, read_labeled(two_rounds, 1))
    assert len(r1.labeled) == 25 and r1.pool("train") is r1.pool("train")
    r1.pool("test")
    np.testing.assert_array_equal(r1.pool("train").ids[r1.labeled_rows], r1.labeled)
    assert calls == ["train", "test"]


def test_claim_is_the_one_overwrite_rule(two_rounds):
    r0 = open_round(two_rounds, 0)
    model = dict(what="an mmal model checkpoint", is_kind=is_checkpoint)
    with pytest.raises(WorkspaceError) as info:
        r0.claim(r0.paths.model, False, "retrain round 000", **model)
    assert str(info.value) == f"{r0.paths.model}: already exists; pass --force to retrain round 000"
    assert r0.claim(r0.paths.model, True, "retrain round 000", **model) == r0.paths.model
    assert r0.claim(r0.paths.root / "new.txt", False, "x", **model) == r0.paths.root / "new.txt"
    with pytest.raises(WorkspaceError, match="is not an mmal model checkpoint; --force replaces"):
        r0.claim(r0.paths.labeled, True, "x", **model)


def test_checked_cache_refuses_a_cache_of_another_model(two_rounds, tmp_path):
    r0 = open_round(two_rounds, 0)
    assert r0.checked_cache() == r0.paths.cache
    saved = r0.paths.model.read_bytes()
    try:
        r0.paths.model.write_bytes(saved + b"changed")
        with pytest.raises(CacheError, match="rerun `mmal extract --force` for this round"):
            r0.checked_cache()
    finally:
        r0.paths.model.write_bytes(saved)


def test_select_from_a_workspace_round_needs_its_cache_not_its_config(two_rounds, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(two_rounds, copy)
    (copy / CONFIG_NAME).unlink()
    out = tmp_path / "picks.json"
    result = CliRunner().invoke(cli, ["select", "-s", "random", "-b", "3", "--workspace",
                                      str(copy), "--round", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file()


def test_labels_of_a_round_are_current_after_an_import(tmp_path):
    config = make_tiny_dataset(tmp_path / "src", "manifest", modalities=["vector"], n_train=12,
                               overrides={"al": {"initial_budget": 4}})
    blank_train_labels(config)
    from mmal.workspace import init_workspace

    ws = init_workspace(tmp_path / "ws", config)
    r0 = open_round(ws, 0)
    assert isinstance(r0, Round) and len(r0.unlabeled_ids()) == 4
    (tmp_path / "l.csv").write_text(f"id,label\n{r0.labeled[0]},{CLASSES[0]}\n")
    import_labels(r0, None, tmp_path / "l.csv")
    assert r0.unlabeled_ids().tolist() == r0.labeled[1:].tolist()
    assert r0.human_labels() == {int(r0.labeled[0]): [CLASSES[0]]}
