"""Schema version 1 of the feature cache: metadata and the expected fields.

``docs/cache.md`` is the prose specification; this module is its executable
form. Writer and reader both derive shapes and dtypes from :func:`field_specs`
so the two can never disagree.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mmal.cache.fusion import FUSIONS
from mmal.errors import CacheError

#: The fused logits' name under ``logits/``; no modality may take it.
FUSED_NAME = "mm"

CACHE_TYPE = "mmal-feature-cache"
SCHEMA_VERSION = 1
# SHIM for the fusion-model branch (fused_dim, head_input, the fusion names): the cache-v2
# branch owns this module (SPEC-fusions.md); at merge take cache-v2's version of this file.
FEATURE_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class CacheMeta:
    """Everything about a cache that is not per-sample data.

    Attributes
    ----------
    modalities : tuple of str
        Modality names in order; bit ``m`` of a coalition index is modality ``m``.
    feature_dims : tuple of int
        Width ``D_m`` of ``features/<modality>``, same order as ``modalities``.
    fusion : {"concat", "sum"}
        How modality features form the head input ``h``: concatenation in
        modality order (``D_fused = sum(D_m)``) or elementwise sum (every
        ``D_m == D_fused``).
    num_classes : int
        ``K``, the width of every logit array.
    multi_label : bool
        Sigmoid heads and (N, K) int8 labels instead of softmax and (N,) int64.
    round : int
        Active-learning round the cache belongs to.
    model_fingerprint, pool_fingerprint : str
        Hashes of the model checkpoint and of the pool (ids and sources).
    feature_dtype : {"float32", "float16"}
        Storage dtype of ``features/*``; logits are always float32.
    mc_samples : int
        ``T`` of ``mc_logits`` (0 when the cache has none).
    extra : dict
        Free-form JSON-serialisable provenance (e.g. encoder names).
    """

    modalities: tuple[str, ...]
    feature_dims: tuple[int, ...]
    fusion: str
    num_classes: int
    multi_label: bool = False
    round: int = 0
    model_fingerprint: str = ""
    pool_fingerprint: str = ""
    feature_dtype: str = "float32"
    mc_samples: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    fused_dim: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(str(m) for m in self.modalities))
        object.__setattr__(self, "feature_dims", tuple(int(d) for d in self.feature_dims))
        if not self.fused_dim and self.feature_dims:
            derived = (self.feature_dims[0] if self.fusion == "feature-sum"
                       else sum(self.feature_dims))
            object.__setattr__(self, "fused_dim", derived)
        problems = _meta_problems(self)
        if problems:
            raise CacheError(f"invalid cache metadata: {problems[0]}")

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    @property
    def num_coalitions(self) -> int:
        return 2 ** len(self.modalities)

    def to_attrs(self) -> dict[str, Any]:
        """Attribute dict as stored on the HDF5 root (JSON for structured values)."""
        d = asdict(self)
        # SHIM: fused_dim only where it cannot be derived (nl-gate), so other files stay as before
        stored = {"fused_dim": int(d["fused_dim"])} if self.fusion == "nl-gate" else {}
        return {**stored,
            "modalities": json.dumps(list(d["modalities"])),
            "feature_dims": json.dumps(list(d["feature_dims"])),
            "fusion": d["fusion"],
            "num_classes": int(d["num_classes"]),
            "multi_label": bool(d["multi_label"]),
            "round": int(d["round"]),
            "model_fingerprint": d["model_fingerprint"],
            "pool_fingerprint": d["pool_fingerprint"],
            "feature_dtype": d["feature_dtype"],
            "mc_samples": int(d["mc_samples"]),
            "extra": json.dumps(d["extra"], sort_keys=True),
        }

    @classmethod
    def from_attrs(cls, attrs: Any, path: str = "<cache>") -> CacheMeta:
        """Parse root attributes, naming the missing or malformed one."""
        def get(key: str) -> Any:
            if key not in attrs:
                raise CacheError(
                    f"{path}: attribute '{key}' is missing; the file was not written by "
                    "mmal's cache writer, rewrite it with `mmal extract` or `mmal synth`"
                )
            value = attrs[key]
            return value.decode() if isinstance(value, bytes) else value

        try:
            return cls(
                modalities=tuple(json.loads(get("modalities"))),
                feature_dims=tuple(json.loads(get("feature_dims"))),
                fusion=str(get("fusion")),
                num_classes=int(get("num_classes")),
                multi_label=bool(get("multi_label")),
                round=int(get("round")),
                model_fingerprint=str(get("model_fingerprint")),
                pool_fingerprint=str(get("pool_fingerprint")),
                feature_dtype=str(get("feature_dtype")),
                mc_samples=int(get("mc_samples")),
                extra=json.loads(get("extra")),
                fused_dim=int(attrs.get("fused_dim", 0)),
            )
        except CacheError as exc:
            msg = str(exc)
            raise CacheError(msg if msg.startswith(path) else f"{path}: {msg}") from None
        except (ValueError, TypeError) as exc:
            raise CacheError(f"{path}: malformed root attribute ({exc}); rewrite the cache") from None


def _meta_problems(meta: CacheMeta) -> list[str]:
    problems = []
    if not meta.modalities:
        problems.append("at least one modality is required")
    if len(set(meta.modalities)) != len(meta.modalities):
        problems.append(f"modality names repeat: {list(meta.modalities)}")
    for name in meta.modalities:
        if not name or "/" in name or name == FUSED_NAME:
            problems.append(f"modality name {name!r} is not allowed (empty, '/' or 'mm')")
    if len(meta.feature_dims) != len(meta.modalities):
        problems.append("feature_dims needs one width per modality")
    if any(d <= 0 for d in meta.feature_dims):
        problems.append(f"feature_dims must be positive, got {list(meta.feature_dims)}")
    if meta.fusion not in FUSIONS:
        problems.append(f"fusion {meta.fusion!r} is not one of {FUSIONS}")
    elif meta.fusion == "feature-sum" and len(set(meta.feature_dims)) > 1:
        problems.append(
            f"sum fusion needs equal feature widths, got {list(meta.feature_dims)}; "
            "store the projected features that enter the sum"
        )
    if meta.num_classes < 2 and not meta.multi_label:
        problems.append(f"num_classes must be at least 2, got {meta.num_classes}")
    if meta.num_classes < 1:
        problems.append(f"num_classes must be positive, got {meta.num_classes}")
    if meta.feature_dtype not in FEATURE_DTYPES:
        problems.append(f"feature_dtype {meta.feature_dtype!r} is not one of {FEATURE_DTYPES}")
    if meta.mc_samples < 0:
        problems.append("mc_samples must be >= 0")
    return problems


@dataclass(frozen=True)
class FieldSpec:
    """One per-sample dataset: HDF5 path, trailing shape after N, dtype."""

    path: str
    row_shape: tuple[int, ...]
    dtype: np.dtype
    finite: bool  # NaN/Inf are rejected in this field


def field_specs(meta: CacheMeta) -> list[FieldSpec]:
    """Every per-sample dataset a valid cache of ``meta`` holds, in write order."""
    k = meta.num_classes
    fdt = np.dtype(meta.feature_dtype)
    f32 = np.dtype("float32")
    specs = [
        FieldSpec("ids", (), np.dtype("int64"), False),
        FieldSpec("labeled", (), np.dtype("bool"), False),
        FieldSpec("labels", (k,) if meta.multi_label else (),
                  np.dtype("int8") if meta.multi_label else np.dtype("int64"), False),
    ]
    specs += [FieldSpec(f"features/{m}", (d,), fdt, True)
              for m, d in zip(meta.modalities, meta.feature_dims, strict=True)]
    if meta.fusion == "nl-gate":
        specs.append(FieldSpec("head_input", (meta.fused_dim,), fdt, True))
    specs.append(FieldSpec("logits/mm", (k,), f32, True))
    specs += [FieldSpec(f"logits/{m}", (k,), f32, True) for m in meta.modalities]
    specs.append(FieldSpec("coalitions", (meta.num_coalitions, k), f32, True))
    if meta.mc_samples:
        specs.append(FieldSpec("mc_logits", (meta.mc_samples, k), f32, True))
    return specs


def head_specs(meta: CacheMeta) -> list[FieldSpec]:
    """The multimodal classifier's parameters: ``head/weight`` (K, D_fused), ``head/bias`` (K,)."""
    f32 = np.dtype("float32")
    return [
        FieldSpec("head/weight", (meta.num_classes, meta.fused_dim), f32, True),
        FieldSpec("head/bias", (meta.num_classes,), f32, True),
    ]
