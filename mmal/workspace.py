"""Workspace layout: a folder with ``mmal.toml`` and one sub-folder per round.

::

    workspace/
      mmal.toml                 the configuration
      rounds/000/labeled.json   index file (kind "labeled")
      rounds/000/model.pt       checkpoint from `mmal train`
      rounds/000/metrics.json   test metrics from `mmal train`
      rounds/000/cache.h5       feature cache from `mmal extract`
      rounds/000/selections/    index files from `mmal select`
      rounds/000/.lock          held by whoever writes into the round (mmal.lock)
      encoded/train/image.h5    a frozen encoder's outputs over a split, shared by
                                every round and by the workspaces of `mmal run`
                                inside this one (mmal.encoded; docs/training.md)

Every stage finds its inputs and outputs through this module. A stage opens
its round once with :func:`open_round`; the :class:`Round` it gets carries the
round's paths, the config, the pools (loaded once per split), the checked
labeled set and the labels the learner knows, and the one overwrite rule
(:meth:`Round.claim`), checked under the round's lock (:meth:`Round.locked`).
This module also starts workspaces (:func:`init_workspace`: config + round 0's
random labeled set) and rounds (:func:`next_round`: labeled(r+1) = labeled(r)
followed by a selection). Nothing is overwritten without ``force``, every file
is written atomically, and two processes never write one round at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from mmal import seeds
from mmal.atomic import check_replaceable, is_temp_file, write_text_atomic
from mmal.cache import open_cache
from mmal.cache.index import INDEX_WHAT, IndexFile, is_index_file, read_index, write_index
from mmal.config import Config, dump_config, load_config
from mmal.data import Pool, load_pool
from mmal.data.pool import ids_edited, ids_fingerprint
from mmal.data.probe import size_warnings
from mmal.errors import ConfigError, DataError, IndexFileError, MmalError, WorkspaceError, preview
from mmal.fingerprint import check_model_fingerprint
from mmal.labels import apply_labels, has_label, read_labels_file
from mmal.lock import folder_lock, hold, is_lock_file
from mmal.stamp import METRICS, read_stamped_json

logger = logging.getLogger(__name__)

CONFIG_NAME = "mmal.toml"
#: Provenance key of a labeled set: its ids' (id, name) fingerprint (see Pool.names_fingerprint).
NAMES_KEY = "names_fingerprint"
#: Provenance key of a labeled set: its ids' own fingerprint, which tells a hand edit of the
#: file from a change of the data when NAMES_KEY no longer matches (see Pool.check_names).
IDS_KEY = "ids_fingerprint"
ROUNDS_DIR = "rounds"
ENCODED_DIR = "encoded"


@dataclass(frozen=True)
class RoundPaths:
    """Files of one round."""

    root: Path
    round: int

    @property
    def labeled(self) -> Path:
        return self.root / "labeled.json"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def cache(self) -> Path:
        return self.root / "cache.h5"

    @property
    def labels(self) -> Path:
        """People's labels for this round's ids (``mmal label``)."""
        return self.root / "labels.json"

    @property
    def selections(self) -> Path:
        return self.root / "selections"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files of the round's latest training, when it logged."""
        return self.root / "tensorboard"

    @property
    def lock(self) -> Path:
        """The round's lock file (:meth:`Round.locked`)."""
        return folder_lock(self.root)


def find_workspace(start: str | os.PathLike | None = None) -> Path:
    """The workspace containing ``start`` (default: the current directory)."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise WorkspaceError(
        f"{here}: not inside an mmal workspace (no {CONFIG_NAME} here or above); "
        "create one with `mmal init DIR --config FILE` or pass --workspace"
    )


def round_paths(workspace: str | os.PathLike, round: int) -> RoundPaths:
    """Paths of round ``round`` (the folder may not exist yet)."""
    if round < 0:
        raise WorkspaceError(f"round must be >= 0, got {round}")
    return RoundPaths(Path(workspace) / ROUNDS_DIR / f"{round:03d}", round)


def encoded_path(workspace: str | os.PathLike, split: str, modality: str) -> Path:
    """Where a frozen encoder's outputs over ``split`` live: ``encoded/<split>/<modality>.h5``.

    One file per workspace, not per round: every round reads it (:mod:`mmal.encoded`).
    A workspace inside another workspace's folder (the trajectories of ``mmal
    run`` under ``runs/``) uses the outermost one's ``encoded/``, so every
    strategy and seed of a comparison shares one store; the store's
    fingerprint keeps a workspace with other encoders or data from reading it.
    """
    return _store_root(Path(workspace)) / ENCODED_DIR / split / f"{modality}.h5"


def _store_root(workspace: Path) -> Path:
    """The outermost folder holding an ``mmal.toml`` among ``workspace`` and its parents."""
    root = workspace
    for folder in workspace.resolve().parents:
        if (folder / CONFIG_NAME).is_file():
            root = folder
    return root


def list_rounds(workspace: str | os.PathLike) -> list[int]:
    """Round numbers that have a folder, ascending."""
    rounds_dir = Path(workspace) / ROUNDS_DIR
    if not rounds_dir.is_dir():
        return []
    return sorted(int(p.name) for p in rounds_dir.iterdir() if p.is_dir() and p.name.isdigit())


def latest_round(workspace: str | os.PathLike, *, having: str | None = None) -> int:
    """Newest round, or the newest whose folder holds the file ``having``."""
    rounds = [r for r in list_rounds(workspace)
              if having is None or (round_paths(workspace, r).root / having).exists()]
    if not rounds:
        what = f"with {having}" if having else "at all"
        todo = _MAKES.get(having, "create it with `mmal init DIR --config FILE`")
        raise WorkspaceError(f"{workspace}: no round {what} yet; {todo}")
    return rounds[-1]


#: What to run to get a round's file, for errors about it missing.
_MAKES = {
    "labeled.json": "start one with `mmal init` or `mmal next --selection FILE`",
    "model.pt": "run `mmal train` first",
    "cache.h5": "run `mmal train`, then `mmal extract`",
}


def load_workspace_config(workspace: str | os.PathLike) -> Config:
    """The validated configuration ``<workspace>/mmal.toml``."""
    path = Path(workspace) / CONFIG_NAME
    if not path.is_file():
        raise WorkspaceError(f"{workspace}: has no {CONFIG_NAME}; create the workspace with "
                             "`mmal init DIR --config FILE`")
    return load_config(path)


def read_metrics(path: str | os.PathLike) -> dict:
    """A round's ``metrics.json`` (written by ``mmal train``), its stamp checked.

    WorkspaceError naming the file, and to retrain, when it is not one.
    """
    return read_stamped_json(path, METRICS, error=WorkspaceError,
                             fix="retrain the round with `mmal train --force`")


def refuse_overwrite(path: Path, force: bool, fix: str, *,
                     error: type[MmalError] = WorkspaceError, why: str = "",
                     what: str = "an output of its kind",
                     is_kind: Callable[[Path], bool] | None = None) -> None:
    """The overwrite rule: ``path`` may be replaced only with ``force``, and only by its kind.

    Raises ``error``: "<path>: already exists<why>; pass --force to <fix>";
    with ``force``, :func:`mmal.atomic.check_replaceable`'s errors for a link,
    folder, device or a file that is not ``what`` (``is_kind``; default: no
    file mmal stamps).
    """
    if not os.path.lexists(path):
        return
    if not force:
        raise error(f"{path}: already exists{why}; pass --force to {fix}")
    check_replaceable(path, what=what, error=error, is_kind=is_kind)


# ----------------------------------------------------------------------------- the round handle

@dataclass(eq=False)
class Round:
    """One round of a workspace, opened once and handed to every stage.

    The config, the train and test pools and the labeled set (checked against
    the train pool) are loaded on first use and kept; people's labels
    (:meth:`labels`, :meth:`human_labels`) are read from ``labels.json`` on
    every call, so they are current after an import. A stage that writes into
    the round does so inside :meth:`locked`. Build it with :func:`open_round`.

    Attributes
    ----------
    workspace : Path
        The workspace folder.
    number : int
        The round (``rounds/RRR``).
    """

    workspace: Path
    number: int
    _pools: dict[str, Pool] = field(default_factory=dict, repr=False)

    @cached_property
    def config(self) -> Config:
        """The workspace's validated ``mmal.toml`` (read on first use: select needs none)."""
        return load_workspace_config(self.workspace)

    @property
    def paths(self) -> RoundPaths:
        """This round's files."""
        return round_paths(self.workspace, self.number)

    def encoded(self, split: str, modality: str) -> Path:
        """The workspace's stored encoder outputs of ``modality`` over ``split`` (:func:`encoded_path`)."""
        return encoded_path(self.workspace, split, modality)

    def pool(self, split: str = "train") -> Pool:
        """The ``"train"`` pool (the active-learning pool) or the ``"test"`` split, loaded once."""
        if split not in self._pools:
            self._pools[split] = load_pool(self.config, split)
        return self._pools[split]

    @cached_property
    def labeled(self) -> np.ndarray:
        """(n,) int64 ids of this round's labeled set, checked against the train pool.

        Raises
        ------
        WorkspaceError
            The round has no ``labeled.json``.
        DataError
            Naming ``labeled.json`` when its ids are not in the pool or now name
            other samples (rows inserted into a row-numbered manifest).
        """
        return read_labeled(self.workspace, self.number, pool=self.pool("train"))

    @cached_property
    def labeled_rows(self) -> np.ndarray:
        """(n,) int64 train-pool rows of :attr:`labeled` (computed once, like it)."""
        return self.pool("train").rows(self.labeled)

    def human_labels(self) -> dict[int, list[str]]:
        """Id -> class names imported with ``mmal label`` into rounds 0..r (a later round wins)."""
        out: dict[int, list[str]] = {}
        for r in list_rounds(self.workspace):
            target = round_paths(self.workspace, r).labels
            if r <= self.number and target.exists():
                out.update(read_labels_file(target))
        return out

    def labels(self, *, require_labeled: bool = True) -> np.ndarray:
        """Labels the learner knows in this round: the dataset's, overlaid with people's.

        Returns
        -------
        (N,) int64 or (N, K) int8 labels aligned with the train pool's ids; -1
        (a row of -1) where nobody gave a label.

        Raises
        ------
        DataError
            A label of a class no longer in the class list, naming its
            ``labels.json``; with ``require_labeled``, ids of the labeled set that
            have no label, and how to add them.
        """
        pool = self.pool("train")
        people = self.human_labels()
        classes = set(pool.class_names)
        for sid, names in people.items():
            gone = [n for n in names if n not in classes]
            if gone:
                raise DataError(f"{self.labels_file_of(sid)}: sample {pool.show_ids([sid])} is "
                                f"labeled {gone[0]!r}, which is not in the class list "
                                f"({preview(pool.class_names)}); restore the class or import a "
                                "corrected label with `mmal label`")
        labels = apply_labels(pool.labels, pool.rows(people), list(people.values()),
                              pool.class_names)
        if require_labeled:
            unknown = self.labeled[~has_label(labels)[self.labeled_rows]]
            if unknown.size:
                r = self.number
                raise DataError(
                    f"round {r:03d}: labeled ids {pool.show_ids(unknown)} have no label; export "
                    f"them with `mmal export rounds/{r:03d}/labeled.json --unlabeled-only`, "
                    f"annotate, and import with `mmal label --round {r} FILE`")
        return labels

    def unlabeled_ids(self) -> np.ndarray:
        """(n,) int64 ids of the labeled set that nobody labeled yet, in labeled-set order."""
        labels = self.labels(require_labeled=False)
        return self.labeled[~has_label(labels)[self.labeled_rows]]

    def labels_file_of(self, sample_id: int) -> Path:
        """The ``labels.json`` (of rounds <= r, the latest wins) that labels ``sample_id``."""
        for r in reversed([r for r in list_rounds(self.workspace) if r <= self.number]):
            target = round_paths(self.workspace, r).labels
            if target.exists() and sample_id in read_labels_file(target):
                return target
        return self.paths.labels

    @contextmanager
    def locked(self, command: str, *, shared: bool = False) -> Iterator[Round]:
        """Hold the round's lock ``rounds/RRR/.lock`` for the ``with`` block.

        Stages that write into the round (train, extract, label) hold it
        exclusively from :meth:`claim` to their last write; ``mmal select``,
        which only reads the round, holds it shared. Another process waits
        (``MMAL_LOCK_TIMEOUT`` seconds, then LockError); this thread may take it
        again inside (:func:`mmal.lock.hold`).

        Examples
        --------
        >>> with rnd.locked("mmal train"):  # doctest: +SKIP
        ...     rnd.claim(rnd.paths.model, force, "retrain the round", what=..., is_kind=...)
        """
        with hold(self.paths.lock, command, shared=shared):
            yield self

    def claim(self, path: Path, force: bool, fix: str, *, what: str,
              is_kind: Callable[[Path], bool]) -> Path:
        """``path`` (a file of this round, ``what``) when it is free, or with ``force`` when
        it is a regular file of that kind (``is_kind``); else WorkspaceError.

        Call it inside :meth:`locked`, so that the answer still holds at the write.
        """
        refuse_overwrite(path, force, fix, what=what, is_kind=is_kind)
        return path

    def checked_cache(self) -> Path:
        """``cache.h5``, after checking it was extracted from this round's ``model.pt``."""
        paths = self.paths
        with open_cache(paths.cache) as opened:
            check_model_fingerprint(paths.cache, opened.meta.model_fingerprint, paths.model)
        return paths.cache


def open_round(workspace: str | os.PathLike | Round, round: int | None = None, *,
               having: str = "labeled.json") -> Round:
    """The :class:`Round` ``round`` of ``workspace``.

    Parameters
    ----------
    workspace : path-like or Round
        A workspace folder; a :class:`Round` is returned as it is (``round``
        must then be None or its number).
    round : int, optional
        Default: the newest round whose folder holds the file ``having``.
    having : str
        ``"labeled.json"``, ``"model.pt"`` or ``"cache.h5"``: what the default
        round must have (and what the error says to run when none has it).

    Examples
    --------
    >>> r = open_round("uci-run")  # doctest: +SKIP
    >>> r.number, len(r.labeled), r.pool("test")  # doctest: +SKIP
    """
    if isinstance(workspace, Round):
        if round is not None and round != workspace.number:
            raise WorkspaceError(f"{workspace.paths.root}: is round {workspace.number:03d}, "
                                 f"not round {round:03d}; pass the round or its number, not both")
        return workspace
    workspace = Path(workspace)
    if round is None:
        round = latest_round(workspace, having=having)
    elif round < 0:
        raise WorkspaceError(f"round must be >= 0, got {round}")
    # the config is read on first use: `mmal select` needs a round's cache, not its mmal.toml
    return Round(workspace, round)


# ----------------------------------------------------------------------------- starting rounds

def init_workspace(directory: str | os.PathLike, config_path: str | os.PathLike, *,
                   force: bool = False) -> Path:
    """Create a workspace in ``directory`` from the config file at ``config_path``.

    Validates the config and the train split, writes ``rounds/000/labeled.json``
    (``al.initial_budget`` ids drawn uniformly without replacement with seed
    ``al.seed``, in ascending order), then ``mmal.toml``: the config with every
    key of its dataset kind explicit and absolute paths. Logs a warning per
    ``image_size`` or ``clip_seconds`` far above the pool's files
    (:func:`mmal.data.probe.size_warnings`). Returns the workspace path.

    Raises
    ------
    WorkspaceError
        If ``directory`` is already a workspace and ``force`` is False, or if it
        holds results beyond round 0's labeled set (never replaced, even with
        ``force``).
    ConfigError, DataError
        Bad config or data; nothing is written then.
    LockError
        Another process kept round 0 locked too long.
    """
    directory = Path(directory)
    _check_new_workspace(directory, force)  # before the data is read: the quick answer
    config = load_config(config_path)
    pool = load_pool(config, "train")
    load_pool(config, "test")  # its labels and files too, before any round trains
    for line in size_warnings(config, pool):  # e.g. 224-pixel crops of 32-pixel digits
        logger.warning("%s: %s", config_path, line)
    budget = config.al.initial_budget
    if budget < 2:
        raise ConfigError(f"{config_path}: key 'al.initial_budget' is {budget}; round 0 needs at "
                          "least 2 labeled samples to train on")
    if budget > len(pool):
        raise ConfigError(f"{config_path}: key 'al.initial_budget' is {budget} but the train "
                          f"split holds {len(pool)} samples; lower it")
    ids = np.sort(seeds.rng(config.al.seed).choice(pool.ids, size=budget, replace=False))
    round0 = round_paths(directory, 0)
    header = (f"Written by `mmal init` from {Path(config_path).resolve()}.\n"
              "The keys of its dataset kind are explicit (defaults filled in); paths are absolute.")
    with hold(round0.lock, "mmal init"):  # a train of round 0 must not see half a new start
        _check_new_workspace(directory, force)  # again: another init may have finished meanwhile
        write_index(round0.labeled, ids, kind="labeled", overwrite=force, provenance={
            "round": 0, "source": "random initial draw", "seed": config.al.seed,
            "initial_budget": budget, "pool_size": len(pool),
            "pool_fingerprint": pool.fingerprint(), NAMES_KEY: pool.names_fingerprint(ids),
            IDS_KEY: ids_fingerprint(ids),
        })
        write_text_atomic(directory / CONFIG_NAME, dump_config(config, header=header))
    logger.info("workspace %s: round 0 labeled set of %d ids", directory, budget)
    return directory


def _check_new_workspace(directory: Path, force: bool) -> None:
    """WorkspaceError when ``directory`` is a workspace (without ``force``) or holds results."""
    target = directory / CONFIG_NAME
    round0 = round_paths(directory, 0)
    if target.exists() or round0.labeled.exists():
        if not force:
            raise WorkspaceError(f"{directory}: is already a workspace ({target.name} or "
                                 f"{round0.labeled.relative_to(directory)} exists); pass --force "
                                 "to start it over or choose a new DIR")
        _refuse_results(directory, _rounds_after(directory, 0),
                        _outputs(round0), "--force only replaces mmal.toml and "
                        "rounds/000/labeled.json")


def read_labeled(workspace: str | os.PathLike, round: int | None = None, *,
                 pool: Pool | None = None) -> np.ndarray:
    """(n,) int64 ids labeled in ``round`` (default: the newest round with a labeled set).

    With the train ``pool``, also checks that every id is in it and still names
    the sample it named when ``labeled.json`` was written. Stages use
    :attr:`Round.labeled`, which always checks.

    Raises
    ------
    WorkspaceError
        No labeled set for the round.
    DataError
        (with ``pool``) Naming ``labeled.json`` when its ids are not in the pool
        or now name other samples (rows inserted into a row-numbered manifest).
    """
    if round is None:
        round = latest_round(workspace, having="labeled.json")
    path = round_paths(workspace, round).labeled
    if not path.is_file():
        raise WorkspaceError(f"{path}: no labeled set for round {round}; start the round with "
                             "`mmal next --selection FILE`")
    index = read_index(path)
    if index.kind != "labeled":
        raise WorkspaceError(f"{path}: is a {index.kind} index file, expected kind 'labeled'")
    if pool is not None:
        try:
            pool.rows(index.ids)
        except DataError as exc:
            raise DataError(f"{path}: {exc}; restore this round's labeled.json or point the "
                            "config at the dataset it was drawn from") from None
        check_labeled_names(pool, index, str(path))
    return index.ids


def next_round(workspace: str | os.PathLike | Round, selection_path: str | os.PathLike, *,
               force: bool = False) -> int:
    """Start round r+1 with labeled(r+1) = labeled(r) followed by the selection's ids.

    ``workspace`` may be a :class:`Round`, standing for its workspace. r is the round whose ``selections/`` folder holds ``selection_path``, else
    the round whose cache the selection names (by path, then by content
    fingerprint); a selection from no round's cache is refused. Returns r+1.

    Raises
    ------
    WorkspaceError
        If round r+1 already has a labeled set (unless ``force``), or holds a
        model, metrics or cache, or later rounds exist (never replaced).
    IndexFileError
        If the file is not a selection, holds no id, repeats labeled ids, or
        names ids outside the train pool.
    LockError
        Another process kept round r+1 locked too long.
    """
    workspace = workspace.workspace if isinstance(workspace, Round) else Path(workspace)
    selection_path = Path(selection_path)
    selection = read_index(selection_path)
    if selection.kind != "selection":
        raise IndexFileError(f"{selection_path}: is a {selection.kind} index file; pass a "
                             "selection written by `mmal select`")
    if not len(selection):
        raise IndexFileError(f"{selection_path}: field 'ids' is empty, and a round with nothing "
                             "added would repeat the one before; pass a selection of at least "
                             "one id (`mmal select --budget N`)")
    number = round_of_selection(workspace, selection_path)
    if number is None:
        number = _round_of_cache(workspace, selection_path, selection.provenance)
    base = open_round(workspace, number)
    pool, labeled = base.pool("train"), base.labeled
    again = np.intersect1d(labeled, selection.ids)
    if again.size:
        raise IndexFileError(f"{selection_path}: ids {preview(again)} are already labeled in "
                             f"round {number:03d}; the selection was made for another round")
    check_selection_names(pool, selection_path, selection.provenance, base.paths.cache)
    absent = selection.ids[~np.isin(selection.ids, pool.ids)]
    if absent.size:
        raise IndexFileError(f"{selection_path}: ids {preview(absent)} are not in the train "
                             "pool of this workspace; the selection belongs to another dataset")
    new = round_paths(workspace, number + 1)
    ids = np.concatenate([labeled, selection.ids])
    with hold(new.lock, "mmal next"):  # nobody trains round r+1 while its labeled set changes
        refuse_overwrite(new.labeled, force, "replace its labeled set",
                         why=f" (round {number + 1:03d} is started)", what=INDEX_WHAT,
                         is_kind=is_index_file)
        if new.labeled.exists():
            _refuse_results(workspace, _rounds_after(workspace, number + 1),
                            _outputs(new), "--force only replaces the labeled set")
        write_index(new.labeled, ids, kind="labeled", overwrite=force, provenance={
            "round": number + 1, "previous": str(base.paths.labeled.resolve()),
            "previous_count": int(len(labeled)), "selection": str(selection_path.resolve()),
            "strategy": selection.provenance.get("strategy"), "added": int(len(selection.ids)),
            NAMES_KEY: pool.names_fingerprint(ids), IDS_KEY: ids_fingerprint(ids),
        })
    logger.info("round %03d: %d labeled (+%d)", number + 1, len(ids), len(selection.ids))
    return number + 1


def check_labeled_names(pool: Pool, index: IndexFile, source: str) -> None:
    """:meth:`Pool.check_names` of a labeled set, telling a hand edit of it from a data change."""
    pool.check_names(index.ids, index.provenance.get(NAMES_KEY), source,
                     edited=ids_edited(index.ids, index.provenance.get(IDS_KEY)))


def check_selection_names(pool: Pool, selection_path: Path, provenance: dict,
                          cache: Path) -> None:
    """Check a selection against ``cache``, the cache it was made from (DataError, or a warning).

    The current cache's ids must still name what they named at extraction
    (DataError otherwise). When the cache was extracted again since the
    selection, a warning says so, and that its ids cannot be checked if the
    data's ids moved in between. A missing cache, and older files without
    fingerprints, are not checked.
    """
    if not cache.is_file():
        return
    with open_cache(cache) as opened:
        recorded = opened.meta.extra.get("names_fingerprint")
        if opened.fingerprint != provenance.get("cache_fingerprint"):
            mine = provenance.get("cache_names_fingerprint")
            moved = mine is not None and recorded is not None and mine != recorded
            logger.warning("%s was made from an earlier %s (extracted again since)%s; its ids "
                           "are used as they are — rerun `mmal select` to pick from the current "
                           "cache", selection_path, cache,
                           ", from data whose ids have moved, so they cannot be checked"
                           if moved else "")
        if recorded is not None:
            pool.check_names(opened.ids, recorded, str(cache))


def cache_of_selection(workspace: Path, selection_path: Path, provenance: dict) -> Path:
    """The cache a selection was made from: its round folder's, else the one it names.

    A relative path in the provenance starts at the workspace.
    """
    number = round_of_selection(workspace, selection_path)
    if number is not None:
        return round_paths(workspace, number).cache
    cache = Path(str(provenance.get("cache", "")))
    return cache if cache.is_absolute() else workspace / cache


def round_of_selection(workspace: Path, selection_path: Path) -> int | None:
    """R when ``selection_path`` lies in ``<workspace>/rounds/RRR/selections/``, else None."""
    folder = selection_path.resolve().parent
    rounds = (workspace / ROUNDS_DIR).resolve()
    if folder.name == "selections" and folder.parent.parent == rounds \
            and folder.parent.name.isdigit():
        return int(folder.parent.name)
    return None


def _round_named_by(workspace: Path, provenance: dict) -> int | None:
    """R when the selection's provenance names ``<workspace>/rounds/RRR/cache.h5``, else None."""
    cache = Path(str(provenance.get("cache", "")))
    rounds = (workspace / ROUNDS_DIR).resolve()
    if cache.name == "cache.h5" and cache.resolve().parent.parent == rounds \
            and cache.parent.name.isdigit():
        return int(cache.parent.name)
    return None


def _round_of_cache(workspace: Path, selection_path: Path, provenance: dict) -> int:
    """The round whose cache the selection was made from (by path, else by fingerprint)."""
    named = _round_named_by(workspace, provenance)
    if named is not None:
        return named
    for r in reversed(list_rounds(workspace)):
        path = round_paths(workspace, r).cache
        if path.exists():
            with open_cache(path) as opened:
                if opened.fingerprint == provenance.get("cache_fingerprint"):
                    return r
    raise IndexFileError(f"{selection_path}: was not made from any round's cache of {workspace} "
                         "(its cache and fingerprint match none); select from a round with "
                         "`mmal select --round R`")


def _outputs(paths: RoundPaths) -> list[Path]:
    # people's labels count: --force must not leave them behind for another draw or class list
    found = [p for p in (paths.model, paths.metrics, paths.cache, paths.labels) if p.exists()]
    if paths.selections.is_dir() and any(not _scratch(p) for p in paths.selections.iterdir()):
        found.append(paths.selections)
    return found


def _scratch(path: Path) -> bool:
    """A lock file or a temporary file: bookkeeping, never a result someone would lose."""
    return is_lock_file(path) or is_temp_file(path)


def _rounds_after(workspace: Path, number: int) -> list[int]:
    """Rounds after ``number`` whose folder holds more than lock and temporary files."""
    return [r for r in list_rounds(workspace) if r > number and any(
        not _scratch(p) for p in round_paths(workspace, r).root.iterdir())]


def _refuse_results(workspace: Path, later_rounds: list[int], outputs: list[Path],
                    what_force_does: str) -> None:
    held = [f"rounds/{r:03d}" for r in later_rounds] + [
        str(p.relative_to(workspace)) for p in outputs]
    if held:
        raise WorkspaceError(f"{workspace}: holds results built on what would be replaced "
                             f"({', '.join(held)}); {what_force_does}, so move those away "
                             "first or use a new workspace")
