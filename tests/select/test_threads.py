"""Selection's worker threads: order, errors, and a one-thread BLAS inside them."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from mmal.select.threads import cpu_workers, row_chunks, row_parallel_map


def _blas_threads() -> int:
    return min(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")


def test_results_come_back_in_order_from_several_threads():
    seen = set()

    def work(item):
        seen.add(threading.get_ident())
        return item * item, _blas_threads()

    out = row_parallel_map(work, range(40), workers=3)
    assert [value for value, _ in out] == [i * i for i in range(40)]
    assert {threads for _, threads in out} == {1}  # each worker's BLAS is single-threaded
    assert len(seen) >= 1 and threading.get_ident() not in seen


def test_one_worker_runs_in_the_calling_thread_and_leaves_the_blas_alone():
    with threadpool_limits(limits=2, user_api="blas"):
        out = row_parallel_map(lambda item: (threading.get_ident(), _blas_threads()), [0, 1], 1)
    assert out == [(threading.get_ident(), 2)] * 2


def test_an_error_in_a_worker_reaches_the_caller_and_the_blas_is_restored():
    before = _blas_threads()

    def work(item):
        if item == 3:
            raise ValueError("row block 3 is bad")
        return item

    with pytest.raises(ValueError, match="row block 3 is bad"):
        row_parallel_map(work, range(8), workers=2)
    assert _blas_threads() == before


def test_cpu_workers_follow_the_blas_thread_count():
    with threadpool_limits(limits=1, user_api="blas"):
        assert cpu_workers(np) == 1
    with threadpool_limits(limits=2, user_api="blas"):
        assert cpu_workers(np) == 2


def test_row_chunks_cover_the_rows_with_fixed_boundaries():
    assert row_chunks(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert row_chunks(0, 4) == []
    assert row_chunks(3, 0) == [slice(0, 1), slice(1, 2), slice(2, 3)]
