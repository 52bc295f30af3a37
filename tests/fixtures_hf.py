"""Tiny Hugging Face datasets written on the fly, for the ``hf`` dataset kind's tests.

``hf_split(n, ...)`` builds a ``datasets.Dataset`` in memory (Image, Audio,
text and vector columns, ClassLabel labels) whose samples carry the same
class-dependent signal as ``tests.fixtures_data`` (image colour, tone pitch,
words, vector mean); ``write_hf_dataset`` saves a train and a test split with
``DatasetDict.save_to_disk``. Audio is stored as WAV bytes: encoding arrays
would need torchcodec, which mmal does not use.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tests.fixtures_data import CLASSES, SAMPLE_RATE, VECTOR_DIM, WORDS

COLUMNS = ("image", "audio", "text", "vector")


def go_offline(monkeypatch, cache_dir: Path) -> None:
    """No network, a private datasets cache, and no split left open from an earlier test.

    ``datasets`` reads the environment when first imported, so its config is set too.
    """
    import datasets

    from mmal.data import hf

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache_dir))
    datasets.disable_progress_bars()
    hf._open.cache_clear()


def wav_bytes(label: int, rng: np.random.Generator, *, seconds: float = 0.5,
              rate: int = SAMPLE_RATE) -> bytes:
    """A 16-bit PCM mono wav file's bytes: a tone whose pitch depends on ``label``."""
    t = np.arange(int(seconds * rate)) / rate
    signal = 0.5 * np.sin(2 * np.pi * (300 + 250 * label) * t) + 0.05 * rng.normal(size=t.size)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def pil_image(label: int, rng: np.random.Generator, size=(40, 30)) -> Image.Image:
    """An RGB image whose mean colour depends on ``label``."""
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]][label % 3], dtype=np.float64)
    pixels = np.clip(base + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def hf_split(n: int, *, offset: int = 0, columns: Sequence[str] = COLUMNS,
             labels: str = "classlabel", seed: int = 0, extra: dict | None = None):
    """A ``datasets.Dataset`` of ``n`` rows; row i has class (offset + i) % 3.

    ``labels``: "classlabel" (a ClassLabel column ``label``), "string" (class
    names), "multi" (a list of ClassLabel: the class and, every other row, the
    next one) or "none". ``extra`` adds plain columns (name -> list of values).
    """
    import datasets

    rng = np.random.default_rng(seed + offset)
    ks = [(offset + i) % 3 for i in range(n)]
    data: dict[str, list] = {}
    features: dict[str, object] = {}
    if "image" in columns:
        data["image"], features["image"] = [pil_image(k, rng) for k in ks], datasets.Image()
    if "audio" in columns:
        # Stored as {"bytes", "path"} and cast to Audio afterwards: encoding goes through torchcodec.
        data["audio"] = [{"bytes": wav_bytes(k, rng), "path": None} for k in ks]
        features["audio"] = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    if "text" in columns:
        data["text"] = [" ".join(rng.choice(WORDS[CLASSES[k]].split() + ["the", "a"], size=5))
                        for k in ks]
        features["text"] = datasets.Value("string")
    if "vector" in columns:
        data["vector"] = [(rng.normal(size=VECTOR_DIM) + 2.0 * k).tolist() for k in ks]
        features["vector"] = datasets.List(datasets.Value("float32"), length=VECTOR_DIM)
    if labels == "classlabel":
        data["label"], features["label"] = ks, datasets.ClassLabel(names=list(CLASSES))
    elif labels == "string":
        data["label"], features["label"] = [CLASSES[k] for k in ks], datasets.Value("string")
    elif labels == "multi":
        data["label"] = [[k, (k + 1) % 3] if i % 2 else [k] for i, k in enumerate(ks)]
        features["label"] = datasets.List(datasets.ClassLabel(names=list(CLASSES)))
    for name, values in (extra or {}).items():
        data[name] = list(values)
    # Types inferred for the extra columns, set for the rest.
    split = datasets.Dataset.from_dict(data)
    split = split.cast(datasets.Features({**split.features, **features}))
    if "audio" in columns:
        split = split.cast_column("audio", datasets.Audio())
    return split


def write_hf_dataset(folder: Path, *, n_train: int = 30, n_test: int = 10,
                     extra: dict | None = None, test_extra: dict | None = None,
                     **kwargs) -> Path:
    """Save a train and a test split with ``DatasetDict.save_to_disk``; return ``folder``.

    ``kwargs`` go to :func:`hf_split` for both; ``extra`` and ``test_extra`` are
    the extra columns of the train and of the test split.
    """
    import datasets

    dd = datasets.DatasetDict(train=hf_split(n_train, extra=extra, **kwargs),
                              test=hf_split(n_test, offset=n_train, extra=test_extra, **kwargs))
    dd.save_to_disk(str(folder))
    return folder

