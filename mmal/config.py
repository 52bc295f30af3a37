"""Workspace configuration: a TOML file read into frozen dataclasses.

``load_config(path)`` reads the file with :mod:`tomllib`, fills in defaults,
checks every key and value, and returns a :class:`Config`. Every problem is a
one-line :class:`~mmal.errors.ConfigError` that names the file and the dotted
key, e.g. ``mmal.toml: key 'modalities.image.encoder' is 'resnet7'; choose one
of resnet18, resnet50, resnet101``. ``docs/config.md`` lists every key.

Paths in the file (``dataset.root``, ``modalities.<name>.pretrained``) are
relative to the folder holding the file; the loaded config holds them
absolute, so :func:`dump_config` writes a file that works from anywhere.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmal.cache.fusion import FUSIONS
from mmal.cache.schema import FUSED_NAME
from mmal.data.kinds import DATASET_KINDS
from mmal.data.pool import DatasetKind
from mmal.errors import ConfigError
from mmal.models.kinds import ENCODER_KINDS, MODEL, NL_GATE_ENCODERS, encoder_names

MODALITY_KINDS = ("image", "text", "audio", "video", "vector")
OPTIMIZERS = ("adamw", "adam", "sgd")
#: Keys, per section, that only steer logging: no weight or metric depends on them.
LOGGING_KEYS = {"train": ("tensorboard",)}

# Kind-specific modality options and their defaults (all land in ModalityConfig.options).
MODALITY_OPTIONS: dict[str, dict[str, Any]] = {
    "image": {"image_size": 224},
    "text": {"max_tokens": 64},
    "audio": {"sample_rate": 16000, "clip_seconds": 5.0},
    "video": {"frames": 5, "image_size": 112},
    "vector": {},
}
#: The random augmentations of each modality kind while training, in the order they are
#: drawn (``modalities.<name>.augment`` picks among them; docs/config.md says what each does).
AUGMENTATIONS: dict[str, tuple[str, ...]] = {
    "image": ("crop", "flip"),
    "video": ("frames", "crop", "flip"),
    "audio": ("crop",),
    "text": (),
    "vector": (),
}
#: The common [dataset] keys; DatasetKind.keys says which of them (besides kind) a kind reads.
DATASET_KEYS = ("kind", "root", "train", "test", "classes", "multi_label")
#: Upper bounds of integer keys: far above any real use, low enough that a typo such as
#: ``epochs = 9223372036854775807`` is an error instead of a run that never ends.
MAX_DIM = 65536
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1_000_000
MAX_NUM_WORKERS = 1024
MAX_BUDGET = 2**31 - 1
MAX_SEED = 2**63 - 1  # TOML's own integer range; files and HDF5 attributes hold int64
_OPTION_RANGES = {
    "image_size": (16, 2048), "max_tokens": (1, 8192), "sample_rate": (1000, 192000),
    "clip_seconds": (0.05, 600.0), "frames": (1, 256),
}


@dataclass(frozen=True)
class DatasetConfig:
    """Where the samples live and how to read them (section ``[dataset]``).

    ``options`` holds the keys dataset kinds declare, with defaults filled in
    (:attr:`mmal.data.pool.DatasetKind.options`; uci-mfeat's ``views``,
    ``test_fraction``, ``standardize``), every kind's whatever ``kind`` is.
    """

    kind: str
    root: Path | None = None
    train: str = ""
    test: str = ""
    classes: str | tuple[str, ...] = ""
    multi_label: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModalityConfig:
    """One modality (table ``[modalities.<name>]``); order = modality order in the cache.

    ``options`` holds the kind-specific keys with defaults filled in:
    image ``image_size``; text ``max_tokens``; audio ``sample_rate``,
    ``clip_seconds``; video ``frames``, ``image_size``; plus ``column``
    (default the modality name) where the dataset kind reads columns
    (manifest, hf). ``augment`` is the modality's own choice among
    :data:`AUGMENTATIONS` of its kind, or None: as ``train.augment`` says
    (see :meth:`Config.augmentations`). ``lr`` is the learning rate of this
    modality's encoder, or None: as ``train.encoder_lr`` says
    (:func:`mmal.models.kinds.encoder_lr`).
    """

    name: str
    kind: str
    encoder: str
    pretrained: str = ""
    freeze: bool = False
    dim: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    augment: tuple[str, ...] | None = None
    lr: float | None = None

    @property
    def waveform(self) -> bool:
        """Audio: the encoder takes (1, n) waveforms rather than (1, 257, T) spectrograms."""
        return ENCODER_KINDS[self.encoder].waveform


#: ``model.head_init``: PyTorch's default for nn.Linear, or the paper's Xavier-uniform + bias 0.01.
HEAD_INITS = ("torch", "xavier")


@dataclass(frozen=True)
class ModelConfig:
    """Fusion and head (section ``[model]``)."""

    fusion: str = "concat"
    fused_dim: int = 0
    dropout: float = 0.0
    head_init: str = "torch"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of ``mmal train`` (section ``[train]``)."""

    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    encoder_lr: float | None = None  # None: per encoder, see mmal.models.kinds.encoder_lr
    weight_decay: float = 1e-4
    num_workers: int = 0
    augment: bool = True
    tensorboard: bool = False
    warmup_epochs: int = 0
    milestones: tuple[int, ...] = ()
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class ALConfig:
    """Active-learning settings (section ``[al]``)."""

    initial_budget: int = 100
    budget: int = 50
    seed: int = 0


@dataclass(frozen=True)
class Config:
    """A validated workspace configuration.

    ``modalities`` is ordered as in the file; ``path`` is the file it was read
    from (None when built from a dict).
    """

    dataset: DatasetConfig
    modalities: tuple[ModalityConfig, ...]
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    al: ALConfig = ALConfig()
    path: Path | None = None

    @property
    def modality_names(self) -> list[str]:
        return [m.name for m in self.modalities]

    def modality(self, name: str) -> ModalityConfig:
        for m in self.modalities:
            if m.name == name:
                return m
        raise KeyError(name)

    def augmentations(self) -> dict[str, tuple[str, ...]]:
        """Modality name -> the random augmentations training applies to it.

        ``modalities.<name>.augment`` when set, else every augmentation of the
        modality's kind (:data:`AUGMENTATIONS`) if ``train.augment``, else none.
        """
        return {m.name: m.augment if m.augment is not None
                else AUGMENTATIONS[m.kind] if self.train.augment else ()
                for m in self.modalities}

    def to_dict(self, *, logging: bool = True) -> dict[str, Any]:
        """Plain nested dict of str/int/float/bool/list (TOML- and checkpoint-safe).

        ``logging=False`` leaves out the keys that only steer logging
        (``train.tensorboard``) and change no result: what a checkpoint records,
        and what two configs must share for their runs to be comparable.
        """
        data = _to_dict(self)
        if not logging:
            for section, keys in LOGGING_KEYS.items():
                data[section] = {k: v for k, v in data[section].items() if k not in keys}
        return data


# ----------------------------------------------------------------------------- loading

def load_config(path: str | os.PathLike) -> Config:
    """Read and validate the TOML configuration at ``path``.

    Raises
    ------
    ConfigError
        Naming the file and the dotted key for a missing file, bad TOML,
        missing required key, unknown key, wrong type or bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file; pass the path of a TOML file "
                          "(see docs/config.md)")
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: is not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: is not UTF-8 text (byte {exc.start} is "
                          f"{exc.object[exc.start:exc.start + 1]!r}); TOML must be UTF-8: "
                          "save the file as UTF-8, or pass the right file") from None
    return config_from_dict(raw, source=path, base_dir=path.resolve().parent)


def config_from_dict(raw: dict[str, Any], *, source: str | os.PathLike = "<config>",
                     base_dir: str | os.PathLike | None = None) -> Config:
    """Validate a parsed config dict (as from TOML or :meth:`Config.to_dict`).

    Relative paths resolve against ``base_dir`` (default: the current directory).
    """
    r = _Reader(str(source), Path(base_dir) if base_dir is not None else Path.cwd())
    r.known(raw, "", ("dataset", "modalities", "model", "train", "al"))
    dataset = _dataset(r, r.table(raw, "dataset", required=True))
    modalities = _modalities(r, raw, dataset)
    model = _model(r, r.table(raw, "model"))
    train = _train(r, r.table(raw, "train"))
    al = _al(r, r.table(raw, "al"))
    if model.fusion == "nl-gate":
        _check_nl_gate(r, modalities)
    return Config(dataset=dataset, modalities=modalities, model=model, train=train, al=al,
                  path=Path(source) if base_dir is not None else None)


def dump_config(config: Config, *, header: str = "") -> str:
    """TOML text of ``config``; ``load_config`` reads it back equal.

    Every key that applies to the dataset kind is explicit, defaults filled in;
    keys left unset (``train.encoder_lr``, ``modalities.<name>.augment``) stay unset.
    """
    data = config.to_dict()
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    # TOML has no null: a key left unset (None, e.g. train.encoder_lr) is a comment
    for section in ("dataset", "model", "train", "al"):
        lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" if v is not None else
                                         f"# {k}: unset, its default applies (docs/config.md)"
                                         for k, v in data[section].items()]
    for name, table in data["modalities"].items():
        lines += ["", f"[modalities.{_toml_key(name)}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines).lstrip("\n") + "\n"


# ----------------------------------------------------------------------------- sections

def _dataset(r: _Reader, t: dict[str, Any]) -> DatasetConfig:
    options = tuple(dict.fromkeys(k for kind in DATASET_KINDS.values() for k in kind.options))
    r.known(t, "dataset", DATASET_KEYS + options)
    kind = DATASET_KINDS[r.choice(t, "dataset.kind", tuple(DATASET_KINDS), required=True)]
    t = _without_foreign_keys(r, t, kind)
    root = r.get(t, "dataset.root", str, required=kind.needs_root)
    root_path = None
    if root is not None:
        root_path = r.resolve(root)
        if not root_path.is_dir():
            raise r.error("dataset.root", root, "is not a folder (paths are relative to the "
                          "config file's folder); point it at the data folder")
    train, test, classes = kind.files
    classes = t.get("classes", classes)
    if isinstance(classes, list):
        if not classes or not all(isinstance(c, str) and c for c in classes):
            raise r.error("dataset.classes", classes, "must be a file name or a non-empty list "
                          "of non-empty strings")
        if len(set(classes)) != len(classes):
            raise r.error("dataset.classes", classes, "lists a class name twice")
        classes = tuple(classes)
    elif not isinstance(classes, str):
        raise r.type_error("dataset.classes", classes, "a string (file name) or a list of strings")
    options = _dataset_options(r, t, kind)
    return DatasetConfig(
        kind=kind.name, root=root_path,
        train=r.get(t, "dataset.train", str, default=train),
        test=r.get(t, "dataset.test", str, default=test),
        classes=classes,
        multi_label=r.get(t, "dataset.multi_label", bool, default=DatasetConfig.multi_label),
        options=options,
    )


def _dataset_options(r: _Reader, t: dict[str, Any], kind: DatasetKind) -> dict[str, Any]:
    """The kind's extra ``[dataset]`` keys, checked by the kind, typed like their defaults."""
    values = {key: _option(r, t, f"dataset.{key}", default)
              for key, default in kind.options.items()}
    problem = kind.check_options(values) if kind.check_options else None
    if problem:
        raise r.error(*problem)
    return {key: type(kind.options[key])(v) for key, v in values.items()}


def _without_foreign_keys(r: _Reader, t: dict[str, Any], kind: DatasetKind) -> dict[str, Any]:
    """``[dataset]`` less the keys of other kinds, which must hold their default.

    A key that does not apply to ``kind`` is an error unless it holds its
    default: what ``mmal init`` wrote into every workspace before it wrote only
    the kind's keys, so those workspaces keep loading (to the same config).
    """
    own = set(kind.keys) | set(kind.options) | {"kind"}
    kept = {}
    for key, value in t.items():
        if key in own:
            kept[key] = value
            continue
        owners = [k for k in DATASET_KINDS.values() if key in k.keys or key in k.options]
        defaults = ([_common_default(kind, key)] if key in DATASET_KEYS
                    else [_plain(k.options[key]) for k in owners])
        if value not in defaults:
            raise r.error(f"dataset.{key}", value, f"applies to dataset "
                          f"{_kinds_named([k.name for k in owners])} only, not {kind.name}; "
                          "remove it")
    return kept


def _common_default(kind: DatasetKind, key: str) -> Any:
    """Default of the common ``[dataset]`` key ``key`` for ``kind`` (its files, or False)."""
    files = dict(zip(("train", "test", "classes"), kind.files, strict=True))
    return files.get(key, False if key == "multi_label" else None)


def _kinds_named(names: list[str]) -> str:
    return ("kind " if len(names) == 1 else "kinds ") + ", ".join(names)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _option(r: _Reader, t: dict[str, Any], key: str, default: Any) -> Any:
    """The value at ``key``, of ``default``'s type (a TOML list where the default is a tuple)."""
    if isinstance(default, bool | str):
        return r.get(t, key, type(default), default=default)
    if isinstance(default, int | float):
        return r.number(t, key, default=default, integer=isinstance(default, int))
    return r.get(t, key, list, default=list(default))


def _modalities(r: _Reader, raw: dict[str, Any], dataset: DatasetConfig) -> tuple[ModalityConfig, ...]:
    tables = r.table(raw, "modalities")
    if not tables:
        raise r.missing("modalities", "add one [modalities.<name>] table per modality")
    out = []
    for name, t in tables.items():
        key = f"modalities.{name}"
        if not isinstance(t, dict):
            raise r.type_error(key, t, "a table")
        if not name or any(c in name for c in "/ \t"):
            raise r.error(key, name, "modality names may not be empty or hold '/' or spaces")
        if name == FUSED_NAME:
            raise r.error(key, name, f"'{FUSED_NAME}' names the fused logits; rename the modality")
        kind = r.choice(t, f"{key}.kind", MODALITY_KINDS, required=True)
        opt_defaults = dict(MODALITY_OPTIONS[kind])
        r.known(t, key, ("kind", "encoder", "pretrained", "freeze", "dim", "column", "augment",
                         "lr", *opt_defaults))
        encoder = r.choice(t, f"{key}.encoder", encoder_names(kind), required=True)
        pretrained = r.get(t, f"{key}.pretrained", str, default=ModalityConfig.pretrained)
        if not pretrained and ENCODER_KINDS[encoder].needs_pretrained:
            raise r.error(f"{key}.pretrained", pretrained, f"the {encoder} encoder reads its "
                          "architecture from a local model folder: point it at a folder "
                          "holding config.json (and weights to start from them)")
        if pretrained:
            resolved = r.resolve(pretrained)
            if resolved.exists():
                pretrained = str(resolved)
            elif ENCODER_KINDS[encoder].pretrained != MODEL:  # only a model may be a name
                raise r.error(f"{key}.pretrained", pretrained, "does not exist (relative paths "
                              "start at the config file's folder); fix the path or use \"\"")
        dim = r.get(t, f"{key}.dim", int, default=ModalityConfig.dim)
        if dim < 0:
            raise r.error(f"{key}.dim", dim, "must be >= 0 (0 = encoder default)")
        r.at_most(f"{key}.dim", dim, MAX_DIM)
        options: dict[str, Any] = {}
        column = r.get(t, f"{key}.column", str, default=name)
        if DATASET_KINDS[dataset.kind].columns:
            options["column"] = column
        elif column != name:  # the default: what mmal init wrote whatever the kind
            owners = [k.name for k in DATASET_KINDS.values() if k.columns]
            raise r.error(f"{key}.column", column, f"applies to dataset {_kinds_named(owners)} "
                          f"only, not {dataset.kind}; remove it")
        for opt, default in opt_defaults.items():
            value = r.number(t, f"{key}.{opt}", default=default,
                             integer=isinstance(default, int))
            lo, hi = _OPTION_RANGES[opt]
            if not lo <= value <= hi:
                raise r.error(f"{key}.{opt}", value, f"must lie in [{lo}, {hi}]")
            options[opt] = value
        out.append(ModalityConfig(name=name, kind=kind, encoder=encoder, pretrained=pretrained,
                                  freeze=r.get(t, f"{key}.freeze", bool,
                                               default=ModalityConfig.freeze),
                                  dim=dim, options=options,
                                  augment=_augment(r, t, f"{key}.augment", kind),
                                  lr=_encoder_rate(r, t, f"{key}.lr")))
    _check_modalities_fit_dataset(r, dataset, out)
    return tuple(out)


def _encoder_rate(r: _Reader, t: dict[str, Any], key: str) -> float | None:
    """``modalities.<name>.lr``: None (unset), or this encoder's learning rate (>= 0)."""
    if t.get("lr") is None:
        return None
    value = float(r.number(t, key, default=0.0))
    if value < 0:
        raise r.error(key, value, "must be >= 0")
    return value


def _augment(r: _Reader, t: dict[str, Any], key: str, kind: str) -> tuple[str, ...] | None:
    """``modalities.<name>.augment``: None (unset), or the chosen augmentations in draw order."""
    value = t.get("augment")
    if value is None:
        return None
    names = AUGMENTATIONS[kind]
    if isinstance(value, bool):
        return names if value else ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise r.type_error(key, value, "true, false or a list of augmentation names")
    for v in value:
        if v not in names:
            choose = f"choose among {', '.join(names)}" if names else "use false"
            raise r.error(key, value, f"{kind} modalities have no augmentation {v!r}; {choose}")
    return tuple(n for n in names if n in value)


def _check_modalities_fit_dataset(r: _Reader, dataset: DatasetConfig,
                                  mods: list[ModalityConfig]) -> None:
    kind = DATASET_KINDS[dataset.kind]
    allowed = kind.modality_kinds
    for m in mods:
        if allowed is not None and m.kind not in allowed:
            raise r.error(f"modalities.{m.name}.kind", m.kind,
                          f"is not available in a {dataset.kind} dataset; choose one of "
                          f"{', '.join(allowed)}")
    problem = kind.check(dataset, mods) if kind.check else None
    if problem:
        raise r.error(*problem)


def _model(r: _Reader, t: dict[str, Any]) -> ModelConfig:
    r.known(t, "model", ("fusion", "fused_dim", "dropout", "head_init"))
    dropout = r.number(t, "model.dropout", default=ModelConfig.dropout)
    if not 0 <= dropout < 1:
        raise r.error("model.dropout", dropout, "must lie in [0, 1)")
    fused_dim = r.get(t, "model.fused_dim", int, default=ModelConfig.fused_dim)
    if fused_dim < 0:
        raise r.error("model.fused_dim", fused_dim, "must be >= 0 (0 = widest modality; "
                      "only feature-sum reads it)")
    r.at_most("model.fused_dim", fused_dim, MAX_DIM)
    return ModelConfig(fusion=r.choice(t, "model.fusion", FUSIONS, default=ModelConfig.fusion),
                       fused_dim=fused_dim, dropout=float(dropout),
                       head_init=r.choice(t, "model.head_init", HEAD_INITS,
                                          default=ModelConfig.head_init))


def _check_nl_gate(r: _Reader, mods: tuple[ModalityConfig, ...]) -> None:
    """NL-gate fuses exactly one video and one audio modality, with the paper's encoders."""
    found = sorted((m.kind, m.encoder) for m in mods)
    if found != sorted(NL_GATE_ENCODERS.items()):
        want = " and ".join(f"one {kind} modality with encoder {enc}"
                            for kind, enc in NL_GATE_ENCODERS.items())
        have = ", ".join(f"{m.name} ({m.kind}, {m.encoder})" for m in mods)
        raise r.error("model.fusion", "nl-gate", f"NL-gate fuses exactly {want}, but the "
                      f"modalities are {have}; change the modalities or use concat or sum")


def _train(r: _Reader, t: dict[str, Any]) -> TrainConfig:
    r.known(t, "train", ("epochs", "batch_size", "optimizer", "lr", "encoder_lr",
                         "weight_decay", "num_workers", "augment", "tensorboard",
                         "warmup_epochs", "milestones", "betas"))
    vals = {}
    for key, lo, hi in (("epochs", 1, MAX_EPOCHS), ("batch_size", 1, MAX_BATCH_SIZE),
                        ("num_workers", 0, MAX_NUM_WORKERS)):
        vals[key] = r.get(t, f"train.{key}", int, default=getattr(TrainConfig, key))
        if vals[key] < lo:
            raise r.error(f"train.{key}", vals[key], f"must be >= {lo}")
        r.at_most(f"train.{key}", vals[key], hi)
    for key in ("lr", "encoder_lr", "weight_decay"):
        if key == "encoder_lr" and t.get(key) is None:
            vals[key] = None  # per encoder: lr from scratch, a fraction of it when pretrained
            continue
        vals[key] = float(r.number(t, f"train.{key}", default=getattr(TrainConfig, key)))
        if vals[key] < 0:
            raise r.error(f"train.{key}", vals[key], "must be >= 0")
    vals["warmup_epochs"] = r.get(t, "train.warmup_epochs", int,
                                  default=TrainConfig.warmup_epochs)
    if vals["warmup_epochs"] < 0:
        raise r.error("train.warmup_epochs", vals["warmup_epochs"], "must be >= 0")
    r.at_most("train.warmup_epochs", vals["warmup_epochs"], MAX_EPOCHS)
    vals["milestones"] = _milestones(r, t, vals["warmup_epochs"])
    optimizer = r.choice(t, "train.optimizer", OPTIMIZERS, default=TrainConfig.optimizer)
    vals["betas"] = _betas(r, t, optimizer)
    return TrainConfig(**vals, optimizer=optimizer,
                       augment=r.get(t, "train.augment", bool, default=TrainConfig.augment),
                       tensorboard=r.get(t, "train.tensorboard", bool,
                                         default=TrainConfig.tensorboard))


def _milestones(r: _Reader, t: dict[str, Any], warmup_epochs: int) -> tuple[int, ...]:
    """``train.milestones``: increasing epochs, none inside the warm-up."""
    value = r.get(t, "train.milestones", list, default=[])
    if not all(isinstance(m, int) and not isinstance(m, bool) for m in value):
        raise r.error("train.milestones", value, "must be a list of integers (epochs)")
    if any(b <= a for a, b in zip(value, value[1:], strict=False)):
        raise r.error("train.milestones", value, "must be strictly increasing")
    if value and value[0] < max(1, warmup_epochs):
        raise r.error("train.milestones", value, f"must be >= 1 and >= train.warmup_epochs "
                      f"({warmup_epochs}): a milestone decays the rate after the warm-up")
    if value:
        r.at_most("train.milestones", value[-1], MAX_EPOCHS)
    return tuple(value)


def _betas(r: _Reader, t: dict[str, Any], optimizer: str) -> tuple[float, float]:
    """``train.betas``: Adam's two decay rates, each in [0, 1); only adam and adamw have them."""
    if "betas" not in t:
        return TrainConfig.betas
    value = r.get(t, "train.betas", list)
    ok = len(value) == 2 and all(isinstance(b, int | float) and not isinstance(b, bool)
                                 and 0 <= b < 1 for b in value)
    if not ok:
        raise r.error("train.betas", value, "must be two numbers in [0, 1), e.g. [0.9, 0.999]")
    betas = float(value[0]), float(value[1])
    # a written mmal.toml carries the default with every optimizer: only another value is an error
    if optimizer not in ("adam", "adamw") and betas != TrainConfig.betas:
        raise r.error("train.betas", value, f"applies to adam and adamw, not {optimizer}; "
                      "remove it or change train.optimizer")
    return betas


def _al(r: _Reader, t: dict[str, Any]) -> ALConfig:
    r.known(t, "al", ("initial_budget", "budget", "seed"))
    vals = {}
    for key, lo, hi in (("initial_budget", 1, MAX_BUDGET), ("budget", 1, MAX_BUDGET),
                        ("seed", 0, MAX_SEED)):
        vals[key] = r.get(t, f"al.{key}", int, default=getattr(ALConfig, key))
        if vals[key] < lo:
            raise r.error(f"al.{key}", vals[key], f"must be >= {lo}")
        r.at_most(f"al.{key}", vals[key], hi)
    return ALConfig(**vals)


# ----------------------------------------------------------------------------- helpers

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list",
               dict: "a table"}


class _Reader:
    """Typed access to nested TOML values with errors naming file and dotted key."""

    def __init__(self, source: str, base_dir: Path):
        self.source = source
        self.base_dir = base_dir

    def error(self, key: str, value: Any, rule: str) -> ConfigError:
        return ConfigError(f"{self.source}: key '{key}' is {_show(value)}; {rule}")

    def missing(self, key: str, hint: str) -> ConfigError:
        return ConfigError(f"{self.source}: key '{key}' is missing; {hint}")

    def type_error(self, key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"{self.source}: key '{key}' is {_show(value)} "
                           f"({_toml_type(value)}); expected {expected}")

    def at_most(self, key: str, value: int, hi: int) -> None:
        if value > hi:
            raise self.error(key, value, f"must be <= {hi} (see docs/config.md)")

    def known(self, t: dict[str, Any], prefix: str, keys: tuple[str, ...]) -> None:
        for k in t:
            if k not in keys:
                where = f"{prefix}.{k}" if prefix else k
                raise ConfigError(f"{self.source}: key '{where}' is unknown; known keys here: "
                                  f"{', '.join(keys)} (see docs/config.md)")

    def table(self, t: dict[str, Any], key: str, *, required: bool = False) -> dict[str, Any]:
        if key not in t:
            if required:
                raise self.missing(key, f"add a [{key}] table (see docs/config.md)")
            return {}
        if not isinstance(t[key], dict):
            raise self.type_error(key, t[key], "a table")
        return t[key]

    def get(self, t: dict[str, Any], key: str, typ: type, *, required: bool = False,
            default: Any = None) -> Any:
        leaf = key.rsplit(".", 1)[-1]
        if leaf not in t:
            if required:
                raise self.missing(key, "add it (see docs/config.md)")
            return default
        value = t[leaf]
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        if not ok:
            raise self.type_error(key, value, _TYPE_NAMES[typ])
        return value

    def number(self, t: dict[str, Any], key: str, *, default: float, integer: bool = False):
        leaf = key.rsplit(".", 1)[-1]
        value = t.get(leaf, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                integer and not isinstance(value, int)):
            raise self.type_error(key, value, "an integer" if integer else "a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(key, value, "must be finite")
        return value

    def choice(self, t: dict[str, Any], key: str, choices: tuple[str, ...], *,
               required: bool = False, default: str | None = None) -> str:
        value = self.get(t, key, str, required=required, default=default)
        if value not in choices:
            raise self.error(key, value, f"choose one of {', '.join(choices)}")
        return value

    def resolve(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, dict) else "a table"


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {str: "string", int: "integer", float: "float", list: "list",
            dict: "table"}.get(type(value), type(value).__name__)


def _to_dict(config: Config) -> dict[str, Any]:
    d = config.dataset
    applies = DATASET_KINDS[d.kind].keys  # only the kind's keys: nothing it would ignore
    dataset: dict[str, Any] = {"kind": d.kind}
    if d.root is not None:
        dataset["root"] = str(d.root)
    common = dict(train=d.train, test=d.test,
                  classes=list(d.classes) if isinstance(d.classes, tuple) else d.classes,
                  multi_label=d.multi_label)
    dataset.update({k: v for k, v in common.items() if k in applies})
    dataset.update({k: _plain(v) for k, v in d.options.items()})
    mods = {}
    for m in config.modalities:
        mods[m.name] = {"kind": m.kind, "encoder": m.encoder, "pretrained": m.pretrained,
                        "freeze": m.freeze, "dim": m.dim, **m.options}
        if m.augment is not None:
            mods[m.name]["augment"] = list(m.augment)
        if m.lr is not None:
            mods[m.name]["lr"] = m.lr
    return {
        "dataset": dataset,
        "modalities": mods,
        "model": dict(vars(config.model)),
        "train": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config.train).items()},
        "al": dict(vars(config.al)),
    }


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
