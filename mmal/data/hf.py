"""Hugging Face datasets, read offline: ``[dataset] kind = "hf"``.

A split comes from one of (see ``docs/datasets.md``):

- a folder written by ``Dataset.save_to_disk`` (a ``DatasetDict`` writes one per
  split, named after it): ``dataset.train`` / ``dataset.test`` name it under
  ``dataset.root``;
- Parquet or Arrow files under ``dataset.root`` (a name or a glob);
- a dataset already in the local Hugging Face datasets cache
  (``dataset.hf_name``, with ``dataset.hf_config``), through ``load_dataset``
  in offline mode.

Nothing is downloaded. ``dataset.test = ""`` holds out ``dataset.test_fraction``
of the train split instead (stratified, seed ``al.seed``).

Columns become modalities by their feature: ``Image`` -> image, ``Audio`` ->
audio, strings -> text, fixed-length sequences of numbers -> vector. Text and
vectors are read into memory; images and audio stay in the Arrow files, and the
pool holds an :class:`HFColumn` of them: an :class:`HFCell` per sample, which
the loaders decode like a file's bytes (images with PIL, audio with mmal's own
WAV reader: ``datasets`` >= 4 would need torchcodec to decode ``Audio``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmal.data.parsing import assign_ids, class_list, encode_labels, is_unknown_label, split_label
from mmal.data.pool import DatasetKind, Pool, Problem, check_fraction
from mmal.data.uci import stratified_split
from mmal.errors import DataError, one_line

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import pyarrow as pa

    from mmal.config import Config, DatasetConfig, ModalityConfig

MISSING = "`dataset.kind = \"hf\"` needs the datasets package: pip install 'mmal[hf]'"
FILE_SUFFIXES = (".parquet", ".arrow")
GLOB_CHARS = "*?["
# What each modality kind reads (for the message when a column holds something else).
READS = {"image": "an Image column", "audio": "an Audio column", "text": "a string column",
         "vector": "a fixed-length sequence of numbers"}


# ----------------------------------------------------------------------------- sources

@dataclass(frozen=True)
class HFSplit:
    """Where one split lives: enough to open it again in any process.

    ``kind`` is "disk" (a ``save_to_disk`` folder ``location/name``), "files"
    (Parquet or Arrow files ``location/name``, a glob allowed) or "cache"
    (``load_dataset(location, config, split=name)``, offline). ``fingerprint``
    is the opened dataset's; it does not take part in equality, so a split
    opens once per process whether or not it is known yet.
    """

    kind: str
    location: str
    name: str
    config: str = ""
    fingerprint: str = field(default="", compare=False)

    def __str__(self) -> str:
        if self.kind == "cache":
            config = f" (config {self.config!r})" if self.config else ""
            return f"Hugging Face dataset {self.location!r}{config}, split {self.name!r}"
        return (Path(self.location) / self.name).as_posix()

    @property
    def tag(self) -> str:
        """``<folder>#<split>`` or ``<name>[:<config>]#<split>``: the prefix of a cell's name."""
        where = self.location + (f":{self.config}" if self.config else "")
        return f"{where}#{self.name}"

    def table(self) -> pa.Table:
        """The split's Arrow table (opened once per process, memory-mapped where it can)."""
        return _open(self)[0]


@dataclass(frozen=True, slots=True)
class HFCell:
    """One encoded image or audio file: column ``column`` of row ``row`` of ``split``.

    An :class:`~mmal.data.pool.EncodedSource`: ``read_bytes()`` returns the
    file's bytes (read from the Arrow table, or from the local file a cell
    only names), ``str()`` is ``hf:<folder or name>#<split>/<row>/<column>``
    (messages, ``mmal export``), and :attr:`source_key` keys it in the pool's
    fingerprint with the dataset's fingerprint, so a changed dataset changes it.
    Pickles as its three fields; each process opens the split on first use.
    """

    split: HFSplit
    column: str
    row: int

    def __str__(self) -> str:
        return f"hf:{self.split.tag}/{self.row}/{self.column}"

    @property
    def source_key(self) -> str:
        return f"hf:{self.split.fingerprint}#{self.split.name}/{self.row}/{self.column}"

    def read_bytes(self) -> bytes:
        try:
            value = self.split.table().column(self.column)[self.row].as_py()
        except (KeyError, IndexError):
            raise DataError(f"{self}: no such cell; the dataset changed after its pool was "
                            "read, so restore it") from None
        if value is not None and value.get("bytes") is not None:
            return value["bytes"]
        file = self.file(value)
        try:
            return file.read_bytes()
        except OSError as exc:
            raise DataError(f"{self}: cannot read {file} ({one_line(exc)}); embed the files "
                            "in the dataset (save_to_disk does)") from None

    def file(self, value: dict[str, Any] | None) -> Path:
        """The local file a cell without bytes names (relative: to the dataset's folder)."""
        if value is None or not value.get("path"):
            raise DataError(f"{self}: the cell is empty; fill it in or drop the row")
        file = Path(value["path"])
        if not file.is_absolute() and self.split.kind != "cache":
            file = Path(self.split.location) / file
        return file


class HFColumn:
    """A modality's sources in pool order: ``column[i]`` is the :class:`HFCell` of pool row i.

    Holds the split, the column and the split rows (int64) of the pool's samples,
    not one object per sample.
    """

    def __init__(self, split: HFSplit, column: str, rows: np.ndarray):
        self.split, self.column, self.rows = split, column, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> HFCell:
        return HFCell(self.split, self.column, int(self.rows[i]))

    def __iter__(self) -> Iterator[HFCell]:
        return (HFCell(self.split, self.column, r) for r in self.rows.tolist())


# ----------------------------------------------------------------------------- the kind

def load_hf_pool(config: Config, split: str) -> Pool:
    """Pool of the split ``dataset.train`` or ``dataset.test`` names (or its held-out share)."""
    ds, opts = config.dataset, config.dataset.options
    held_out = not ds.test
    which = "train" if split == "train" or held_out else "test"
    source = locate(config, which)
    table, features, fingerprint = _open(source)
    source = replace(source, fingerprint=fingerprint)
    origin = str(source)
    n = table.num_rows
    if n == 0:
        raise DataError(f"{origin}: the split has no rows")
    where = [f"row {r} of {origin}" for r in range(n)]
    names = _names(table, opts["id_column"], origin)
    ids = assign_ids(names, origin, where)
    raw = _label_cells(table, features, config, origin)
    classes, classes_origin = _classes(config, which, features, raw, origin)
    labels = encode_labels(raw, names, classes, multi_label=ds.multi_label,
                           classes_origin=classes_origin, where=where,
                           allow_unknown=split == "train" or held_out)
    rows = np.arange(n, dtype=np.int64)
    if held_out:
        rows = _held_out_rows(labels, ds.multi_label, opts["test_fraction"], config.al.seed)[
            0 if split == "train" else 1]
    records = {m.name: _records(m, table, features, source, rows, origin)
               for m in config.modalities}
    return Pool(ids=ids[rows], labels=labels[rows], class_names=classes,
                multi_label=ds.multi_label, records=records, names=[names[r] for r in rows],
                split=split, origin=origin, root=ds.root)


def _check(dataset: DatasetConfig, modalities: Sequence[ModalityConfig]) -> Problem | None:
    """Where the data comes from (root or hf_name, not both), a label column, a train split."""
    opts = dataset.options
    if opts["hf_name"] and dataset.root is not None:
        return ("dataset.hf_name", opts["hf_name"], "set either dataset.root (data on disk) or "
                "dataset.hf_name (a dataset in the Hugging Face cache), not both")
    if not opts["hf_name"] and dataset.root is None:
        return ("dataset.hf_name", "", "set dataset.root to the folder holding the data "
                "(save_to_disk output, Parquet or Arrow files) or dataset.hf_name to a dataset "
                "in the local Hugging Face cache")
    if opts["hf_config"] and not opts["hf_name"]:
        return "dataset.hf_config", opts["hf_config"], "applies only with dataset.hf_name"
    if not dataset.train:
        return "dataset.train", "", "name the train split"
    if not opts["label_column"]:
        return "dataset.label_column", "", "name the column holding the labels"
    if opts["id_column"] == opts["label_column"]:
        return ("dataset.id_column", opts["id_column"], "is also dataset.label_column; ids "
                "and labels need their own columns")
    return None


# test_fraction: read with dataset.test = "" (uci-mfeat declares it too, with the same default).
KIND = DatasetKind("hf", load_hf_pool, files=("train", "test", ""), needs_root=False,
                   modality_kinds=("image", "audio", "text", "vector"), columns=True,
                   options={"hf_name": "", "hf_config": "", "label_column": "label",
                            "id_column": "", "test_fraction": 0.2},
                   check_options=check_fraction, check=_check)


# ----------------------------------------------------------------------------- opening

def locate(config: Config, which: str) -> HFSplit:
    """The :class:`HFSplit` that ``dataset.<which>`` names ("train" or "test")."""
    ds, opts = config.dataset, config.dataset.options
    name = ds.train if which == "train" else ds.test
    if opts["hf_name"]:
        return HFSplit("cache", opts["hf_name"], name, opts["hf_config"])
    root = ds.root
    target = root / name
    if (target / "state.json").is_file():
        return HFSplit("disk", str(root), name)
    files = _files(root, name)
    if files:
        suffixes = {f.suffix.lower() for f in files}
        if len(suffixes) > 1 or not suffixes <= set(FILE_SUFFIXES):
            raise DataError(f"{target}: dataset.{which} names {', '.join(sorted(suffixes))} "
                            "files; name .parquet files or .arrow files (one kind)")
        return HFSplit("files", str(root), name)
    raise DataError(f"{target}: dataset.{which} = {name!r} is neither a folder written by "
                    f"save_to_disk nor .parquet/.arrow files; {_what_is_there(root)}")


def _files(root: Path, name: str) -> list[Path]:
    """The files ``name`` (a path or a glob relative to ``root``) matches, sorted."""
    if any(c in name for c in GLOB_CHARS):
        return sorted(p for p in root.glob(name) if p.is_file())
    return [root / name] if (root / name).is_file() else []


def _what_is_there(root: Path) -> str:
    """A hint naming the splits of a DatasetDict folder, or how to read a single Dataset."""
    if (root / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in root.iterdir() if (p / "state.json").is_file())
        return f"{root} holds the splits {', '.join(splits)}"
    if (root / "state.json").is_file():
        return (f"{root} holds one Dataset: set dataset.train = \".\" and dataset.test = \"\" "
                "to hold out dataset.test_fraction of it")
    return "check dataset.root and the split names (globs like \"train-*.parquet\" work)"


def _datasets() -> Any:
    """The datasets package, offline: ``load_dataset`` then reads only the local cache."""
    try:
        # Deferred: keeps pyarrow and datasets out of `import mmal.config`, which
        # imports the kind table, and out of every workspace without an hf dataset.
        import datasets
    except ImportError:
        raise DataError(MISSING) from None
    datasets.config.HF_HUB_OFFLINE = True  # nothing may download
    return datasets


@functools.lru_cache(maxsize=8)
def _open(split: HFSplit) -> tuple[pa.Table, Any, str]:
    """(Arrow table, Features, fingerprint) of ``split``; cached per process."""
    hf = _datasets()
    try:
        if split.kind == "disk":
            opened = hf.load_from_disk(str(Path(split.location) / split.name))
        elif split.kind == "cache":
            opened = hf.load_dataset(split.location, split.config or None, split=split.name)
        else:
            opened = _open_files(hf, split)
    except DataError:
        raise
    except ConnectionError:
        raise DataError(f"{split}: is not in the local Hugging Face datasets cache "
                        f"({hf.config.HF_DATASETS_CACHE}) and mmal never downloads; load it "
                        "once where the Hub is reachable, or save it with save_to_disk and set "
                        "dataset.root") from None
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for unreadable data
        raise DataError(f"{split}: datasets cannot open it ({one_line(exc)})") from None
    if not isinstance(opened, hf.Dataset):
        splits = ", ".join(opened) if isinstance(opened, dict) else type(opened).__name__
        raise DataError(f"{split}: holds the splits {splits}, not one split; name one of them")
    return opened.with_format("arrow")[:], opened.features, opened._fingerprint


def _open_files(hf: Any, split: HFSplit) -> Any:
    """Parquet files through the packaged builder; Arrow files memory-mapped as they are."""
    files = _files(Path(split.location), split.name)
    if not files:
        raise DataError(f"{split}: the files are gone; restore them")
    if files[0].suffix.lower() == ".parquet":
        return hf.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    parts = [hf.Dataset.from_file(str(f)) for f in files]
    return parts[0] if len(parts) == 1 else hf.concatenate_datasets(parts)


# ----------------------------------------------------------------------------- columns

def _column(table: pa.Table, name: str, origin: str, fix: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise DataError(f"{origin}: has no column {name!r}; its columns are "
                        f"{', '.join(table.column_names)}; {fix}")
    return table.column(name)


def _names(table: pa.Table, id_column: str, origin: str) -> list[str]:
    """Each row's id as written: the id column's values, else the row numbers."""
    if not id_column:
        return [str(r) for r in range(table.num_rows)]
    values = _column(table, id_column, origin, "set dataset.id_column").to_pylist()
    for r, v in enumerate(values):
        if v is None or not str(v).strip():
            raise DataError(f"{origin}: row {r}: column {id_column!r} (the id) is empty; fill "
                            "it in or drop the row")
    return [str(v).strip() for v in values]


def _label_cells(table: pa.Table, features: Any, config: Config, origin: str) -> list[Any]:
    """Each row's label as class names (str or list of str), None where unknown."""
    hf, ds = _datasets(), config.dataset
    col = ds.options["label_column"]
    values = _column(table, col, origin, "set dataset.label_column").to_pylist()
    feature = features[col]
    inner = _element(hf, feature)
    label = inner if inner is not None else feature
    if not isinstance(label, hf.ClassLabel) and not _is_string(label):
        raise DataError(f"{origin}: column {col!r} holds {feature}, not class labels; use a "
                        "ClassLabel or string column (e.g. cast it with ClassLabel(names=[...]))")
    if inner is not None and not ds.multi_label:
        raise DataError(f"{origin}: column {col!r} holds lists of labels (multi-label); set "
                        "dataset.multi_label = true")
    if isinstance(label, hf.ClassLabel):
        return [_class_names(v, label.names, col, r, origin) for r, v in enumerate(values)]
    return values


def _class_names(value: Any, names: Sequence[str], col: str, row: int, origin: str) -> Any:
    """A ClassLabel cell (int, or list of int) as class names; -1 and None mean unknown."""
    if isinstance(value, list):
        return [_class_names(v, names, col, row, origin) for v in value]
    if value is None or value == -1:
        return None
    if not 0 <= value < len(names):
        raise DataError(f"{origin}: row {row}: column {col!r} holds {value}, outside its "
                        f"{len(names)} ClassLabel names")
    return names[value]


def _classes(config: Config, which: str, features: Any, raw: list[Any],
             origin: str) -> tuple[list[str], str]:
    """The class list: the ClassLabel's names, else dataset.classes, else the sorted labels."""
    hf, ds = _datasets(), config.dataset
    col = ds.options["label_column"]
    feature = features[col]
    inner = _element(hf, feature) or feature
    if isinstance(inner, hf.ClassLabel):
        if ds.classes:
            raise DataError(f"{origin}: column {col!r} is a ClassLabel, whose names are the "
                            "class list; leave dataset.classes empty")
        other = _other_split(config, which)
        if other is not None and _label_names(other, col) != list(inner.names):
            raise DataError(f"{origin}: the ClassLabel names of column {col!r} differ from "
                            f"those of {other[0]}; both splits need the same class list")
        return list(inner.names), f"the ClassLabel names of column {col!r}"

    def seen() -> set[str]:
        labels = {c for v in raw if not is_unknown_label(v)
                  for c in split_label(v, multi_label=ds.multi_label)}
        other = _other_split(config, which)
        if other is not None:
            table = other[1]
            for v in _column(table, col, str(other[0]), "set dataset.label_column").to_pylist():
                if not is_unknown_label(v):
                    labels.update(split_label(v, multi_label=ds.multi_label))
        return labels

    return class_list(config, derive=seen)


def _other_split(config: Config, which: str) -> tuple[HFSplit, pa.Table, Any] | None:
    """The other split than ``which`` (its source, table, features); None when test is held out."""
    if not config.dataset.test:
        return None
    other = locate(config, "test" if which == "train" else "train")
    table, features, _ = _open(other)
    return other, table, features


def _label_names(other: tuple[HFSplit, pa.Table, Any], col: str) -> list[str] | None:
    hf = _datasets()
    feature = other[2][col] if col in other[2] else None
    inner = _element(hf, feature) or feature
    return list(inner.names) if isinstance(inner, hf.ClassLabel) else None


def _held_out_rows(labels: np.ndarray, multi_label: bool, fraction: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows): ``fraction`` of the labeled rows, per class, go to test."""
    known = np.flatnonzero((labels >= 0).all(axis=1) if multi_label else labels >= 0)
    # Multi-label rows have no single class to stratify by: one stratum.
    strata = np.zeros(len(known), dtype=np.int64) if multi_label else labels[known]
    test = known[stratified_split(strata, fraction, seed=seed)[1]]
    return np.setdiff1d(np.arange(len(labels), dtype=np.int64), test), test


def _records(m: ModalityConfig, table: pa.Table, features: Any, split: HFSplit,
             rows: np.ndarray, origin: str) -> Any:
    """The modality's sources: HFColumn (image, audio), list of str (text), (N, D) array."""
    hf = _datasets()
    col = m.options["column"]
    values = _column(table, col, origin, f"set modalities.{m.name}.column")
    feature = features[col]
    encoded = {"image": hf.Image, "audio": hf.Audio}.get(m.kind)
    if encoded is not None and isinstance(feature, encoded):
        _check_cells(values, col, split, rows, origin)
        return HFColumn(split, col, rows)
    if m.kind == "text" and _is_string(feature):
        text = values.to_pylist()
        for r in rows.tolist():
            if text[r] is None:
                raise DataError(f"{origin}: row {r}: column {col!r} is empty; fill it in or "
                                "drop the row")
        return [text[r] for r in rows.tolist()]
    if m.kind == "vector" and _is_number_list(hf, feature):
        return _vectors(values, col, origin)[rows]
    raise DataError(f"{origin}: column {col!r} holds {feature}; a {m.kind} modality reads "
                    f"{READS[m.kind]} (set modalities.{m.name}.column)")


def _check_cells(values: pa.ChunkedArray, col: str, split: HFSplit, rows: np.ndarray,
                 origin: str) -> None:
    """DataError naming the first pool row whose image/audio cell is empty or names no file."""
    import pyarrow.compute as pc  # deferred with datasets (pyarrow comes with it)

    no_bytes = pc.is_null(pc.struct_field(values, "bytes")).to_numpy(zero_copy_only=False)
    for r in rows[no_bytes[rows]].tolist():
        cell = HFCell(split, col, r)
        file = cell.file(values[r].as_py())
        if not file.is_file():
            raise DataError(f"{origin}: row {r}: column {col!r} names the file {file}, which "
                            "does not exist; fix the path or drop the row")


def _vectors(values: pa.ChunkedArray, col: str, origin: str) -> np.ndarray:
    """(N, D) float32 of a list column; DataError naming a row empty, ragged or not finite."""
    import pyarrow.compute as pc  # deferred with datasets (pyarrow comes with it)

    lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(np.isnan(lengths.astype(np.float64)) | (lengths == 0))
    if bad.size:
        raise DataError(f"{origin}: row {bad[0]}: column {col!r} is empty; a vector needs "
                        "numbers in every row")
    if (lengths != lengths[0]).any():
        r = int(np.flatnonzero(lengths != lengths[0])[0])
        raise DataError(f"{origin}: row {r}: column {col!r} has {int(lengths[r])} numbers, but "
                        f"row 0 has {int(lengths[0])}; a vector modality needs the same length "
                        "in every row")
    flat = pc.list_flatten(values).to_numpy(zero_copy_only=False)
    x = np.asarray(flat, dtype=np.float32).reshape(len(lengths), int(lengths[0]))
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise DataError(f"{origin}: row {int(np.flatnonzero(~finite)[0])}: column {col!r} "
                        "holds NaN, Inf or an empty value; fix or drop the row")
    return x


def _is_string(feature: Any) -> bool:
    return getattr(feature, "dtype", None) in ("string", "large_string")


def _element(hf: Any, feature: Any) -> Any:
    """The feature of a list column's elements; None for any other column."""
    return feature.feature if isinstance(feature, hf.List | hf.LargeList) else None


def _is_number_list(hf: Any, feature: Any) -> bool:
    inner = _element(hf, feature)
    dtype = getattr(inner, "dtype", "") if isinstance(inner, hf.Value) else ""
    return dtype.startswith(("int", "uint", "float"))
