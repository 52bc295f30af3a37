"""``mmal.select.select``: validation, determinism, index and diagnostics files, no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mmal.cache import open_cache, read_index
from mmal.errors import IndexFileError, SelectionError
from mmal.select import Selection, Strategy, select
from mmal.select import registry as registry_module
from mmal.select.api import default_output, diagnostics_path

MINE = ["badge", "bmmal", "random"]
KINDS = ["concat2", "featuresum2", "concat3", "featuresum3", "sum2", "nlgate2", "multilabel",
         "float16"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("strategy", MINE)
def test_every_strategy_runs_on_every_cache_kind(cache_factory, tmp_path, strategy, kind):
    path = cache_factory(kind)
    index = select(path, strategy, 9, seed=2, out=tmp_path / "s.json")
    with open_cache(path) as cache:
        labeled_ids = set(cache.ids[cache.labeled].tolist())
        assert set(index.ids.tolist()) <= set(cache.ids.tolist())
    assert len(index.ids) == 9 == len(set(index.ids.tolist()))
    assert not labeled_ids & set(index.ids.tolist())


@pytest.mark.parametrize("strategy", MINE)
def test_same_cache_strategy_and_seed_give_the_same_index_file(cache_factory, tmp_path, strategy):
    path = cache_factory("concat2")
    a = select(path, strategy, 20, seed=7, out=tmp_path / "a.json")
    b = select(path, strategy, 20, seed=7, out=tmp_path / "b.json")
    c = select(path, strategy, 20, seed=8, out=tmp_path / "c.json")
    np.testing.assert_array_equal(a.ids, b.ids)
    assert not np.array_equal(a.ids, c.ids)
    doc_a, doc_b = (json.loads(p.read_text()) for p in (a.path, b.path))
    assert doc_a["ids"] == doc_b["ids"]
    assert doc_a["provenance"]["params"] == doc_b["provenance"]["params"]


def test_provenance_and_default_output(cache_factory):
    path = cache_factory("concat3")
    index = select(path, "bmmal", 5, seed=1, params={"block_size": 2}, overwrite=True)
    assert index.path == default_output(path, "bmmal", 5, 1) == path.parent / "selections" / "bmmal-b5-s1.json"
    prov = index.provenance
    for key in ("strategy", "params", "seed", "budget", "cache", "cache_fingerprint", "backend",
                "wall_time_s", "mmal_version", "diagnostics", "summary"):
        assert key in prov
    assert prov["params"] == {"precision": "float32", "block_size": 2}
    with open_cache(path) as cache:
        assert prov["cache_fingerprint"] == cache.fingerprint
    assert prov["backend"] == "numpy" and prov["strategy"] == "bmmal" and prov["budget"] == 5
    assert set(prov["summary"]["subpools"]) == {"m0", "m1", "m2"}


@pytest.mark.parametrize("strategy", ["badge", "bmmal"])
def test_provenance_records_the_effective_defaults(cache_factory, tmp_path, strategy):
    from mmal.select.kmeanspp import DEFAULT_BLOCK_SIZE

    index = select(cache_factory("concat2"), strategy, 3, out=tmp_path / "s.json")
    assert index.provenance["params"] == {"precision": "float32", "block_size": DEFAULT_BLOCK_SIZE}
    assert DEFAULT_BLOCK_SIZE == 256  # the default docs/selection.md states


def test_a_forced_select_whose_index_cannot_be_written_leaves_the_older_pair(
        cache_factory, tmp_path, monkeypatch):
    import errno

    import mmal.select.api as api

    path, out = cache_factory("concat2"), tmp_path / "pick.json"
    select(path, "bmmal", 4, out=out)
    before = (out.read_bytes(), diagnostics_path(out).read_bytes())

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(api, "write_index", full_disk)
    with pytest.raises(OSError):
        select(path, "badge", 4, out=out, overwrite=True)
    assert (out.read_bytes(), diagnostics_path(out).read_bytes()) == before  # still a pair
    assert sorted(p.name for p in tmp_path.iterdir() if "pick" in p.name) == [
        ".pick.json.lock", "pick.diagnostics.npz", "pick.json"]  # and no backup left behind


def test_diagnostics_file_is_aligned_with_unlabeled_ids(cache_factory, tmp_path):
    path = cache_factory("concat2")
    index = select(path, "bmmal", 4, out=tmp_path / "pick.json")
    diag_path = diagnostics_path(index.path)
    assert diag_path.name == "pick.diagnostics.npz" == index.provenance["diagnostics"]
    diag = np.load(diag_path)
    with open_cache(path) as cache:
        np.testing.assert_array_equal(diag["ids"], cache.ids[~cache.labeled])
    n = len(diag["ids"])
    assert diag["phi"].shape == diag["Phi"].shape == diag["weights"].shape == (n, 2)
    assert diag["rho"].shape == (n,)
    assert diag["modalities"].tolist() == ["m0", "m1"]
    np.testing.assert_allclose(diag["rho"], np.abs(diag["Phi"][:, 0] - diag["Phi"][:, 1]))
    # Replacing the selection replaces its diagnostics (random gets the balance ones too).
    select(path, "random", 4, out=tmp_path / "pick.json", overwrite=True)
    assert str(np.load(diag_path)["strategy"]) == "random"


@pytest.mark.parametrize(("budget", "message"), [
    (0, "budget must be at least 1, got 0"),
    (-3, "budget must be at least 1, got -3"),
    (2.5, "budget must be an integer, got 2.5"),
    (True, "budget must be an integer, got True"),
    (121, "budget=121 exceeds the 120 unlabeled samples in {path}; lower --budget to at most 120"),
])
def test_bad_budgets(cache_factory, tmp_path, budget, message):
    path = cache_factory("concat2")
    with pytest.raises(SelectionError) as err:
        select(path, "bmmal", budget, out=tmp_path / "x.json")
    assert str(err.value) == message.format(path=path)
    assert not (tmp_path / "x.json").exists()


def test_unknown_strategy_and_parameter(cache_factory, tmp_path):
    path = cache_factory("concat2")
    with pytest.raises(SelectionError, match=r"unknown strategy 'nope'; choose one of: .*badge.*bmmal"):
        select(path, "nope", 3, out=tmp_path / "x.json")
    with pytest.raises(SelectionError,
                       match="strategy 'bmmal' has no parameter 'k'; it takes: precision, block_size"):
        select(path, "bmmal", 3, out=tmp_path / "x.json", params={"k": 1})
    with pytest.raises(SelectionError) as err:
        select(path, "random", 3, out=tmp_path / "x.json", params={"k": 1})
    assert str(err.value) == "strategy 'random' has no parameter 'k'; it takes no parameters"


@pytest.mark.parametrize("strategy", ["random", "entropy", "coregcn"])
def test_precision_option_is_refused_where_no_strategy_parameter_takes_it(cache_factory, tmp_path,
                                                                          strategy):
    with pytest.raises(SelectionError) as err:
        select(cache_factory("concat2"), strategy, 3, out=tmp_path / "x.json", precision="float64")
    assert str(err.value) == ("--precision applies only to strategies with a precision parameter "
                              f"(badge, bmmal); drop it for {strategy!r}")
    assert not (tmp_path / "x.json").exists()


def test_precision_option_lists_plugin_strategies_that_take_it(cache_factory, tmp_path, monkeypatch):
    def plugin(cache, budget, *, rng, xp, precision="float32"):
        return Selection(positions=np.flatnonzero(~cache.labeled)[:budget])

    monkeypatch.setitem(registry_module._REGISTRY, "aaa-plugin", Strategy("aaa-plugin", plugin))
    with pytest.raises(SelectionError, match=r"parameter \(aaa-plugin, badge, bmmal\)"):
        select(cache_factory("concat2"), "random", 3, out=tmp_path / "x.json", precision="float64")


def test_precision_given_twice_is_a_conflict(cache_factory, tmp_path):
    with pytest.raises(SelectionError) as err:
        select(cache_factory("concat2"), "bmmal", 3, out=tmp_path / "x.json",
               params={"precision": "float64"}, precision="float32")
    assert str(err.value) == "-p precision=float64 and --precision float32 conflict; use one"
    assert not (tmp_path / "x.json").exists()


def test_existing_output_needs_overwrite(cache_factory, tmp_path):
    path = cache_factory("concat2")
    out = tmp_path / "x.json"
    first = select(path, "random", 3, out=out)
    with pytest.raises(IndexFileError, match="already exists; pass --force to replace it"):
        select(path, "random", 3, out=out, seed=5)
    np.testing.assert_array_equal(read_index(out).ids, first.ids)
    assert not np.array_equal(select(path, "random", 3, out=out, seed=5, overwrite=True).ids, first.ids)


@pytest.mark.parametrize(("positions", "problem"), [
    ("labeled", "returned labeled samples"),
    ("repeat", "returned a sample twice"),
    ("short", "returned 2 samples for a budget of 3"),
    ("outside", "returned row positions outside the cache"),
])
def test_a_misbehaving_strategy_is_caught(cache_factory, tmp_path, monkeypatch, positions, problem):
    path = cache_factory("concat2")

    def bad(cache, budget, *, rng, xp):
        unlabeled, labeled = np.flatnonzero(~cache.labeled), np.flatnonzero(cache.labeled)
        return Selection(positions={
            "labeled": np.r_[unlabeled[:2], labeled[:1]], "repeat": unlabeled[[0, 1, 1]],
            "short": unlabeled[:2], "outside": np.r_[unlabeled[:2], cache.num_samples],
        }[positions])

    monkeypatch.setitem(registry_module._REGISTRY, "bad", Strategy("bad", bad))
    with pytest.raises(SelectionError, match=f"strategy 'bad' {problem}"):
        select(path, "bad", 3, out=tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_open_cache_object_is_accepted_and_left_open(cache_factory, tmp_path):
    with open_cache(cache_factory("concat2")) as cache:
        index = select(cache, "badge", 3, out=tmp_path / "x.json", precision="float64")
        assert len(index) == 3 and cache.num_samples == 160  # still readable


def test_select_and_bmmal_do_not_import_torch(cache_factory, tmp_path):
    path = cache_factory("concat2")
    code = (
        "import sys\n"
        "import mmal.select\n"
        "assert 'torch' not in sys.modules, 'import mmal.select pulled in torch'\n"
        f"mmal.select.select({str(path)!r}, 'bmmal', 4, out={str(tmp_path / 'x.json')!r})\n"
        "mmal.select.available_strategies()\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_every_strategy_writes_the_balance_diagnostics(cache_factory, tmp_path):
    """random gets the same per-sample Phi/rho/weights and Fig. 6 summary that bmmal computes."""
    from mmal.select.api import diagnostics_path

    path = cache_factory("concat2")
    picks = {}
    for name in ("random", "bmmal"):
        index = select(path, name, 5, seed=0, out=tmp_path / f"{name}.json")
        picks[name] = np.load(diagnostics_path(index.path))
        assert index.provenance["summary"]["subpools"].keys() == {"m0", "m1"}
    for key in ("ids", "Phi", "rho", "weights"):
        np.testing.assert_allclose(picks["random"][key], picks["bmmal"][key], rtol=1e-12)
