"""A split of a dataset as arrays and per-sample sources: :class:`Pool` and :func:`load_pool`.

A pool holds ids, labels and, per modality, where each sample's value comes
from; nothing is decoded here. :class:`mmal.data.dataset.MultimodalDataset`
turns sources into tensors. Layout adapters (manifest, food101,
kinetics-sound/vggsound, uci-mfeat) each build a pool; ``docs/datasets.md``
describes their files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmal.errors import DataError

if TYPE_CHECKING:
    from mmal.config import Config

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
        (inline text), or an (N, D) float32 array (vectors held in memory).
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
        # Files are keyed by their path relative to the dataset root, so moving the
        # dataset folder keeps the fingerprint.
        root = None if self.root is None else self.root.as_posix().rstrip("/") + "/"
        for name in sorted(self.records):
            h.update(name.encode() + b"\0")
            values = self.records[name]
            if isinstance(values, np.ndarray):
                h.update(np.ascontiguousarray(values, dtype=np.float32).tobytes())
            else:
                for v in values:
                    h.update(_source_key(v, root).encode() + b"\0")
        return h.hexdigest()

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

    def check_names(self, ids: np.ndarray, recorded: str | None, source: str) -> None:
        """DataError unless ``ids`` name the samples they named when ``recorded`` was taken.

        ``recorded`` is a :meth:`names_fingerprint` read from ``source`` (None:
        not recorded, nothing to check).
        """
        if recorded is None:
            return
        gone = [int(i) for i in ids if not self.has_id(i)]
        if gone:
            raise DataError(f"{source}: ids {self.show_ids(gone)} are no longer in {self.origin} "
                            "(rows were removed); restore that file, or start a new workspace "
                            "with `mmal init`")
        if recorded == self.names_fingerprint(ids):
            return
        how = ("its ids are row numbers, and rows were inserted, removed or reordered"
               if not all(is_integer_text(n) for n in self.names) else "samples were renamed")
        raise DataError(f"{source}: its ids no longer name the same samples of {self.origin} "
                        f"({how}); restore that file, or start a new workspace with `mmal init`")


def is_integer_text(text: str) -> bool:
    """Whether ``text`` reads as an integer (as ``int()`` takes it: "7", " 007", "1_000")."""
    try:
        int(text)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _source_key(value: Any, root: str | None) -> str:
    """``file:<path relative to root>`` (``root`` ends in "/"), ``file:<path>``, or ``text:<value>``.

    String prefix tests, not ``Path.relative_to``: this runs once per sample and
    modality on every fingerprint, and pathlib parsing dominated it.
    """
    if isinstance(value, Path):
        path = value.as_posix()
        if root is not None and path.startswith(root):
            return "file:" + path[len(root):]
        return "file:" + path
    return "text:" + str(value)


def load_pool(config: Config, split: str) -> Pool:
    """Load split ``"train"`` (the active-learning pool) or ``"test"`` of ``config``'s dataset.

    Every file a sample names is checked to exist; labels are checked against
    the class list.

    Raises
    ------
    DataError
        Naming the file, line or sample that is bad.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    kind = config.dataset.kind
    if kind == "manifest":
        from mmal.data.manifest import load_manifest_pool as loader
    elif kind == "food101":
        from mmal.data.food101 import load_food101_pool as loader
    elif kind in ("kinetics-sound", "vggsound"):
        from mmal.data.avclips import load_avclips_pool as loader
    elif kind == "uci-mfeat":
        from mmal.data.uci import load_uci_pool as loader
    else:  # config validation makes this unreachable
        raise DataError(f"unknown dataset kind {kind!r}")
    return loader(config, split)


def vector_dim(pool: Pool, modality: str) -> int:
    """Width D of a vector modality (from the in-memory array or the first ``.npy`` file)."""
    values = pool.records[modality]
    if isinstance(values, np.ndarray):
        return int(values.shape[1])
    from mmal.data.loaders import load_vector

    return int(load_vector(values[0], sample=pool.names[0]).shape[0])


# ----------------------------------------------------------------------------- shared helpers

def assign_ids(names: Sequence[str], origin: str,
               where: Sequence[str] | None = None) -> np.ndarray:
    """(N,) int64 ids: the names themselves when all are integers, else row numbers.

    ``where`` optionally gives each row's place in the file (e.g. "train.csv
    line 5") for the messages.

    Raises
    ------
    DataError
        Naming the first id written twice, or two ids that are the same integer
        (e.g. "1" and "01").
    """
    seen: dict[str, int] = {}
    for k, n in enumerate(names):
        if n in seen:
            lines = f" ({where[seen[n]]} and {where[k]})" if where is not None else ""
            raise DataError(f"{origin}: sample id {n!r} occurs more than once{lines}; ids must "
                            "be unique")
        seen[n] = k
    try:
        ids = np.asarray([int(n) for n in names], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        return np.arange(len(names), dtype=np.int64)
    first: dict[int, str] = {}
    for n, i in zip(names, ids.tolist(), strict=True):
        if i in first:
            raise DataError(f"{origin}: sample ids {first[i]!r} and {n!r} are the same integer "
                            f"{i}; ids must be unique, write each once")
        first[i] = n
    return ids


def read_class_list(path: Path) -> list[str]:
    """Class names, one per non-blank line of ``path``."""
    if not path.is_file():
        raise DataError(f"{path}: no such class list file; write one class name per line "
                        "or set dataset.classes")
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: class list is not UTF-8 text ({exc})") from None
    names = [n for n in names if n]
    if not names:
        raise DataError(f"{path}: class list is empty; write one class name per line")
    if len(set(names)) != len(names):
        dup = next(n for i, n in enumerate(names) if n in names[:i])
        raise DataError(f"{path}: class {dup!r} is listed twice")
    return names


def encode_labels(raw: Sequence[Any], names: Sequence[str], class_names: Sequence[str], *,
                  multi_label: bool, classes_origin: str, where: Sequence[str],
                  allow_unknown: bool = False) -> np.ndarray:
    """Labels as class indices ((N,) int64) or multi-hot ((N, K) int8).

    ``raw[i]`` is a class name (str or int), or for multi-label a list of names
    or a string ``"a|b"`` / JSON list. ``where[i]`` says where sample i was read
    (e.g. "train.csv line 7"); ``classes_origin`` where the class list came from.
    With ``allow_unknown``, an empty cell means "not known yet" and encodes as
    -1 (multi-label: a row of -1); people supply those labels with ``mmal label``.
    """
    index = {c: k for k, c in enumerate(class_names)}
    out = (np.zeros((len(raw), len(class_names)), dtype=np.int8) if multi_label
           else np.empty(len(raw), dtype=np.int64))
    for i, value in enumerate(raw):
        if is_unknown_label(value):
            if not allow_unknown:
                raise DataError(f"sample {names[i]}: has no label ({where[i]}); the test split "
                                "needs every label")
            out[i] = -1
            continue
        parts = split_label(value, multi_label=multi_label)
        if not multi_label and parts[0] not in index:
            parts = split_label(value, multi_label=True) or parts  # for the hint below
        if not multi_label and len(parts) != 1:
            raise DataError(f"sample {names[i]}: label {value!r} names {len(parts)} classes "
                            f"({where[i]}); set dataset.multi_label = true for multi-label data")
        for part in parts:
            if part not in index:
                raise DataError(f"sample {names[i]}: label {part!r} is not in the class list "
                                f"{classes_origin} ({where[i]}); fix the label or add the class")
            if multi_label:
                out[i, index[part]] = 1
            else:
                out[i] = index[part]
    return out


def is_unknown_label(value: Any) -> bool:
    """True for an empty label cell (None, "", whitespace, or an empty list)."""
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


def split_label(value: Any, *, multi_label: bool) -> list[str]:
    """Class names in one label cell: ``"a"``, ``"a|b"``, ``'["a", "b"]'``, a list, or an int."""
    if isinstance(value, bool) or value is None:
        return [str(value)]
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value).strip()
    if multi_label and text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return [str(v) for v in parsed]
    if multi_label:
        return [p.strip() for p in text.split("|") if p.strip()]
    return [text]


def check_sources_exist(paths: Sequence[Path], names: Sequence[str], *, folder: bool,
                        what: str, where: str) -> None:
    """DataError naming the first sample whose file (or frame folder) is missing."""
    for name, p in zip(names, paths, strict=True):
        ok = p.is_dir() if folder else p.is_file()
        if not ok:
            thing = "frame folder" if folder else "file"
            raise DataError(f"sample {name}: {what} {thing} {p} does not exist ({where}); "
                            "fix the path or remove the sample")


def class_list(config: Config, *, derive: Callable[[], Sequence[str]] | None = None,
               ) -> tuple[list[str], str]:
    """The class names and where they came from (for messages).

    From ``dataset.classes`` (a list, or a file relative to ``dataset.root``);
    when that is empty, from ``<root>/classes.txt`` if present, else from
    ``derive()`` (the labels seen in the data, sorted here).
    """
    ds = config.dataset
    if isinstance(ds.classes, tuple):
        return list(ds.classes), f"dataset.classes of {config.path or 'the config'}"
    if ds.classes:
        path = ds.root / ds.classes
        return read_class_list(path), str(path)
    default = ds.root / "classes.txt" if ds.root is not None else None
    if default is not None and default.is_file():
        return read_class_list(default), str(default)
    if derive is None:
        raise DataError(f"{config.path}: no class list; set dataset.classes")
    return sorted(derive()), "derived from the labels in the data"
