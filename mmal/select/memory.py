"""Selection's memory budget, and the temporary file its working set spills to past it.

BADGE and BMMAL keep one working set for the whole seeding: the factors ``r``
(n, K) and ``u`` (n, D) of the gradient embedding and a few per-row vectors.
:class:`WorkingSet` decides, before the streaming pass fills them, which of
the factors stay in memory under ``max_memory`` bytes: ``u`` (the wider one)
goes first to a memory-mapped temporary file (in a narrower dtype when its
values allow: a float16 cache's ``u``), then ``r`` when even that is not
enough. The file is unlinked as soon as it is mapped, so it disappears
when the arrays are freed, whatever ends the process; its folder is removed
when the :class:`WorkingSet` closes.

The budget is for the host: a CuPy working set lives in GPU memory and is
never spilled.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mmal.errors import SelectionError

log = logging.getLogger(__name__)

#: Share of the available memory (``MemAvailable`` in /proc/meminfo) that the
#: default ``--max-memory`` grants: the rest stays for the page cache that
#: reads the HDF5 cache and the spill file, and for other processes.
DEFAULT_SHARE = 0.6

#: Host bytes per unlabeled row outside ``r`` and ``u``: positions, the four
#: norm vectors, the k-means++ bound on device and host and its CDF, the
#: chosen mask, the cache's ids and labeled mask, BMMAL's diagnostics (about
#: 130 B with two modalities in float32; rounded up).
PER_ROW_BYTES = 192

#: Bytes kept free within the budget for the temporaries of the blocks being
#: worked on: the streaming pass's blocks (their rows shrink to fit it), or the
#: chunks of a k-means++ refresh (a 4,096-row chunk of float16 ``u`` with
#: D = 2,048, gathered and widened to float32 for its product, is 48 MiB, and
#: its five (rows x centers) buffers 4 MiB each with blocks of 256 centers).
#: Independent of the pool size; one more :data:`WORKER_ALLOWANCE` for each
#: worker thread past the first.
BLOCK_ALLOWANCE = 512 * 2**20

#: Bytes kept free for the temporaries of each worker thread past the first
#: (:mod:`mmal.select.threads`): one refresh chunk's, above.
WORKER_ALLOWANCE = 96 * 2**20

#: Fewest rows per block of the streaming pass, whatever the budget.
MIN_BLOCK_ROWS = 64

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def available_memory() -> int | None:
    """Bytes of memory available to a new process now, or None when unknown.

    ``MemAvailable`` of /proc/meminfo (Linux: free memory plus the reclaimable
    page cache), else the free physical pages from ``os.sysconf``.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return None


def default_max_memory() -> int | None:
    """:data:`DEFAULT_SHARE` of :func:`available_memory`; None (no limit) when unknown."""
    available = available_memory()
    return None if available is None else int(DEFAULT_SHARE * available)


def parse_memory(text: str | int) -> int:
    """Bytes from ``"12G"``, ``"512M"``, ``"64K"``, ``"1.5G"`` or a plain number (binary units).

    Raises
    ------
    ValueError
        Naming the value and the accepted forms.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(text).upper())
        if not match:
            raise ValueError(f"{text!r} is not a memory size; write e.g. 12G, 512M, 64K or bytes")
        value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value < 1:
        raise ValueError(f"a memory size must be at least 1 byte, got {text!r}")
    return value


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps it at least 1 (e.g. ``"1.5 GiB"``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"


class WorkingSet:
    """Allocates a strategy's large arrays within ``max_memory`` bytes, spilling past it.

    Parameters
    ----------
    max_memory : int, optional
        Host bytes the working set (with :data:`BLOCK_ALLOWANCE`) may use;
        None for no limit.
    spill_dir : path, optional
        Where the temporary folder of spill files goes (default the system's
        temporary folder, ``$TMPDIR``). Pick a disk, not a RAM-backed tmpfs.

    Use as a context manager; closing removes the spill folder. Arrays it
    handed out stay valid (their files are already unlinked).

    Examples
    --------
    >>> with WorkingSet(2**30) as ws:  # doctest: +SKIP
    ...     u, r = ws.allocate({"u": ((n, d), "float32", "float16"),
    ...                         "r": ((n, k), "float32", "float32")}, rows=n)
    """

    def __init__(self, max_memory: int | None = None, spill_dir: str | os.PathLike | None = None):
        self.max_memory = max_memory
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self._folder: Path | None = None
        self.spilled: dict[str, Path] = {}  # name -> file it was spilled to (already unlinked)

    def __enter__(self) -> WorkingSet:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Remove the spill folder and anything left in it."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def block_rows(self, row_bytes: int, most: int) -> int:
        """Rows per streamed block: at most ``most``, within a quarter of the budget and the block allowance.

        ``row_bytes`` counts every block worked on at once (the workers').
        """
        if self.max_memory is None:
            return most
        fit = min(self.max_memory // 4, BLOCK_ALLOWANCE) // max(1, row_bytes)
        return int(max(MIN_BLOCK_ROWS, min(most, fit)))

    def allocate(self, arrays: dict[str, tuple[tuple[int, ...], Any, Any]], *, rows: int,
                 xp: Any = np, workers: int = 1) -> list[Any]:
        """Empty arrays for ``arrays`` (name -> (shape, dtype, spilled dtype)), in memory or spilled.

        Spills in the order given (put the widest first) until the rest, the
        per-row vectors (``rows`` · :data:`PER_ROW_BYTES`) and the block
        allowance (:data:`BLOCK_ALLOWANCE`, plus :data:`WORKER_ALLOWANCE` per
        worker thread past the first) fit ``max_memory``. A spilled array has the
        spilled dtype (a narrower one holding the same values: a smaller
        file, fewer bytes read per pass). On CuPy nothing spills.

        Returns
        -------
        list of arrays
            In the order of ``arrays``: ``xp`` arrays, or NumPy memmaps of spilled ones.
        """
        sizes = {name: _nbytes(shape, dtype) for name, (shape, dtype, _) in arrays.items()}
        allowance = BLOCK_ALLOWANCE + max(0, workers - 1) * WORKER_ALLOWANCE
        resident = sum(sizes.values()) + rows * PER_ROW_BYTES + allowance
        spill = []
        if self.max_memory is not None and xp is np:
            for name in arrays:
                if resident <= self.max_memory:
                    break
                spill.append(name)
                resident -= sizes[name]
        out = [self._spill(name, shape, spilled) if name in spill
               else xp.empty(shape, dtype=dtype)
               for name, (shape, dtype, spilled) in arrays.items()]
        if spill:
            log.info("working set of %s over --max-memory %s: %s spilled to %s; each k-means++ "
                     "refresh reads it once", format_bytes(sum(sizes.values())),
                     format_bytes(self.max_memory),
                     " and ".join(f"{name} ({format_bytes(array.nbytes)} as {array.dtype})"
                                  for name, array in zip(arrays, out, strict=True)
                                  if name in spill),
                     self._folder)
        return out

    def _spill(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        nbytes = _nbytes(shape, dtype)
        folder = self._spill_folder()
        path = folder / f"{name}.bin"
        try:
            with open(path, "wb+") as handle:
                if nbytes:
                    # reserve the blocks now: a full disk is an error here, not a SIGBUS later
                    os.posix_fallocate(handle.fileno(), 0, nbytes)
            array = np.memmap(path, dtype=dtype, mode="r+", shape=shape) if nbytes else \
                np.empty(shape, dtype=dtype)
        except OSError as exc:
            raise SelectionError(
                f"{path}: cannot hold the {format_bytes(nbytes)} of the spilled working set "
                f"({exc.strerror or exc}); free disk space there, or raise --max-memory"
            ) from None
        finally:
            path.unlink(missing_ok=True)  # the mapping keeps the data; no file outlives it
        self.spilled[name] = path
        return array

    def _spill_folder(self) -> Path:
        if self._folder is None:
            parent = self.spill_dir if self.spill_dir is not None else Path(tempfile.gettempdir())
            try:
                self._folder = Path(tempfile.mkdtemp(prefix="mmal-spill-", dir=parent))
            except OSError as exc:
                raise SelectionError(
                    f"{parent}: cannot create the spill folder ({exc.strerror or exc}); "
                    "pass a writable folder (TMPDIR) or raise --max-memory"
                ) from None
        return self._folder


def _nbytes(shape: tuple[int, ...], dtype: Any) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
