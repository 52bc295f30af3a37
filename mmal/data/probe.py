"""Cheap looks at a few of a pool's files: image sizes and clip durations, from their headers.

:func:`size_warnings` compares ``image_size`` and ``clip_seconds`` with what the
pool holds, so that ``mmal init`` and ``mmal train`` can say when the defaults
(224 pixels, 5 s) would upsample 32-pixel digits 7x or pad 1-second clips with
80% silence. It reads image headers (PIL opens lazily) and wav chunk headers of
at most :data:`SAMPLES` files, evenly spaced over the pool; nothing is decoded.
Torch-free.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image

from mmal.data.parsing import list_frames, open_source
from mmal.errors import DataError

if TYPE_CHECKING:
    from mmal.config import Config
    from mmal.data.pool import Pool

#: Files looked at per modality.
SAMPLES = 16
#: Warn when image_size exceeds this multiple of the median longer side of the images.
IMAGE_FACTOR = 2.0
#: Warn when clip_seconds exceeds this multiple of the median clip duration.
CLIP_FACTOR = 1.5


def size_warnings(config: Config, pool: Pool, *, samples: int = SAMPLES) -> list[str]:
    """One line per modality whose ``image_size`` or ``clip_seconds`` far exceeds its files.

    Parameters
    ----------
    config : Config
    pool : Pool
        Usually the train split. Files that cannot be read are skipped (the
        loaders name them when they decode them).
    samples : int
        Files looked at per modality, evenly spaced over the pool.

    Returns
    -------
    list of str
        E.g. ``key 'modalities.image.image_size' is 224, 7.0x the median longer
        side (32 px) of 16 sampled images of the train split: ...``.
    """
    out = []
    for m in config.modalities:
        values = pool.records.get(m.name)
        if m.kind not in ("image", "video", "audio") or values is None or not len(values) \
                or isinstance(values, np.ndarray):
            continue
        rows = np.unique(np.linspace(0, len(values) - 1, min(samples, len(values))).astype(int))
        if m.kind == "audio":
            line = _clip_warning(m.name, m.options["clip_seconds"],
                                 [_seconds(values[r]) for r in rows], pool.split)
        else:
            line = _image_warning(m.name, m.options["image_size"],
                                  [_longer_side(values[r]) for r in rows], pool.split)
        if line:
            out.append(line)
    return out


def _image_warning(name: str, size: int, sides: list[int | None], split: str) -> str | None:
    sides = [s for s in sides if s]
    if not sides or size <= IMAGE_FACTOR * np.median(sides):
        return None
    median = float(np.median(sides))
    return (f"key 'modalities.{name}.image_size' is {size}, {size / median:.1f}x the median "
            f"longer side ({median:g} px) of {len(sides)} sampled images of the {split} split: "
            "they are upsampled that much; a smaller image_size fits them (an encoder with a "
            "fixed input size may need it anyway)")


def _clip_warning(name: str, seconds: float, durations: list[float | None],
                  split: str) -> str | None:
    durations = [d for d in durations if d]
    if not durations or seconds <= CLIP_FACTOR * np.median(durations):
        return None
    median = float(np.median(durations))
    return (f"key 'modalities.{name}.clip_seconds' is {seconds:g}, {seconds / median:.1f}x the "
            f"median duration ({median:.2f} s) of {len(durations)} sampled clips of the {split} "
            f"split: {1 - median / seconds:.0%} of a median clip's window is zero padding; "
            "lower clip_seconds")


def _longer_side(source: Any) -> int | None:
    """Longer side in pixels of an image (or a frame folder's first frame), from its header."""
    try:
        if isinstance(source, Path) and source.is_dir():
            source = list_frames(source, sample="")[0]
        with Image.open(open_source(source, sample="")) as img:
            return max(img.size)
    except (DataError, OSError, ValueError, IndexError, Image.DecompressionBombError):
        return None


def _seconds(source: Any) -> float | None:
    """Duration in seconds of a wav file (or encoded wav), from its chunk headers."""
    try:
        file = open_source(source, sample="")
        if isinstance(file, Path):
            with file.open("rb") as fh:
                return _wav_seconds(fh)
        return _wav_seconds(file)
    except (DataError, OSError, ValueError, struct.error):
        return None


def _wav_seconds(fh: BinaryIO) -> float | None:
    """frames / rate from the ``fmt `` and ``data`` chunks of a RIFF/WAVE stream."""
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    rate = block = None
    while True:
        chunk = fh.read(8)
        if len(chunk) < 8:
            return None
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"fmt ":
            fmt = fh.read(size + size % 2)
            rate, block = struct.unpack("<I", fmt[4:8])[0], struct.unpack("<H", fmt[12:14])[0]
        elif cid == b"data":
            return size / block / rate if rate and block else None
        else:
            fh.seek(size + size % 2, 1)
