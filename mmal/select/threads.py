"""CPU worker threads for selection's row-parallel passes.

NumPy's element-wise passes run on one core, and a BLAS product over a narrow
block loses much of its speed synchronising its own threads. Selection's heavy
passes (the streaming pass that builds the embedding, the k-means++ bound
refresh) are independent per row block, so they run one block per thread, with
the BLAS held at one thread each: every core then runs whole blocks, the
products and the element-wise work alike (NumPy and OpenBLAS release the GIL).

Each row's result is computed by the same operations whichever thread runs it,
so results do not depend on the number of workers (tested bit for bit).

The default number of workers is the BLAS library's thread count, so
``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` (and ``mmal run --jobs``)
bound selection's threads as they bound the BLAS.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from mmal.select.backend import backend_name

T = TypeVar("T")


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's handle on the BLAS libraries loaded now (NumPy's among them).

    Finding them reads the process's library files (milliseconds), so it is
    done once per process; the thread counts are read live from the handle.
    """
    from threadpoolctl import ThreadpoolController  # deferred: only selection needs it

    return ThreadpoolController().select(user_api="blas")


def cpu_workers(xp: Any = np) -> int:
    """Worker threads for a row-parallel pass on ``xp``: the BLAS thread count on NumPy, 1 on a GPU."""
    if backend_name(xp) != "numpy":
        return 1
    counts = [int(info["num_threads"]) for info in _blas_controller().info()]
    return max(1, min(counts)) if counts else 1


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Within the block, BLAS calls run on the calling thread only (process-wide)."""
    with _blas_controller().limit(limits=1):
        yield


class RowPool:
    """``workers`` threads for row-parallel passes, kept open across passes.

    Keep one for a whole k-means++ seeding: the threads, and the per-thread
    buffers the refresh keeps in them (:class:`mmal.select.refresh.Scratch`),
    then live from one refresh to the next. While its threads exist the BLAS
    runs one thread per calling thread (process-wide), and :meth:`close`
    restores it after they have stopped. Use as a context manager.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
        self._executor: ThreadPoolExecutor | None = None
        self._limit: contextlib.ExitStack | None = None

    def __enter__(self) -> RowPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the threads (after their running items), then restore the BLAS threads."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._limit is not None:
            self._limit.close()
            self._limit = None

    def map(self, func: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
        """``[func(item) for item in items]``, on the threads, with a one-thread BLAS each.

        ``func`` must write only to its own item's rows. Results come back in
        the order of ``items``; the first exception is raised once the running
        items have finished, and items not started are cancelled. One worker,
        or one item, runs in the calling thread. Not to be called from within
        ``func`` (its threads would wait on themselves).
        """
        items = list(items)
        if self.workers <= 1 or len(items) <= 1:
            return [func(item) for item in items]
        if self._executor is None:
            self._limit = contextlib.ExitStack()
            self._limit.enter_context(single_threaded_blas())
            # The limit is set in each worker too: an OpenMP BLAS keeps it per thread.
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="mmal-rows",
                                                initializer=_one_blas_thread)
        futures = [self._executor.submit(func, item) for item in items]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            concurrent.futures.wait(futures)
            raise


def _one_blas_thread() -> None:
    _blas_controller().limit(limits=1)  # applied now; the pool restores the limits at close


def row_parallel_map(func: Callable[[Any], T], items: Iterable[Any], workers: int) -> list[T]:
    """:meth:`RowPool.map` on a pool of ``workers`` threads that closes afterwards."""
    with RowPool(workers) as pool:
        return pool.map(func, items)


#: Row chunks come in a multiple of this many, of near-equal sizes, so that 1, 2
#: or 4 workers share them evenly (3 chunks of 4,096 rows and one of 978 left one
#: of two workers idle for a fifth of a refresh at KineticsSound scale).
CHUNK_MULTIPLE = 4


def row_chunks(n: int, rows: int, multiple: int = CHUNK_MULTIPLE) -> list[slice]:
    """Contiguous slices covering ``range(n)``, of at most ``rows`` rows, near-equal in size.

    Their number is a multiple of ``multiple`` (when ``n`` allows; 1 on a GPU,
    which runs one chunk at a time). The boundaries depend on ``n``, ``rows``
    and ``multiple`` only, not on the number of workers: a BLAS may sum a
    product of another shape in another order, so a pass whose chunks do not
    move gives the same bits on any number of threads.
    """
    if n <= 0:
        return []
    count = -(-n // max(1, rows))
    count = min(n, -(-count // max(1, multiple)) * max(1, multiple))
    bounds = [n * i // count for i in range(count + 1)]
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:], strict=False)]
