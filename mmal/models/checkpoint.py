"""Model checkpoints (``model.pt``): plain containers of tensors and primitives.

Every checkpoint loads with ``torch.load(path, weights_only=True)``. Keys: the
common stamp (:mod:`mmal.stamp`: ``mmal_type`` "mmal-model", ``schema_version``
2, ``mmal_version``), ``config`` (``Config.to_dict()``),
``num_classes``, ``class_names``, ``multi_label``, ``input_dims`` (vector
modality widths), ``round``, ``epoch`` (epochs completed), ``state_dict``,
``num_labeled``, ``pool_fingerprint``; a training checkpoint in progress
(``model.pt.partial``) adds ``optimizer``, ``losses`` and ``run_key``.

Checkpoints written before the common stamp carry ``format`` ("mmal-model") and
``version`` (1) instead and the same keys otherwise; they load as version 1.

Version 2 gave ``model.fusion = "sum"`` its paper meaning (the mean of the
unimodal heads' logits); in a version-1 checkpoint "sum" is the feature sum,
so :func:`load_checkpoint` reads it as ``"feature-sum"``, and a config that
says "sum" for such a model is refused with the fix
(:func:`check_same_architecture`, :func:`check_fusion_meaning`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mmal.atomic import atomic_open
from mmal.config import Config, ModelConfig
from mmal.data.kinds import DATASET_KINDS
from mmal.errors import WorkspaceError, one_line
from mmal.models import input_dims
from mmal.stamp import MODEL, carries, check_stamp, stamp

_RETRAIN = "retrain with `mmal train --force`"
# Sections of the config that decide the model's architecture.
ARCH_SECTIONS = ("modalities", "model")


def checkpoint_header() -> dict[str, Any]:
    """The stamp a new checkpoint starts with (plain str and int, safe for ``weights_only``).

    Without the ``created`` time: the same run trains a byte-identical model.pt,
    so its fingerprint (which caches and metrics record) repeats too.
    """
    header = stamp(MODEL)
    del header["created"]
    return header


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any], *,
                    before_publish: Callable[[Path], None] | None = None) -> None:
    """Write ``payload`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    ``before_publish(temp)`` runs once the checkpoint is complete in its
    temporary file, before it takes ``path``'s name: training writes
    ``metrics.json`` (with the checkpoint's fingerprint) there, so ``model.pt``,
    which marks a round as trained, appears last. A full disk raises
    ``OSError`` naming ``path`` (not torch's ``RuntimeError``).
    """
    with atomic_open(path, "wb") as out:
        torch.save(payload, out)
        if before_publish is not None:
            out.flush()
            before_publish(out.temp)


def is_checkpoint(path: str | os.PathLike) -> bool:
    """True when ``path`` is an mmal model checkpoint (stamped, or from before the stamp)."""
    try:
        # mmap: only the small pickle is read, not the tensors
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # torch raises many types for files that are not checkpoints
        return False
    return isinstance(ckpt, dict) and carries(ckpt, MODEL)


def load_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (``weights_only=True``), in today's meaning.

    ``mmap=True`` maps the tensors instead of reading them: a cheap look at
    the stamp and config of a large model.
    """
    path = Path(path)
    if not path.is_file():
        raise WorkspaceError(f"{path}: no model checkpoint; run `mmal train` for this round first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for corrupt files
        raise WorkspaceError(f"{path}: unreadable model checkpoint ({one_line(exc, limit=200)}); "
                             f"{_RETRAIN}") from None
    if not isinstance(ckpt, dict):
        raise WorkspaceError(f"{path}: is not an mmal model checkpoint; {_RETRAIN}")
    version = check_stamp(ckpt, expected_type=MODEL, path=str(path), error=WorkspaceError,
                          what="an mmal model checkpoint", fix=_RETRAIN)
    return _upgraded(ckpt, version)


def _upgraded(ckpt: dict[str, Any], version: int) -> dict[str, Any]:
    """``ckpt`` in today's meaning: a version-1 fusion "sum" was the feature sum."""
    model = ckpt.get("config", {}).get("model", {})
    if version < 2 and model.get("fusion") == "sum":
        ckpt["config"] = {**ckpt["config"], "model": {**model, "fusion": "feature-sum"}}
    return ckpt


def check_fusion_meaning(ckpt: dict[str, Any], config: Config, path: str | os.PathLike) -> None:
    """WorkspaceError when ``config`` says fusion "sum" for a model trained with the feature sum.

    What mmal called "sum" before checkpoint version 2 is "feature-sum" now;
    "sum" is the paper's summation, another model. ``ckpt`` comes from
    :func:`load_checkpoint` (its meaning upgraded).
    """
    if config.model.fusion == "sum" and ckpt["config"]["model"].get("fusion") == "feature-sum":
        where = config.path or "mmal.toml"
        raise WorkspaceError(
            f"{path}: was trained with the feature sum (what fusion \"sum\" meant before, now "
            f"called \"feature-sum\"), but fusion = \"sum\" now means the paper's summation (mean "
            f"of the unimodal heads' logits); set fusion = \"feature-sum\" in [model] of {where} "
            "to go on with that model, or retrain every round with `mmal train --force`")


def check_same_architecture(ckpt: dict[str, Any], config: Config, path: str | os.PathLike) -> None:
    """WorkspaceError when ``config``'s modalities/model sections differ from the checkpoint's."""
    check_fusion_meaning(ckpt, config, path)
    now = config.to_dict()
    for section in ARCH_SECTIONS:
        if _model_keys(_recorded(ckpt["config"], section), section) != \
                _model_keys(now[section], section):
            raise WorkspaceError(f"{path}: was trained with a different [{section}] section than "
                                 "mmal.toml has now; retrain with `mmal train --force`")


#: ``[model]`` keys newer than the first checkpoints, with the value that keeps older models.
_MODEL_KEYS_ADDED = {"head_init": ModelConfig.head_init}


def _recorded(recorded: dict[str, Any], section: str) -> Any:
    """``recorded[section]`` as this mmal writes it.

    Checkpoints of mmal before dumped configs held only their dataset kind's
    keys record a ``column`` (the modality's name) for every modality, even
    where the dataset kind reads no columns; that one is left out here.
    """
    value = recorded.get(section)
    if section == "model" and isinstance(value, dict):  # keys added since: their defaults
        value = {**_MODEL_KEYS_ADDED, **value}
    kind = DATASET_KINDS.get(recorded.get("dataset", {}).get("kind"))
    if section != "modalities" or not isinstance(value, dict) or kind is None or kind.columns:
        return value
    return {name: {k: v for k, v in table.items() if not (k == "column" and v == name)}
            for name, table in value.items()}


#: Keys of ``[modalities.<name>]`` that change how a model trains, not which model it is:
#: a checkpoint still fits a config that changed them (extraction never augments).
TRAINING_ONLY_MODALITY_KEYS = ("augment", "lr")


def _model_keys(value: Any, section: str) -> Any:
    """``value`` of ``section`` without :data:`TRAINING_ONLY_MODALITY_KEYS`."""
    if section != "modalities" or not isinstance(value, dict):
        return value
    return {name: {k: v for k, v in table.items() if k not in TRAINING_ONLY_MODALITY_KEYS}
            if isinstance(table, dict) else table for name, table in value.items()}


def check_fits_pool(ckpt: dict[str, Any], config: Config, pool: Any,
                    path: str | os.PathLike) -> None:
    """WorkspaceError when the pool's classes, label kind or input widths differ from training's.

    The model's logits are indexed by the class list it was trained with and its
    vector encoders take fixed widths; a changed class list or feature file would
    otherwise give a cache whose labels and logits disagree, or a shape error.
    """
    now = {"class list": list(pool.class_names),
           "multi_label": bool(pool.multi_label),
           "vector input widths": input_dims(config, pool)}
    then = {"class list": list(ckpt["class_names"]),
            "multi_label": bool(ckpt["multi_label"]),
            "vector input widths": dict(ckpt["input_dims"])}
    for what, value in now.items():
        if value != then[what]:
            raise WorkspaceError(f"{path}: was trained with {what} {_short(then[what])}, but the "
                                 f"dataset now gives {_short(value)}; restore the data or "
                                 "retrain with `mmal train --force`")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
