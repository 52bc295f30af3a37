"""Schema version 2 of the feature cache: metadata and the expected fields.

``docs/cache.md`` is the prose specification; this module is its executable
form. Writer and reader both derive shapes and dtypes from :func:`field_specs`
so the two can never disagree. Files of schema version 1 read through the same
classes: :meth:`CacheMeta.from_attrs` maps their names onto today's and
:meth:`CacheMeta.to_attrs` gives back their attributes exactly, which their
content fingerprint covers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mmal.cache.fusion import (
    CONCATENATING_FUSIONS,
    FUSIONS,
    LINEAR_FUSIONS,
    stores_head_input,
)
from mmal.errors import CacheError

#: The fused logits' name under ``logits/``; no modality may take it.
FUSED_NAME = "mm"

CACHE_TYPE = "mmal-feature-cache"
SCHEMA_VERSION = 2
#: Schema 1 called the feature sum "sum"; schema 2 gives that name to the paper's summation.
V1_FUSION_NAMES = {"concat": "concat", "sum": "feature-sum"}
FEATURE_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class CacheMeta:
    """Everything about a cache that is not per-sample data.

    Attributes
    ----------
    modalities : tuple of str
        Modality names in order; bit ``m`` of a coalition index is modality ``m``.
    feature_dims : tuple of int
        Width ``D_m`` of ``features/<modality>``, modality ``m``'s embedding
        block, same order as ``modalities``.
    fusion : {"concat", "sum", "feature-sum", "nl-gate"}
        How the blocks relate to the head input ``h`` (see ``docs/cache.md``):
        ``concat`` and ``sum`` (the paper's summation, whose effective head is
        ``[W_1, ..., W_M] / M``) read the concatenation (``D_fused = sum(D_m)``);
        ``feature-sum`` reads the elementwise sum (every ``D_m == D_fused``);
        ``nl-gate``'s head input is no function of the blocks and is stored
        in ``head_input`` (every block is a fused latent, ``D_m == D_fused``).
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
    fused_dim : int
        ``D_fused``: width of the head input, of ``head/weight``'s columns and
        of ``head_input``. 0 (the default) derives it from ``feature_dims`` for
        the linear fusions; ``nl-gate`` must give it.
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
        object.__setattr__(self, "fused_dim", int(self.fused_dim))
        problems = _meta_problems(self)
        if problems:
            raise CacheError(f"invalid cache metadata: {problems[0]}")
        if self.fused_dim == 0:
            object.__setattr__(self, "fused_dim", _derived_fused_dim(self))

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    @property
    def num_coalitions(self) -> int:
        return 2 ** len(self.modalities)

    @property
    def stores_head_input(self) -> bool:
        """True when the cache holds the field ``head_input`` (today: ``nl-gate``)."""
        return stores_head_input(self.fusion)

    def to_attrs(self, schema_version: int = SCHEMA_VERSION) -> dict[str, Any]:
        """Attribute dict as stored on the HDF5 root (JSON for structured values).

        ``schema_version=1`` gives the attributes a version-1 file of this
        metadata carries (``feature-sum`` named ``sum``, no ``fused_dim``), so
        that file's content fingerprint is recomputed exactly.
        """
        d = asdict(self)
        if schema_version == 1:
            names = {new: old for old, new in V1_FUSION_NAMES.items()}
            if self.fusion not in names:
                raise CacheError(f"fusion {self.fusion!r} has no schema-1 form")
            del d["fused_dim"]
            d["fusion"] = names[self.fusion]
        attrs = {
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
        if "fused_dim" in d:
            attrs["fused_dim"] = int(d["fused_dim"])
        return attrs

    @classmethod
    def from_attrs(cls, attrs: Any, path: str = "<cache>") -> CacheMeta:
        """Parse root attributes, naming the missing or malformed one.

        The file's ``schema_version`` (1 when absent) decides the names: a
        version-1 file's ``fusion = "sum"`` is read as ``feature-sum`` and its
        ``fused_dim`` is derived.
        """
        def get(key: str) -> Any:
            if key not in attrs:
                raise CacheError(
                    f"{path}: attribute '{key}' is missing; the file was not written by "
                    "mmal's cache writer, rewrite it with `mmal extract` or `mmal synth`"
                )
            return attr_text(attrs, key, path) if _is_text(attrs[key]) else attrs[key]

        try:
            version = int(attrs.get("schema_version", 1))
            fusion = str(get("fusion"))
            if version == 1:
                if fusion not in V1_FUSION_NAMES:
                    raise CacheError(f"attribute 'fusion' is {fusion!r}, which schema version 1 "
                                     f"does not have ({', '.join(V1_FUSION_NAMES)}); rewrite "
                                     "the cache")
                fusion = V1_FUSION_NAMES[fusion]
            return cls(
                modalities=tuple(json.loads(get("modalities"))),
                feature_dims=tuple(json.loads(get("feature_dims"))),
                fusion=fusion,
                num_classes=int(get("num_classes")),
                multi_label=bool(get("multi_label")),
                round=int(get("round")),
                model_fingerprint=str(get("model_fingerprint")),
                pool_fingerprint=str(get("pool_fingerprint")),
                feature_dtype=str(get("feature_dtype")),
                mc_samples=int(get("mc_samples")),
                extra=json.loads(get("extra")),
                fused_dim=int(get("fused_dim")) if version >= 2 else 0,
            )
        except CacheError as exc:
            msg = str(exc)
            raise CacheError(msg if msg.startswith(path) else f"{path}: {msg}") from None
        except (ValueError, TypeError) as exc:
            raise CacheError(f"{path}: malformed root attribute ({exc}); rewrite the cache") from None


def attr_text(attrs: Any, key: str, path: str, default: str = "") -> str:
    """Root attribute ``key`` as text (``default`` when absent).

    h5py hands bytes that are not UTF-8 over as surrogate escapes, which no
    message can print: such a value is a :class:`CacheError` naming the key.
    """
    value = attrs.get(key, default)
    try:
        text = value.decode() if isinstance(value, bytes) else str(value)
        text.encode()
    except UnicodeError:
        raise CacheError(f"{path}: attribute '{key}' is not UTF-8 text, the file is damaged; "
                         "rewrite the cache") from None
    return text


def _is_text(value: Any) -> bool:
    return isinstance(value, (str, bytes))


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
    problems += _fusion_problems(meta)
    if meta.num_classes < 2 and not meta.multi_label:
        problems.append(f"num_classes must be at least 2, got {meta.num_classes}")
    if meta.num_classes < 1:
        problems.append(f"num_classes must be positive, got {meta.num_classes}")
    if meta.feature_dtype not in FEATURE_DTYPES:
        problems.append(f"feature_dtype {meta.feature_dtype!r} is not one of {FEATURE_DTYPES}")
    if meta.mc_samples < 0:
        problems.append("mc_samples must be >= 0")
    return problems


def _fusion_problems(meta: CacheMeta) -> list[str]:
    """The fusion's name and width rules (``docs/cache.md``, "Fusions")."""
    dims = list(meta.feature_dims)
    if meta.fusion not in FUSIONS:
        return [f"fusion {meta.fusion!r} is not one of {FUSIONS}"]
    if meta.fused_dim < 0:
        return [f"fused_dim must be >= 0 (0 = derive it), got {meta.fused_dim}"]
    if meta.fusion in ("feature-sum", "nl-gate") and len(set(dims)) > 1:
        why = ("store the projected features that enter the sum" if meta.fusion == "feature-sum"
               else "every block is the fused latent with one modality present")
        return [f"{meta.fusion} fusion needs equal feature widths, got {dims}; {why}"]
    if meta.fusion not in LINEAR_FUSIONS:
        if meta.fused_dim == 0:
            return [f"{meta.fusion} fusion needs fused_dim, the width of the stored head_input"]
        if dims and dims[0] != meta.fused_dim:
            return [f"{meta.fusion} fusion needs feature widths equal to fused_dim="
                    f"{meta.fused_dim}, got {dims}; every block is the fused latent with one "
                    "modality present"]
        return []
    derived = _derived_fused_dim(meta)
    if meta.fused_dim not in (0, derived):
        return [f"fused_dim={meta.fused_dim} disagrees with {meta.fusion} fusion of widths "
                f"{dims}, which gives {derived}; pass 0 to derive it"]
    return []


def _derived_fused_dim(meta: CacheMeta) -> int:
    """``D_fused`` of a linear fusion: ``sum(D_m)`` (concat, sum) or ``D`` (feature-sum)."""
    if meta.fusion in CONCATENATING_FUSIONS:
        return sum(meta.feature_dims)
    return meta.feature_dims[0] if meta.feature_dims else 0


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
    if meta.stores_head_input:
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
