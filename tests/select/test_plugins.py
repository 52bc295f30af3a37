"""Third-party strategies arrive through the `mmal.strategies` entry point."""

from __future__ import annotations

import sys
import textwrap

import numpy as np

from mmal.select import registry as registry_module
from mmal.select import select


def test_entry_point_strategy_is_listed_and_selects(tmp_path, monkeypatch, cache_factory):
    (tmp_path / "myplugin.py").write_text(textwrap.dedent("""
        import numpy as np
        from mmal.select.registry import Selection

        def lowest_rows(cache, budget, *, rng, xp, offset=0):
            '''the first unlabeled rows after an offset'''
            rows = np.flatnonzero(~cache.labeled)[offset:offset + budget]
            return Selection(positions=rows)
    """))
    dist = tmp_path / "myplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[mmal.strategies]\nlowest = myplugin:lowest_rows\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry_module.available_strategies()  # built-ins register on import: do it before copying
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    try:
        strategies = registry_module.available_strategies()
        assert "lowest" in strategies and "bmmal" in strategies
        index = select(cache_factory("concat2"), "lowest", 3, params={"offset": 2},
                       out=tmp_path / "pick.json")
    finally:
        sys.modules.pop("myplugin", None)
    assert index.provenance["params"] == {"offset": 2}
    assert len(index.ids) == 3 and len(np.unique(index.ids)) == 3


def test_a_strategy_needing_mc_dropout_is_refused_on_a_cache_without_it(tmp_path, monkeypatch,
                                                                        cache_factory):
    import pytest

    from mmal.errors import SelectionError
    from mmal.select.registry import Selection, Strategy

    def first_rows(cache, budget, *, rng, xp):
        return Selection(positions=np.flatnonzero(~cache.labeled)[:budget])

    registry_module.available_strategies()  # built-ins register on import: do it before copying
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    registry_module._REGISTRY["mcfirst"] = Strategy("mcfirst", first_rows, needs_mc_dropout=True)
    with pytest.raises(SelectionError, match="strategy 'mcfirst' needs MC-dropout logits and "
                                             "this cache has none; rerun `mmal extract"):
        select(cache_factory("concat2"), "mcfirst", 3, out=tmp_path / "pick.json")
    assert not (tmp_path / "pick.json").exists()
    index = select(cache_factory("concat2", mc_samples=4), "mcfirst", 3, out=tmp_path / "pick.json")
    assert len(index.ids) == 3
