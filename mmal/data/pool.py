"""A split of a dataset, :class:`Pool`, and how a dataset kind is declared, :class:`DatasetKind`.

A pool holds ids, labels and, per modality, where each sample's value comes
from; nothing is decoded here. :class:`mmal.data.dataset.MultimodalDataset`
turns sources into tensors. Each layout adapter (manifest, food101,
kinetics-sound/vggsound, uci-mfeat, hf) declares a :class:`DatasetKind` whose
``load`` builds a pool; :mod:`mmal.data.kinds` holds the table of them and
``docs/datasets.md`` describes their files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mmal.data.parsing import is_integer_text
from mmal.errors import DataError

if TYPE_CHECKING:
    from mmal.config import Config, DatasetConfig, ModalityConfig

SPLITS = ("train", "test")


@dataclass(frozen=True, eq=False)
class Pool:
    """One split of a dataset.

    Attributes
    ----------
    ids : np.ndarray
        (N,) int64, unique. Integer ids from the data when every id is an
        integer, else the row number in the split's file.
    labels : np.ndarray
        (N,) int64 class index, or (N, K) int8 multi-hot when ``multi_label``;
        -1 (a row of -1) where a manifest's train split leaves the label empty.
    class_names : list of str
        K names; ``labels`` index into it.
    multi_label : bool
    records : dict
        Modality name -> per-sample sources, in row order: a list of
        :class:`~pathlib.Path` (a file, or a folder of frames), a list of str
        (inline text), an (N, D) float32 array (vectors held in memory), or a
        sequence of :class:`EncodedSource` (an image or audio file kept inside
        another file, e.g. a Hugging Face dataset's Arrow table).
    names : list of str
        The sample ids as written in the data (used in error messages).
    split : {"train", "test"}
    origin : str
        The file or data set the split came from (used in error messages).
    root : Path or None
        Data folder; file sources are fingerprinted relative to it.
    """

    ids: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    multi_label: bool
    records: dict[str, Any]
    names: list[str]
    split: str
    origin: str
    root: Path | None = None
    _row_of: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._row_of.update({int(i): r for r, i in enumerate(self.ids)})

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def rows(self, ids: Iterable[int]) -> np.ndarray:
        """Row positions of ``ids`` (int64); DataError naming ids absent from the pool."""
        ids = [int(i) for i in ids]
        absent = [i for i in ids if i not in self._row_of]
        if absent:
            shown = ", ".join(map(str, absent[:5])) + (" ..." if len(absent) > 5 else "")
            raise DataError(f"ids {shown} are not in the {self.split} split of {self.origin} "
                            f"({len(absent)} absent); the id list belongs to another dataset")
        return np.asarray([self._row_of[i] for i in ids], dtype=np.int64)

    def fingerprint(self) -> str:
        """sha256 (hex) of the split, ids, labels, class names and every sample's source."""
        h = hashlib.sha256()
        h.update(json.dumps([self.split, self.class_names, self.multi_label]).encode())
        h.update(np.ascontiguousarray(self.ids, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        for name in sorted(self.records):
            self._hash_sources(h, name)
        return h.hexdigest()

    def sources_fingerprint(self, modality: str, *, stat: bool = False) -> str:
        """sha256 (hex) of the split, ids and ``modality``'s sources alone (not the labels).

        With ``stat``, each file source adds its size and modification time, so
        a file rewritten in place under the same name changes it too (a
        ``stat`` per sample; nothing is read or decoded).
        """
        h = hashlib.sha256(json.dumps([self.split, modality]).encode())
        h.update(np.ascontiguousarray(self.ids, dtype=np.int64).tobytes())
        self._hash_sources(h, modality, stat=stat)
        return h.hexdigest()

    def _hash_sources(self, h: Any, name: str, *, stat: bool = False) -> None:
        """Feed modality ``name``'s sources into the hash ``h``."""
        # Files are keyed by their path relative to the dataset root, so moving the
        # dataset folder keeps the fingerprint.
        root = None if self.root is None else self.root.as_posix().rstrip("/") + "/"
        h.update(name.encode() + b"\0")
        values = self.records[name]
        if isinstance(values, np.ndarray):
            h.update(np.ascontiguousarray(values, dtype=np.float32).tobytes())
            return
        for v in values:
            h.update(_source_key(v, root).encode() + b"\0")
            if stat and isinstance(v, Path):
                h.update(_stat_key(v).encode() + b"\0")

    def has_id(self, sample_id: int) -> bool:
        """Whether ``sample_id`` is one of the pool's ids."""
        return int(sample_id) in self._row_of

    def show_ids(self, ids: Iterable[int], limit: int = 5) -> str:
        """``ids`` for a message: "16 (img_0017), 26 (img_0027) and 3 more".

        The name as written in the data follows an id where it differs from it
        (row-numbered datasets); ids not in the pool are shown alone.
        """
        ids = [int(i) for i in ids]
        parts = []
        for i in ids[:limit]:
            row = self._row_of.get(i)
            name = None if row is None else self.names[row]
            parts.append(str(i) if name is None or name == str(i) else f"{i} ({name})")
        more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
        return ", ".join(parts) + more

    def names_fingerprint(self, ids: Iterable[int]) -> str:
        """sha256 (hex) of the (id, name) pairs of ``ids``, in the given order.

        Stays the same while those ids name the same samples. Where ids are row
        numbers (names that are not all integers), inserting, removing or
        reordering rows of the split's file before them changes it.
        """
        rows = self.rows(ids)
        pairs = [[int(self.ids[r]), self.names[r]] for r in rows]
        return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()

    def check_names(self, ids: np.ndarray, recorded: str | None, source: str, *,
                    edited: bool | None = False) -> None:
        """DataError unless ``ids`` name the samples they named when ``recorded`` was taken.

        ``recorded`` is a :meth:`names_fingerprint` read from ``source`` (None:
        not recorded, nothing to check). ``edited`` says whether ``ids`` differ
        from the ids ``source`` was written with (:func:`ids_edited`): True
        blames the file, False the data, None (not known: a file from before
        mmal recorded it) names both.
        """
        if recorded is None:
            return
        if edited:
            raise DataError(f"{source}: its ids were edited (they differ from the ids "
                            "recorded when mmal wrote it); restore the file as mmal wrote it: "
                            "labeled sets change only through `mmal init` and `mmal next`")
        restore = "restore that file, or start a new workspace with `mmal init`"
        if edited is None:
            restore = ("restore the data or this file as mmal wrote it, or start a new "
                       "workspace with `mmal init`")
        gone = [int(i) for i in ids if not self.has_id(i)]
        if gone:
            why = "rows were removed" + (", or this file's ids were edited" if edited is None
                                         else "")
            raise DataError(f"{source}: ids {self.show_ids(gone)} are no longer in {self.origin} "
                            f"({why}); {restore}")
        if recorded == self.names_fingerprint(ids):
            return
        how = ("its ids are row numbers, and rows were inserted, removed or reordered"
               if not all(is_integer_text(n) for n in self.names) else "samples were renamed")
        if edited is None:
            how = f"this file's ids were edited, or {how}"
        raise DataError(f"{source}: its ids no longer name the same samples of {self.origin} "
                        f"({how}); {restore}")


def ids_fingerprint(ids: Iterable[int]) -> str:
    """sha256 (hex) of ``ids`` in order: recorded with a list of ids to tell later edits apart."""
    return hashlib.sha256(json.dumps([int(i) for i in ids]).encode()).hexdigest()


def ids_edited(ids: Iterable[int], recorded: str | None) -> bool | None:
    """Whether ``ids`` differ from the ids :func:`ids_fingerprint` ``recorded`` (None: no record)."""
    return None if recorded is None else ids_fingerprint(ids) != recorded


class EncodedSource(Protocol):
    """A sample's encoded image or audio file that is not a file of its own.

    The loaders decode ``read_bytes()`` as they decode a file's contents;
    ``str()`` names the source in messages and in ``mmal export``;
    ``source_key`` keys it in :meth:`Pool.fingerprint` (it should change when
    the data behind it does). :class:`mmal.data.hf.HFCell` is one.
    """

    @property
    def source_key(self) -> str: ...

    def read_bytes(self) -> bytes: ...


# A broken config rule: (dotted key, its value, the rule), e.g.
# ("dataset.views", ["fac"], "lists 1 views but there are 2 [modalities.*] tables; ...").
# The config reader turns it into "<file>: key 'dataset.views' is ['fac']; lists 1 views ...".
Problem = tuple[str, Any, str]


@dataclass(frozen=True)
class DatasetKind:
    """One dataset layout, as ``[dataset] kind = <name>`` selects it.

    The config reader, :func:`mmal.data.load_pool` and ``docs/config.md`` read
    these from the one table :data:`mmal.data.kinds.DATASET_KINDS`.

    Attributes
    ----------
    name : str
        The value of ``dataset.kind``.
    load : callable
        ``load(config, split) -> Pool`` for split "train" or "test"; raises
        :class:`~mmal.errors.DataError` naming the bad file, line or sample.
    files : (str, str, str)
        Defaults of ``dataset.train``, ``dataset.test`` and ``dataset.classes``.
    needs_root : bool
        Whether ``dataset.root`` is required.
    modality_kinds : tuple of str or None
        The modality kinds a dataset of this kind holds; None: any.
    keys : tuple of str
        The common ``[dataset]`` keys (``root``, ``train``, ``test``,
        ``classes``, ``multi_label``) that this kind reads.
    columns : bool
        Whether a modality names its column (``modalities.<name>.column``).
    options : dict
        Extra ``[dataset]`` keys of this kind and their defaults; a key's type
        is its default's (a tuple default takes a TOML list). Two kinds may
        declare the same key with the same default. A dataset reads only its
        kind's keys and a dumped config writes only those; another kind's key
        is an error unless it holds its default (older mmal wrote them all).
    check_options : callable or None
        ``check_options(values) -> Problem | None`` on the values of this kind's
        options.
    check : callable or None
        ``check(dataset, modalities) -> Problem | None``: rules across keys,
        run for datasets of this kind only (uci-mfeat: one modality per view).
    """

    name: str
    load: Callable[[Config, str], Pool]
    files: tuple[str, str, str] = ("", "", "")
    needs_root: bool = True
    modality_kinds: tuple[str, ...] | None = None
    keys: tuple[str, ...] = ("root", "train", "test", "classes", "multi_label")
    columns: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    check_options: Callable[[dict[str, Any]], Problem | None] | None = None
    check: Callable[[DatasetConfig, Sequence[ModalityConfig]], Problem | None] | None = None


def check_fraction(values: dict[str, Any]) -> Problem | None:
    """``test_fraction`` strictly between 0 and 1 (the kinds that hold a test share out)."""
    if not 0 < values["test_fraction"] < 1:
        return "dataset.test_fraction", values["test_fraction"], "must lie strictly between 0 and 1"
    return None


def _source_key(value: Any, root: str | None) -> str:
    """``file:<path relative to root>`` (``root`` ends in "/"), ``file:<path>``, ``text:<value>``,
    or an :class:`EncodedSource`'s own ``source_key``.

    String prefix tests, not ``Path.relative_to``: this runs once per sample and
    modality on every fingerprint, and pathlib parsing dominated it.
    """
    if isinstance(value, str):
        return "text:" + value
    if isinstance(value, Path):
        path = value.as_posix()
        if root is not None and path.startswith(root):
            return "file:" + path[len(root):]
        return "file:" + path
    key = getattr(value, "source_key", None)
    return key if key is not None else "text:" + str(value)


def _stat_key(path: Path) -> str:
    """``size:mtime_ns`` of a file (of its newest entry for a folder of frames); "" if absent."""
    try:
        if path.is_dir():
            stamps = [e.stat() for e in os.scandir(path)]
            return f"{len(stamps)}:{max((s.st_mtime_ns for s in stamps), default=0)}"
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return ""


def vector_dim(pool: Pool, modality: str) -> int:
    """Width D of a vector modality (from the in-memory array or the first ``.npy`` file)."""
    values = pool.records[modality]
    if isinstance(values, np.ndarray):
        return int(values.shape[1])
    # Deferred: loaders imports torch, and `import mmal.data` stays torch-free.
    from mmal.data.loaders import load_vector

    return int(load_vector(values[0], sample=pool.names[0]).shape[0])
