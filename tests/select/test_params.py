"""Strategy parameters out of range are refused with a message naming them, before any work."""

from __future__ import annotations

import math

import pytest

from mmal.errors import SelectionError
from mmal.select import select
from mmal.select.params import float_param, int_param


def test_int_param_accepts_integers_at_or_above_the_minimum():
    import numpy as np

    assert int_param("n", 3, minimum=1) == 3
    assert int_param("n", np.int64(1), minimum=1) == 1
    for bad, match in [(0, "n must be >= 1, got 0"), (1.5, "integer >= 1, got 1.5"),
                       (True, "integer >= 1, got True"), ("4", "integer >= 1, got '4'")]:
        with pytest.raises(ValueError, match=match):
            int_param("n", bad, minimum=1)


def test_float_param_honours_open_and_closed_ends():
    assert float_param("p", 0, low=0, high=1, open_high=True) == 0.0
    assert float_param("p", 1, low=0, high=1) == 1.0
    with pytest.raises(ValueError, match=r"p must be a finite number in \[0, 1\), got 1"):
        float_param("p", 1, low=0, high=1, open_high=True)
    with pytest.raises(ValueError, match=r"lr must be a finite number in \(0, inf\), got 0"):
        float_param("lr", 0, low=0, open_low=True)
    with pytest.raises(ValueError, match=r"lr must be a finite number in \(0, inf\), got inf"):
        float_param("lr", math.inf, low=0, open_low=True)  # json.loads("Infinity") gives this
    with pytest.raises(ValueError, match=r"lr must be a finite number in \(0, inf\), got 1000"):
        float_param("lr", 10**400, low=0, open_low=True)  # too large for a float
    for bad in (math.nan, "0.5", None, False):
        with pytest.raises(ValueError, match="^p must be"):
            float_param("p", bad, low=0, high=1)


@pytest.mark.parametrize("strategy,params,message", [
    ("badge", {"block_size": 1.5}, "block_size must be an integer >= 1, got 1.5"),
    ("bmmal", {"block_size": 0}, "block_size must be >= 1, got 0"),
    ("coreset", {"block_size": -2}, "block_size must be >= 1, got -2"),
    ("kmeans", {"niter": 0}, "niter must be >= 1, got 0"),
    ("gcn", {"epochs": 0}, "epochs must be >= 1, got 0"),
    ("gcn", {"neighbors": 2.5}, "neighbors must be an integer >= 1, got 2.5"),
    ("gcn", {"subset": -1}, "subset must be >= 1, got -1"),
    ("gcn", {"dropout": 1.0}, r"dropout must be a finite number in \[0, 1\), got 1.0"),
    ("gcn", {"lr": 0}, r"lr must be a finite number in \(0, inf\), got 0"),
    ("uncertaingcn", {"s_margin": 1.5}, r"s_margin must be a finite number in \[0, 1\], got 1.5"),
])
def test_select_refuses_out_of_range_parameters_and_writes_nothing(cache_factory, tmp_path, strategy,
                                                                   params, message):
    out = tmp_path / "picks.json"
    with pytest.raises(SelectionError, match=f"strategy '{strategy}' rejected its parameters .*"
                                             f"{message}; fix the -p values"):
        select(cache_factory(), strategy, 5, out=out, params=params, device="cpu")
    assert list(tmp_path.iterdir()) == []
