"""Tiny datasets written on the fly, in every layout mmal reads, with a matching config.

``make_tiny_dataset(tmp_path, layout)`` writes the data under ``tmp_path/data``
and a config TOML ``tmp_path/<layout>.toml`` with small inputs (32-pixel
images, 2-frame clips, half-second audio at 8 kHz) and returns the config
path. Samples carry a class-dependent signal (image colour, tone pitch, words,
vector mean) so a model can learn something. The writers (``write_image``,
``write_wav``, ...) are reusable on their own.
"""

from __future__ import annotations

import csv
import json
import wave
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

LAYOUTS = ("manifest", "food101", "kinetics-sound", "vggsound", "uci")
ALL_MANIFEST_MODALITIES = ("image", "text", "audio", "video", "vector")
CLASSES = ("cat", "dog", "owl")
WORDS = {"cat": "whiskers purr milk", "dog": "bark bone leash", "owl": "night hoot feather"}
SAMPLE_RATE = 8000
VECTOR_DIM = 6

MODALITY_TABLES = {
    "image": {"kind": "image", "encoder": "resnet18", "image_size": 32},
    "text": {"kind": "text", "encoder": "bert", "max_tokens": 16},
    "audio": {"kind": "audio", "encoder": "audio-resnet18", "sample_rate": SAMPLE_RATE,
              "clip_seconds": 0.5},
    "video": {"kind": "video", "encoder": "r2plus1d_18", "frames": 2, "image_size": 32},
    "vector": {"kind": "vector", "encoder": "mlp", "dim": 8},
}


# ----------------------------------------------------------------------------- file writers

def write_image(path: Path, label: int, rng: np.random.Generator, size=(40, 30)) -> Path:
    """An RGB image (format from the suffix) whose mean colour depends on ``label``."""
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]][label % 3], dtype=np.float64)
    pixels = np.clip(base + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_wav(path: Path, label: int, rng: np.random.Generator, *, seconds: float = 0.8,
              rate: int = SAMPLE_RATE, channels: int = 1, width: int = 2) -> Path:
    """A PCM wav: a tone whose pitch depends on ``label``, plus noise."""
    t = np.arange(int(seconds * rate)) / rate
    signal = 0.5 * np.sin(2 * np.pi * (300 + 250 * label) * t) + 0.05 * rng.normal(size=t.size)
    signal = np.clip(signal, -1, 1)
    frames = np.repeat(signal[:, None], channels, axis=1)
    if width == 2:
        data = (frames * 32767).astype("<i2").tobytes()
    elif width == 1:
        data = (frames * 127 + 128).astype(np.uint8).tobytes()
    else:
        data = (frames * (2**31 - 1)).astype("<i4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)
    return path


def write_frames(folder: Path, label: int, rng: np.random.Generator, *, count: int = 10,
                 suffix: str = ".jpg") -> Path:
    """A clip folder of ``count`` frames ``frame_00.jpg`` ..."""
    for k in range(count):
        write_image(folder / f"frame_{k:02d}{suffix}", label, rng, size=(36, 28))
    return folder


def write_text(path: Path, label: int, rng: np.random.Generator) -> Path:
    """A UTF-8 text file with words typical of the class."""
    words = WORDS[CLASSES[label % 3]].split() + ["the", "a", "some"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(" ".join(rng.choice(words, size=6)) + "\n", encoding="utf-8")
    return path


def write_vector(path: Path, label: int, rng: np.random.Generator, dim: int = VECTOR_DIM) -> Path:
    """A float32 ``.npy`` vector whose mean depends on the class."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, (rng.normal(size=dim) + 2.0 * label).astype(np.float32))
    return path


def write_toml(path: Path, tables: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``{"dataset": {...}, "modalities.image": {...}}`` as TOML tables."""
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- whole datasets

def make_tiny_dataset(tmp_path: Path, layout: str, *, n_train: int = 9, n_test: int = 3,
                      modalities: Sequence[str] | None = None, multi_label: bool = False,
                      manifest_format: str = "csv", visual: str = "video",
                      overrides: Mapping[str, Mapping[str, Any]] | None = None,
                      seed: int = 0) -> Path:
    """Write a tiny dataset in ``layout`` and its config; return the config path.

    Parameters
    ----------
    layout : {"manifest", "food101", "kinetics-sound", "vggsound", "uci"}
    modalities : manifest only: which of image, text, audio, video, vector (default all five).
    multi_label : manifest only: labels like ``cat|owl``.
    manifest_format : "csv" or "jsonl".
    visual : kinetics-sound / vggsound: "video" (frame clip) or "image" (one frame).
    overrides : extra or replaced keys per table, e.g. ``{"model": {"fusion": "sum"}}``
        or ``{"modalities.image": {"encoder": "resnet50"}}``.

    Classes are cat, dog, owl; sample i has class i % 3 in both splits
    (multi-label: also class (i + 1) % 3 for every other sample).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}")
    rng = np.random.default_rng(seed)
    root = tmp_path / "data"
    root.mkdir(parents=True, exist_ok=True)
    writer = {"manifest": _manifest, "food101": _food101, "kinetics-sound": _avclips,
              "vggsound": _avclips, "uci": _uci}[layout]
    tables = writer(root, rng, layout=layout, n_train=n_train, n_test=n_test,
                    modalities=modalities, multi_label=multi_label, fmt=manifest_format,
                    visual=visual)
    tables["model"] = {"fusion": "concat"}
    tables["train"] = {"epochs": 1, "batch_size": 4, "augment": True}
    tables["al"] = {"initial_budget": max(1, n_train // 3), "budget": 2, "seed": 0}
    for name, extra in (overrides or {}).items():
        tables[name] = {**tables.get(name, {}), **extra}
    order = ["dataset"] + [k for k in tables if k.startswith("modalities.")] + [
        k for k in tables if k != "dataset" and not k.startswith("modalities.")]
    return write_toml(tmp_path / f"{layout}.toml", {k: tables[k] for k in order})


def _manifest(root, rng, *, n_train, n_test, modalities, multi_label, fmt, **_):
    modalities = tuple(modalities or ALL_MANIFEST_MODALITIES)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    next_id = 0
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for i in range(n):
            sid, label = next_id, i % 3
            next_id += 1
            names = [CLASSES[label]] + ([CLASSES[(i + 1) % 3]] if multi_label and i % 2 else [])
            row: dict[str, Any] = {"id": sid}
            if fmt == "jsonl":
                row["label"] = names if multi_label else names[0]
            else:
                row["label"] = "|".join(names)
            files = root / "files"
            for m in modalities:
                if m == "image":
                    write_image(files / f"{sid}.{'png' if sid % 2 else 'jpg'}", label, rng)
                    row[m] = f"files/{sid}.{'png' if sid % 2 else 'jpg'}"
                elif m == "text":
                    row[m] = _rel(write_text(files / f"{sid}.txt", label, rng), root)
                elif m == "audio":
                    row[m] = _rel(write_wav(files / f"{sid}.wav", label, rng), root)
                elif m == "video":
                    row[m] = _rel(write_frames(files / f"clip{sid}", label, rng, count=4), root)
                elif m == "vector":
                    row[m] = _rel(write_vector(files / f"{sid}.npy", label, rng), root)
            rows.append(row)
        _write_manifest(root / f"{split}.{fmt}", rows, fmt)
    tables = {"dataset": {"kind": "manifest", "root": "data", "train": f"train.{fmt}",
                          "test": f"test.{fmt}", "classes": "classes.txt",
                          "multi_label": multi_label}}
    for m in modalities:
        tables[f"modalities.{m}"] = dict(MODALITY_TABLES[m])
    return tables


def _food101(root, rng, *, n_train, n_test, **_):
    for split, n in (("train", n_train), ("test", n_test)):
        entries = []
        for i in range(n):
            label = CLASSES[i % 3]
            sid = f"{label}_{split}_{i}"
            img = write_image(root / "images" / split / label / f"{sid}.jpg", i % 3, rng)
            entries.append({"id": sid, "img_path": _rel(img, root),
                            "text_tokens": (WORDS[label] + " recipe bake").split(),
                            "label": label})
        (root / f"{split}.json").write_text(json.dumps(entries), encoding="utf-8")
    return {"dataset": {"kind": "food101", "root": "data"},
            "modalities.image": dict(MODALITY_TABLES["image"]),
            "modalities.text": dict(MODALITY_TABLES["text"])}


def _avclips(root, rng, *, layout, n_train, n_test, visual, **_):
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    next_id = 100
    for split, n in (("train", n_train), ("test", n_test)):
        lines = ["id,label"]
        for i in range(n):
            sid, label = f"clip{next_id}", i % 3
            next_id += 1
            write_frames(root / "frames" / sid, label, rng, count=10)
            write_wav(root / "audio" / f"{sid}.wav", label, rng, seconds=0.7)
            lines.append(f"{sid},{CLASSES[label]}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    visual_table = dict(MODALITY_TABLES[visual])
    return {"dataset": {"kind": layout, "root": "data"},
            f"modalities.{visual}": visual_table,
            "modalities.audio": dict(MODALITY_TABLES["audio"])}


def _uci(root, rng, **_):
    return {"dataset": {"kind": "uci-mfeat", "views": ["fac", "fou"], "test_fraction": 0.2},
            "modalities.fac": {"kind": "vector", "encoder": "mlp", "dim": 16},
            "modalities.fou": {"kind": "vector", "encoder": "mlp", "dim": 16}}


def _write_manifest(path: Path, rows: list[dict[str, Any]], fmt: str) -> None:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(str(r[k]) for k in header) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(type(value))


def _rewrite_train_csv(config_path: Path, change) -> Path:
    """Apply ``change(k, record)`` to every record of a tiny manifest's train.csv; the path."""
    manifest = Path(config_path).parent / "data" / "train.csv"
    with manifest.open(newline="") as fh:
        records = list(csv.DictReader(fh))
    for k, rec in enumerate(records):
        change(k, rec)
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    return manifest


def blank_train_labels(config_path: Path) -> Path:
    """Make a tiny manifest's train split carry no labels, as a user's new pool would."""
    return _rewrite_train_csv(config_path, lambda k, rec: rec.update(label=""))


def rename_train_ids(config_path: Path, names) -> Path:
    """Give row k of a tiny manifest's train split the id ``names(k, old_id)`` (e.g. "clip3"):
    ids that are not all integers make mmal number the samples by row."""
    return _rewrite_train_csv(config_path, lambda k, rec: rec.update(id=names(k, rec["id"])))
