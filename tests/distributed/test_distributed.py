"""mmal.distributed: contiguous splits, launch detection and environment errors (no processes)."""

from __future__ import annotations

import pytest

from mmal.distributed import launched, setup, split_rows, timeout_seconds
from mmal.errors import ConfigError


@pytest.mark.parametrize("n", [0, 1, 7, 100, 1601])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
@pytest.mark.parametrize("align", [1, 4, 128])
def test_split_rows_concatenates_to_all_rows_on_aligned_boundaries(n, world, align):
    parts = [split_rows(n, world, r, align=align) for r in range(world)]
    assert [i for p in parts for i in p] == list(range(n))
    for p in parts:
        assert p.start % align == 0 or p.start == n
    sizes = [-(-len(p) // align) for p in parts]  # batches per rank
    assert max(sizes) - min(sizes) <= 1


def test_split_rows_known_answer_and_bad_input():
    assert [split_rows(10, 3, r, align=2) for r in range(3)] == \
        [range(0, 2), range(2, 6), range(6, 10)]
    assert split_rows(3, 4, 0) == range(0, 0)  # fewer rows than ranks: some get nothing
    with pytest.raises(ValueError):
        split_rows(10, 2, 2)


def test_single_process_without_torchrun_variables(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not launched()
    env = setup("cpu")
    assert (env.enabled, env.rank, env.world_size, env.is_main) == (False, 0, 1, True)
    assert env.broadcast({"a": 1}) == {"a": 1} and env.all_gather(3) == [3]
    assert env.all_reduce_sum([1.0, 2.0]) == [1.0, 2.0]
    with pytest.raises(ConfigError, match="RANK and WORLD_SIZE are not set; launch with"):
        setup("cpu", distributed=True)


@pytest.mark.parametrize("env,message", [
    ({"RANK": "x", "WORLD_SIZE": "2"}, "environment variable RANK='x' is not an integer"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"},
     "environment variable MASTER_ADDR is not set"),
])
def test_bad_launch_environment_is_a_one_line_error(monkeypatch, env, message):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=message):
        setup("cpu")


def test_timeout_from_environment(monkeypatch):
    monkeypatch.delenv("MMAL_DIST_TIMEOUT_S", raising=False)
    assert timeout_seconds() == 1800
    monkeypatch.setenv("MMAL_DIST_TIMEOUT_S", "90")
    assert timeout_seconds() == 90
    monkeypatch.setenv("MMAL_DIST_TIMEOUT_S", "soon")
    with pytest.raises(ConfigError, match="MMAL_DIST_TIMEOUT_S='soon': expected a number of "
                                          "seconds > 0"):
        timeout_seconds()
