"""Selection's worker threads: order, errors, and a one-thread BLAS inside them."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from mmal.select.threads import RowPool, cpu_workers, row_chunks, row_parallel_map


def _blas_threads() -> int:
    return min(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")


def test_results_come_back_in_order_from_several_threads():
    seen = set()

    def work(item):
        seen.add(threading.get_ident())
        return item * item, _blas_threads()

    with threadpool_limits(limits=2, user_api="blas"):
        out = row_parallel_map(work, range(40), workers=3)
        assert _blas_threads() == 2  # restored after the pass
        for _ in range(300):  # also when a thread starts late, as the pool closes (found in review)
            row_parallel_map(lambda item: item, range(2), workers=2)
            assert _blas_threads() == 2
    assert [value for value, _ in out] == [i * i for i in range(40)]
    assert {threads for _, threads in out} == {1}  # each worker's BLAS is single-threaded
    assert seen and threading.get_ident() not in seen  # the items ran on the pool's threads


def test_one_worker_runs_in_the_calling_thread_and_leaves_the_blas_alone():
    with threadpool_limits(limits=2, user_api="blas"):
        out = row_parallel_map(lambda item: (threading.get_ident(), _blas_threads()), [0, 1], 1)
    assert out == [(threading.get_ident(), 2)] * 2


def test_an_error_in_a_worker_reaches_the_caller_and_the_blas_is_restored():
    finished = []

    def work(item):
        if item == 0:
            raise ValueError("row block 0 is bad")
        time.sleep(0.05)
        finished.append(item)
        return item

    with threadpool_limits(limits=2, user_api="blas"):
        with RowPool(2) as pool:
            with pytest.raises(ValueError, match="row block 0 is bad"):
                pool.map(work, range(8))
            assert 1 in finished  # the item running beside the failing one finished first
        assert _blas_threads() == 2


def test_a_pool_keeps_its_threads_across_passes():
    local, both = threading.local(), threading.Barrier(2, timeout=10)

    def mark(item):
        local.marked = True
        both.wait()  # each of the two threads marks one item

    with RowPool(2) as pool:
        pool.map(mark, range(2))
        assert pool.map(lambda item: getattr(local, "marked", False), range(6)) == [True] * 6


def test_cpu_workers_follow_the_blas_thread_count():
    with threadpool_limits(limits=1, user_api="blas"):
        assert cpu_workers(np) == 1
    with threadpool_limits(limits=2, user_api="blas"):
        assert cpu_workers(np) == 2


def test_row_chunks_cover_the_rows_in_near_equal_chunks_of_a_multiple_of_four():
    assert row_chunks(10, 4) == [slice(0, 2), slice(2, 5), slice(5, 7), slice(7, 10)]
    assert row_chunks(0, 4) == []
    assert row_chunks(3, 1) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    chunks = row_chunks(13_266, 4096)  # KineticsSound: 4 chunks, not 3 full and a short one
    assert [c.stop - c.start for c in chunks] == [3316, 3317, 3316, 3317]
    chunks = row_chunks(162_820, 4096)
    assert len(chunks) == 40 and chunks[0].start == 0 and chunks[-1].stop == 162_820
    assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:], strict=False))
    assert max(c.stop - c.start for c in chunks) <= 4096
    assert row_chunks(10_000, 65_536, multiple=1) == [slice(0, 10_000)]  # a GPU: one launch
