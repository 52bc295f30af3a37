"""``select``: run a strategy on a cache and write the chosen ids as an index file.

This is the one entry point behind ``mmal select``: it validates the request,
creates the random generator and picks the array module once, runs the
strategy, checks its answer (no labeled or repeated sample) and writes the
index file plus, when the strategy reports any, its per-sample diagnostics
(``docs/index-files.md``, section "Diagnostics"). The two are published as a
pair under the output's lock (``.<name>.lock`` beside it, :mod:`mmal.lock`):
a second ``select`` with the same output waits, then finds the pair complete.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmal import __version__
from mmal.atomic import atomic_open, check_replaceable
from mmal.cache.index import INDEX_WHAT, IndexFile, is_index_file, read_index, write_index
from mmal.cache.reader import Cache, open_cache
from mmal.errors import IndexFileError, SelectionError
from mmal.lock import hold, output_lock
from mmal.select.backend import array_module, asnumpy, backend_name
from mmal.select.balance import unlabeled_balance
from mmal.select.memory import WorkingSet, default_max_memory, parse_memory
from mmal.select.registry import Selection, Strategy, available_strategies, get_strategy
from mmal.stamp import DIAGNOSTICS, carries, stamp

log = logging.getLogger(__name__)

#: Keyword arguments a strategy receives from ``select`` itself, never from the user
#: (``memory`` only when its signature names it).
_RESERVED = ("cache", "budget", "rng", "xp", "memory")
#: Parameters that change how a strategy runs but never what it picks.
_NOT_PROVENANCE = ("progress",)


def default_output(cache_path: str | os.PathLike, strategy: str, budget: int, seed: int) -> Path:
    """``<cache folder>/selections/<strategy>-b<budget>-s<seed>.json``."""
    return Path(cache_path).parent / "selections" / f"{strategy}-b{budget}-s{seed}.json"


def diagnostics_path(index_path: str | os.PathLike) -> Path:
    """Where the diagnostics of the index file at ``index_path`` go: ``<stem>.diagnostics.npz``."""
    index_path = Path(index_path)
    return index_path.with_name(f"{index_path.stem}.diagnostics.npz")


def select(
    cache: str | os.PathLike | Cache,
    strategy: str,
    budget: int,
    *,
    seed: int = 0,
    device: str = "auto",
    out: str | os.PathLike | None = None,
    params: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    precision: str | None = None,
    progress: bool = False,
    max_memory: int | str | None = None,
) -> IndexFile:
    """Pick ``budget`` unlabeled samples of ``cache`` with ``strategy`` and write them.

    Parameters
    ----------
    cache : path or Cache
        The round's feature cache.
    strategy : str
        A registered name (see ``mmal strategies``).
    budget : int
        Samples to pick, ``1 <= budget <=`` the unlabeled count.
    seed : int
        Seed of the one ``numpy.random.Generator`` the strategy draws from.
    device : {"auto", "cpu", "cuda"}
        Array module: NumPy, CuPy, or CuPy when a GPU is visible.
    out : path, optional
        Index file to write; default :func:`default_output`.
    params : mapping, optional
        Strategy keyword parameters (e.g. ``{"block_size": 64}``).
    overwrite : bool
        Replace an existing ``out`` (and its diagnostics). Without it, a
        concurrent ``select`` that publishes ``out`` first wins, and this one
        raises IndexFileError, leaving the winner's files alone.
    precision : {"float32", "float64"}, optional
        Embedding precision for strategies that have one (badge, bmmal);
        float64 makes NumPy and CuPy pick the same ids.
    progress : bool
        Progress bar for strategies that support one.
    max_memory : int or str, optional
        Host bytes (or a size such as ``"12G"``) for the working set of
        strategies that keep one (badge, bmmal: the embedding factors). Past
        it, the factors spill to a temporary memory-mapped file beside ``out``
        (or in ``$TMPDIR`` when that folder does not exist yet), removed
        afterwards; the ids are the same, each k-means++ refresh reads the file
        once. Default: :data:`mmal.select.memory.DEFAULT_SHARE` of the
        available memory.

    Returns
    -------
    IndexFile
        The written selection (``kind="selection"``), read back from disk.

    Examples
    --------
    >>> select("rounds/003/cache.h5", "bmmal", 500, seed=1)  # doctest: +SKIP
    """
    strat = get_strategy(strategy)
    if isinstance(cache, Cache):
        return _select_open(cache, strat, budget, seed, device, out, params, overwrite,
                            precision, progress, max_memory)
    with open_cache(cache) as opened:
        return _select_open(opened, strat, budget, seed, device, out, params, overwrite,
                            precision, progress, max_memory)


def _select_open(cache, strat, budget, seed, device, out, params, overwrite, precision, progress,
                 max_memory):
    _check_budget(cache, budget)
    limit = _max_memory(max_memory)
    # The head is small and most strategies never read it: check it here, with
    # the reader's finite check (as `mmal inspect` does), so a NaN is refused
    # whichever strategy runs. Fields a strategy reads are checked as it reads them.
    cache.head()
    if strat.needs_mc_dropout and not cache.has_mc_logits:
        raise SelectionError(
            f"{cache.path}: strategy {strat.name!r} needs MC-dropout logits and this cache has "
            "none; rerun `mmal extract --mc-dropout T` (e.g. T=20) or pick another strategy")
    out = Path(out) if out is not None else default_output(cache.path, strat.name, budget, seed)
    if os.path.lexists(out) and not overwrite:
        raise IndexFileError(f"{out}: already exists; pass --force to replace it")
    # --force's rule, checked before the strategy runs (write_index checks again)
    check_replaceable(out, what=INDEX_WHAT, error=IndexFileError, is_kind=is_index_file)
    check_replaceable(diagnostics_path(out), what="an mmal selection diagnostics file",
                      error=IndexFileError, is_kind=is_diagnostics_file)
    kwargs = dict(params or {})
    given_params = dict(kwargs)
    if precision is not None:
        _check_precision_option(strat, precision, kwargs)
        kwargs["precision"] = precision
    recorded = _resolve_params(strat, kwargs)
    if progress and _accepts(strat, "progress"):
        kwargs["progress"] = True
    xp = array_module(device)
    rng = np.random.default_rng(seed)
    log.info("selecting %d of %d unlabeled samples with %s on %s", budget, cache.num_unlabeled,
             strat.name, backend_name(xp))
    start = time.perf_counter()
    spill_dir = out.parent if out.parent.is_dir() else None
    try:
        with WorkingSet(limit, spill_dir) as memory:
            if "memory" in _signature(strat).parameters:
                kwargs["memory"] = memory
            selection = strat.func(cache, budget, rng=rng, xp=xp, **kwargs)
    except (ValueError, TypeError) as exc:
        if not given_params:
            raise  # no user parameter to blame: a bug, keep the traceback
        raise SelectionError(
            f"strategy {strat.name!r} rejected its parameters {given_params}: {exc}; "
            "fix the -p values"
        ) from None
    wall = time.perf_counter() - start
    positions = _checked_positions(selection, cache, budget, strat.name)
    provenance = {
        "strategy": strat.name, "params": recorded, "seed": seed, "budget": budget,
        "cache": str(cache.path), "cache_fingerprint": cache.fingerprint,
        "backend": backend_name(xp), "wall_time_s": round(wall, 3), "mmal_version": __version__,
    }
    if "names_fingerprint" in cache.meta.extra:  # lets next/export check the ids against the data
        provenance["cache_names_fingerprint"] = cache.meta.extra["names_fingerprint"]
    if not selection.diagnostics:
        # every selection gets the balance diagnostics, so strategies can be compared by them
        selection.diagnostics, balance_summary = unlabeled_balance(cache, xp=xp)
        selection.summary = {**balance_summary, **selection.summary}
    provenance["diagnostics"] = diagnostics_path(out).name
    provenance["summary"] = selection.summary
    with hold(output_lock(out), "mmal select"):
        _publish(out, cache.ids[positions], provenance, selection, cache, strat.name, overwrite)
        return read_index(out)


def _publish(out: Path, ids: np.ndarray, provenance: dict, selection: Selection, cache: Cache,
             name: str, overwrite: bool) -> None:
    """Write the diagnostics, then the index file that names them; under the output's lock."""
    if out.exists() and not overwrite:  # again: a concurrent select may have won meanwhile
        raise IndexFileError(f"{out}: already exists; pass --force to replace it")
    target = diagnostics_path(out)
    # An older pair (--force) must stay a pair if the new index cannot be written: keep the
    # old diagnostics under a second name until the new index is in place.
    backup = target.with_name(f".{target.name}.{os.getpid()}.previous")
    kept = out.exists() and target.is_file() and not target.is_symlink()
    if kept:
        backup.unlink(missing_ok=True)
        try:
            os.link(target, backup)
        except OSError:  # a file system without hard links: keep a copy instead
            shutil.copyfile(target, backup)
    try:
        diag = _write_diagnostics(target, selection, cache, name)
        try:
            write_index(out, ids, kind="selection", provenance=provenance, overwrite=overwrite)
        except BaseException:
            if kept:
                os.replace(backup, target)  # the older index names these again
            else:
                diag.unlink(missing_ok=True)
            raise
    finally:
        backup.unlink(missing_ok=True)


def _max_memory(max_memory: int | str | None) -> int | None:
    """``max_memory`` in bytes (default :func:`default_max_memory`); SelectionError when malformed."""
    if max_memory is None:
        return default_max_memory()
    try:
        return parse_memory(max_memory)
    except ValueError as exc:
        raise SelectionError(f"max_memory: {exc}; fix --max-memory") from None


def _check_budget(cache: Cache, budget: Any) -> None:
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer):
        raise SelectionError(f"budget must be an integer, got {budget!r}")
    if budget < 1:
        raise SelectionError(f"budget must be at least 1, got {budget}")
    left = cache.num_unlabeled
    if budget > left:
        raise SelectionError(
            f"budget={budget} exceeds the {left} unlabeled samples in {cache.path}; "
            f"lower --budget to at most {left}"
        )


def _signature(strat: Strategy) -> inspect.Signature:
    return inspect.signature(strat.func)


def _accepts(strat: Strategy, name: str) -> bool:
    sig = _signature(strat).parameters
    return name in sig or any(p.kind is p.VAR_KEYWORD for p in sig.values())


def _check_precision_option(strat: Strategy, precision: str, params: Mapping[str, Any]) -> None:
    """``--precision`` needs a strategy with a ``precision`` parameter and no ``-p precision``."""
    if "precision" in params:
        raise SelectionError(
            f"-p precision={params['precision']} and --precision {precision} conflict; use one"
        )
    if "precision" not in _signature(strat).parameters:
        having = [s.name for s in available_strategies().values()
                  if "precision" in _signature(s).parameters]
        raise SelectionError(
            "--precision applies only to strategies with a precision parameter "
            f"({', '.join(having)}); drop it for {strat.name!r}"
        )


def _resolve_params(strat: Strategy, given: Mapping[str, Any]) -> dict[str, Any]:
    """The strategy's keyword defaults overlaid with ``given``; unknown names are an error."""
    sig = _signature(strat).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.values())
    known = {name: p.default for name, p in sig.items()
             if name not in _RESERVED and p.kind is p.KEYWORD_ONLY}
    unknown = [k for k in given if k not in known and not takes_any]
    if unknown or any(k in _RESERVED for k in given):
        bad = unknown or [k for k in given if k in _RESERVED]
        names = ", ".join(k for k in known if k not in _NOT_PROVENANCE)
        takes = f"it takes: {names}" if names else "it takes no parameters"
        raise SelectionError(f"strategy {strat.name!r} has no parameter {bad[0]!r}; {takes}")
    resolved = {k: v for k, v in known.items()
                if v is not inspect.Parameter.empty and k not in _NOT_PROVENANCE}
    resolved.update(given)
    return resolved


def _checked_positions(selection: Selection, cache: Cache, budget: int, name: str) -> np.ndarray:
    """The strategy's row positions as int64, or an error naming what it got wrong."""
    positions = np.asarray(asnumpy(selection.positions)).astype(np.int64).ravel()
    problem = None
    if len(positions) != budget:
        problem = f"returned {len(positions)} samples for a budget of {budget}"
    elif positions.size and (positions.min() < 0 or positions.max() >= cache.num_samples):
        problem = "returned row positions outside the cache"
    elif len(np.unique(positions)) != len(positions):
        problem = "returned a sample twice"
    elif cache.labeled[positions].any():
        problem = f"returned labeled samples (ids {cache.ids[positions[cache.labeled[positions]]][:5].tolist()})"
    if problem:
        raise SelectionError(f"strategy {name!r} {problem}; this is a bug in the strategy")
    return positions


def is_diagnostics_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a selection's ``.diagnostics.npz`` (stamped, or from before the stamp)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "mmal_type" in archive.files:
                return carries(archive, DIAGNOSTICS)
            return {"ids", "strategy"} <= set(archive.files)
    except Exception:  # not an .npz archive, or unreadable: not diagnostics
        return False


def _write_diagnostics(path: Path, selection: Selection, cache: Cache, name: str) -> Path:
    """Write per-sample diagnostics with the unlabeled ids, atomically (temp + rename)."""
    ids = cache.ids[~cache.labeled]
    arrays = {"ids": ids}
    for key, value in selection.diagnostics.items():
        value = np.asarray(asnumpy(value))
        if value.shape[:1] != ids.shape:
            raise SelectionError(
                f"strategy {name!r} reported diagnostic {key!r} with {value.shape[:1]} rows for "
                f"{len(ids)} unlabeled samples; this is a bug in the strategy"
            )
        arrays[key] = value
    arrays["modalities"] = np.asarray(cache.meta.modalities)
    arrays["strategy"] = np.asarray(name)
    arrays.update(stamp(DIAGNOSTICS))  # 0-d arrays in the archive; numpy.load reads them
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path
